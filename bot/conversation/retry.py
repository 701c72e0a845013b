"""Retry with exponential backoff and jitter, honouring a vendor's ``Retry-After``."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from parley.errors import ParleyError

log = logging.getLogger("parley.gateway.retry")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.3

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return min(max(0.0, retry_after), self.cap)
        raw = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        return raw * random.uniform(1 - self.jitter, 1 + self.jitter)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ParleyError):
        return exc.retryable
    return isinstance(exc, (asyncio.TimeoutError, ConnectionError, OSError))


async def retrying(op: Callable[[], Awaitable[T]], *, policy: RetryPolicy, what: str,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """Run ``op`` until it succeeds, fails for good, or ``policy.attempts`` are used up (the last
    error is raised)."""
    attempt = 1
    while True:
        try:
            return await op()
        except Exception as exc:
            if attempt >= policy.attempts or not is_retryable(exc):
                raise
            wait = policy.delay(attempt, getattr(exc, "retry_after", None))
            log.info("%s failed (attempt %d of %d), retrying in %.2fs: %s", what, attempt, policy.attempts, wait, exc)
            await sleep(wait)
            attempt += 1
