"""👍/👎 on answers through the real gateway and the vendor emulators: Slack buttons clicked (with
signed interactivity payloads) up, down and down again, a 👎's comment from the Slack modal; an
Instagram quick reply and the comment it asks for; the web chat's API. One row per answer and
rater, with the question, the sources and the answerer; a re-click changes it, a duplicate does not."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from bot.models import AnswerFeedback, InboundMessage
from parley.db import unit_of_work
from tests.bot.conftest import IG_ACCOUNT, Stack, dm
from tests.bot.interactions import CUSTOMER, block_actions, post_interaction, view_submission

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


async def _ratings(stack: Stack) -> list[AnswerFeedback]:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return list((await session.execute(select(AnswerFeedback).order_by(AnswerFeedback.created_at))).scalars())


async def _metric(stack: Stack, line: str) -> bool:
    return line in await (await stack.client.get("/metrics")).text()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_slack_answers_carry_buttons_and_clicks_up_down_down_leave_one_row_down(stack: Stack) -> None:
    # Given a DM the bot answered: the text (the fallback) and, under it, 👍/👎 buttons naming the question
    assert (await stack.post_slack(dm("What is your returns policy?"))).status == 200
    await stack.settle()
    (posted,) = stack.slack.posted
    (question,) = await stack.messages(channel="slack")
    buttons = posted["blocks"][-1]
    assert posted["text"] and posted["blocks"][0]["text"]["text"] == posted["text"]
    assert buttons["type"] == "actions"
    assert [b["action_id"] for b in buttons["elements"]] == [f"feedback:up:{question.id}", f"feedback:down:{question.id}"]

    # When the customer clicks 👍
    assert (await post_interaction(stack, block_actions(stack, posted, f"feedback:up:{question.id}"))).status == 200
    # Then it is recorded with the question, its sources and who answered, and the answer says so
    (row,) = await _ratings(stack)
    assert (row.rating, row.channel, row.rater_id, row.message_id) == ("up", "slack", CUSTOMER, question.id)
    assert row.question == "What is your returns policy?" and row.sources == (question.citations or [])
    assert row.answerer == question.context["answered_by"] and row.answerer in ("extractive", "none", "openai")
    (update,) = stack.slack.updated
    assert (update["channel"], update["ts"]) == (posted["channel"], "1.000100")
    assert "👍" in update["blocks"][-1]["elements"][0]["text"] and update["blocks"][-2]["type"] == "actions"
    assert stack.slack.views == []  # a 👍 asks for nothing

    # When they change their mind: 👎 (a new click: its action_ts differs)
    assert (await post_interaction(stack, block_actions(stack, posted, f"feedback:down:{question.id}"))).status == 200
    # Then the same row says down, the answer is updated again, and a modal asks what was wrong
    (row,) = await _ratings(stack)
    assert row.rating == "down" and row.comment is None
    assert len(stack.slack.updated) == 2 and "👎" in stack.slack.updated[-1]["blocks"][-1]["elements"][0]["text"]
    (modal,) = stack.slack.views
    assert modal["view"]["callback_id"] == f"feedback:comment:{question.id}" and modal["trigger_id"]

    # When they click the same 👎 again (a double click: another payload)
    assert (await post_interaction(stack, block_actions(stack, posted, f"feedback:down:{question.id}"))).status == 200
    # Then nothing changes: one row, still down, no new update, no second modal
    (row,) = await _ratings(stack)
    assert row.rating == "down" and len(stack.slack.updated) == 2 and len(stack.slack.views) == 1

    # When they submit the modal with a comment
    comment = "It did not say who pays for the return shipping."
    submitted = view_submission(modal["view"], {"comment": {"text": {"type": "plain_text_input", "value": comment}}})
    assert (await post_interaction(stack, submitted)).status == 200
    # Then the comment is on the 👎, and the ratings were counted once each
    (row,) = await _ratings(stack)
    assert (row.rating, row.comment) == ("down", comment)
    assert await _metric(stack, 'parley_gateway_feedback_total{channel="slack",rating="up"} 1.0')
    assert await _metric(stack, 'parley_gateway_feedback_total{channel="slack",rating="down"} 1.0')
    # And the conversation's API shows the rating with the message
    shown = await (await stack.client.get(f"/api/conversations/{question.id}", headers=bearer(stack.api_key))).json()
    assert [(f["rating"], f["comment"]) for f in shown["feedback"]] == [("down", comment)]


def _ig_event(text: str, *, sender: str = "IGSID-CUSTOMER-7", quick: str | None = None) -> dict[str, Any]:
    """A customer's Instagram message as Meta delivers it (a quick reply tap carries ``quick_reply.payload``)."""
    message: dict[str, Any] = {"mid": f"aWdfZAG1{uuid.uuid4().hex}", "text": text}
    if quick is not None:
        message["quick_reply"] = {"payload": quick}
    return {"object": "instagram", "entry": [{"id": IG_ACCOUNT, "time": int(time.time() * 1000), "messaging": [
        {"sender": {"id": sender}, "recipient": {"id": IG_ACCOUNT}, "timestamp": int(time.time() * 1000),
         "message": message}]}]}


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_instagram_quick_replies_rate_the_answer_and_the_next_message_is_the_comment(stack: Stack) -> None:
    # Given an Instagram question the bot answered: its (last) part carries 👍/👎 quick replies
    assert (await stack.post_instagram(_ig_event("Do you ship to Norway?"))).status == 200
    await stack.settle()
    (question,) = await stack.messages(channel="instagram")
    answer = stack.graph.sent[-1]
    assert answer["messaging_type"] == "RESPONSE"
    assert [(q["title"], q["payload"]) for q in answer["message"]["quick_replies"]] == \
        [("👍", f"feedback:up:{question.id}"), ("👎", f"feedback:down:{question.id}")]
    asked = len(stack.retrieval.requests)

    # When the customer taps 👎 (Meta delivers the tap as a message with the quick reply's payload)
    await stack.post_instagram(_ig_event("👎", quick=f"feedback:down:{question.id}"))
    await stack.settle()
    # Then it is recorded as their rating of that answer, not asked as a question, and they are asked what was wrong
    (row,) = await _ratings(stack)
    assert (row.rating, row.channel, row.rater_id, row.question) == ("down", "instagram", "IGSID-CUSTOMER-7",
                                                                     "Do you ship to Norway?")
    assert len(stack.retrieval.requests) == asked
    assert "What was wrong or missing?" in stack.graph.sent[-1]["message"]["text"]
    assert "quick_replies" not in stack.graph.sent[-1]["message"]

    # When Meta redelivers the same tap
    tap_again = _ig_event("👎", quick=f"feedback:down:{question.id}")
    await stack.post_instagram(tap_again)
    await stack.post_instagram(tap_again)
    await stack.settle()
    # Then still one row, down
    assert [r.rating for r in await _ratings(stack)] == ["down"]

    # When their next message says what was wrong
    sent = len(stack.graph.sent)
    await stack.post_instagram(_ig_event("You didn't say how long it takes."))
    await stack.settle()
    # Then it is the comment on the 👎 (not a question), and they are thanked
    (row,) = await _ratings(stack)
    assert row.comment == "You didn't say how long it takes."
    assert len(stack.retrieval.requests) == asked
    assert len(stack.graph.sent) == sent + 1 and "passed your comment on" in stack.graph.sent[-1]["message"]["text"]

    # And a message after that is a question again
    await stack.post_instagram(_ig_event("And to Sweden?"))
    await stack.settle()
    assert len(stack.retrieval.requests) == asked + 1
    assert await _metric(stack, 'parley_gateway_feedback_total{channel="instagram",rating="down"} 1.0')


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_someone_else_cannot_rate_a_customers_instagram_answer(stack: Stack) -> None:
    # Given an answer to one customer
    await stack.post_instagram(_ig_event("Do you ship to Norway?", sender="IGSID-CUSTOMER-8"))
    await stack.settle()
    (question,) = await stack.messages(channel="instagram")
    # When another Instagram user sends a quick reply payload naming it
    await stack.post_instagram(_ig_event("👍", sender="IGSID-STRANGER", quick=f"feedback:up:{question.id}"))
    await stack.settle()
    # Then nothing is recorded, and the stranger's message says why on its row
    assert await _ratings(stack) == []
    stranger = [m for m in await stack.messages(channel="instagram") if m.sender_id == "IGSID-STRANGER"]
    assert stranger[0].status == "ignored" and "no such answer" in stranger[0].error


@pytest.mark.parametrize("db_backend", ["sqlite", "postgres"])
async def test_web_chat_feedback_through_the_api(stack: Stack) -> None:
    # Given a question answered through the web chat API
    answered = await (await stack.client.post("/api/chat", json={"message": "What is your returns policy?"},
                                              headers=bearer(stack.api_key))).json()
    message_id = answered["message_id"]

    async def rate(body: dict[str, Any], key: str = stack.api_key) -> Any:
        return await stack.client.post("/api/chat/feedback", json=body, headers=bearer(key))

    # When it is rated 👍, then 👍 again
    first = await rate({"message_id": message_id, "rating": "up"})
    again = await rate({"message_id": message_id, "rating": "up"})
    # Then one row: the first created it, the second changed nothing
    assert (first.status, again.status) == (200, 200)
    assert ((await first.json())["created"], (await again.json())["changed"]) == (True, False)
    # When it is changed to 👎 with a comment
    down = await (await rate({"message_id": message_id, "rating": "down", "comment": "Too vague."})).json()
    assert (down["rating"], down["comment"], down["changed"]) == ("down", "Too vague.", True)
    (row,) = await _ratings(stack)
    assert (row.rating, row.comment, row.channel, row.question) == ("down", "Too vague.", "web", "What is your returns policy?")
    # When the request is wrong, or names an answer of another tenant, or a message that does not exist
    bad = await rate({"message_id": message_id, "rating": "meh"})
    no_id = await rate({"rating": "up"})
    up_comment = await rate({"message_id": message_id, "rating": "up", "comment": "great"})
    theirs = await rate({"message_id": message_id, "rating": "up"}, key=stack.other_api_key)
    missing = await rate({"message_id": "0" * 32, "rating": "up"})
    unsigned = await stack.client.post("/api/chat/feedback", json={"message_id": message_id, "rating": "up"})
    # Then each gets a clear error, and the rating stands
    assert (bad.status, no_id.status, up_comment.status, theirs.status, missing.status, unsigned.status) == \
        (400, 400, 400, 404, 404, 401)
    assert "'rating' is 'up' or 'down'" in (await bad.json())["detail"]
    assert [(r.rating, r.comment) for r in await _ratings(stack)] == [("down", "Too vague.")]
    assert await _metric(stack, 'parley_gateway_feedback_total{channel="web",rating="up"} 1.0')
    assert await _metric(stack, 'parley_gateway_feedback_total{channel="web",rating="down"} 1.0')


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_message_without_an_answer_cannot_be_rated(stack: Stack) -> None:
    # Given a question that was refused as empty-ish (answered with the polite reply) and a failed one
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        row = InboundMessage(tenant_id=stack.tenant_id, channel="web", external_event_id="x:1", conversation_id="web:x:1",
                             sender_id="api_key:x", text="hello?", status="failed", error="retrieval failed")
        session.add(row)
        await session.flush()
        failed_id = row.id
    # When it is rated
    response = await stack.client.post("/api/chat/feedback", json={"message_id": failed_id, "rating": "down"},
                                       headers=bearer(stack.api_key))
    # Then it is refused with the reason
    assert response.status == 400 and "no answer to rate" in (await response.json())["detail"]
    assert await _ratings(stack) == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_widget_visitor_rates_their_own_answers_only(stack: Stack) -> None:
    from tests.bot.test_widget import FRAME, ask, new_widget, visitor

    # Given a widget, two anonymous visitors, and an answer to the first one's question
    widget_id = await new_widget(stack)
    alice = (await (await visitor(stack, widget_id)).json())["token"]
    bob = (await (await visitor(stack, widget_id)).json())["token"]
    answered = await (await ask(stack, widget_id, alice)).json()

    async def rate(token: str, rating: str, **extra: Any) -> Any:
        return await stack.client.post(f"/chat/w/{widget_id}/feedback", json={"message_id": answered["message_id"],
                                                                            "rating": rating, **extra},
                                       headers={**FRAME, "Authorization": f"Bearer {token}"})

    # When the first visitor rates it 👎 with a comment, and the second tries to rate it too
    mine = await rate(alice, "down", comment="Not what I asked.")
    theirs = await rate(bob, "up")
    expired = await rate("not-a-token", "up")
    # Then the first is recorded, the second is told there is no such answer, a bad session must start again
    assert (mine.status, theirs.status, expired.status) == (200, 404, 401)
    (row,) = await _ratings(stack)
    assert (row.rating, row.comment, row.channel, row.rater_id.startswith("visitor:")) == ("down", "Not what I asked.", "web", True)
