"""Answering as the webhook side sees it: ``submit`` a stored message, ``run`` one for the web chat.

Acking a webhook takes a few milliseconds of work; answering one takes a few more (claim, turns,
retrieval, the vendor call, the record) spread over seconds of waiting. Both share the event loop,
so answering yields to webhooks in progress (`AckPriority`): an answer task waits (briefly, never
starving) before each of its steps while an ack is being worked on.

Measured alternative, not kept: answering on an event loop of its own in a thread. With SQLite
the two loops' writers fight over the database's single write lock (ack p99 1.5-5 s at 100
messages/s, against 0.24-0.7 s on one loop); with PostgreSQL it was no better than one loop
(p99 87-464 ms against 134-189 ms over three runs each) - the GIL still serialises the work, and a
busy thread makes the other wait a switch interval at every wake-up. Isolating answering for real
means another process (see the gateway report).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.conversation.dispatcher import AnswerDispatcher
from bot.conversation.priority import AckPriority
from bot.conversation.service import ConversationService, Outcome


@dataclass
class AnswerLoop:
    service: ConversationService
    dispatcher: AnswerDispatcher

    def __post_init__(self) -> None:
        self.priority = AckPriority()
        self.service.priority = self.priority

    async def start(self, *, recover: bool = True) -> None:
        await self.dispatcher.start(recover=recover)

    async def stop(self, grace: float) -> None:
        await self.dispatcher.stop(timeout=grace)

    def submit(self, tenant_id: str, message_id: str) -> None:
        """Answer in the background (returns at once)."""
        self.dispatcher.submit(tenant_id, message_id)

    def record_ack(self, tenant_id: str, message_id: str, ack_ms: float) -> None:
        self.service.record_ack(tenant_id, message_id, ack_ms)

    async def run(self, tenant_id: str, message_id: str) -> Outcome:
        """Answer now and wait for the outcome (the web chat)."""
        return await self.dispatcher.run(tenant_id, message_id)

    async def drain(self) -> None:
        """Wait until nothing is being answered (tests, benchmarks)."""
        await self.dispatcher.drain()

    @property
    def in_flight(self) -> int:
        return self.dispatcher.in_flight
