"""Retries of a burst of failures come back spread over the delay tiers, not as the same burst.

The backoff's jitter used to be floored to the longest tier not above it, so every failure of
attempt 1 (jittered between 0.5 and 1.5 times the first tier) went to the first tier and came back
at the same instant. `Topology.spread_delay` picks one of the two tiers around the jittered delay.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from parley.bus import Consumer, Envelope, InMemoryBroker, Received, consuming
from parley.errors import Unavailable
from tests.parley.bus_support import eventually, new_topology, publish_direct

pytestmark = pytest.mark.postgres


def test_spread_delay_keeps_the_expected_delay_and_the_tier_bounds() -> None:
    # Given tiers 1, 5, 30 and a seeded random source
    topology = new_topology(delays=(1.0, 5.0, 30.0))
    rng = random.Random(7)
    # When 4000 retries want 2 s (a quarter of the way from 1 to 5)
    picks = Counter(topology.spread_delay(2.0, rng) for _ in range(4000))
    # Then only the two tiers around 2 s are used, the upper one about a quarter of the time
    assert set(picks) == {1.0, 5.0}
    assert 0.2 < picks[5.0] / 4000 < 0.3
    # and a delay on a tier, below the first or past the last keeps to the tiers
    assert {topology.spread_delay(5.0, rng) for _ in range(50)} == {5.0}
    assert topology.spread_delay(0.1, rng) == 1.0
    assert topology.spread_delay(500.0, rng) == 30.0


class RecordingBroker(InMemoryBroker):
    """The real in-memory broker, noting the delay tier each retry is published through."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tiers: list[float] = []

    async def publish_delayed(self, message, *, routing_key: str, delay: float) -> None:
        self.tiers.append(self.topology.pick_delay(delay))
        await super().publish_delayed(message, routing_key=routing_key, delay=delay)


async def test_a_burst_of_failures_comes_back_over_more_than_one_tier(sessions) -> None:
    # Given 100 messages whose first attempt fails at once, with seeded jitter
    random.seed(20261203)
    broker = RecordingBroker(new_topology(delays=(0.05, 0.1, 0.2)))
    await broker.start()
    consumer = Consumer(name="spread-test", queue="documents", broker=broker, sessions=sessions, prefetch=100, max_attempts=3)
    attempts: list[int] = []

    @consumer.handler("document.uploaded")
    async def index(msg: Received[dict]) -> None:
        if msg.envelope.attempt == 1:
            raise Unavailable("the vector store is busy")
        attempts.append(msg.envelope.attempt)

    for n in range(100):
        await publish_direct(broker, Envelope.new("document.uploaded", tenant_id="A", payload={"n": n}), "documents")
    # When they are consumed and retried
    async with consuming(consumer):
        await eventually(lambda: consumer.outcomes["ok"] == 100)
    await broker.close()
    # Then every one came back exactly once, as attempt 2 (the retry count is unchanged)
    assert consumer.outcomes == {"retry": 100, "ok": 100}
    assert Counter(attempts) == {2: 100}
    # and they went through more than one delay tier, not back as one burst
    tiers = Counter(broker.tiers)
    assert sum(tiers.values()) == 100
    assert len(tiers) > 1, tiers
    assert tiers[0.05] > tiers[0.1] > 0
