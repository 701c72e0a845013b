"""The retrieval service's knobs, with defaults, built from `Settings` where a field exists.

`RetrievalConfig.from_settings` reads every ``retrieval_*`` field `Settings` has (the README lists
them); the rest keep the defaults here.

Why these defaults (all measured with the local MiniLM embedder; see bench/):

* ``top_k=40`` candidates per leg: fusion needs more than the final handful to agree on. On
  SciFact, depths 20-60 rank within noise of each other, and at 20k chunks a miss cost the same
  at 20 and 40 (p50 20.3 vs 20.6 ms, bench/query_latency.py).
* Convex fusion (each leg's scores min-max normalised over its own list) with equal weights,
  over a keyword leg that weighs titles 0.3 (``PARLEY_KEYWORD_TITLE_WEIGHT``). Measured on SciFact
  (bench/RESULTS.md, 2026-12-03), choices made on the train queries only: the title weight took
  the keyword leg from 0.664 to ~0.69, and with it convex beat RRF (k=60) by ~0.02 on train and
  test; equal weights tie with the train optimum (0.4/0.6) within 0.001. RRF stays available
  (``method="rrf"``, ``k=60``): it needs no calibration between BM25 and cosine scales.
* ``max_chunks_per_document=2``: one long document must not crowd every other source out.
* Relevance (see `retrieval.context.relevant`): MiniLM puts unrelated question/passage pairs at
  cosine 0.0-0.25 and answering passages at 0.4-0.8, so a passage is relevant on its own from
  0.45, or from 0.25 when it also shares a content word with the question; a passage the vector
  leg did not return needs most of the question's content words (coverage 0.6).
  Other embedders have other scales: re-derive these when the embedder changes.
* The answer cache holds 10,000 answers for 5 minutes: the index version in the key already
  invalidates on every indexing, the TTL only bounds what a persona change or a bug can leave.
* ``tenant_ttl=1.0``: the tenant row (index version, persona) is re-read at most once a second
  per tenant, so a new index version is noticed within one second.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

FusionMethod = Literal["rrf", "convex"]


@dataclass(frozen=True)
class FusionConfig:
    """How the two ranked lists become one. A weight of 0 turns its leg off entirely (not searched)."""

    method: FusionMethod = "convex"
    k: int = 60
    vector_weight: float = 1.0
    keyword_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.k < 0 or self.vector_weight < 0 or self.keyword_weight < 0:
            raise ValueError("fusion k and weights must be >= 0")
        if self.vector_weight == 0 and self.keyword_weight == 0:
            raise ValueError("at least one fusion weight must be > 0")


@dataclass(frozen=True)
class RetrievalConfig:
    top_k: int = 40
    fusion: FusionConfig = field(default_factory=FusionConfig)
    max_chunks_per_document: int = 2
    near_duplicate_jaccard: float = 0.8
    context_token_budget: int = 1200
    default_max_citations: int = 5
    min_cosine: float = 0.45
    min_cosine_with_overlap: float = 0.25
    min_keyword_coverage: float = 0.6
    answer_cache_size: int = 10_000
    answer_cache_ttl: float = 300.0
    tenant_ttl: float = 1.0
    # generation
    answerer: Literal["auto", "openai", "extractive"] = "auto"
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_chat_model: str = "gpt-4o-mini"
    openai_timeout: float = 20.0
    openai_max_retries: int = 2
    rewrite_with_llm: bool = True
    # start-up
    warm_tenants: bool = True

    @property
    def use_openai(self) -> bool:
        if self.answerer == "extractive":
            return False
        if self.answerer == "openai":
            return True
        return bool(self.openai_api_key or self.openai_base_url)

    def with_(self, **changes: Any) -> RetrievalConfig:
        return replace(self, **changes)

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> RetrievalConfig:
        """Defaults, then any ``retrieval_*`` settings field that exists, then ``overrides``."""
        values: dict[str, Any] = {}
        for name in (
            "top_k", "max_chunks_per_document", "near_duplicate_jaccard", "context_token_budget",
            "default_max_citations", "min_cosine", "min_cosine_with_overlap", "min_keyword_coverage",
            "answer_cache_size", "answer_cache_ttl", "tenant_ttl", "answerer", "openai_timeout",
            "openai_max_retries", "rewrite_with_llm", "warm_tenants",
        ):
            value = getattr(settings, f"retrieval_{name}", None)
            if value is not None:
                values[name] = value
        fusion = {
            key: getattr(settings, f"retrieval_fusion_{key}")
            for key in ("method", "k", "vector_weight", "keyword_weight")
            if getattr(settings, f"retrieval_fusion_{key}", None) is not None
        }
        if fusion:
            values["fusion"] = FusionConfig(**fusion)
        key = getattr(settings, "openai_api_key", None)
        values["openai_api_key"] = key.get_secret_value() if hasattr(key, "get_secret_value") else key
        values["openai_base_url"] = getattr(settings, "openai_base_url", None)
        values["openai_chat_model"] = getattr(settings, "openai_chat_model", cls.openai_chat_model)
        values.update(overrides)
        return cls(**values)
