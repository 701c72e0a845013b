"""Small, dependency-free text helpers of the answer path: normalising, terms, shingles, sentences.

Everything here is a pure function and cheap (microseconds for a question, tens of microseconds
for a passage): it runs on the event loop, per request.

* `normalise_question` is the answer cache's notion of "the same question": Unicode NFKC,
  case-folded, whitespace collapsed, trailing punctuation dropped. It deliberately does not
  drop words or reorder them: two questions that differ in a word may differ in meaning.
* `terms` are the content words of a question, lightly stemmed (plural and -ing/-ed endings);
  `TermMatcher` finds them in passages and sentences (relevance, quoting, snippets) in one regex
  pass. They are *not* the keyword index's analyzer (tantivy's, in parley.vectors); they only
  have to agree with themselves.
* `estimate_tokens` follows the same rule of thumb as ingestion's chunker (~1.3 tokens per
  English word, long words one token per 4 characters): a context budget needs no tokenizer.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata

_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+", re.UNICODE)
_TRAILING = re.compile(r"[\s?!.。？！,;:]+$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")

# English function words, question words, and the verbs every customer question carries
# ("do you have", "can I get"): none of them says what the question is about.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves s t don doesn didn
    isn aren wasn weren won wouldn shouldn couldn ll ve re d m o y also please thanks thank hi hello hey tell know
    get got give need want like would could much many sell sold buy offer offers available anything something
    thing things one ones way ok okay yes yeah
    """.split()
)


def normalise_space(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def normalise_question(text: str) -> str:
    """The cache's identity of a question (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _TRAILING.sub("", normalise_space(text))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix-stripper: shoes/shoe, shipping/ship, returned/return, policies/policy.
    Cached: a passage's words are mostly words already seen, and the answer path stems every word
    of the passages it checks (`retrieval.extractive`)."""
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, repl, min_stem in (("ies", "y", 2), ("sses", "ss", 2), ("ing", "", 3), ("ed", "", 3), ("es", "", 3), ("s", "", 3)):
        if word.endswith(suffix) and len(word) - len(suffix) >= min_stem:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                return word
            if suffix == "es" and not word[:-2].endswith(("x", "ch", "sh")):
                continue  # shoes -> shoe (the "s" rule), boxes -> box
            word = word[: len(word) - len(suffix)] + repl
            if suffix in ("ing", "ed") and len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
                word = word[:-1]  # shipping -> shipp -> ship
            return word
    return word


def terms(text: str) -> list[str]:
    """Content terms (stemmed, no stop words, no single letters), in order, de-duplicated."""
    seen: dict[str, None] = {}
    for word in words(text):
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        seen.setdefault(stem(word), None)
    return list(seen)


@functools.lru_cache(maxsize=4096)
def matcher_for(query_terms: tuple[str, ...]) -> TermMatcher:
    return TermMatcher(list(query_terms))


def _prefix(term: str) -> str:
    return term[:-1] if len(term) > 3 and term.endswith("y") else term


@functools.lru_cache(maxsize=16384)
def _term_pattern(term: str) -> re.Pattern[str]:
    """Compiling costs more than searching: patterns are cached per term (terms recur across questions)."""
    prefix = _prefix(term)
    return re.compile(r"\b" + re.escape(prefix) + (r"\b" if len(prefix) <= 2 else ""))


class TermMatcher:
    """Which of a question's terms occur in a text, by regular-expression searches (C speed).

    Running `terms` over every candidate passage would stem each of its words in Python (~0.5 ms
    for a 200-word chunk); instead each question term is a word-prefix pattern: its stem ("ship"
    matches ship, ships, shipping, shipment), a stem ending in "y" without the "y" ("polic": policy,
    policies), and terms of one or two characters only as whole words. A search stops at the first
    occurrence, so a passage costs a few microseconds per term.
    """

    def __init__(self, query_terms: list[str]) -> None:
        self.terms = list(query_terms)
        self._patterns = [(t, _prefix(t), _term_pattern(t)) for t in self.terms]

    def matched(self, text: str) -> set[str]:
        low = text.lower()
        # the substring test (memchr speed) rules most terms out before the word-boundary regex runs
        return {t for t, prefix, p in self._patterns if prefix in low and p.search(low)}

    def coverage(self, text: str) -> float:
        return len(self.matched(text)) / len(self.terms) if self.terms else 0.0


def shingles(text: str, size: int = 3) -> frozenset[tuple[str, ...]]:
    """Word ``size``-grams of the normalised text (a text shorter than ``size`` is one shingle).
    Built with ``zip`` so the per-word work stays in C (~0.1 ms for a 200-word chunk)."""
    ws = words(text)
    if len(ws) <= size:
        return frozenset([tuple(ws)])
    return frozenset(zip(*(ws[i:] for i in range(size))))


def jaccard(a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@functools.lru_cache(maxsize=2048)
def split_sentences(text: str) -> tuple[str, ...]:
    """Sentences (and lines) of a passage; good enough for quoting, not for linguistics. Cached:
    the answer and its snippets split the same few passages."""
    return tuple(s for s in (normalise_space(p) for p in _SENTENCE_END.split(text)) if s)


def estimate_tokens(text: str) -> int:
    ws = text.split()
    extra = sum(len(w) / 4 - 1.3 for w in ws if len(w) > 12)  # few words are long: a short loop
    return int(math.ceil(1.3 * len(ws) + max(0.0, extra)))


def truncate_to_tokens(text: str, budget: int) -> str:
    """The longest prefix of whole words within ``budget`` estimated tokens (with an ellipsis if cut)."""
    if estimate_tokens(text) <= budget:
        return text
    out, used = [], 0.0
    for word in text.split():
        cost = 1.3 if len(word) <= 12 else max(1.3, len(word) / 4)
        if used + cost > budget - 1.3:  # room for the ellipsis, itself counted as a word
            break
        out.append(word)
        used += cost
    return " ".join(out) + " …"
