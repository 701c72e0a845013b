"""Retry delays: exponential, with jitter that survives the bus's fixed delay tiers."""

from __future__ import annotations

import random
import statistics

from parley.bus import context
from webhooks.consumer import SpreadBackoff

TIERS = (1.0, 5.0, 30.0, 300.0)


def test_a_burst_of_failures_spreads_over_adjacent_tiers_with_the_wanted_mean() -> None:
    random.seed(7)
    backoff = SpreadBackoff(base=1.0, factor=4.0, cap=300.0, jitter=0.5, tiers=TIERS)
    # Given 2000 deliveries failing their second attempt at once (wanted: 4 s, jittered to 2-6 s)
    picks = [backoff.choose(2) for _ in range(2000)]
    # Then they come back spread over the tiers around 4 s, not all on one, with about the wanted mean
    assert set(picks) == {1.0, 5.0, 30.0}
    assert 3.2 < statistics.mean(picks) < 4.8
    assert max(picks.count(t) for t in set(picks)) < 0.8 * len(picks)
    # And later attempts back off further, up to the longest tier
    assert statistics.mean(backoff.choose(4) for _ in range(500)) > 30
    late = [backoff.choose(8) for _ in range(500)]
    assert set(late) <= {30.0, 300.0} and statistics.mean(late) > 150


def test_the_consumer_retries_after_the_delay_the_handler_planned() -> None:
    backoff = SpreadBackoff(base=1.0, factor=4.0, cap=300.0, jitter=0.5, tiers=TIERS)
    # Given the handler planned the next attempt of message m1 (and recorded its time)
    planned = backoff.plan("m1", 3)
    # When the consumer asks for the delay while handling m1 / Then it gets that very delay, once
    with context.bind(message_id="m1"):
        assert backoff.delay(3) == planned
    assert ("m1", 3) not in backoff._planned
