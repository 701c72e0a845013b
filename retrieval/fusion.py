"""Fusing the vector and keyword result lists into one ranking.

Convex combination (``method="convex"``, the default): each leg's scores min-max normalised to
[0, 1] over its own list, then ``weight_v * v + weight_k * k`` (a hit missing from a leg gets 0
there). It uses the score *gaps* RRF throws away, at the price of depending on list length; on
SciFact it beat RRF by ~0.02 nDCG@10 on the train and the test queries alike (bench/RESULTS.md,
issue 15), so it became the default.

Reciprocal-rank fusion (``method="rrf"``): ``score(d) = sum over legs of weight / (k + rank)``
with 1-based ranks. It needs no calibration between cosine similarity and BM25 (whose scale
depends on the corpus and the query length): the two legs' scores are not comparable, their ranks
are. ``k`` damps the head: with k=60 the first and the tenth hit of a leg differ by 13%, so
agreement between legs matters more than a single leg's order.

A leg with weight 0 contributes nothing (the service does not even run it). Ties are broken by
the vector rank, then the keyword rank, then the id, so the order is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from parley.vectors import Hit
from retrieval.config import FusionConfig


@dataclass(frozen=True)
class Fused:
    hit: Hit
    score: float
    vector_rank: int | None  # 1-based
    keyword_rank: int | None
    cosine: float | None  # the vector leg's score, when that leg returned the hit
    bm25: float | None


def fuse(vector_hits: Sequence[Hit], keyword_hits: Sequence[Hit], config: FusionConfig) -> list[Fused]:
    vector_hits = vector_hits if config.vector_weight > 0 else ()
    keyword_hits = keyword_hits if config.keyword_weight > 0 else ()
    hits: dict[str, Hit] = {}
    vrank: dict[str, int] = {}
    krank: dict[str, int] = {}
    for rank, hit in enumerate(vector_hits, 1):
        if hit.id not in vrank:
            vrank[hit.id] = rank
            hits[hit.id] = hit
    for rank, hit in enumerate(keyword_hits, 1):
        if hit.id not in krank:
            krank[hit.id] = rank
            hits.setdefault(hit.id, hit)
    cos = {h.id: h.score for h in vector_hits}
    bm = {h.id: h.score for h in keyword_hits}

    if config.method == "rrf":
        def score(id_: str) -> float:
            s = 0.0
            if id_ in vrank:
                s += config.vector_weight / (config.k + vrank[id_])
            if id_ in krank:
                s += config.keyword_weight / (config.k + krank[id_])
            return s
    elif config.method == "convex":
        vnorm, knorm = _minmax(cos), _minmax(bm)

        def score(id_: str) -> float:
            return config.vector_weight * vnorm.get(id_, 0.0) + config.keyword_weight * knorm.get(id_, 0.0)
    else:
        raise ValueError(f"unknown fusion method {config.method!r}")

    big = 1 << 30
    fused = [
        Fused(hit, score(id_), vrank.get(id_), krank.get(id_), cos.get(id_), bm.get(id_))
        for id_, hit in hits.items()
    ]
    fused.sort(key=lambda f: (-f.score, f.vector_rank or big, f.keyword_rank or big, f.hit.id))
    return fused


def _minmax(scores: dict[str, float]) -> dict[str, float]:
    if not scores:
        return {}
    lo, hi = min(scores.values()), max(scores.values())
    if hi - lo < 1e-12:
        return {id_: 1.0 for id_ in scores}
    return {id_: (s - lo) / (hi - lo) for id_, s in scores.items()}
