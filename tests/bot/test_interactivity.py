"""``POST /slack/interactivity`` through the real gateway: Slack's signature (forged, stale), malformed
forms (400, never 5xx), a workspace that is not installed, an identical resend deduplicated, and
the same payload through ``/slack/events`` when the Interactivity Request URL points there."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from sqlalchemy import func, select

from bot.models import AnswerFeedback, WebhookEvent
from parley.db import unit_of_work
from tests.bot.conftest import SLACK_SECRET, Stack, dm, slack_headers
from tests.bot.interactions import FORM, block_actions, form, post_interaction

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


async def _answer(stack: Stack) -> dict:
    """Given a DM answered by the bot: the answer as the Slack emulator received it."""
    assert (await stack.post_slack(dm("What is your returns policy?"))).status == 200
    await stack.settle()
    (posted,) = stack.slack.posted
    return posted


def _signed(raw: bytes) -> dict[str, str]:
    """Slack's v0 signature over raw bytes (which need not be UTF-8)."""
    ts = str(int(time.time()))
    digest = hmac.new(SLACK_SECRET.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": "v0=" + digest, "Content-Type": FORM}


async def _count(stack: Stack, model) -> int:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_forged_and_stale_signatures_are_refused_before_anything_runs(stack: Stack) -> None:
    # Given an answer with its 👍 button, and a click on it
    posted = await _answer(stack)
    body = form(block_actions(stack, posted, posted["blocks"][-1]["elements"][0]["action_id"]))
    # When the click arrives signed with another secret, with a stale timestamp, or unsigned
    forged = await stack.client.post("/slack/interactivity", data=body,
                                     headers=slack_headers(body, secret="not-the-secret", **{"Content-Type": FORM}))
    stale = await stack.client.post("/slack/interactivity", data=body,
                                    headers=slack_headers(body, ts=str(int(time.time()) - 360), **{"Content-Type": FORM}))
    unsigned = await stack.client.post("/slack/interactivity", data=body, headers={"Content-Type": FORM})
    # Then each is a 401 in Slack's words, and nothing was recorded, updated or deduplicated
    assert (forged.status, stale.status, unsigned.status) == (401, 401, 401)
    assert await forged.json() == {"error": "invalid request"}
    assert await _count(stack, AnswerFeedback) == 0 and stack.slack.updated == []
    assert await _count(stack, WebhookEvent) == 0


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_malformed_payloads_are_a_400_that_says_why(stack: Stack) -> None:
    # Given correctly signed bodies that are not interactivity payloads
    bodies = {
        "no payload field": b"token=abc&team_id=T1",
        "payload is not JSON": form("{not json").encode(),
        "payload is a JSON array": form("[1, 2, 3]").encode(),
        "payload without a type": form(json.dumps({"actions": []})).encode(),
        "two payload fields": (form("{}") + "&" + form("{}")).encode(),
        "not UTF-8": b"payload=%7B%22type%22%3A%22block_actions%22%7D\xff\xfe",
    }
    for what, raw in bodies.items():
        # When each is posted
        response = await stack.client.post("/slack/interactivity", data=raw, headers=_signed(raw))
        # Then it is a 400 with a reason, never a 5xx
        assert response.status == 400, what
        answer = await response.json()
        assert answer["error"] == "invalid_input" and "not a Slack interactivity payload" in answer["detail"], what
    assert await _count(stack, WebhookEvent) == 0


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_workspace_that_is_not_installed_gets_a_200_and_nothing_is_done(stack: Stack) -> None:
    # Given an answer, and a click on its button from a workspace that never installed the app
    posted = await _answer(stack)
    action = posted["blocks"][-1]["elements"][0]["action_id"]
    # When it arrives correctly signed
    response = await post_interaction(stack, block_actions(stack, posted, action, team="T0UNKNOWN1"))
    # Then Slack gets its 200 (anything else is retried) and nothing is recorded or changed
    assert response.status == 200
    assert await _count(stack, AnswerFeedback) == 0 and stack.slack.updated == [] and stack.slack.views == []
    assert 'parley_gateway_webhook_acks_total{channel="slack_interactivity",outcome="unknown_workspace"} 1.0' in \
        (await (await stack.client.get("/metrics")).text())


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_an_identical_resend_is_acknowledged_and_not_handled_twice(stack: Stack) -> None:
    # Given an answer and a click on 👎 (which records the rating, opens the comment modal and updates the answer)
    posted = await _answer(stack)
    down = posted["blocks"][-1]["elements"][1]["action_id"]
    payload = block_actions(stack, posted, down)
    # When Slack delivers the click, then resends the identical payload (we were slow), with a new timestamp
    first = await post_interaction(stack, payload)
    again = await post_interaction(stack, payload)
    # Then both are 200, and the click was handled once: one row, one modal, one update
    assert (first.status, again.status) == (200, 200)
    assert await _count(stack, AnswerFeedback) == 1
    assert len(stack.slack.views) == 1 and len(stack.slack.updated) == 1
    metrics = await (await stack.client.get("/metrics")).text()
    assert 'parley_gateway_webhook_acks_total{channel="slack_interactivity",outcome="duplicate"} 1.0' in metrics


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_interactions_sent_to_the_events_url_are_handled_the_same_way(stack: Stack) -> None:
    # Given a Slack app whose Interactivity Request URL is the events URL, and an answer
    posted = await _answer(stack)
    up = posted["blocks"][-1]["elements"][0]["action_id"]
    # When a click on 👍 arrives at /slack/events, then a forged one
    ok = await post_interaction(stack, block_actions(stack, posted, up), path="/slack/events")
    body = form(block_actions(stack, posted, up))
    forged = await stack.client.post("/slack/events", data=body,
                                     headers=slack_headers(body, secret="nope", **{"Content-Type": FORM}))
    # Then the click is recorded like one sent to /slack/interactivity, and the forgery refused
    assert ok.status == 200 and forged.status == 401
    async with unit_of_work(stack.sessions, admin=True) as session:
        (row,) = (await session.execute(select(AnswerFeedback))).scalars()
    assert row.rating == "up" and row.channel == "slack"
