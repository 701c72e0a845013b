"""From fused candidates to the numbered context an answer is written from.

Four steps over the fused list (`retrieval.service.rank` and `.pick` run them in order):

1. re-ranking: structured shopping constraints move product hits up or down
   (`retrieval.products`).
2. `relevant`: is this candidate about the question at all? The vector leg's cosine is the main
   signal; content-word overlap rescues exact matches (SKUs, names) the embedding misses and
   supports borderline cosines. Thresholds live in `RetrievalConfig` (see its docstring for the
   MiniLM calibration). A candidate the vector leg did not return has no cosine; its cosine is
   at most the vector list's last score, so it is judged by overlap alone.
3. `select`: de-duplication - no two near-identical chunks (word 3-gram shingles of the
   normalised text with Jaccard >= ``near_duplicate_jaccard``, which includes the same text
   twice: the same FAQ pasted into two documents, a page saved twice) and at most ``max_per_document`` chunks of one document, unless
   all the candidates come from one document (then it is the only source and may fill the list).
   Work is lazy: shingles are computed only for candidates that get that far.
4. `build_context`: numbered passages within a token budget; the first passage is truncated
   rather than dropped when it alone exceeds the budget.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from retrieval.config import RetrievalConfig
from retrieval.fusion import Fused
from retrieval.products import ProductFacts
from retrieval.text import estimate_tokens, jaccard, shingles, truncate_to_tokens


@dataclass(frozen=True)
class Candidate:
    fused: Fused
    score: float
    coverage: float | None  # of the question's content terms; None when the cosine alone decided
    relevant: bool
    facts: ProductFacts | None = None

    @property
    def hit(self):  # type: ignore[no-untyped-def]
        return self.fused.hit


@dataclass(frozen=True)
class Passage:
    n: int
    candidate: Candidate
    text: str
    tokens: int

    @property
    def hit(self):  # type: ignore[no-untyped-def]
        return self.candidate.fused.hit


def relevant(cosine: float | None, cov: float, config: RetrievalConfig) -> bool:
    if cov >= config.min_keyword_coverage:
        return True
    if cosine is None:
        return False
    return cosine >= config.min_cosine or (cosine >= config.min_cosine_with_overlap and cov > 0)


def relevant_by_cosine(cosine: float | None, config: RetrievalConfig) -> bool:
    """The cheap sufficient test: decided without looking at the text."""
    return cosine is not None and cosine >= config.min_cosine


def select(candidates: Iterable[Candidate], limit: int, *, max_per_document: int, jaccard_threshold: float) -> list[Candidate]:
    """Step 3 (see the module docstring). Consumes ``candidates`` lazily and stops at ``limit``."""
    kept: list[Candidate] = []
    seen_shingles: list[frozenset[tuple[str, ...]]] = []
    per_document: Counter[str] = Counter()
    capped: list[Candidate] = []

    def novel(c: Candidate) -> bool:
        if c.hit.kind == "product":
            return True  # two products with one description are still two products (price, link)
        sh = shingles(c.hit.text)
        if any(jaccard(sh, other) >= jaccard_threshold for other in seen_shingles):
            return False
        seen_shingles.append(sh)
        return True

    for c in candidates:
        if len(kept) >= limit:
            break
        if per_document[c.hit.document_id] >= max_per_document:
            capped.append(c)
        elif novel(c):
            kept.append(c)
            per_document[c.hit.document_id] += 1
    if len(kept) < limit and len(per_document) == 1:  # one document is the only source: let it fill
        for c in capped:
            if len(kept) >= limit:
                break
            if novel(c):
                kept.append(c)
    return kept


def passage_header(n: int, c: Candidate) -> str:
    h = c.hit
    title = h.title or h.document_id
    where = " › ".join(h.heading_path)
    head = f"[{n}] {title}" + (f" › {where}" if where else "")
    if c.facts is not None:
        bits = []
        if c.facts.price:
            bits.append(f"price {c.facts.price}" + (f" {c.facts.currency}" if c.facts.currency else ""))
        if c.facts.availability:
            bits.append("in stock" if c.facts.available else "out of stock")
        if c.facts.url:
            bits.append(c.facts.url)
        if bits:
            head += " (" + "; ".join(bits) + ")"
    return head


def build_context(selected: Sequence[Candidate], budget: int) -> list[Passage]:
    """Step 4: passages numbered from 1, in rank order, within ``budget`` estimated tokens."""
    passages: list[Passage] = []
    used = 0
    for c in selected:
        n = len(passages) + 1
        header_cost = estimate_tokens(passage_header(n, c))
        text = c.hit.text
        cost = header_cost + estimate_tokens(text)
        if used + cost > budget:
            if passages:
                break
            text = truncate_to_tokens(text, max(16, budget - header_cost))
            cost = header_cost + estimate_tokens(text)
        passages.append(Passage(n, c, text, cost))
        used += cost
    return passages


def render_context(passages: Sequence[Passage]) -> str:
    return "\n\n".join(f"{passage_header(p.n, p.candidate)}\n{p.text}" for p in passages)
