"""The consumer wrapper: typed handlers by message type, one unit of work per message, ack after commit.

Per delivery::

    parse envelope ── unreadable ────────────────────────────────────────────► dead letter
    bind correlation/message/tenant ids into the logging context
    unit of work (session bound to the message's tenant):
        already processed by this consumer, or this very message already dead-lettered?
                                            ── yes: commit, ack ("duplicate")
        handler(Received(envelope, payload, session)), within handler_timeout (25 min < consumer_timeout)
        mark processed (conflict: a concurrent copy won, roll back, ack)
        drop the message from its tenant's backlog
    commit ─► ack                                                                     ("ok")
    error ─► the database does not answer? ─► not the message's fault: its attempt does not count; hold it
             (the prefetch window fills, so the consumer stops taking work) until the database answers
             or ``outage_hold`` passed, then nack(requeue)                                    ("requeued")
             Failure.of(exc): retryable and attempt < max_attempts
                 ─► republish attempt+1 through a delay tier (exponential backoff, jitter), ack   ("retry")
             otherwise
                 ─► unit of work: on_dead_letter hook + dead_letter row + backlog; commit
                 ─► publish to <queue>.dlq with x-parley-error / x-parley-attempts headers; ack    ("dead")
             the retry or dead-letter step itself failing ─► short pause, nack(requeue)       ("requeued")

Poison messages the broker dead-lettered itself (quorum queues' ``x-delivery-limit``: the message
killed its worker again and again, so the steps above never ran) are adopted at start: recorded
with the route's ``on_dead_letter`` hook like any dead letter (``delivery_limit``), their DLQ copy
given our headers. A worker that crashed on one is restarted, so its restart finds it.

Graceful stop: cancel the broker consumer, wait for in-flight handlers up to a deadline, cancel the
rest (their transactions roll back) and nack-requeue them, close the channel. A delivery whose
channel died (connection lost) cannot be acked; the broker redelivers it and the processed marker
makes the second run a no-op if the first committed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.bus import context
from parley.bus.broker import Broker, Delivery, Outgoing, Subscription
from parley.bus.dead_letters import is_dead_lettered, record_dead_letter
from parley.bus.envelope import (
    H_ATTEMPT,
    H_ATTEMPTS,
    H_CONSUMER,
    H_DEAD_AT,
    H_DELAY,
    H_ERROR,
    H_ERROR_CODE,
    H_QUEUE,
    H_TENANT,
    Envelope,
)
from parley.bus.errors import HOOK_FAILED_NOTE, Failure, Permanent, Retryable
from parley.bus.idempotency import already_processed, mark_processed
from parley.bus.outbox import finish_pending
from parley.db import new_id, unit_of_work, utcnow

log = logging.getLogger(__name__)

P = TypeVar("P")


@dataclass(frozen=True)
class Received(Generic[P]):
    """What a handler gets: the envelope, its payload parsed into the registered model, the session."""

    envelope: Envelope
    payload: P
    session: AsyncSession
    consumer: str


Handler = Callable[[Received[Any]], Awaitable[None]]
#: ``(outcome, envelope or None, failure or None, seconds)``, called once per delivery (metrics).
OutcomeListener = Callable[[str, Envelope | None, Failure | None, float], None]
#: ``(session, envelope, failure)``, run in its own unit of work before the DLQ publish.
DeadLetterHook = Callable[[AsyncSession, Envelope, Failure], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    handler: Handler
    payload_model: type[BaseModel] | None
    on_dead_letter: DeadLetterHook | None

    def parse(self, envelope: Envelope) -> Any:
        return envelope.payload if self.payload_model is None else self.payload_model.model_validate(envelope.payload)


@dataclass(frozen=True)
class Backoff:
    """``base * factor**(attempt-1)`` capped, times a random factor in ``[1-jitter, 1+jitter]``;
    the consumer then picks one of the two delay tiers around that at random
    (`Topology.spread_delay`), so the jitter survives the fixed tiers."""

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.5

    def delay(self, attempt: int) -> float:
        raw = min(self.cap, self.base * self.factor ** max(0, attempt - 1))
        return raw * random.uniform(1 - self.jitter, 1 + self.jitter)


class _AlreadyDone(Exception):
    """Another delivery of the same message committed first."""


class Consumer:
    def __init__(
        self,
        *,
        name: str,
        queue: str,
        broker: Broker,
        sessions: async_sessionmaker[AsyncSession],
        max_attempts: int = 5,
        prefetch: int = 8,
        backoff: Backoff | None = None,
        idempotent: bool = True,
        requeue_pause: float = 1.0,
        handler_timeout: float | None = 25 * 60,
        outage_hold: float = 60.0,
        tenant_exists: Callable[[AsyncSession, str], Awaitable[bool]] | None = None,
    ) -> None:
        broker.topology.check(queue)
        self.name = name
        self.queue = queue
        self.broker = broker
        self.sessions = sessions
        self.max_attempts = max_attempts
        self.prefetch = prefetch
        delays = broker.topology.delays
        self.backoff = backoff or Backoff(base=delays[0], cap=delays[-1])
        self.idempotent = idempotent
        self.requeue_pause = requeue_pause
        # RabbitMQ closes the channel of a delivery unacked for 30 min (consumer_timeout): give up first.
        self.handler_timeout = handler_timeout
        #: How long a delivery is held while the database is unreachable before it goes back to the queue.
        self.outage_hold = outage_hold
        #: Is the message's tenant still there? A message of a deleted tenant (queued before
        #: `parley tenants delete`) is acked and logged as ``dropped``: no handler, no dead letter.
        self.tenant_exists = tenant_exists
        #: How each delivery ended: ok, duplicate, retry, dead, requeued.
        self.outcomes: collections.Counter[str] = collections.Counter()
        #: Called with every delivery's outcome (`parley.observability` counts them); must not block.
        self.listeners: list[OutcomeListener] = []
        self._routes: dict[str, Route] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._subscription: Subscription | None = None
        self._stopping = False

    # --- registry -------------------------------------------------------------------------
    def register(
        self,
        message_type: str,
        handler: Handler,
        payload: type[BaseModel] | None = None,
        *,
        on_dead_letter: DeadLetterHook | None = None,
    ) -> None:
        if message_type in self._routes:
            raise ValueError(f"{self.name}: a handler for {message_type} is already registered")
        self._routes[message_type] = Route(handler, payload, on_dead_letter)

    def handler(
        self, message_type: str, payload: type[BaseModel] | None = None, *, on_dead_letter: DeadLetterHook | None = None
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(fn: Handler) -> Handler:
            self.register(message_type, fn, payload, on_dead_letter=on_dead_letter)
            return fn

        return decorate

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        self._stopping = False
        if self.broker.topology.queue_type == "quorum":
            await self.adopt_broker_dead_letters()
        self._subscription = await self.broker.consume(self.queue, prefetch=self.prefetch, callback=self._on_delivery)

    async def adopt_broker_dead_letters(self) -> int:
        """Record the dead letters the broker made of this queue's messages (see the module docstring).
        Never fails the start: a problem is logged and the next start tries again. Returns how many."""
        try:
            adopted = await self.broker.adopt_dead(self.queue, self._adopt)
        except Exception:
            log.exception("%s: could not record the dead letters the broker made; the next start tries again", self.name)
            return 0
        if adopted:
            log.warning("%s: %d message(s) dead-lettered by the broker after %d deliveries recorded (`parley dlq list`)",
                        self.name, adopted, self.broker.topology.delivery_limit + 1)
        return adopted

    async def _adopt(self, delivery: Delivery) -> dict[str, Any]:
        headers = delivery.headers or {}
        why = str(headers.get("x-first-death-reason") or "dead-lettered by the broker")
        deliveries = self.broker.topology.delivery_limit + 1
        failure = Failure("delivery_limit", f"delivery_limit: delivered {deliveries} times and never finished (the "
                          f"worker crashed or gave it back each time), so RabbitMQ dead-lettered it ({why})", False)
        try:
            envelope: Envelope | None = Envelope.from_bytes(delivery.body)
        except ValueError:
            envelope = None
        route = self._routes.get(envelope.type) if envelope is not None else None
        history = [{"attempt": envelope.attempt if envelope else 1, "at": utcnow().isoformat(), "error": failure.reason}]
        return await self._record_dead(delivery, envelope, route, history, failure)

    async def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        if self._subscription is not None:
            await self._subscription.cancel()
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in unfinished:
                task.cancel()  # rolls the handler's transaction back, then nack-requeues (see _process)
            await asyncio.gather(*unfinished, return_exceptions=True)
        if self._subscription is not None:
            await self._subscription.close()
            self._subscription = None

    async def _on_delivery(self, delivery: Delivery) -> None:
        if self._stopping:
            await self._settle(delivery.nack(requeue=True))
            return
        # Our own task, not the broker client's: a lost channel must not cancel a handler mid-commit.
        task = asyncio.create_task(self._process(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- one delivery ---------------------------------------------------------------------
    async def _process(self, delivery: Delivery) -> None:
        try:
            await self._process_one(delivery)
        except asyncio.CancelledError:
            self.outcomes["requeued"] += 1
            await self._settle(delivery.nack(requeue=True))
            raise

    async def _process_one(self, delivery: Delivery) -> None:
        started = time.monotonic()
        try:
            envelope = Envelope.from_bytes(delivery.body)
        except ValueError as exc:
            malformed = Failure("malformed_message", f"malformed_message: not a Parley envelope ({type(exc).__name__})", False)
            with context.bind(message_id=delivery.message_id):
                outcome = await self._guard(delivery, self._dead_letter(delivery, None, None, [], malformed))
                self._log(outcome, None, started, malformed)
            return
        route = self._routes.get(envelope.type)
        with context.bind(
            correlation_id=envelope.correlation_id,
            message_id=envelope.id,
            tenant_id=envelope.tenant_id,
            message_type=envelope.type,
        ):
            failure: Failure | None = None
            try:
                outcome = await self._handle(route, envelope)
            except Exception as exc:
                failure = Failure.of(exc)
                if failure.code == "unexpected":
                    log.warning("%s: unexpected error in handler", self.name, exc_info=exc)
                outcome = await self._guard(delivery, self._fail(delivery, envelope, route, failure))
            else:
                await self._settle(delivery.ack())
            self._log(outcome, envelope, started, failure)

    async def _handle(self, route: Route | None, envelope: Envelope) -> str:
        if route is None:
            raise Permanent(f"no handler for {envelope.type} in consumer {self.name}", code="no_handler")
        key = envelope.idempotency_key
        deadline = asyncio.timeout(self.handler_timeout)
        try:
            async with deadline, self._unit_of_work(envelope) as session:
                if self.idempotent and await already_processed(session, self.name, key):
                    await finish_pending(session, envelope.id)
                    return "duplicate"
                if await is_dead_lettered(session, queue=self.queue, message_id=envelope.id):
                    # A copy of a message that already failed for good (a duplicate, or a redelivery
                    # after a crash between the dead-letter commit and the ack): its outcome stands.
                    await finish_pending(session, envelope.id)
                    return "duplicate"
                if (self.tenant_exists is not None and envelope.tenant_id
                        and not await self.tenant_exists(session, envelope.tenant_id)):
                    await finish_pending(session, envelope.id)
                    log.info("%s: %s for a tenant that no longer exists: dropped", self.name, envelope.type)
                    return "dropped"
                await route.handler(Received(envelope, route.parse(envelope), session, self.name))
                if self.idempotent and not await mark_processed(session, self.name, key, envelope.id):
                    raise _AlreadyDone
                await finish_pending(session, envelope.id)
        except _AlreadyDone:
            return "duplicate"
        except TimeoutError as exc:
            if deadline.expired():
                raise Retryable(f"handler did not finish within {self.handler_timeout:g}s", code="timeout") from exc
            raise
        return "ok"

    async def _fail(self, delivery: Delivery, envelope: Envelope, route: Route | None, failure: Failure) -> str:
        if failure.retryable and not await self._database_answers():
            # An outage, not a bad message: retrying would burn its attempts (and every queued message's)
            # and could dead-letter good work the moment the database is back. Wait it out instead.
            log.warning("%s: the database does not answer; holding the message until it does", self.name)
            await self._await_database()
            await self._settle(delivery.nack(requeue=True))
            return "requeued"
        history = _history(delivery) + [{"attempt": envelope.attempt, "at": utcnow().isoformat(), "error": failure.reason}]
        if failure.retryable and envelope.attempt < self.max_attempts:
            headers = {**_carry(delivery.headers), H_ATTEMPTS: history, H_ERROR: failure.reason, H_ERROR_CODE: failure.code}
            await self.broker.publish_delayed(
                Outgoing.of(envelope.next_attempt(), headers=headers, priority=delivery.priority),
                routing_key=self.queue,
                delay=self.broker.topology.spread_delay(self.backoff.delay(envelope.attempt)),
            )
            await self._settle(delivery.ack())
            return "retry"
        if failure.retryable:
            failure = failure.exhausted(envelope.attempt)
        return await self._dead_letter(delivery, envelope, route, history, failure)

    async def _dead_letter(
        self, delivery: Delivery, envelope: Envelope | None, route: Route | None, history: list[dict[str, Any]], failure: Failure
    ) -> str:
        headers = {**_carry(delivery.headers), **await self._record_dead(delivery, envelope, route, history, failure)}
        if envelope is not None:
            message = Outgoing.of(envelope, headers=headers)
        else:
            message = Outgoing(body=delivery.body, message_id=delivery.message_id or new_id(), headers=headers)
        await self.broker.publish_dead(message, queue=self.queue)
        await self._settle(delivery.ack())
        return "dead"

    async def _record_dead(
        self, delivery: Delivery, envelope: Envelope | None, route: Route | None, history: list[dict[str, Any]], failure: Failure
    ) -> dict[str, Any]:
        """Record a dead letter with the route's ``on_dead_letter`` hook (without it, noted, when the hook
        fails and the database answers); returns the headers its DLQ copy carries. Both our own dead
        letters and the ones the broker made (quorum delivery limit) go through here."""
        hook = route.on_dead_letter if route is not None and envelope is not None else None
        try:
            await self._record(delivery, envelope, hook, history, failure)
        except Exception:
            if hook is None or not await self._database_answers():
                raise  # the database is down, not the hook: the message stays where it is, for a later try
            log.exception("%s: on_dead_letter hook failed; recording the dead letter without it", self.name)
            failure = Failure(failure.code, f"{failure.reason} {HOOK_FAILED_NOTE}", False)
            await self._record(delivery, envelope, None, history, failure)
        return {H_ATTEMPTS: history, H_ERROR: failure.reason, H_ERROR_CODE: failure.code, H_QUEUE: self.queue,
                H_CONSUMER: self.name, H_DEAD_AT: utcnow().isoformat()}

    async def _record(
        self, delivery: Delivery, envelope: Envelope | None, hook: DeadLetterHook | None, history: list[dict[str, Any]], failure: Failure
    ) -> None:
        async with self._unit_of_work(envelope) as session:
            if hook is not None and envelope is not None:
                await hook(session, envelope, failure)
            await record_dead_letter(
                session,
                queue=self.queue,
                message_id=envelope.id if envelope else (delivery.message_id or new_id()),
                message_type=envelope.type if envelope else "unknown",
                tenant_id=envelope.tenant_id if envelope else None,
                correlation_id=envelope.correlation_id if envelope else None,
                failure=failure,
                attempts=history,
                body=delivery.body,
            )
            if envelope is not None:
                await finish_pending(session, envelope.id)

    # --- helpers --------------------------------------------------------------------------
    def _unit_of_work(self, envelope: Envelope | None) -> contextlib.AbstractAsyncContextManager[AsyncSession]:
        tenant_id = envelope.tenant_id if envelope is not None else None
        return unit_of_work(self.sessions, tenant_id=tenant_id, admin=tenant_id is None)

    async def _database_answers(self) -> bool:
        try:
            async with asyncio.timeout(10), self.sessions() as session:
                await session.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def _await_database(self) -> None:
        """Probe with growing pauses until the database answers, ``outage_hold`` passes, or we stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.outage_hold
        pause = self.requeue_pause
        while not self._stopping and loop.time() < deadline:
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            if await self._database_answers():
                return
            pause = min(pause * 2, 5.0)

    async def _guard(self, delivery: Delivery, step: Awaitable[str]) -> str:
        """Run a retry / dead-letter step; if it fails (broker or database down), requeue the message."""
        try:
            return await step
        except Exception:
            log.exception("%s: could not retry or dead-letter the message; returning it to the queue", self.name)
            await asyncio.sleep(self.requeue_pause)
            await self._settle(delivery.nack(requeue=True))
            return "requeued"

    async def _settle(self, action: Awaitable[None]) -> None:
        try:
            await action
        except Exception as exc:
            # Channel gone with the connection: the broker requeues the delivery by itself.
            log.warning("%s: could not ack/nack (%r); the broker will redeliver", self.name, exc)

    def _log(self, outcome: str, envelope: Envelope | None, started: float, failure: Failure | None) -> None:
        self.outcomes[outcome] += 1
        elapsed = time.monotonic() - started
        ms = elapsed * 1000
        for listener in self.listeners:
            try:
                listener(outcome, envelope, failure, elapsed)
            except Exception:  # a metric must never fail a message
                log.exception("%s: outcome listener failed", self.name)
        level = logging.WARNING if outcome in ("dead", "requeued") else logging.INFO
        log.log(
            level,
            "%s %s %s attempt=%s %.0fms%s",
            self.name,
            envelope.type if envelope else "unreadable",
            outcome,
            envelope.attempt if envelope else "-",
            ms,
            f" error={failure.reason!r}" if failure else "",
            extra={"outcome": outcome, "queue": self.queue, "duration_ms": round(ms, 1)},
        )


def _history(delivery: Delivery) -> list[dict[str, Any]]:
    raw = (delivery.headers or {}).get(H_ATTEMPTS) or []
    return [dict(item) for item in raw if isinstance(item, dict)]


_NOT_CARRIED = {H_ATTEMPT, H_ATTEMPTS, H_TENANT, H_DELAY, H_ERROR, H_ERROR_CODE}


def _carry(headers: dict[str, Any] | None) -> dict[str, Any]:
    """Our own headers worth keeping across a retry (e.g. x-parley-replay-of); not RabbitMQ's x-death."""
    return {k: v for k, v in (headers or {}).items() if k.startswith("x-parley-") and k not in _NOT_CARRIED}


@contextlib.asynccontextmanager
async def consuming(*consumers: Consumer, shutdown_timeout: float = 30.0) -> AsyncIterator[None]:
    """``async with consuming(a, b): ...`` starts the consumers and stops them gracefully on exit."""
    started: list[Consumer] = []
    try:
        for consumer in consumers:
            await consumer.start()
            started.append(consumer)
        yield
    finally:
        await asyncio.gather(*(c.stop(shutdown_timeout) for c in started), return_exceptions=True)


async def run_consumer(
    consumers: Consumer | Sequence[Consumer], stop: asyncio.Event, *, shutdown_timeout: float = 30.0
) -> None:
    """Start the consumers, wait for ``stop`` (set it from a signal handler), stop them gracefully."""
    group = [consumers] if isinstance(consumers, Consumer) else list(consumers)
    async with consuming(*group, shutdown_timeout=shutdown_timeout):
        await stop.wait()
