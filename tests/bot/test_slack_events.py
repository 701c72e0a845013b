"""Slack Events API through the real gateway: signatures, url_verification, DMs answered once,
what is ignored, the ack never waiting for the answer, vendor errors retried."""

from __future__ import annotations

import copy
import json
import time

import pytest
from sqlalchemy import select

from parley.db import unit_of_work
from tenants.models import ChannelInstallation, ChannelKind
from tests.bot.conftest import BOT_USER, TEAM, Stack, dm, eventually, fixture, slack_headers

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_slack_signature_test_vector_passes_with_its_clock_and_nothing_else(make_stack) -> None:
    # Given Slack's published test vector and a gateway whose clock reads the vector's time
    vector = fixture("slack/slack_signature_test_vector.json")
    stack = await make_stack(clock=lambda: float(vector["timestamp"]), slack_signing_secret=vector["signing_secret"])
    headers = {**vector["headers"], "Content-Type": "application/x-www-form-urlencoded"}
    # When the exact request is sent
    ok = await stack.client.post("/slack/events", data=vector["body"], headers=headers)
    # Then the signature is accepted (it is a slash command, which this app does not have: it says so)
    assert ok.status == 200
    assert "direct message" in await ok.text()
    # When one byte of the body is changed, or the signature is, it is refused before anything runs
    tampered = await stack.client.post("/slack/events", data=vector["body"].replace("roadrunner", "roadrunnex"), headers=headers)
    forged = await stack.client.post("/slack/events", data=vector["body"],
                                     headers={**headers, "X-Slack-Signature": "v0=" + "0" * 64})
    missing = await stack.client.post("/slack/events", data=vector["body"])
    assert (tampered.status, forged.status, missing.status) == (401, 401, 401)
    assert await tampered.json() == {"error": "invalid request"}
    assert await stack.messages() == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_stale_timestamp_is_refused_as_a_replay(stack: Stack) -> None:
    # Given a correctly signed DM whose timestamp is 6 minutes old
    body = json.dumps(dm())
    old = str(int(time.time()) - 360)
    # When it is replayed
    response = await stack.client.post("/slack/events", data=body, headers=slack_headers(body, ts=old))
    # Then it is refused and nothing is stored or answered
    assert response.status == 401
    assert await stack.messages() == [] and stack.slack.posted == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_url_verification_echoes_the_challenge(stack: Stack) -> None:
    # Given Slack's documented url_verification request
    payload = fixture("slack/slack-docs__url_verification.json")
    # When it arrives signed
    response = await stack.post_slack(payload)
    # Then the challenge is echoed
    assert response.status == 200
    assert (await response.json())["challenge"] == payload["challenge"]


async def test_dm_is_answered_once_despite_retries_and_duplicate_deliveries(stack: Stack) -> None:
    # Given a customer's DM (Slack's captured message.im delivery)
    payload = dm("How long does shipping take?")
    # When Slack delivers it, retries it twice, and delivers it again under another event id
    first = await stack.post_slack(payload)
    retry1 = await stack.post_slack(payload, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    retry2 = await stack.post_slack(payload, **{"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"})
    again = copy.deepcopy(payload)
    again["event_id"] = "Ev0SAMEMSGAGAIN"
    dup = await stack.post_slack(again)
    assert [r.status for r in (first, retry1, retry2, dup)] == [200, 200, 200, 200]
    await stack.settle()
    # Then exactly one answer went into the DM, and the message is recorded answered with its latency
    posted = await stack.slack.wait_posted(1)
    assert len(posted) == 1
    assert posted[0]["channel"] == payload["event"]["channel"] and posted[0]["token"] == "xoxb-acme-bot-token"
    [row] = await stack.messages()
    assert row.status == "answered" and row.reply and row.answer_ms is not None and row.attempts == 1
    assert row.external_event_id == f"{TEAM}:{payload['event']['channel']}:{payload['event']['ts']}"
    await eventually(lambda: _ack_recorded(stack, row.id))
    # And the acks are counted by outcome
    metrics = (await (await stack.client.get("/metrics")).text())
    assert 'parley_gateway_webhook_acks_total{channel="slack",outcome="accepted"} 1.0' in metrics
    assert 'parley_gateway_webhook_acks_total{channel="slack",outcome="duplicate"} 3.0' in metrics


async def _ack_recorded(stack: Stack, message_id: str) -> bool:
    [row] = await stack.messages(id=message_id)
    return row.ack_ms is not None


async def test_follow_up_question_carries_the_conversation_turns(stack: Stack) -> None:
    # Given a first question answered in a DM
    await stack.post_slack(dm("Do you ship to Austria?"))
    await stack.settle()
    # When the customer asks a follow-up in the same DM
    await stack.post_slack(dm("And how much does it cost?"))
    await stack.settle()
    # Then the retrieval request carried the earlier turns, oldest first
    last = stack.retrieval.requests[-1]
    assert [t.role for t in last.turns] == ["user", "assistant"]
    assert last.turns[0].text == "Do you ship to Austria?"
    assert last.conversation_id == f"slack:{TEAM}:D0442US94JD"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_bots_edits_deletions_and_own_messages_are_acked_and_ignored(stack: Stack) -> None:
    # Given Slack's captured deliveries of our own bot's message, another bot's, an edit and a deletion, all in a DM
    def in_dm(name: str, **event: object) -> dict:
        payload = fixture(f"slack/{name}")
        payload["event"].update(channel="D0442US94JD", channel_type="im", **event)
        return payload

    own = in_dm("slack-web__botMessage.json")  # bot_id B0439P161B9 is ours (auth.test says so)
    other_bot = in_dm("slack-web__botMessage.json", bot_id="B0OTHERBOT", user="U0OTHERBOT")
    other_bot["event_id"] = "Ev0OTHERBOT"
    classic = in_dm("slack-web__message_subtype_bot_message.json")
    edit = in_dm("slack-web__messageChange.json")
    deletion = in_dm("slack-web__message_deleted.json")
    channel_msg = fixture("slack/bolt-python__test_message__message_body.json")
    # When they arrive
    statuses = [(await stack.post_slack(p)).status for p in (own, other_bot, classic, edit, deletion, channel_msg)]
    await stack.settle()
    # Then each is acked (no 404 for Slack to retry) and none is stored or answered
    assert statuses == [200] * 6
    assert await stack.messages() == []
    assert stack.slack.posted == []


async def test_ack_returns_before_a_slow_answer_completes(stack: Stack) -> None:
    # Given a retrieval service that holds every answer until released
    stack.retrieval.gate.clear()
    # When a DM arrives
    response = await stack.post_slack(dm("Is the blue jacket waterproof?"))
    # Then Slack already has its 200 while the answer is still being worked on
    assert response.status == 200
    await stack.retrieval.started.wait()
    [row] = await stack.messages()
    assert row.status == "answering" and stack.slack.posted == []
    # When the answer is released, it is posted and recorded
    stack.retrieval.gate.set()
    await stack.settle()
    assert len(await stack.slack.wait_posted(1)) == 1
    assert (await stack.messages())[0].status == "answered"


async def test_rate_limits_and_server_errors_are_retried_then_a_refusal_is_recorded(stack: Stack) -> None:
    # Given Slack answering chat.postMessage with 429 (Retry-After) then 500 before accepting it
    stack.slack.fail("chat.postMessage", 429, {"ok": False, "error": "ratelimited"}, **{"Retry-After": "0"})
    stack.slack.fail("chat.postMessage", 500)
    # When a DM arrives
    await stack.post_slack(dm("Do you have gift cards?"))
    await stack.settle()
    # Then the reply went out on the third try
    assert len(stack.slack.posted) == 1 and stack.slack.calls["chat.postMessage"] == 3
    # Given Slack refusing for good (the DM channel is gone)
    stack.slack.fail("chat.postMessage", 200, {"ok": False, "error": "channel_not_found"})
    # When the next DM arrives
    await stack.post_slack(dm("Are you open on Sunday?"))
    await stack.settle()
    # Then it is not retried, and the message is recorded failed with the reason
    failed = [m for m in await stack.messages() if m.status == "failed"]
    assert len(failed) == 1 and "channel_not_found" in failed[0].error
    assert stack.slack.calls["chat.postMessage"] == 4


async def test_retrieval_outage_gets_an_apology_and_a_failed_record(stack: Stack) -> None:
    # Given a retrieval service that keeps failing
    stack.retrieval.failures = 100
    # When a DM arrives
    await stack.post_slack(dm("Where is my order?"))
    await stack.settle()
    # Then the customer gets an apology with an error id and the message is failed with the reason
    [posted] = stack.slack.posted
    assert "error id" in posted["text"]
    [row] = await stack.messages()
    assert row.status == "failed" and "retrieval failed" in row.error and "unavailable" in row.error


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_unknown_workspace_malformed_and_oversized_requests(stack: Stack) -> None:
    # Given a DM from a workspace that never installed the app
    stranger = dm()
    stranger["team_id"] = stranger["event"]["team"] = stranger["authorizations"][0]["team_id"] = "T0STRANGER"
    # When it, a signed malformed body and a body over the 1 MB limit arrive
    unknown = await stack.post_slack(stranger)
    malformed = await stack.post_slack('{"type": "event_callback", "event": ')
    huge = await stack.post_slack(json.dumps({"type": "event_callback", "pad": "x" * (1024 * 1024 + 10)}))
    # Then: acked and dropped (Slack must not retry forever), 400, 413 - and nothing stored
    assert unknown.status == 200
    assert malformed.status == 400 and (await malformed.json())["error"] == "invalid_input"
    assert huge.status == 413 and (await huge.json())["error"] == "too_large"
    assert await stack.messages() == [] and stack.slack.posted == []
    # And a proper DM still works afterwards
    await stack.post_slack(dm())
    await stack.settle()
    assert len(stack.slack.posted) == 1


async def test_app_uninstalled_removes_the_installation(stack: Stack) -> None:
    # Given an installed workspace
    uninstall = {"token": "x", "team_id": TEAM, "api_app_id": "A0442TUPHGR", "type": "event_callback",
                 "event": {"type": "app_uninstalled", "event_ts": "1700000000.000100"}, "event_id": "Ev0UNINSTALL",
                 "event_time": 1700000000,
                 "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True, "is_enterprise_install": False}]}
    # When Slack reports the app uninstalled
    response = await stack.post_slack(uninstall)
    assert response.status == 200
    # Then the installation no longer routes, its token is erased, and DMs are no longer answered
    async def revoked() -> bool:
        async with unit_of_work(stack.sessions, admin=True) as s:
            row = (await s.execute(select(ChannelInstallation).where(ChannelInstallation.kind == ChannelKind.slack))).scalar_one()
            return row.status == "revoked" and row.secrets_encrypted is None

    await eventually(revoked)
    await stack.post_slack(dm())
    await stack.settle()
    assert stack.slack.posted == [] and await stack.messages() == []
