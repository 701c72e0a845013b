"""The retry schedule as properties: exponential backoff with jitter, capped, mapped onto the broker's
delay tiers (tests/faults/test_poison.py sees the same schedule through the real worker)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from parley.bus import Backoff, Topology

backoffs = st.builds(
    Backoff,
    base=st.floats(0.01, 10), factor=st.floats(1, 4), cap=st.floats(10, 600), jitter=st.floats(0, 0.9),
)
tiers = st.lists(st.floats(0.01, 1000), min_size=1, max_size=6, unique=True).map(lambda xs: tuple(sorted(xs)))


@given(backoff=backoffs, attempt=st.integers(1, 50))
def test_each_delay_is_the_capped_exponential_within_the_jitter(backoff: Backoff, attempt: int) -> None:
    raw = min(backoff.cap, backoff.base * backoff.factor ** (attempt - 1))
    delay = backoff.delay(attempt)
    assert raw * (1 - backoff.jitter) - 1e-9 <= delay <= raw * (1 + backoff.jitter) + 1e-9


@given(backoff=backoffs, attempt=st.integers(1, 49))
def test_the_undisturbed_schedule_never_shrinks(backoff: Backoff, attempt: int) -> None:
    calm = Backoff(base=backoff.base, factor=backoff.factor, cap=backoff.cap, jitter=0.0)
    assert calm.delay(attempt) <= calm.delay(attempt + 1) <= backoff.cap + 1e-9


@given(delays=tiers, wanted=st.floats(0, 2000))
def test_a_delay_goes_to_the_longest_tier_not_above_it(delays: tuple[float, ...], wanted: float) -> None:
    topology = Topology(delays=delays)
    tier = topology.pick_delay(wanted)
    assert tier in delays
    if wanted >= delays[0]:
        assert tier <= wanted and not any(tier < d <= wanted for d in delays)
    else:
        assert tier == delays[0]  # never sooner than the shortest tier
