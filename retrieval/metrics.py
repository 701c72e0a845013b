"""Prometheus metrics of the retrieval service, in a registry of their own per app.

A per-app `CollectorRegistry` (not the global default) lets tests and the single-process mode
build several apps in one process without "duplicated timeseries" errors; ``GET /metrics``
exposes exactly this registry.

* ``parley_retrieval_stage_seconds{stage}``: per-stage latency of every answered query (the
  stages of `retrieval.schemas.TIMING_STAGES`; a stage that did not run is not observed), with
  buckets from 0.25 ms to 30 s: a cache hit is well under a millisecond, a model answer seconds.
* ``parley_retrieval_cache_total{result="hit"|"miss"}``: answer cache lookups.
* ``parley_retrieval_queries_total{outcome}``: found / not_found / error.
* ``parley_retrieval_answers_total{answered_by}``: openai / extractive / extractive_fallback / none.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from retrieval.schemas import QueryResponse

BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.012, 0.02, 0.035, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RetrievalMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.stage_seconds = Histogram(
            "parley_retrieval_stage_seconds", "Latency of one stage of a query", ["stage"],
            buckets=BUCKETS, registry=self.registry,
        )
        self.cache = Counter("parley_retrieval_cache", "Answer cache lookups", ["result"], registry=self.registry)
        self.queries = Counter("parley_retrieval_queries", "Queries by outcome", ["outcome"], registry=self.registry)
        self.answers = Counter("parley_retrieval_answers", "Answers by who wrote them", ["answered_by"], registry=self.registry)
        for result in ("hit", "miss"):
            self.cache.labels(result)  # present at 0 before the first query

    def observe(self, response: QueryResponse) -> None:
        self.cache.labels("hit" if response.cached else "miss").inc()
        self.queries.labels("found" if response.found else "not_found").inc()
        self.answers.labels(response.answered_by).inc()
        for stage, ms in response.timings.items():
            if ms > 0 or stage in ("cache", "total"):
                self.stage_seconds.labels(stage).observe(ms / 1000.0)

    def error(self) -> None:
        self.queries.labels("error").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
