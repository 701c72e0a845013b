"""Acks first: background answering yields to webhook requests in progress.

Acking a webhook is latency work measured in milliseconds; answering is also latency work, but
measured in seconds. Both share one event loop, so during a burst the answer tasks' database and
parsing steps would queue in front of the acks. Webhook handlers run inside `webhook()`; answer
tasks call `yield_to_webhooks()` before each of their database steps and wait (at most
``max_wait`` each time, so answering never starves) until no webhook is in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class AckPriority:
    def __init__(self, *, max_wait: float = 0.25) -> None:
        self.max_wait = max_wait
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def webhook(self) -> Iterator[None]:
        self._busy += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    async def yield_to_webhooks(self) -> None:
        if self._busy:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.max_wait):  # a timer, not a task per wait
                    await self._idle.wait()
