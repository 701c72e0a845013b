"""Handoff to a person through the real gateway: a customer asks for a person in Slack or Instagram,
is told, a staff thread opens in the tenant's Slack channel, the bot stays silent, a staff reply is
relayed, Take / Resolve / Hand back buttons (signed interactivity), refusals and keywords as
triggers, the timeout, and a restart in the middle. Plus the phrase matcher on its own."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import select, update

from bot.channels.slack.desk import plain_text
from bot.conversation.handoff import ALLOWED, BOT, CLOSED, WAITING, WITH_HUMAN
from bot.conversation.triggers import asks_for_person, keyword_in, normalize
from bot.models import Conversation, HandoffEvent, HandoffMessage
from parley.bus.models import OutboxMessage
from parley.db import unit_of_work, utcnow
from tenants import handoff as handoff_settings
from tests.bot.conftest import IG_ACCOUNT, TEAM, Stack, dm, slack_headers
from tests.bot.test_instagram import envelope, text_event

STAFF_CHANNEL, STAFF_USER = "C0STAFF0001", "U0STAFF0001"
DM_CHANNEL = "D0442US94JD"  # the captured DM's channel

# --- the phrase matcher ----------------------------------------------------------------------

ASKS = [
    "can I talk to a human?", "I want to speak with a real person please", "Connect me to an agent", "human please",
    "AGENT!", "Can I get a live agent", "I need a person, not a bot",
    "quiero hablar con una persona", "¿Puedo hablar con un agente?", "necesito un humano",
    "quero falar com um atendente", "posso falar com uma pessoa?",
    "je veux parler à un conseiller", "Puis-je parler avec quelqu'un ?", "une vraie personne svp",
    "Ich möchte mit einem Menschen sprechen", "Kann ich mit einem Mitarbeiter reden?", "Mensch bitte",
    "vorrei parlare con un operatore", "posso parlare con una persona?",
    "ik wil met een medewerker spreken", "kan ik praten met een mens?",
]
NOT_ASKS = [
    "Do you donate to the humane society?", "What's on the agenda for the launch?", "Is the price per person?",
    "Do you sell personalised mugs?", "Which agent of change inspired this collection?", "human resources contact?",
    "Persona 5 in stock?", "personne ne répond au téléphone", "Mensa hours?", "Is the agency open on Sunday?",
    "How do I return an item?", "Wie lange dauert der Versand?", "¿Cuánto cuesta el envío?",
]


@pytest.mark.parametrize("text", ASKS)
def test_a_request_for_a_person_is_heard_in_seven_languages(text: str) -> None:
    assert asks_for_person(text), text


@pytest.mark.parametrize("text", NOT_ASKS)
def test_words_that_only_contain_or_resemble_the_phrases_do_not_hand_off(text: str) -> None:
    assert not asks_for_person(text), text


def test_keywords_match_whole_words_and_plurals_not_substrings() -> None:
    assert normalize("  Réfund!! ") == "refund"
    assert keyword_in("I want a refund", ["refund", "lawyer"]) == "refund"
    assert keyword_in("Refunds take how long?", ["refund"]) == "refund"
    assert keyword_in("My LAWYER will call", ["refund", "lawyer"]) == "lawyer"
    assert keyword_in("Is it refundable?", ["refund"]) is None
    assert keyword_in("talk to legal team", ["legal team"]) == "legal team"
    assert keyword_in("anything", []) is None


def test_a_staff_replys_slack_markup_reaches_the_customer_as_plain_text() -> None:
    assert plain_text("See <https://acme.example/returns|our returns page> &amp; <https://acme.example>") == \
        "See our returns page (https://acme.example/returns) & https://acme.example"
    assert plain_text("Thanks <@U0STAFF0001|dana>, 2 &lt; 3") == "Thanks dana, 2 < 3"
    assert plain_text("mail <mailto:help@acme.example|help@acme.example>") == "mail help@acme.example"


def test_the_state_machine_allows_only_the_documented_moves() -> None:
    assert ALLOWED[WAITING] == {BOT, CLOSED}
    assert ALLOWED[WITH_HUMAN] == {WAITING, BOT, CLOSED}
    assert ALLOWED[CLOSED] == {WAITING, WITH_HUMAN}
    assert ALLOWED[BOT] == {WAITING, WITH_HUMAN}
    assert WITH_HUMAN not in ALLOWED[WITH_HUMAN] and CLOSED not in ALLOWED[CLOSED]  # repeats are no-ops


# --- through the gateway ---------------------------------------------------------------------


async def configure(stack: Stack, **overrides: Any) -> None:
    values: dict[str, Any] = dict(staff_channel_id=STAFF_CHANNEL, hours="Mon-Fri 9-17 CET", expected_wait="about 2 hours",
                                  timeout_minutes=30, keywords="refund,lawyer", after_refusals=2)
    values.update(overrides)
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        await handoff_settings.configure(session, tenant_id=stack.tenant_id, **values)


async def settle(stack: Stack) -> None:
    """Answers, relays and button handlers the gateway started, all finished."""
    for _ in range(5):
        await stack.settle()
        if stack.gw.background:
            await asyncio.gather(*set(stack.gw.background), return_exceptions=True)
        else:
            return


async def conversations(stack: Stack) -> list[Conversation]:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return list((await session.execute(select(Conversation).order_by(Conversation.created_at))).scalars())


async def events_of(stack: Stack, row_id: str) -> list[tuple[str, str, str]]:
    async with unit_of_work(stack.sessions, admin=True) as session:
        rows = (await session.execute(select(HandoffEvent).where(HandoffEvent.conversation_id == row_id)
                                      .order_by(HandoffEvent.id))).scalars()
        return [(e.from_state, e.to_state, e.trigger) for e in rows]


def staff_posts(stack: Stack) -> list[dict[str, Any]]:
    return [p for p in stack.slack.posted if p.get("channel") == STAFF_CHANNEL]


def customer_posts(stack: Stack) -> list[dict[str, Any]]:
    return [p for p in stack.slack.posted if p.get("channel") == DM_CHANNEL]


def blocks_of(post: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = post.get("blocks")
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks or [])


def thread_parent(stack: Stack) -> dict[str, Any]:
    [parent] = [p for p in staff_posts(stack) if not p.get("thread_ts")]
    return parent


def parent_ts(stack: Stack) -> str:
    index = stack.slack.posted.index(thread_parent(stack))
    return f"{index + 1}.000100"  # the emulator's ts for the n-th post


def staff_reply(text: str, thread_ts: str, *, user: str = STAFF_USER, ts: str | None = None) -> dict[str, Any]:
    """A person's message in the staff thread, as the Events API delivers a channel message."""
    payload = dm(text)
    ts = ts or f"{time.time():.6f}"
    payload["event"].update(channel=STAFF_CHANNEL, channel_type="channel", user=user, ts=ts, event_ts=ts,
                            thread_ts=thread_ts)
    payload["event"].pop("client_msg_id", None)
    return payload


async def click(stack: Stack, action: str, row_id: str, *, user: str = STAFF_USER) -> Any:
    """A signed Block Kit button click, form-encoded as Slack sends it."""
    ts = parent_ts(stack)
    payload = {
        "type": "block_actions", "team": {"id": TEAM, "domain": "acme"}, "user": {"id": user, "team_id": TEAM},
        "api_app_id": "A0442TUPHGR", "token": "aaaa", "trigger_id": f"{uuid.uuid4().int % 10**12}.1.abc",
        "container": {"type": "message", "message_ts": ts, "channel_id": STAFF_CHANNEL, "is_ephemeral": False},
        "channel": {"id": STAFF_CHANNEL, "name": "support"}, "message": {"type": "message", "ts": ts, "text": "handoff"},
        "response_url": "https://hooks.slack.com/actions/T043DB835ML/1/abc",
        "actions": [{"action_id": f"handoff:{action}:{row_id}", "block_id": f"handoff:{row_id}", "value": row_id,
                     "type": "button", "action_ts": f"{time.time():.6f}"}],
    }
    body = urlencode({"payload": json.dumps(payload)})
    headers = {**slack_headers(body), "Content-Type": "application/x-www-form-urlencoded"}
    response = await stack.client.post("/slack/interactivity", data=body, headers=headers)
    assert response.status == 200
    await settle(stack)
    return response


@pytest.mark.parametrize("db_backend", ["sqlite", "postgres"])
async def test_slack_customer_asks_for_a_human_and_staff_answer_in_their_thread(stack: Stack) -> None:
    # Given a tenant whose staff answer in #support of its own Slack workspace
    await configure(stack)
    # When a customer DMs the bot asking for a person
    assert (await stack.post_slack(dm("Hi! Can I talk to a human?"))).status == 200
    await settle(stack)
    # Then the customer is told, in their DM, that a person will answer and roughly when
    [told] = customer_posts(stack)
    assert "person" in told["text"] and "about 2 hours" in told["text"] and "Mon-Fri 9-17 CET" in told["text"]
    # And one thread opened in the staff channel: who, where, why, the last messages, and the three buttons
    parent = thread_parent(stack)
    [row] = await conversations(stack)
    assert row.state == WAITING and row.handoff_reason == "asked" and row.staff_thread_ts == parent_ts(stack)
    assert "Slack DM" in parent["text"] and "asked for a person" in parent["text"]
    blocks = blocks_of(parent)
    assert "Can I talk to a human?" in json.dumps(blocks)
    buttons = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert buttons == [f"handoff:take:{row.id}", f"handoff:resolve:{row.id}", f"handoff:hand_back:{row.id}"]
    assert row.reply_deadline_at is not None and row.handed_off_at is not None
    assert abs((row.reply_deadline_at - row.handed_off_at) - dt.timedelta(minutes=30)) < dt.timedelta(seconds=1)
    [first] = await stack.messages()
    assert first.outcome == "handed_off"
    assert await events_of(stack, row.id) == [(BOT, WAITING, "asked")]
    async with unit_of_work(stack.sessions, admin=True) as session:  # the event for the tenant's webhooks, staged with it
        staged = [json.loads(m.body) for m in (await session.execute(select(OutboxMessage))).scalars()
                  if m.routing_key.endswith("tenant.event") or "conversation.handed_off" in m.body]
    assert any(s["payload"]["event_type"] == "conversation.handed_off" and s["payload"]["data"]["conversation_id"] == row.id
               for s in staged)
    asked_before = len(stack.retrieval.requests)

    # When the customer writes again while nobody has answered
    await stack.post_slack(dm("Hello? My order #1234 never arrived"))
    await settle(stack)
    # Then the bot stays silent: nothing asked, nothing posted in the DM; the message goes to the thread
    assert len(stack.retrieval.requests) == asked_before and len(customer_posts(stack)) == 1
    relayed = [p for p in staff_posts(stack) if p.get("thread_ts") == parent_ts(stack)]
    assert any("My order #1234 never arrived" in p["text"] for p in relayed)
    assert [m.outcome for m in await stack.messages()] == ["handed_off", "silent"]

    # When a staff member replies in the thread, and Slack retries the delivery
    reply = staff_reply("Hi, I'm Dana from support: I'm looking into order #1234 now &amp; <https://acme.example/t|tracking>.",
                        parent_ts(stack))
    assert (await stack.post_slack(reply)).status == 200
    assert (await stack.post_slack(reply, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})).status == 200
    await settle(stack)
    # Then the reply reaches the customer's DM once, and a person now owns the conversation
    to_customer = [p["text"] for p in customer_posts(stack)]
    # (Slack's markup read as plain text, then escaped again for the customer's Slack: "&amp;" shows as "&")
    assert to_customer.count("Hi, I'm Dana from support: I'm looking into order #1234 now &amp; tracking "
                             "(https://acme.example/t).") == 1
    [row] = await conversations(stack)
    assert row.state == WITH_HUMAN and row.first_human_reply_at is not None
    metrics = await (await stack.client.get("/metrics")).text()
    assert 'parley_gateway_handoffs_total{trigger="asked"} 1.0' in metrics
    assert 'parley_gateway_handoff_relayed_total{channel="slack",outcome="sent"} 1.0' in metrics

    # When staff click Resolve, twice (a double click)
    await click(stack, "resolve", row.id)
    await click(stack, "resolve", row.id)
    # Then the conversation is closed once, the customer told once, the thread says who resolved it
    [row] = await conversations(stack)
    assert row.state == CLOSED and row.closed_at is not None
    assert await events_of(stack, row.id) == [(BOT, WAITING, "asked"), (WAITING, WITH_HUMAN, "staff_reply"),
                                              (WITH_HUMAN, CLOSED, "resolve")]
    assert sum("resolved" in p["text"] for p in customer_posts(stack)) == 1
    assert sum(p["text"] == f"<@{STAFF_USER}> resolved this conversation." for p in staff_posts(stack)) == 1

    # When staff write in the thread of the resolved conversation (and Slack retries it)
    late = staff_reply("One more thing!", parent_ts(stack))
    await stack.post_slack(late)
    await stack.post_slack(late, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    await settle(stack)
    # Then it is not sent to the customer, and the thread says so once
    assert len(customer_posts(stack)) == 3 and "One more thing!" not in [p["text"] for p in customer_posts(stack)]
    assert sum(p["text"].startswith("Not sent to the customer: the conversation is closed") for p in staff_posts(stack)) == 1

    # When the customer asks a question again
    await stack.post_slack(dm("What is your returns policy?"))
    await settle(stack)
    # Then the bot answers again
    assert len(stack.retrieval.requests) == asked_before + 1
    assert (await stack.messages())[-1].outcome in ("answered", "refused")
    assert len(customer_posts(stack)) == 4  # told, Dana's reply, resolved, the answer


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_instagram_customer_asks_in_spanish_staff_reply_is_relayed_and_the_timeout_tells_them_once(
        stack: Stack) -> None:
    # Given a tenant with handoff configured
    await configure(stack, timeout_minutes=15)
    # When an Instagram customer asks for a person in Spanish
    await stack.post_instagram(envelope((IG_ACCOUNT, [text_event("Hola, quiero hablar con una persona")])))
    await settle(stack)
    # Then they are told in their DM, and the staff thread opens in Slack
    [told] = stack.graph.sent
    assert told["recipient"]["id"] == "IGSID-CUSTOMER-1" and "about 2 hours" in told["message"]["text"]
    parent = thread_parent(stack)
    assert "Instagram DM" in parent["text"] and "IGSID-CUSTOMER-1" in parent["text"]
    [row] = await conversations(stack)
    assert row.state == WAITING and row.channel == "instagram"

    # When nobody answers within the tenant's 15 minutes (the deadline passes) and the sweep runs, twice
    async with unit_of_work(stack.sessions, admin=True) as session:
        await session.execute(update(Conversation).where(Conversation.id == row.id)
                              .values(reply_deadline_at=utcnow() - dt.timedelta(minutes=1)))
    first = await stack.gw.handoffs.sweep()
    second = await stack.gw.handoffs.sweep()
    # Then the customer is told once and offered to leave a message, and the thread is flagged once
    assert (first["timeouts"], second["timeouts"]) == (1, 0)
    timeout_notices = [s for s in stack.graph.sent if "Leave a message" in s["message"]["text"]]
    assert len(timeout_notices) == 1
    flags = [p for p in staff_posts(stack) if "No reply within 15 minutes" in p["text"]]
    assert len(flags) == 1 and flags[0]["thread_ts"] == parent_ts(stack)
    [row] = await conversations(stack)
    assert row.flagged and row.state == WAITING
    assert (WAITING, WAITING, "timeout") in await events_of(stack, row.id)
    metrics = await (await stack.client.get("/metrics")).text()
    assert "parley_gateway_handoff_timeouts_total 1.0" in metrics

    # When a staff reply is refused by Instagram
    stack.graph.fail(400, 100, "(#100) The parameter recipient is invalid")
    await stack.post_slack(staff_reply("¿Sigues ahí?", parent_ts(stack)))
    await settle(stack)
    # Then the thread says it was not delivered and why, and it is counted; the conversation still waits
    [warning] = [p for p in staff_posts(stack) if "not delivered" in p["text"]]
    assert "recipient is invalid" in warning["text"] and warning["thread_ts"] == parent_ts(stack)
    assert 'parley_gateway_handoff_relayed_total{channel="instagram",outcome="failed"} 1.0' in \
        await (await stack.client.get("/metrics")).text()
    assert (await conversations(stack))[0].state == WAITING

    # When a staff member replies in the thread again
    await stack.post_slack(staff_reply("Perdona la espera, soy Luis. ¿En qué te ayudo?", parent_ts(stack)))
    await settle(stack)
    # Then the reply goes to the customer's Instagram DM, as a person's message
    assert stack.graph.sent[-1]["message"]["text"] == "Perdona la espera, soy Luis. ¿En qué te ayudo?"
    assert stack.graph.sent[-1]["recipient"]["id"] == "IGSID-CUSTOMER-1"
    [row] = await conversations(stack)
    assert row.state == WITH_HUMAN

    # When staff hand it back to the bot
    await click(stack, "hand_back", row.id)
    # Then the customer is told the assistant is back, and their next question is answered by the bot
    assert "back with the assistant" in stack.graph.sent[-1]["message"]["text"]
    asked = len(stack.retrieval.requests)
    await stack.post_instagram(envelope((IG_ACCOUNT, [text_event("¿Cuánto cuesta el envío?")])))
    await settle(stack)
    assert len(stack.retrieval.requests) == asked + 1


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_refused_answers_in_a_row_and_a_keyword_hand_off(stack: Stack) -> None:
    # Given a tenant that hands off after 2 unanswered questions (it has no documents: nothing is found)
    await configure(stack)
    # When a customer asks two questions the bot cannot answer
    await stack.post_slack(dm("Do you ship to Mars?"))
    await settle(stack)
    [row] = await conversations(stack)
    assert row.state == BOT and row.refused_streak == 1
    await stack.post_slack(dm("What about Jupiter?"))
    await settle(stack)
    # Then the second refusal hands the conversation off, in the same reply that says the bot doesn't know
    [row] = await conversations(stack)
    assert row.state == WAITING and row.handoff_reason == "refusals"
    assert [m.outcome for m in await stack.messages()] == ["refused", "handed_off"]
    last = customer_posts(stack)[-1]["text"]
    assert "person from our team" in last and last.index("person from our team") > 0
    assert len([p for p in staff_posts(stack) if not p.get("thread_ts")]) == 1

    # When the customer then mentions one of the tenant's keywords in that DM, it is silent (a person owns it)
    await stack.post_slack(dm("Another thing: I want a refund for order 77"))
    await settle(stack)
    assert (await stack.messages())[-1].outcome == "silent"
    # When a web chat customer mentions a keyword, it hands off at once
    chat = await stack.client.post("/api/chat", json={"message": "My lawyer says I'm owed a refund", "conversation_id": "c1"},
                                   headers={"Authorization": f"Bearer {stack.api_key}"})
    body = await chat.json()
    assert chat.status == 200 and "person from our team" in body["answer"]
    web = [c for c in await conversations(stack) if c.channel == "web"]
    assert len(web) == 1 and web[0].handoff_reason == "keyword" and web[0].state == WAITING
    # And the web chat, which has no push, sees the staff reply by polling
    await stack.post_slack(staff_reply("Hello from support!", web[0].staff_thread_ts or ""))
    await settle(stack)
    updates = await stack.client.get("/api/chat/updates", params={"conversation_id": "c1"},
                                     headers={"Authorization": f"Bearer {stack.api_key}"})
    data = await updates.json()
    assert updates.status == 200 and data["state"] == WITH_HUMAN
    assert [m["text"] for m in data["messages"]] == ["Hello from support!"] and data["messages"][0]["author"] == "staff"
    again = await stack.client.get("/api/chat/updates", params={"conversation_id": "c1", "after": data["cursor"]},
                                   headers={"Authorization": f"Bearer {stack.api_key}"})
    assert (await again.json())["messages"] == []


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_thumbs_down_then_another_question_hands_off(stack: Stack) -> None:
    from bot.feedback import service as feedback

    # Given an answered question whose answer the customer rated down
    await configure(stack, after_refusals=0)
    await stack.post_slack(dm("How long does shipping take?"))
    await settle(stack)
    [answered] = await stack.messages()
    async with unit_of_work(stack.sessions, tenant_id=stack.tenant_id) as session:
        await feedback.rate(session, tenant_id=stack.tenant_id, message_id=answered.id, rater_id=answered.sender_id,
                            rating="down", channel="slack")
    # When the customer asks a further question
    await stack.post_slack(dm("And to Austria?"))
    await settle(stack)
    # Then the conversation is handed to a person
    [row] = await conversations(stack)
    assert row.state == WAITING and row.handoff_reason == "thumbs_down"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_restarted_gateway_carries_on_and_ignores_threads_that_are_not_handoffs(make_stack) -> None:
    # Given a conversation handed off by one gateway, which then stops
    first = await make_stack()
    await configure(first)
    await first.post_slack(dm("talk to someone please"))
    await settle(first)
    ts = parent_ts(first)
    [row] = await conversations(first)
    await first.close()
    # When a new gateway on the same database gets the customer's next message and a staff reply
    second = await make_stack()
    await second.post_slack(dm("still there?"))
    await settle(second)
    assert (await second.messages())[-1].outcome == "silent"
    await second.post_slack(staff_reply("Yes! Sorry for the wait.", ts))
    # And a reply in some other thread of the channel, a note among staff, and a bot's message in the handoff thread
    await second.post_slack(staff_reply("unrelated chatter", "1111.2222"))
    await second.post_slack(staff_reply("// she called us yesterday too", ts))
    bot_post = staff_reply("a bot speaking", ts)
    bot_post["event"]["bot_id"] = "B0OTHERBOT"
    await second.post_slack(bot_post)
    await settle(second)
    # Then it carries on: the staff reply is relayed once, the rest is not
    to_customer = [p["text"] for p in customer_posts(second)]
    assert to_customer.count("Yes! Sorry for the wait.") == 1
    assert not {"unrelated chatter", "a bot speaking", "// she called us yesterday too"} & set(to_customer)
    async with unit_of_work(second.sessions, admin=True) as session:
        relays = list((await session.execute(select(HandoffMessage))).scalars())
    assert [(m.author, m.status) for m in relays] == [("staff", "sent")]
    [row] = await conversations(second)
    assert row.state == WITH_HUMAN
    # And a Take click on a conversation already taken changes nothing
    await click(second, "take", row.id)
    assert await events_of(second, row.id) == [(BOT, WAITING, "asked"), (WAITING, WITH_HUMAN, "staff_reply")]


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_widget_visitor_is_handed_off_and_sees_the_staff_reply_only_in_their_own_chat(stack: Stack) -> None:
    from tests.bot.test_widget import FRAME, ask, new_widget, visitor

    # Given a tenant with handoff and a widget on its shop, and two anonymous visitors
    await configure(stack)
    widget_id = await new_widget(stack)
    alice = await (await visitor(stack, widget_id)).json()
    bob = await (await visitor(stack, widget_id)).json()
    # When Alice asks for a person
    asked = await (await ask(stack, widget_id, alice["token"], "I need a real person", conversation_id="c1")).json()
    assert "person from our team" in asked["answer"]
    # And staff answer in the thread
    await stack.post_slack(staff_reply("Hi Alice, how can I help?", parent_ts(stack)))
    await settle(stack)

    async def poll(token: str) -> Any:
        response = await stack.client.post(f"/chat/w/{widget_id}/updates", json={"conversation_id": "c1", "after": 0},
                                           headers={**FRAME, "Authorization": f"Bearer {token}"})
        assert response.status == 200
        return await response.json()

    # Then Alice's frame sees the reply; Bob, with the same conversation name, sees nothing of it
    mine = await poll(alice["token"])
    assert mine["state"] == WITH_HUMAN and [m["text"] for m in mine["messages"]] == ["Hi Alice, how can I help?"]
    assert await poll(bob["token"]) == {"state": BOT, "messages": [], "cursor": 0}
    # And her next message is not answered by the bot: the frame is told a person has it
    silent = await (await ask(stack, widget_id, alice["token"], "Thanks! My order is #55", conversation_id="c1")).json()
    assert silent["status"] == "ignored" and silent["answer"] is None
    # And a poll without a session, or with a bad cursor, is refused
    anonymous = await stack.client.post(f"/chat/w/{widget_id}/updates", json={"conversation_id": "c1"}, headers=FRAME)
    assert anonymous.status == 401
    bad = await stack.client.post(f"/chat/w/{widget_id}/updates", json={"conversation_id": "c1", "after": "x"},
                                  headers={**FRAME, "Authorization": f"Bearer {alice['token']}"})
    assert bad.status == 400
