"""The pure pieces of the answer path: fusion, caches, de-duplication, context, rewriting, constraints."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from parley.db import unit_of_work
from parley.errors import NotFound
from parley.vectors import Hit
from retrieval.cache import SingleFlight, TTLCache
from retrieval.config import FusionConfig, RetrievalConfig
from retrieval.context import Candidate, build_context, select
from retrieval.fusion import fuse
from retrieval.products import parse_constraints
from retrieval.repository import TenantProfiles
from retrieval.rewrite import list_items, resolve
from retrieval.schemas import Turn
from retrieval.text import estimate_tokens, normalise_question
from tenants import service as tenant_service
from tenants.repository import TenantDirectory


def hit(id_: str, doc: str = "d", text: str = "", score: float = 0.0, kind: str = "document") -> Hit:
    return Hit(id_, doc, kind, f"{doc}.md", text or f"text of {id_}", [], {}, score)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- fusion ------------------------------------------------------------------------------------------


def test_rrf_rewards_agreement_between_the_legs() -> None:
    # Given a hit second in both lists and hits first in only one
    vector = [hit("a", score=0.9), hit("both", score=0.8)]
    keyword = [hit("k", score=12.0), hit("both", score=11.0)]
    fused = fuse(vector, keyword, FusionConfig(method="rrf", k=60))
    # Then agreement wins, and scores are the RRF sums
    assert [f.hit.id for f in fused][0] == "both"
    assert fused[0].score == pytest.approx(2 / 62)
    assert fused[0].cosine == 0.8 and fused[0].bm25 == 11.0 and (fused[0].vector_rank, fused[0].keyword_rank) == (2, 2)


def test_fusion_weights_and_a_switched_off_leg() -> None:
    vector = [hit("v1"), hit("v2")]
    keyword = [hit("k1"), hit("k2")]
    assert fuse(vector, keyword, FusionConfig(vector_weight=2.0))[0].hit.id == "v1"
    assert fuse(vector, keyword, FusionConfig(keyword_weight=2.0))[0].hit.id == "k1"
    assert [f.hit.id for f in fuse(vector, keyword, FusionConfig(vector_weight=0.0))] == ["k1", "k2"]
    with pytest.raises(ValueError):
        FusionConfig(vector_weight=0.0, keyword_weight=0.0)


def test_convex_fusion_uses_normalised_scores() -> None:
    vector = [hit("a", score=0.9), hit("b", score=0.5)]
    keyword = [hit("b", score=20.0), hit("a", score=2.0)]
    fused = fuse(vector, keyword, FusionConfig(method="convex", vector_weight=0.3, keyword_weight=0.7))
    assert [f.hit.id for f in fused] == ["b", "a"] and fused[0].score == pytest.approx(0.7)


# --- caches ------------------------------------------------------------------------------------------


def test_ttl_cache_expires_and_evicts_least_recently_used() -> None:
    clock = Clock()
    cache: TTLCache[str, int] = TTLCache(2, ttl=10, clock=clock)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.set("c", 3)  # evicts b
    assert cache.get("b") is None and cache.get("a") == 1 and cache.get("c") == 3
    clock.now = 10.0
    assert cache.get("a") is None and len(cache) == 1
    disabled: TTLCache[str, int] = TTLCache(0, ttl=10)
    disabled.set("a", 1)
    assert disabled.get("a") is None


async def test_single_flight_computes_concurrent_identical_work_once() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    calls = 0
    release = asyncio.Event()

    async def work() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 42

    tasks = [asyncio.create_task(flight.run("k", work)) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)
    assert calls == 1 and [r for r, _ in results] == [42] * 5
    assert sorted(shared for _, shared in results) == [False, True, True, True, True]

    async def boom() -> int:
        await asyncio.sleep(0)
        raise RuntimeError("x")

    failing = [asyncio.create_task(flight.run("e", boom)) for _ in range(3)]
    outcomes = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(o, RuntimeError) for o in outcomes)


async def test_tenant_rows_are_reread_only_after_the_ttl(db) -> None:  # type: ignore[no-untyped-def]
    # Given a tenant read through a 1 s TTL cache
    async with unit_of_work(db.sessions, admin=True) as s:
        tenant = await tenant_service.create_tenant(s, name="ttl-shop")
    clock = Clock()
    profiles = TenantProfiles(db.sessions, ttl=1.0, clock=clock)
    assert (await profiles.get(tenant.id)).index_version == 0
    # When its index version is bumped
    async with unit_of_work(db.sessions, admin=True) as s:
        await TenantDirectory(s).bump_index_version(tenant.id)
    # Then the old version is served until the TTL passes (the documented staleness bound), then the new
    assert (await profiles.get(tenant.id)).index_version == 0
    clock.now = 1.0
    assert (await profiles.get(tenant.id)).index_version == 1
    # and unknown tenants are refused (and remembered as unknown for the same TTL)
    with pytest.raises(NotFound):
        await profiles.get("nosuchtenant")


# --- de-duplication and context ----------------------------------------------------------------------


def cand(h: Hit) -> Candidate:
    from retrieval.fusion import Fused

    return Candidate(Fused(h, 1.0, 1, 1, 0.9, 1.0), 1.0, 1.0, True)


PARAGRAPH = (
    "You can return unworn items within 30 days of delivery for a full refund. Start a return from your order page "
    "and we email you a prepaid return label. Refunds go back to the original payment method within 5 business days."
)


def test_select_drops_near_duplicates_and_caps_chunks_per_document() -> None:
    candidates = [
        cand(hit("1", "returns", PARAGRAPH)),
        cand(hit("2", "faq", PARAGRAPH.upper() + "!")),  # same words: same content hash
        cand(hit("3", "faq2", PARAGRAPH.replace("full refund", "complete refund"))),  # shingle Jaccard >= 0.8
        cand(hit("4", "returns", "Exchanges are free of charge for another size.")),
        cand(hit("5", "returns", "Sale items are final and cannot be returned at all.")),
        cand(hit("6", "care", "Wax your boots every three months.")),
    ]
    kept = select(candidates, 10, max_per_document=2, jaccard_threshold=0.8)
    assert [c.hit.id for c in kept] == ["1", "4", "6"]


def test_a_single_source_may_fill_the_context() -> None:
    candidates = [cand(hit(str(i), "manual", f"Step {i}: turn screw number {i} twice, then check the seal again.")) for i in range(5)]
    assert len(select(candidates, 4, max_per_document=2, jaccard_threshold=0.8)) == 4


def test_context_stays_within_the_token_budget() -> None:
    long_text = " ".join(["word"] * 400)
    candidates = [cand(hit(str(i), f"d{i}", long_text + f" unique{i}")) for i in range(5)]
    passages = build_context(candidates, budget=1200)
    assert [p.n for p in passages] == [1, 2] and sum(p.tokens for p in passages) <= 1200
    tiny = build_context(candidates, budget=100)
    assert len(tiny) == 1 and tiny[0].tokens <= 100 and tiny[0].text.endswith("…")
    assert estimate_tokens("one two three") == 4


# --- rewriting -------------------------------------------------------------------------------------


U = lambda t: Turn(role="user", text=t)  # noqa: E731
A = lambda t: Turn(role="assistant", text=t)  # noqa: E731
LISTING = "From the catalog:\n\n1. Trail Runner - 89.00 USD, in stock [1]\n2. Road Racer - 120.00 USD [2]"


@pytest.mark.parametrize(
    ("turns", "message", "expected"),
    [
        ([U("Do you have the Trail Runner in red?"), A("Yes")], "and in blue?", "Do you have the Trail Runner in blue?"),
        ([U("Do you ship to Canada?"), A("Yes")], "and to Mexico?", "Do you ship to Mexico?"),
        ([U("How much is the Trail Runner?"), A("89")], "what about the Road Racer?", "How much is the Road Racer?"),
        ([U("How long does shipping take?"), A("3 days")], "what about returns?", "How long does returns take?"),
        ([U("Do you have running shoes?"), A("Yes")], "and for kids?", "Do you have running shoes for kids?"),
        ([U("Tell me about the Trail Runner"), A("...")], "Is it waterproof?", "Is Trail Runner waterproof?"),
        ([U("What is your return policy?"), A("...")], "how long does it take?", "how long does the return policy take?"),
        ([U("Which shoes?"), A(LISTING), U("How much is the first one?"), A("89")], "what about the second one?", "How much is Road Racer?"),
        ([U("Do you ship to Canada?"), A("Yes")], "What are your opening hours?", "What are your opening hours?"),
        ([U("Do you have running shoes?"), A("Yes")], "Is there a model that is waterproof?", "Is there a model that is waterproof?"),
        ([], "and in blue?", "and in blue?"),
    ],
)
def test_follow_up_rules(turns, message, expected) -> None:  # type: ignore[no-untyped-def]
    assert resolve(message, turns).question == expected


def test_list_items_are_read_from_an_answer() -> None:
    assert list_items(LISTING) == ["Trail Runner", "Road Racer"]


# --- questions -------------------------------------------------------------------------------------


def test_questions_normalise_to_one_cache_identity() -> None:
    assert normalise_question("  Do you ship to CANADA?? ") == normalise_question("do you ship to canada") == "do you ship to canada"
    assert normalise_question("Ｄｏ you ship") == "do you ship"  # NFKC: full-width letters


def test_shopping_constraints_are_parsed() -> None:
    c = parse_constraints("red running shoes under $100 in size 10, in stock?")
    assert (c.price_max, c.price_min, c.colours, c.sizes, c.stock) == (Decimal("100"), None, {"red"}, {"10"}, True)
    c = parse_constraints("jackets between $50 and $150")
    assert (c.price_min, c.price_max) == (Decimal("50"), Decimal("150"))
    assert not parse_constraints("how do I clean my boots?").any


def test_config_reads_retrieval_fields_from_settings_when_they_exist() -> None:
    class FutureSettings:
        retrieval_top_k = 25
        retrieval_fusion_k = 30
        retrieval_answer_cache_ttl = 60.0
        openai_api_key = None
        openai_base_url = None
        openai_chat_model = "m"

    config = RetrievalConfig.from_settings(FutureSettings())
    assert (config.top_k, config.fusion.k, config.answer_cache_ttl, config.use_openai) == (25, 30, 60.0, False)
