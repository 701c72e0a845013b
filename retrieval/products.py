"""Structured constraints in shopping questions, and product facts from hit metadata.

A question like "running shoes under $80 in blue, in stock?" carries constraints a text search
cannot apply: price, colour, size and stock. We read them with a few patterns and then *re-rank*
product hits by the structured fields their metadata holds:

* a product that matches a colour or size asked for is boosted;
* one that violates a price bound, or is out of stock when stock was asked about, is demoted below
  every product that does not - never dropped, because "is the Trail Runner in stock?" must be
  answered "no, it is out of stock", not "I couldn't find that".

Product hit metadata (written by the catalog worker; the Shopify issue owns the exact shape) is
read leniently, mirroring ``parley.models.Product``: ``price_min``/``price_max`` or ``price``
(number or decimal string), ``currency``, ``available`` (bool) or ``availability``
("in_stock"/"out_of_stock") or ``total_inventory``, ``url``, ``options`` ([{"name", "values"}]),
``tags``. Missing fields simply do not take part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from retrieval.text import words

COLOURS = frozenset(
    "black white red blue green yellow orange purple pink brown grey gray beige navy teal olive maroon "
    "silver gold cream ivory tan khaki burgundy turquoise lavender charcoal coral mint".split()
)
_NUM = r"\$?\s*(\d+(?:[.,]\d{1,2})?)\s*(?:\$|usd|eur|€|£|dollars?|euros?)?"
_MAX = re.compile(r"\b(?:under|below|less than|cheaper than|at most|up to|max(?:imum)?|no more than)\s+" + _NUM)
_MIN = re.compile(r"\b(?:over|above|more than|at least|min(?:imum)?|from)\s+" + _NUM + r"(?!\s*(?:to|-|and)\s*\$?\d)")
_RANGE = re.compile(r"\b(?:between|from)?\s*" + _NUM + r"\s*(?:-|to|and)\s*" + _NUM)
_SIZE = re.compile(r"\bsize\s+([a-z0-9.]+)|\b(xxs|xs|xl|xxl|xxxl)\b")
_STOCK = re.compile(r"\b(in stock|instock|available|availability|sold out|out of stock|any left|restock)")


@dataclass(frozen=True)
class Constraints:
    price_min: Decimal | None = None
    price_max: Decimal | None = None
    colours: frozenset[str] = field(default_factory=frozenset)
    sizes: frozenset[str] = field(default_factory=frozenset)
    stock: bool = False
    #: the question's words: a product it names ("is the Pink Armchair in stock?") is never demoted
    words: frozenset[str] = field(default_factory=frozenset)

    @property
    def any(self) -> bool:
        return bool(self.price_min is not None or self.price_max is not None or self.colours or self.sizes or self.stock)


def _dec(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", "."))
    except InvalidOperation:
        return None


def parse_constraints(question: str) -> Constraints:
    q = question.lower()
    lo = hi = None
    if (m := _MAX.search(q)) is not None:
        hi = _dec(m.group(1))
    if (m := _MIN.search(q)) is not None:
        lo = _dec(m.group(1))
    if lo is None and hi is None and (m := _RANGE.search(q)) is not None and ("$" in q or "between" in q or "price" in q):
        a, b = _dec(m.group(1)), _dec(m.group(2))
        if a is not None and b is not None:
            lo, hi = min(a, b), max(a, b)
    colours = frozenset(w for w in words(q) if w in COLOURS)
    sizes = frozenset((m.group(1) or m.group(2)) for m in _SIZE.finditer(q))
    return Constraints(lo, hi, colours, sizes, _STOCK.search(q) is not None, frozenset(words(q)))


@dataclass(frozen=True)
class ProductFacts:
    price_min: Decimal | None
    price_max: Decimal | None
    currency: str | None
    available: bool | None
    url: str | None
    option_values: frozenset[str]

    @property
    def price(self) -> str | None:
        if self.price_min is None:
            return None
        if self.price_max is not None and self.price_max != self.price_min:
            return f"{self.price_min:.2f}-{self.price_max:.2f}"
        return f"{self.price_min:.2f}"

    @property
    def availability(self) -> str | None:
        return None if self.available is None else ("in_stock" if self.available else "out_of_stock")


def _price(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def product_facts(metadata: dict[str, Any]) -> ProductFacts:
    lo = _price(metadata.get("price_min", metadata.get("price")))
    hi = _price(metadata.get("price_max")) or lo
    available: bool | None = None
    if isinstance(metadata.get("available"), bool):
        available = metadata["available"]
    elif isinstance(metadata.get("availability"), str):
        available = metadata["availability"].lower() in ("in_stock", "instock", "available", "in stock")
    elif isinstance(metadata.get("total_inventory"), int):
        available = metadata["total_inventory"] > 0
    values: set[str] = set()
    for option in metadata.get("options") or []:
        if isinstance(option, dict):
            values.update(str(v).lower() for v in option.get("values") or [])
    values.update(str(t).lower() for t in metadata.get("tags") or [])
    url = metadata.get("url")
    currency = metadata.get("currency")
    return ProductFacts(
        lo, hi, str(currency) if currency else None, available, str(url) if url else None, frozenset(values)
    )


def product_factor(constraints: Constraints, facts: ProductFacts, text: str, *, title: str = "") -> float:
    """Multiplier for a product hit's fused score under the question's constraints (1.0: neutral).
    A product the question names by its full title is asked *about*: its facts are the answer, so
    it is boosted and never demoted ("no, it is out of stock")."""
    factor = 1.2 if constraints.any else 1.0  # a shopping question: products first among equals
    title_words = set(words(title))
    if title_words and title_words <= constraints.words:
        return factor * 1.5
    if constraints.price_max is not None and facts.price_min is not None and facts.price_min > constraints.price_max:
        factor *= 0.3
    if constraints.price_min is not None and facts.price_max is not None and facts.price_max < constraints.price_min:
        factor *= 0.3
    if constraints.stock and facts.available is False:
        factor *= 0.5
    if constraints.colours or constraints.sizes:
        haystack = facts.option_values | set(words(text))
        if constraints.colours and constraints.colours & haystack:
            factor *= 1.5
        if constraints.sizes and constraints.sizes & haystack:
            factor *= 1.3
    return factor
