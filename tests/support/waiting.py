"""Waiting for something the system under test does in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def eventually(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.02,
                     what: str | None = None, log: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that; fail
    after ``timeout`` (a bound, not a measurement), saying ``what`` was awaited and, with ``log``,
    the tail of a process's log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            message = f"{what or f'condition {predicate!r}'} not met within {timeout:g}s"
            raise AssertionError(message + (f"; worker log tail:\n{log()}" if log else ""))
        await asyncio.sleep(interval)
