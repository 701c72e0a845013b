"""The answer path: question in, cited answer out, with per-stage timings.

    tenant row (<= 1 s old) -> follow-up rewrite -> answer cache
      miss: [embed -> vector search] || [keyword search] -> fusion -> product re-rank
            -> relevance -> de-duplication -> context (token budget) -> answer -> citations

Choices, and why:

* **Cache key** = (tenant, normalised standalone question, tenant's index version, citations
  asked for, persona). Any indexing or deletion bumps the version, so the next question misses;
  nothing has to be invalidated by message. Not-found answers are cached too: the same version
  cannot find more. Concurrent identical misses are computed once (`SingleFlight`).
* **Across replicas.** The cache is read and written only when the version the reader is known to
  hold *is* the tenant's version in the database (the tenant row, at most ``tenant_ttl`` old), never
  under an older one: a replica that was away while the tenant was indexed elsewhere (A answers, A
  is unreachable, B answers the new version, A returns) answers afresh instead of from its old
  entries, and so does any replica while it catches up with a new version.
* **Reading your index's writes, without waiting for indexing.** The embedded index's reader
  follows the store about once a second; a new index version could therefore be noticed before
  the new chunks are searchable, and a stale answer cached under the *new* version. So the cache
  key carries the version the reader is *known* to hold: when the service first sees a tenant at
  a new version it starts one catch-up (``refresh(tenant_id)``) for that tenant and answers at
  once from what the reader has, keyed by the last version it confirmed (and, that version being
  older than the database's, neither read from nor stored in the cache); when the catch-up is
  done, that version is confirmed. An answer never waits for a catch-up (measured, bench/
  isolation.py: waiting for it on the answer path put the reader's apply - a tantivy commit per
  query in flight - into every new version's first queries, p99 x10-80 while indexing ran). It
  waits only where nothing else would catch up: a tenant seen for the first time, and a reader
  that does not follow the store by itself (``follows_store`` false: tests, one-shot tools).
  Backends without ``refresh`` (Weaviate: writes are visible at once) skip all of it.
* **Concurrency.** The keyword leg needs no embedding, so it runs alongside embed-then-vector
  (two tasks). Every blocking step runs off the event loop in its component's own threads
  (ONNX Runtime's inference thread, the index's search threads); the service only awaits.
* **Degrading instead of failing.** If one leg fails (the embedding API is down, say) the other
  still answers and the failure is logged; only both failing is an error (``Unavailable``).
* **Lazy relevance.** Content-word overlap is computed only for the candidates the selection
  actually examines (at most ``max(20, 4 x limit)``), not for all ~80 fused hits.
* **Honesty.** With nothing relevant, no answerer is called: the reply says the tenant's
  documents do not cover it (``found=False``), cites nothing and names the closest topics it has.
  Relevant is not enough: a passage must also hold the fact asked for (`extractive.answers`: half
  the question's terms beyond those its title and headings share, and the number, date or
  version when one is asked), so a near miss - right topic, fact absent - is refused the same way,
  whichever answerer is configured.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from parley.errors import Unavailable
from parley.logging import bound
from parley.vectors import Hit, VectorIndex
from retrieval import extractive
from retrieval.answer import Answer, Answerer, TenantProfile, not_found_text
from retrieval.cache import SingleFlight, TTLCache
from retrieval.config import FusionConfig, RetrievalConfig
from retrieval.context import Candidate, Passage, build_context, relevant, relevant_by_cosine, select
from retrieval.fusion import Fused, fuse
from retrieval.products import Constraints, parse_constraints, product_factor, product_facts
from retrieval.repository import TenantProfiles, document_names
from retrieval.rewrite import Rewriter, RuleRewriter
from retrieval.schemas import (TIMING_STAGES, UNREADABLE_SCRIPT, Citation, QueryRequest, QueryResponse,
                               RankedSource, question_problem)
from retrieval.text import matcher_for, normalise_question, normalise_space, split_sentences, terms

log = logging.getLogger("parley.retrieval")

SNIPPET_CHARS = 280
#: A question at least this share of whose word pieces the embedding model does not know, and for
#: which nothing was found, gets `UNREADABLE_SCRIPT` (Cherokee measures 1.0, German 0.0).
UNREADABLE_SHARE = 0.5


@dataclass
class SearchResult:
    """What `RetrievalService.search` returns: ranked, de-duplicated candidates and stage timings (ms)."""

    candidates: list[Candidate]
    timings: dict[str, float]


class RetrievalService:
    def __init__(
        self,
        *,
        embedder: Any,
        index: VectorIndex,
        sessions: async_sessionmaker[AsyncSession],
        answerer: Answerer,
        config: RetrievalConfig,
        rewriter: Rewriter | None = None,
    ) -> None:
        self.embedder = embedder
        self.index = index
        self.sessions = sessions
        self.answerer = answerer
        self.config = config
        self.rewriter = rewriter or RuleRewriter()
        self.profiles = TenantProfiles(sessions, ttl=config.tenant_ttl)
        self.cache: TTLCache[tuple[Any, ...], QueryResponse] = TTLCache(config.answer_cache_size, config.answer_cache_ttl)
        self._flight: SingleFlight[tuple[Any, ...], QueryResponse] = SingleFlight()
        #: tenant -> the index version whose writes the reader is known to hold
        self._versions: dict[str, int] = {}
        self._catching_up: dict[str, asyncio.Task[None]] = {}
        #: True when the index applies new writes by itself (the embedded reader's refresh loop)
        self._follows_store = bool(getattr(index, "follows_store", False))

    # --- the answer path ----------------------------------------------------------------------

    async def query(self, req: QueryRequest) -> QueryResponse:
        start = time.perf_counter()
        timings = dict.fromkeys(TIMING_STAGES, 0.0)
        with bound(tenant_id=req.tenant_id, conversation_id=req.conversation_id or None):
            tenant = await self.profiles.get(req.tenant_id)
            t = time.perf_counter()
            question, rewritten = await self.rewriter.rewrite(req.message, req.turns)
            question = normalise_space(question) or normalise_space(req.message)
            timings["rewrite"] = _ms(t)

            version = await self._catch_up(tenant, wait=req.fresh)
            wordless = question_problem(question)
            if wordless is not None:  # only emoji or symbols: nothing to search for, and it says so
                timings["total"] = _ms(start)
                return QueryResponse(answer=wordless, standalone_question=question, timings=timings, found=False,
                                     answered_by="none")
            t = time.perf_counter()
            limit = req.max_citations or self.config.default_max_citations
            key = (tenant.id, normalise_question(question), version, limit, req.sources or 0, _digest(tenant))
            # Only under the version the database gives the tenant now: an entry under an older one was
            # answered before the tenant's latest writes (this replica was away, or is catching up)
            current = version == tenant.index_version
            cached = self.cache.get(key) if current else None
            timings["cache"] = _ms(t)
            if cached is not None:
                timings["total"] = _ms(start)
                response = cached.model_copy(update={"cached": True, "timings": timings, "standalone_question": question})
            else:
                computed, shared = await self._flight.run(key, lambda: self._answer(tenant, question, limit, timings, start, sources=req.sources or 0))
                if current:
                    self.cache.set(key, computed)
                response = computed.model_copy(update={"cached": shared, "standalone_question": question})
                if shared:  # another request did the work: report this one's wait, not its stages
                    response.timings = {**dict.fromkeys(TIMING_STAGES, 0.0), "rewrite": timings["rewrite"], "total": _ms(start)}
            log.info(
                "query answered",
                extra={
                    "cached": response.cached, "found": response.found, "answered_by": response.answered_by,
                    "rewritten": rewritten, "total_ms": round(response.timings["total"], 2),
                },
            )
            return response

    async def _answer(
        self, tenant: TenantProfile, question: str, limit: int, timings: dict[str, float], start: float, *, sources: int = 0
    ) -> QueryResponse:
        """``sources``: also return the first that many ranked documents (`RankedSource`)."""
        q_terms = terms(question)
        constraints = parse_constraints(question)
        fused = await self._search_legs(tenant.id, question, timings, self.config.fusion)
        t = time.perf_counter()
        ranked = rank(fused, constraints)
        chosen = pick(ranked, q_terms, self.config, limit, relevant_only=True)
        passages = build_context(chosen, self.config.context_token_budget)
        # on the topic is not enough: keep the passages that hold the fact asked for (a near miss has none)
        answering = [p.candidate for p in passages if extractive.answers(question, p, passages)]
        nearest = extractive.nearest_topics(passages or ranked)
        if len(answering) < len(passages):
            passages = build_context(answering, self.config.context_token_budget)
        timings["fusion"] += _ms(t)
        if not passages:
            timings["total"] = _ms(start)
            return QueryResponse(
                answer=UNREADABLE_SCRIPT if self._unreadable(question) else extractive.with_topics(not_found_text(tenant), nearest),
                citations=[], standalone_question=question, timings=timings,
                found=False, answered_by="none",
                sources=await self._ranked_sources(tenant.id, ranked, sources, ()) if sources else None,
            )
        t = time.perf_counter()
        answer = await self.answerer.answer(question=question, passages=passages, tenant=tenant)
        if not answer.found:  # the chat model found no answer in them: the same refusal as the path above
            answer = replace(answer, text=extractive.with_topics(not_found_text(tenant), nearest), cited=[])
        citations = await self._citations(tenant.id, answer, passages, q_terms)
        timings["generate"] = _ms(t)
        timings["total"] = _ms(start)
        return QueryResponse(
            answer=answer.text, citations=citations, standalone_question=question, timings=timings,
            found=answer.found, answered_by=answer.answered_by, answer_model=answer.model,
            sources=await self._ranked_sources(tenant.id, ranked, sources, citations) if sources else None,
        )

    async def search(
        self, tenant_id: str, question: str, *, limit: int | None = None, fusion: FusionConfig | None = None
    ) -> SearchResult:
        """The retrieval half alone (benchmarks, diagnostics): ranked, de-duplicated candidates,
        relevant or not, with the legs' timings. Bypasses the answer cache."""
        timings = dict.fromkeys(TIMING_STAGES, 0.0)
        start = time.perf_counter()
        fused = await self._search_legs(tenant_id, question, timings, fusion or self.config.fusion)
        t = time.perf_counter()
        ranked = rank(fused, parse_constraints(question))
        chosen = pick(ranked, terms(question), self.config, limit or self.config.top_k, relevant_only=False)
        timings["fusion"] += _ms(t)
        timings["total"] = _ms(start)
        return SearchResult(chosen, timings)

    # --- pieces -------------------------------------------------------------------------------

    async def _catch_up(self, tenant: TenantProfile, *, wait: bool = False) -> int:
        """The index version this answer may be cached under: the tenant's current one when the reader
        is known to hold it, else the last one it is known to hold (and one catch-up is started).
        ``wait`` (a request that must see the tenant's latest writes) waits for the catch-up."""
        known = self._versions.get(tenant.id)
        if known is not None and known >= tenant.index_version:
            return tenant.index_version
        if getattr(self.index, "refresh", None) is None:
            self._versions[tenant.id] = tenant.index_version
            return tenant.index_version
        task = self._catching_up.get(tenant.id)
        if task is None:  # one catch-up per tenant at a time, not one per query in flight
            task = asyncio.create_task(self._refresh(tenant.id, tenant.index_version), name=f"catch-up-{tenant.id}")
            self._catching_up[tenant.id] = task
        if known is not None and self._follows_store and not wait:
            return known
        await asyncio.shield(task)
        if self._versions.get(tenant.id, -1) < tenant.index_version:  # that catch-up began at an older version
            await self._refresh(tenant.id, tenant.index_version)
        # a failed catch-up leaves the last version known to be held (the current one when none is)
        return self._versions.get(tenant.id, tenant.index_version)

    def _unreadable(self, question: str) -> bool:
        """Nothing found, and most of the question's word pieces are unknown to the embedding model
        (a script it never saw): say that, instead of "not in the documents"."""
        share = getattr(self.embedder, "unknown_share", None)
        return share is not None and share(question) >= UNREADABLE_SHARE

    async def _refresh(self, tenant_id: str, version: int) -> None:
        """Apply what the tenant's writes committed up to now, then record ``version`` (read before) as held."""
        try:
            await self.index.refresh(tenant_id)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - answer from what the reader has; its own loop retries
            log.exception("vector index refresh before answering failed")
            return  # not known to hold `version`: the next query starts another catch-up
        finally:
            if self._catching_up.get(tenant_id) is asyncio.current_task():
                del self._catching_up[tenant_id]
        if self._versions.get(tenant_id, -1) < version:
            self._versions[tenant_id] = version

    async def _search_legs(self, tenant_id: str, question: str, timings: dict[str, float], fusion: FusionConfig) -> list[Fused]:
        top_k = self.config.top_k

        async def vector_leg() -> list[Hit]:
            t = time.perf_counter()
            vector = await self.embedder.embed_query(normalise_question(question))
            timings["embed"] = _ms(t)
            t = time.perf_counter()
            hits = await self.index.vector_search(tenant_id, vector, top_k)
            timings["vector"] = _ms(t)
            return hits

        async def keyword_leg() -> list[Hit]:
            t = time.perf_counter()
            hits = await self.index.keyword_search(tenant_id, question, top_k)
            timings["keyword"] = _ms(t)
            return hits

        legs = []
        if fusion.vector_weight > 0:
            legs.append(("vector", vector_leg()))
        if fusion.keyword_weight > 0:
            legs.append(("keyword", keyword_leg()))
        results = await asyncio.gather(*(coro for _, coro in legs), return_exceptions=True)
        found: dict[str, list[Hit]] = {"vector": [], "keyword": []}
        failures = []
        for (name, _), result in zip(legs, results):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                failures.append((name, result))
                log.error("%s search failed; answering from the other leg", name, exc_info=result)
            else:
                found[name] = result
        if failures and len(failures) == len(legs):
            raise Unavailable(f"search failed: {', '.join(f'{n}: {e}' for n, e in failures)}") from failures[0][1]
        t = time.perf_counter()
        fused = fuse(found["vector"], found["keyword"], fusion)
        timings["fusion"] = _ms(t)
        return fused

    async def _citations(self, tenant_id: str, answer: Answer, passages: Sequence[Passage], q_terms: list[str]) -> list[Citation]:
        by_n = {p.n: p for p in passages}
        used = [by_n[n] for n in answer.cited if n in by_n]
        untitled = [p.hit.document_id for p in used if not p.hit.title and p.hit.kind == "document"]
        names = await document_names(self.sessions, tenant_id, untitled) if untitled else {}
        out = []
        for p in used:
            h = p.hit
            facts = p.candidate.facts
            out.append(
                Citation(
                    n=p.n, kind="product" if h.kind == "product" else "document",
                    title=h.title or names.get(h.document_id, h.document_id), document_id=h.document_id,
                    chunk_id=h.id, heading_path=list(h.heading_path), snippet=snippet(p.text, q_terms, h.title),
                    price=facts.price if facts else None, currency=facts.currency if facts else None,
                    availability=facts.availability if facts else None,  # type: ignore[arg-type]
                    url=(facts.url if facts else None) or (h.metadata.get("url") if isinstance(h.metadata.get("url"), str) else None),
                )
            )
        return out

    async def _ranked_sources(
        self, tenant_id: str, ranked: Sequence[Candidate], n: int, citations: Sequence[Citation]
    ) -> list[RankedSource]:
        """The first ``n`` distinct documents of the ranking, named (untitled documents by their file name)."""
        out = ranked_sources(ranked, n, cited={c.document_id for c in citations})
        untitled = [s.document_id for s in out if not s.title and s.kind == "document"]
        if untitled:
            names = await document_names(self.sessions, tenant_id, untitled)
            for s in out:
                s.title = s.title or names.get(s.document_id, s.document_id)
        return out

    async def aclose(self) -> None:
        pending = list(self._catching_up.values())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        self.cache.clear()


# --- pure steps (also used by the benchmarks) ------------------------------------------------------


def rank(fused: Sequence[Fused], constraints: Constraints) -> list[Candidate]:
    """Product re-ranking under the question's constraints; relevance is decided later, lazily."""
    out = []
    for f in fused:
        facts = product_facts(f.hit.metadata) if f.hit.kind == "product" else None
        score = f.score * (product_factor(constraints, facts, f"{f.hit.title} {f.hit.text}", title=f.hit.title) if facts else 1.0)
        out.append(Candidate(f, score, 0.0, False, facts))
    out.sort(key=lambda c: -c.score)  # stable: ties keep the fusion order
    return out


def pick(ranked: Sequence[Candidate], q_terms: list[str], config: RetrievalConfig, limit: int, *, relevant_only: bool) -> list[Candidate]:
    """Relevance (for the candidates examined) and de-duplication, up to ``limit``."""
    budget = len(ranked) if not relevant_only else max(20, 4 * limit)
    matcher = matcher_for(tuple(q_terms))

    def assessed() -> Iterator[Candidate]:  # lazily: selection stops at ``limit``
        for c in ranked[:budget]:
            h = c.hit
            if relevant_by_cosine(c.fused.cosine, config):
                yield Candidate(c.fused, c.score, None, True, c.facts)
                continue
            haystack = f"{h.title} {' '.join(h.heading_path)} {h.text}"
            cov = matcher.coverage(haystack)
            ok = relevant(c.fused.cosine, cov, config)
            if not ok and cov > 0:  # synonyms, for a sentence in a chunk about many things ("window" ~ "within 30 days")
                cov = max(cov, extractive.term_coverage(tuple(q_terms), haystack))
                ok = relevant(c.fused.cosine, cov, config)
            if ok or not relevant_only:
                yield Candidate(c.fused, c.score, cov, ok, c.facts)

    return select(
        assessed(), limit, max_per_document=config.max_chunks_per_document, jaccard_threshold=config.near_duplicate_jaccard
    )


def ranked_sources(ranked: Sequence[Candidate], n: int, *, cited: set[str] | frozenset[str] = frozenset()) -> list[RankedSource]:
    """The first ``n`` distinct documents (or products) of ``ranked``, each at its best chunk."""
    out: list[RankedSource] = []
    seen: set[str] = set()
    for c in ranked:
        if len(out) >= n:
            break
        h, f = c.hit, c.fused
        if h.document_id in seen:
            continue
        seen.add(h.document_id)
        out.append(RankedSource(
            rank=len(out) + 1, kind="product" if h.kind == "product" else "document", document_id=h.document_id,
            title=h.title, chunk_id=h.id, score=c.score, vector_score=f.cosine, keyword_score=f.bm25,
            vector_rank=f.vector_rank, keyword_rank=f.keyword_rank, cited=h.document_id in cited,
        ))
    return out


def snippet(text: str, q_terms: list[str], title: str = "") -> str:
    """The passage's sentence sharing most content words with the question, cut to SNIPPET_CHARS
    (a sentence that only repeats the title, as product texts start, is not a snippet)."""
    sentences = split_sentences(text) or [text]
    if len(sentences) > 1 and sentences[0].rstrip(" .").lower() == title.lower():
        sentences = sentences[1:]
    matcher = matcher_for(tuple(q_terms))
    best = max(range(len(sentences)), key=lambda i: (len(matcher.matched(sentences[i])), -i))
    s = sentences[best]
    return s if len(s) <= SNIPPET_CHARS else s[: SNIPPET_CHARS - 1].rsplit(" ", 1)[0] + "…"


def _digest(tenant: TenantProfile) -> str:
    return hashlib.sha1(f"{tenant.display_name}\x00{tenant.persona}".encode()).hexdigest()[:12]


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
