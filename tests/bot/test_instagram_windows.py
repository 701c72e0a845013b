"""Meta's messaging windows through the real gateway and the Graph emulator (which enforces them the
way Graph does): the bot's answer 25 hours after the customer's last message is refused before
anything is sent, recorded and counted; a person's reply at 3 days goes out tagged HUMAN_AGENT, at
8 days it is refused; a refusal by Graph is recorded and raised, never swallowed."""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.conversation.schemas import DeliveryError, Reply
from bot.conversation.windows import OutsideMessagingWindow
from bot.models import DeliveryFailure
from parley.db import unit_of_work
from tests.bot.conftest import IG_ACCOUNT, IG_TOKEN, Stack

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

HOUR = 3600


def _event(text: str, sender: str, *, age: float = 0.0) -> dict[str, Any]:
    """A customer's Instagram message as Meta delivers it, sent ``age`` seconds ago."""
    stamp = int((time.time() - age) * 1000)
    return {"object": "instagram", "entry": [{"id": IG_ACCOUNT, "time": int(time.time() * 1000), "messaging": [
        {"sender": {"id": sender}, "recipient": {"id": IG_ACCOUNT}, "timestamp": stamp,
         "message": {"mid": f"aWdfZAG1{uuid.uuid4().hex}", "text": text}}]}]}


async def _failures(stack: Stack) -> list[DeliveryFailure]:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return list((await session.execute(select(DeliveryFailure).order_by(DeliveryFailure.at))).scalars())


async def _metrics(stack: Stack) -> str:
    return await (await stack.client.get("/metrics")).text()


def _route(sender: str) -> dict[str, str]:
    return {"account": IG_ACCOUNT, "recipient": sender}


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_an_answer_25_hours_after_the_last_message_is_refused_recorded_and_counted(stack: Stack) -> None:
    # Given a customer's question that reaches us 25 hours after they sent it
    await stack.post_instagram(_event("Is the blue tent still available?", "IGSID-LATE", age=25 * HOUR))
    await stack.settle()
    # Then nothing was sent to Graph (not even tried: the emulator refused nothing either)
    assert stack.graph.sent == [] and stack.graph.refused == []
    # And the message ends with the reason in words
    (message,) = await stack.messages(channel="instagram")
    reason = "the customer's last message was 25 hours ago; Instagram allows replies for 24 hours"
    assert (message.status, message.error) == ("expired", reason)
    # And the refusal is recorded with the conversation and counted
    (failure,) = await _failures(stack)
    assert (failure.reason_code, failure.by, failure.message_id, failure.detail) == ("outside_window", "bot", message.id, reason)
    assert failure.conversation_id == message.conversation_id
    assert 'parley_gateway_delivery_failures_total{by="bot",channel="instagram",reason="outside_window"} 1.0' \
        in await _metrics(stack)
    # And the conversation's API shows it
    shown = await (await stack.client.get(f"/api/conversations/{message.id}",
                                          headers={"Authorization": f"Bearer {stack.api_key}"})).json()
    assert [(f["reason_code"], f["detail"]) for f in shown["delivery_failures"]] == [("outside_window", reason)]
    # And so does the dashboard's Conversations page, beside the message
    signed_in = await stack.client.post("/admin/login", data={"api_key": stack.api_key, "next": "/admin/conversations"},
                                        allow_redirects=False)
    assert signed_in.status == 303
    (listed,) = (await (await stack.client.get("/admin/api/conversations")).json())["messages"]
    assert [(f["reason_code"], f["by"], f["detail"]) for f in listed["delivery_failures"]] == [("outside_window", "bot", reason)]


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_persons_reply_is_tagged_human_agent_up_to_7_days_and_refused_after(stack: Stack) -> None:
    # Given one customer who last wrote 3 days ago and one who last wrote 8 days ago
    await stack.post_instagram(_event("Hello? Anyone?", "IGSID-3DAYS", age=72 * HOUR))
    await stack.post_instagram(_event("Still waiting.", "IGSID-8DAYS", age=8 * 24 * HOUR))
    await stack.settle()  # too old for the bot: both recorded as expired
    instagram = stack.gw.channels["instagram"]
    bot_refusals = len(await _failures(stack))

    # When a person replies to the first (the handoff relays a staff reply with by="human")
    await instagram.send(tenant_id=stack.tenant_id, route=_route("IGSID-3DAYS"), reply=Reply("Sorry for the wait: yes, it is."),
                         progress={}, by="human")
    # Then it goes out with Meta's human agent tag, and the emulator (which enforces Meta's windows) accepts it
    (sent,) = stack.graph.sent
    assert (sent["messaging_type"], sent["tag"], sent["message"]["text"]) == \
        ("MESSAGE_TAG", "HUMAN_AGENT", "Sorry for the wait: yes, it is.")

    # When the bot tries to write to that customer, or a person to the one of 8 days ago
    with pytest.raises(OutsideMessagingWindow) as bot:
        await instagram.send(tenant_id=stack.tenant_id, route=_route("IGSID-3DAYS"), reply=Reply("Anything else?"), progress={})
    with pytest.raises(OutsideMessagingWindow) as late:
        await instagram.send(tenant_id=stack.tenant_id, route=_route("IGSID-8DAYS"), reply=Reply("Hi!"), progress={},
                             by="human")
    # Then both are refused before reaching Graph, saying why, and recorded
    assert len(stack.graph.sent) == 1 and stack.graph.refused == []
    assert str(bot.value) == ("the customer's last message was 3 days ago; Instagram allows replies for 24 hours; "
                              "a person can still reply for up to 7 days")
    assert str(late.value) == ("the customer's last message was 8 days ago; Instagram allows a person's replies "
                               "(tagged HUMAN_AGENT) for 7 days")
    assert late.value.code == "outside_messaging_window"
    new = (await _failures(stack))[bot_refusals:]
    assert [(f.reason_code, f.by, f.conversation_id) for f in new] == [
        ("outside_window", "bot", f"instagram:{IG_ACCOUNT}:IGSID-3DAYS"),
        ("outside_window", "human", f"instagram:{IG_ACCOUNT}:IGSID-8DAYS")]
    assert 'parley_gateway_delivery_failures_total{by="human",channel="instagram",reason="outside_window"} 1.0' \
        in await _metrics(stack)

    # And the emulator refuses such sends itself, with Graph's error (so our check is not the only guard in the test)
    url = f"{stack.graph_url.rstrip('/')}/{stack.graph.version}/me/messages"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {IG_TOKEN}"}) as http:
        untagged = await http.post(url, json={"recipient": {"id": "IGSID-3DAYS"}, "messaging_type": "RESPONSE",
                                              "message": {"text": "untagged"}})
        too_late = await http.post(url, json={"recipient": {"id": "IGSID-8DAYS"}, "messaging_type": "MESSAGE_TAG",
                                              "tag": "HUMAN_AGENT", "message": {"text": "tagged"}})
        assert (untagged.status, too_late.status) == (400, 400)
        error = (await untagged.json())["error"]
        assert (error["code"], error["error_subcode"]) == (10, 2018278)


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_refusal_by_graph_is_recorded_and_raised_not_swallowed(stack: Stack) -> None:
    # Given Graph refusing the next send (the person cannot receive messages), and a customer asking now
    stack.graph.fail(400, 551, "This person isn't available right now.", subcode=1545041)
    await stack.post_instagram(_event("Do you have gift cards?", "IGSID-GONE"))
    await stack.settle()
    # Then the answer is not retried, the message ends failed with Graph's reason, and the refusal is recorded
    assert stack.graph.sent == []
    (message,) = await stack.messages(channel="instagram")
    assert message.status == "failed" and "This person isn't available right now." in message.error
    (failure,) = await _failures(stack)
    assert (failure.reason_code, failure.by, failure.message_id) == ("graph_refused", "bot", message.id)
    assert "This person isn't available right now. (code 551, subcode 1545041)" in failure.detail

    # Given Graph refusing a person's reply for its window (its own clock is what counts)
    stack.graph.fail(400, 10, "(#10) This message is sent outside of allowed window.", subcode=2018278)
    # When the handoff relays it
    with pytest.raises(DeliveryError) as refused:
        await stack.gw.channels["instagram"].send(tenant_id=stack.tenant_id, route=_route("IGSID-GONE"),
                                                  reply=Reply("A person here."), progress={}, by="human")
    # Then the caller gets Graph's reason, and it is recorded and counted
    assert "outside of allowed window" in str(refused.value) and not refused.value.retryable
    assert [(f.reason_code, f.by) for f in await _failures(stack)] == [("graph_refused", "bot"), ("graph_refused", "human")]
    metrics = await _metrics(stack)
    assert 'parley_gateway_delivery_failures_total{by="bot",channel="instagram",reason="graph_refused"} 1.0' in metrics
    assert 'parley_gateway_delivery_failures_total{by="human",channel="instagram",reason="graph_refused"} 1.0' in metrics
