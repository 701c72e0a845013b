"""Answering in the background, bounded per tenant and in total, with recovery sweeps.

The webhook path only calls `submit` (it never waits for an answer). Each message then waits for
its tenant's semaphore and a global one, so one tenant's burst queues behind itself instead of
taking every retrieval slot. The web chat calls `run`, which waits under the same bounds.

Recovery: `start` claims what a previous process left unfinished (younger than the window):
``received`` messages, and ``answering`` ones whose holder's lease ran out. A sweep every
``sweep_interval`` repeats that for ``received`` messages nobody claimed within a grace period
(another replica died after storing them) and for expired leases (a replica died mid-answer).
The claim in `ConversationService.process` makes each answer happen once.

The backlog is bounded: at most ``max_backlog`` messages of one tenant (``max_total`` of all) wait
for or are being answered here, web chat included. `submit` refuses past that (the message stays
stored; the doors shed it first, see `bot.limits`, and the recovery sweep takes what is left), so a
flood costs a bounded number of tasks, never one per message.
On `stop`, running answers get ``timeout`` seconds; the rest are cancelled and their claims given
back, so the next start answers them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.conversation.repository import RECEIVED, WAITING
from bot.conversation.service import ConversationService, Outcome
from parley.keyed_locks import KeyedSemaphores

log = logging.getLogger("parley.gateway.dispatcher")


class AnswerDispatcher:
    def __init__(self, service: ConversationService, *, per_tenant: int = 4, total: int = 64,
                 sweep_interval: float = 30.0, max_backlog: int = 200, max_total: int = 2000) -> None:
        self.service = service
        self.per_tenant = per_tenant
        self.max_backlog, self.max_total = max_backlog, max_total
        self._backlog: dict[str, int] = {}  # tenant -> messages waiting for or being answered
        self._queued = 0
        self.sweep_interval = sweep_interval
        self._total = asyncio.Semaphore(total)
        #: per tenant, only while one of its answers runs or waits (no entry per tenant ever seen)
        self._tenants: KeyedSemaphores[str] = KeyedSemaphores(per_tenant)
        self._tasks: set[asyncio.Task[Outcome]] = set()
        self._pending: set[str] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        #: Finished outcomes by message id, newest last (bounded; for tests and /readyz-style introspection).
        self.finished: dict[str, Outcome] = {}

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self, *, recover: bool = True) -> None:
        if recover:
            await self.recover(at_start=True)
        self._sweeper = asyncio.create_task(self._sweep(), name="parley-answer-recovery")

    async def stop(self, timeout: float = 10.0) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def queued(self) -> int:
        """Messages of every tenant waiting for or being answered (background and web chat)."""
        return self._queued

    def has_room(self, tenant_id: str) -> bool:
        return self._queued < self.max_total and self._backlog.get(tenant_id, 0) < self.max_backlog

    @property
    def tenants_answering(self) -> int:
        """Tenants with an answer running or waiting for a slot now (the per-tenant limits held)."""
        return len(self._tenants)

    def _enter(self, tenant_id: str) -> None:
        self._backlog[tenant_id] = self._backlog.get(tenant_id, 0) + 1
        self._queued += 1

    def _leave(self, tenant_id: str) -> None:
        self._queued -= 1
        left = self._backlog[tenant_id] - 1
        if left:
            self._backlog[tenant_id] = left
        else:
            del self._backlog[tenant_id]

    # --- work -----------------------------------------------------------------------------
    def submit(self, tenant_id: str, message_id: str, *, status: str = RECEIVED, attempts: int | None = None) -> bool:
        """Answer in the background. False if it is already queued here, the backlog is full or the
        dispatcher stopped (the message stays stored for the recovery sweep)."""
        if self._closed or message_id in self._pending or not self.has_room(tenant_id):
            return False
        self._pending.add(message_id)
        self._enter(tenant_id)
        task = asyncio.create_task(self._guarded(tenant_id, message_id, status, attempts), name=f"answer-{message_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._leave(tenant_id))
        return True

    async def run(self, tenant_id: str, message_id: str) -> Outcome:
        """Answer now and wait for it (the web chat), under the same bounds (its door checks `has_room`)."""
        self._pending.add(message_id)
        self._enter(tenant_id)
        try:
            return await self._bounded(tenant_id, message_id, RECEIVED, None)
        finally:
            self._pending.discard(message_id)
            self._leave(tenant_id)

    async def drain(self) -> None:
        """Wait until nothing is being answered (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*set(self._tasks), return_exceptions=True)

    async def _guarded(self, tenant_id: str, message_id: str, status: str, attempts: int | None) -> Outcome:
        try:
            outcome = await self._bounded(tenant_id, message_id, status, attempts)
        except asyncio.CancelledError:
            raise
        except Exception:  # process() records its own failures; this is a bug or the database being down
            log.exception("answering task failed; the recovery sweep retries it", extra={"message_id": message_id})
            outcome = Outcome(message_id, "error")
        finally:
            self._pending.discard(message_id)
        self.finished[message_id] = outcome
        if len(self.finished) > 10_000:
            self.finished.pop(next(iter(self.finished)))
        if outcome.status == WAITING:  # its files may have been read before it was recorded waiting
            await self.release_ready(tenant_id)
        return outcome

    async def release_ready(self, tenant_id: str | None = None) -> int:
        """Answer the waiting questions (of the tenant, or of all) whose files are read (see
        `ConversationService.release_ready`). Never raises: the sweeps try again."""
        try:
            woken = await self.service.release_ready(tenant_id)
        except Exception:
            log.exception("could not check the questions waiting for their files; the next sweep does")
            return 0
        for row in woken:  # turned back into received: the recovery takes any the backlog refuses now
            self.submit(row.tenant_id, row.message_id)
        return len(woken)

    async def _bounded(self, tenant_id: str, message_id: str, status: str, attempts: int | None) -> Outcome:
        async with self._tenants.hold(tenant_id), self._total:
            self.service.metrics.in_flight.inc()
            try:
                return await self.service.process(tenant_id, message_id, status=status, attempts=attempts)
            finally:
                self.service.metrics.in_flight.dec()

    # --- recovery -------------------------------------------------------------------------
    async def recover(self, *, at_start: bool) -> int:
        await self.release_ready()  # questions whose files were read while nobody listened (a restart)
        await self.service.handoffs.sweep()  # handoff timeouts, staff threads and replies left undone (never raises)
        found = await self.service.recoverable(at_start=at_start)
        taken = 0
        for row in found:
            if self.submit(row.tenant_id, row.message_id, status=row.status, attempts=row.attempts):
                taken += 1
        if taken:
            self.service.metrics.recovered.inc(taken)
            log.info("recovering unanswered messages", extra={"count": taken, "at_start": at_start})
        return taken

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.recover(at_start=False)
            except Exception:
                log.exception("recovery sweep failed; trying again at the next one")
