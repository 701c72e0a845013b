"""Messages that cannot be looked up - blank, 100 KB, only emoji, a script the model never saw -
get a clear, polite reply in every channel (Slack, Instagram, the web chat API), never silence, a
traceback or a 5xx. Through the real gateway, its vendor-signed doors and the real retrieval service.
"""

from __future__ import annotations

import pytest

from retrieval.schemas import EMPTY_QUESTION, NO_WORDS, UNREADABLE_SCRIPT
from tests.bot.conftest import IG_ACCOUNT, Stack, dm
from tests.bot.test_instagram import envelope, text_event

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.parametrize("db_backend", ["sqlite"])]

HUGE = " ".join(["Where is my order and when will it arrive?"] * 2400)  # 103,199 characters
CHEROKEE = "ᏣᎳᎩ ᎦᏬᏂᎯᏍᏗ ᎠᏍᎦᏯ ᎤᏍᏗ"
#: message -> the start of the reply it must get
CASES = {"   ": EMPTY_QUESTION, HUGE: "That message is 103,199 characters long", "🙂🙂 👟❓": NO_WORDS,
         CHEROKEE: UNREADABLE_SCRIPT}


async def test_slack_dms_that_cannot_be_looked_up_get_a_polite_reply(stack: Stack) -> None:
    # When a customer sends each kind of unanswerable DM
    for text in CASES:
        assert (await stack.post_slack(dm(text))).status == 200
        await stack.settle()
    # Then each got its own reply, in order, and each message is recorded answered with it
    assert len(stack.slack.posted) == len(CASES)
    for posted, reply in zip(stack.slack.posted, CASES.values(), strict=True):
        assert posted["text"].startswith(reply)
    assert [r.status for r in await stack.messages(channel="slack")] == ["answered"] * len(CASES)


async def test_instagram_messages_that_cannot_be_looked_up_get_a_polite_reply(stack: Stack) -> None:
    for i, text in enumerate(CASES):
        assert (await stack.post_instagram(envelope((IG_ACCOUNT, [text_event(text, mid=f"mid.bad.{i}")])))).status == 200
        await stack.settle()
    replies = [s["message"]["text"] for s in stack.graph.sent]
    assert len(replies) == len(CASES)
    for sent, reply in zip(replies, CASES.values(), strict=True):
        assert sent.startswith(reply)


async def test_the_web_chat_api_answers_each_politely_never_a_5xx(stack: Stack) -> None:
    key = {"Authorization": f"Bearer {stack.api_key}"}
    outcomes = {}
    for text in ("", *CASES):
        r = await stack.client.post("/api/chat", json={"message": text}, headers=key)
        body = await r.json()
        outcomes[text] = (r.status, body.get("error"), body.get("detail") or body.get("answer"))
    # Then a blank or huge message is a 400 whose detail is the polite reply (nothing was stored or cut short)
    assert outcomes[""] == outcomes["   "] == (400, "bad_question", EMPTY_QUESTION)
    assert outcomes[HUGE][:2] == (400, "bad_question") and outcomes[HUGE][2].startswith(CASES[HUGE])
    # And the others are answered, with the reply that says what is wrong
    assert outcomes["🙂🙂 👟❓"] == (200, None, NO_WORDS)
    assert outcomes[CHEROKEE] == (200, None, UNREADABLE_SCRIPT)
    assert len(await stack.messages(channel="web")) == 2
