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

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from bot.conversation.dispatcher import AnswerDispatcher
from bot.conversation.priority import AckPriority
from bot.conversation.schemas import Channel, Reply
from bot.conversation.service import ConversationService, Outcome
from parley.errors import ParleyError

log = logging.getLogger("parley.gateway.answering")


@dataclass
class AnswerLoop:
    service: ConversationService
    dispatcher: AnswerDispatcher
    #: Notices (`tell`) on their way at most; more are dropped (bounded memory in a flood).
    max_notices: int = 100
    _notices: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.priority = AckPriority()
        self.service.priority = self.priority

    async def start(self, *, recover: bool = True) -> None:
        await self.dispatcher.start(recover=recover)

    async def stop(self, grace: float) -> None:
        await self.dispatcher.stop(timeout=grace)
        if self._notices:
            await asyncio.wait(set(self._notices), timeout=grace)
            for task in set(self._notices):
                task.cancel()
            await asyncio.gather(*set(self._notices), return_exceptions=True)

    def submit(self, tenant_id: str, message_id: str) -> bool:
        """Answer in the background (returns at once). False when the backlog is full (the message
        stays stored; the recovery sweep answers it)."""
        return self.dispatcher.submit(tenant_id, message_id)

    def has_room(self, tenant_id: str) -> bool:
        """Would the tenant's answer backlog take one more message?"""
        return self.dispatcher.has_room(tenant_id)

    def tell(self, tenant_id: str, channel: str, route: dict[str, Any], text: str) -> bool:
        """Post a short notice into the conversation, in the background, in one attempt (a limit's
        "slow down"). False when it cannot be sent: no such channel, or too many on their way."""
        target = self.service.channels.get(channel)
        if target is None or len(self._notices) >= self.max_notices:
            return False
        task = asyncio.create_task(self._tell(target, tenant_id, route, text), name=f"notice-{channel}")
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)
        return True

    async def _tell(self, channel: Channel, tenant_id: str, route: dict[str, Any], text: str) -> None:
        outcome = "sent"
        try:
            await channel.send(tenant_id=tenant_id, route=route, reply=Reply(text), progress={})
        except ParleyError as exc:
            outcome = "failed"
            log.warning("could not post a notice: %s", exc, extra={"tenant_id": tenant_id})
        except Exception:  # noqa: BLE001 - a notice is a courtesy; never worth more than a log line
            outcome = "failed"
            log.exception("posting a notice failed", extra={"tenant_id": tenant_id})
        self.service.metrics.limit_notices.labels(channel.name, outcome).inc()

    def record_ack(self, tenant_id: str, message_id: str, ack_ms: float) -> None:
        self.service.record_ack(tenant_id, message_id, ack_ms)

    async def run(self, tenant_id: str, message_id: str) -> Outcome:
        """Answer now and wait for the outcome (the web chat)."""
        return await self.dispatcher.run(tenant_id, message_id)

    async def drain(self) -> None:
        """Wait until nothing is being answered and no notice is on its way (tests, benchmarks)."""
        await self.dispatcher.drain()
        while self._notices:
            await asyncio.gather(*set(self._notices), return_exceptions=True)

    @property
    def in_flight(self) -> int:
        return self.dispatcher.in_flight

    @property
    def notices_in_flight(self) -> int:
        return len(self._notices)
