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
* The embedded index's residency (`parley.vectors.residency`), sampled when scraped, no per-tenant
  labels: ``parley_retrieval_resident_tenants``, ``parley_retrieval_resident_bytes`` (estimated),
  ``parley_retrieval_memory_budget_bytes``, ``parley_retrieval_tenant_loads_total``,
  ``parley_retrieval_tenant_evictions_total``, ``parley_retrieval_tenant_load_seconds`` (histogram).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

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

    def watch_residency(self, stats: Callable[[], dict[str, Any]] | None) -> None:
        """Expose the index's residency figures (``EmbeddedVectorIndex.residency_stats``) on /metrics."""
        if stats is not None:
            self.registry.register(_ResidencyCollector(stats))

    def error(self) -> None:
        self.queries.labels("error").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ResidencyCollector(Collector):
    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        s = self._stats()
        yield GaugeMetricFamily("parley_retrieval_resident_tenants", "Tenants the index holds in memory now.",
                                value=s["resident_tenants"])
        yield GaugeMetricFamily("parley_retrieval_resident_bytes", "Estimated bytes of the tenants held in memory.",
                                value=s["estimated_bytes"])
        yield GaugeMetricFamily("parley_retrieval_memory_budget_bytes", "The residency budget (0: unbounded).",
                                value=s["budget_bytes"] or 0)
        yield CounterMetricFamily("parley_retrieval_tenant_loads", "Tenants loaded into memory (first use or after release).",
                                  value=s["loads"])
        yield CounterMetricFamily("parley_retrieval_tenant_evictions", "Tenants released to stay within the budget.",
                                  value=s["evictions"])
        yield HistogramMetricFamily(
            "parley_retrieval_tenant_load_seconds", "Time to load one tenant (snapshot plus change feed).",
            buckets=[("+Inf" if le == float("inf") else str(le), n) for le, n in s["load_buckets"]],
            sum_value=s["load_seconds_sum"],
        )
