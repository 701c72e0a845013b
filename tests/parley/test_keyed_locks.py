"""Keyed semaphores hold an entry only while a key is in use: a process that has served thousands of
tenants keeps none of them (the gateway's per-tenant answer limit, the index's per-tenant locks)."""

from __future__ import annotations

import asyncio

import pytest

from parley.keyed_locks import KeyedLocks, KeyedSemaphores


async def test_at_most_the_limit_per_key_run_at_once_and_other_keys_are_not_held_up() -> None:
    slots: KeyedSemaphores[str] = KeyedSemaphores(2)
    running: dict[str, int] = {"a": 0, "b": 0}
    peak: dict[str, int] = {"a": 0, "b": 0}
    release = asyncio.Event()

    async def work(key: str) -> None:
        async with slots.hold(key):
            running[key] += 1
            peak[key] = max(peak[key], running[key])
            await release.wait()
            running[key] -= 1

    tasks = [asyncio.create_task(work("a")) for _ in range(5)] + [asyncio.create_task(work("b"))]
    await asyncio.sleep(0.05)
    # Then two of a's run and three wait, while b's one runs beside them
    assert running == {"a": 2, "b": 1} and len(slots) == 2 and slots.in_use("a")
    release.set()
    await asyncio.gather(*tasks)
    assert peak == {"a": 2, "b": 1}
    # And once every holder and waiter has left, no key is kept
    assert len(slots) == 0 and not slots.in_use("a")


async def test_a_thousand_keys_used_once_leave_nothing_behind_even_when_a_holder_fails() -> None:
    locks: KeyedLocks[int] = KeyedLocks()

    async def use(key: int) -> None:
        async with locks.hold(key):
            await asyncio.sleep(0)
            if key % 7 == 0:
                raise RuntimeError("boom")

    results = await asyncio.gather(*(use(k) for k in range(1000)), return_exceptions=True)
    assert sum(isinstance(r, RuntimeError) for r in results) == 143
    assert len(locks) == 0


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeyedSemaphores(0)
