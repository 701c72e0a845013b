"""Grouping the questions the bot could not answer (or answered with a 👎) into an owner's to-do list.

Deterministic and explainable, so an owner can see why two questions share a line:

1. A question's *key words*: Unicode NFKC, case-folded, contractions opened ("where's" -> "where
   is"), split into words, stop words dropped (function words, question words, politeness and
   the verbs every question carries: "where is my order please" -> ``{order}``), each word lightly
   stemmed (orders/order, shipping/ship, returned/return, policies/policy).
2. Two questions are alike when their key-word sets overlap enough: Jaccard similarity
   (shared words / all words) of at least :data:`THRESHOLD`. "where is my order" ``{order}`` and
   "order status please" ``{order, status}`` share 1 of 2 words (0.5): alike; "do you ship to
   Canada" ``{ship, canada}`` shares none with them.
3. Greedy grouping, in a fixed order: the distinct key-word sets, most asked first (then most
   recent, then alphabetical), each joins the first group whose *representative* (the group's
   first, most asked wording) is alike, else starts a group. Comparing with the representative,
   not with every member, keeps a chain of small overlaps from pulling unrelated questions in.

Why not the embedding model: the gateway does not load it (the retrieval service does), the CLI
would have to, and a nearest-neighbour cluster cannot say *why* two questions were put together.
Word sets run in microseconds over the few thousand questions a report looks at.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

#: Smallest Jaccard similarity of two key-word sets that puts their questions in one group.
THRESHOLD = 0.5

T = TypeVar("T")

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CONTRACTION = re.compile(r"\b(\w+?)(n't|'s|'re|'ll|'ve|'d|'m)\b")
_OPENED = {"n't": " not", "'s": " is", "'re": " are", "'ll": " will", "'ve": " have", "'d": " would", "'m": " am"}

# Words that say nothing about what a customer asks: function words, question words, greetings and
# politeness, and the verbs every question carries ("can I get", "do you have", "I want to know").
STOP_WORDS = frozenset("""
    a about above after again all also am an and any anyone anything are as at be been being but by can cannot
    could did do does doing done for from get gets getting give go going got had has have having he hello help
    her here hey hi his how i if in into is it its just know let like look looking me mine more much my need
    no not now of on one or our out please pls plz she should so some someone something tell thank thanks that
    the their them then there these they thing this those to too u want was we were what whats when where
    which who whom why will with would yes you your yours ok okay hmm
""".split())


@functools.lru_cache(maxsize=8192)
def stem(word: str) -> str:
    """A light suffix-stripper: orders/order, shipping/ship, returned/return, policies/policy, boxes/box."""
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, repl, keep in (("ies", "y", 2), ("sses", "ss", 2), ("ing", "", 3), ("ed", "", 3), ("es", "", 3),
                               ("s", "", 3)):
        if not word.endswith(suffix) or len(word) - len(suffix) < keep:
            continue
        if suffix == "s" and word.endswith(("ss", "us", "is")):
            return word
        if suffix == "es" and not word[:-2].endswith(("x", "ch", "sh", "ss")):
            continue  # shoes -> shoe (by the "s" rule), boxes -> box
        word = word[: len(word) - len(suffix)] + repl
        if suffix in ("ing", "ed") and len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
            word = word[:-1]  # shipping -> shipp -> ship
        return word
    return word


@functools.lru_cache(maxsize=8192)
def key_words(text: str) -> frozenset[str]:
    """The stemmed content words of a question (see the module docstring); may be empty ("hi?")."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("\u2019", "'")
    if "'" in text:
        text = text.replace("can't", "can not").replace("won't", "will not")
        text = _CONTRACTION.sub(lambda m: m.group(1) + _OPENED[m.group(2)], text)
    return frozenset(stem(w) for w in _WORD.findall(text) if w not in STOP_WORDS and (len(w) > 1 or w.isdigit()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


@dataclass
class Group(Generic[T]):
    """Items alike to the group's representative wording, ``key`` its key words."""

    key: frozenset[str]
    items: list[T] = field(default_factory=list)


def group(items: Sequence[T], *, text_of: Callable[[T], str], order_of: Callable[[T], float],
          threshold: float = THRESHOLD) -> list[Group[T]]:
    """The items grouped by the similarity of their texts (module docstring), the biggest group first.

    ``order_of`` is a number that ranks an item's recency (higher is more recent: a timestamp): it
    breaks ties between wordings asked equally often, so the grouping never depends on input order.
    A text with no key words ("hi?") is grouped only with the same normalised text."""
    by_key: dict[frozenset[str], list[T]] = {}
    for item in items:
        words = key_words(text_of(item))
        if not words:  # nothing to compare: group only identical texts
            words = frozenset({"\0" + " ".join(_WORD.findall(unicodedata.normalize("NFKC", text_of(item)).casefold()))})
        by_key.setdefault(words, []).append(item)
    keys = sorted(by_key, key=lambda k: (-len(by_key[k]), -max(order_of(i) for i in by_key[k]), sorted(k)))
    groups: list[Group[T]] = []
    for key in keys:
        home = None if _opaque(key) else next(
            (g for g in groups if not _opaque(g.key) and jaccard(g.key, key) >= threshold), None)
        if home is None:
            groups.append(Group(key, list(by_key[key])))
        else:
            home.items.extend(by_key[key])
    groups.sort(key=lambda g: (-len(g.items), -max(order_of(i) for i in g.items), _opaque(g.key), sorted(g.key)))
    return groups


def _opaque(key: Iterable[str]) -> bool:
    return any(w.startswith("\0") for w in key)

