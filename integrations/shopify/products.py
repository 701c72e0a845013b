"""One normalised product, whatever it came from: a GraphQL node, bulk-operation JSONL rows, or a
webhook's REST payload.

Ids are Python ints parsed from the gid (``gid://shopify/Product/788032119674292922``) or taken
from ``json.loads`` of the raw body: they exceed 2**53, so nothing here ever goes through float.
Prices are :class:`~decimal.Decimal` parsed from Shopify's decimal strings.

:attr:`ShopifyProduct.content_hash` covers every normalised field except ``updated_at``: a product
that was saved without a visible change hashes the same and is not re-embedded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from parley.errors import InvalidInput

COLOUR_WORDS = frozenset(
    "black white red blue green yellow orange purple pink brown grey gray beige navy teal olive maroon "
    "silver gold cream ivory tan khaki burgundy turquoise lavender charcoal coral mint".split()
)
SIZE_WORDS = frozenset("xxs xs s m l xl xxl xxxl small medium large regular petite tall one-size".split())
MAX_DESCRIPTION = 20_000
TEXT_DESCRIPTION = 1_500


class Variant(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    title: str = ""
    sku: str | None = None
    price: Decimal | None = None
    available: bool = False
    inventory: int | None = None
    selected_options: list[tuple[str, str]] = Field(default_factory=list)


class ProductOption(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    values: list[str]


class ShopifyProduct(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: int
    shop: str
    title: str
    handle: str
    vendor: str | None = None
    product_type: str | None = None
    tags: list[str] = Field(default_factory=list)
    description: str = ""
    status: str = "active"
    options: list[ProductOption] = Field(default_factory=list)
    variants: list[Variant] = Field(default_factory=list)
    currency: str | None = None
    total_inventory: int | None = None
    updated_at: dt.datetime | None = None

    # --- derived ------------------------------------------------------------------------
    @property
    def listed(self) -> bool:
        """Only active products are shown to customers; drafts and archived ones are not indexed."""
        return self.status == "active"

    @property
    def prices(self) -> list[Decimal]:
        return [v.price for v in self.variants if v.price is not None]

    @property
    def price_min(self) -> Decimal | None:
        return min(self.prices) if self.prices else None

    @property
    def price_max(self) -> Decimal | None:
        return max(self.prices) if self.prices else None

    @property
    def available(self) -> bool:
        return any(v.available for v in self.variants)

    @property
    def url(self) -> str:
        return f"https://{self.shop}/products/{self.handle}"

    @property
    def colors(self) -> list[str]:
        return _option_values(self.options, ("color", "colour"), COLOUR_WORDS)

    @property
    def sizes(self) -> list[str]:
        return _option_values(self.options, ("size",), SIZE_WORDS)

    @property
    def content_hash(self) -> str:
        data = self.model_dump(mode="json", exclude={"updated_at"})
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def with_currency(self, currency: str | None) -> ShopifyProduct:
        if self.currency or not currency:
            return self
        return self.model_copy(update={"currency": currency})

    # --- wire form ----------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> ShopifyProduct:
        return cls.model_validate(data)

    # --- what search sees ---------------------------------------------------------------
    def search_text(self) -> str:
        lines = [self.title]
        facts = []
        if self.vendor:
            facts.append(f"Brand: {self.vendor}.")
        if self.product_type:
            facts.append(f"Type: {self.product_type}.")
        if facts:
            lines.append(" ".join(facts))
        if (price := self.price_text()) is not None:
            lines.append(f"Price: {price}")
        lines.append("Availability: " + ("in stock" if self.available else "out of stock"))
        if self.options:
            lines.append("Options: " + " ".join(f"{o.name}: {', '.join(o.values)}." for o in self.options))
        if self.tags:
            lines.append("Tags: " + ", ".join(self.tags))
        if self.description:
            lines.append(self.description[:TEXT_DESCRIPTION])
        return "\n".join(lines)

    def price_text(self) -> str | None:
        lo, hi = self.price_min, self.price_max
        if lo is None:
            return None
        cur = f" {self.currency}" if self.currency else ""
        return f"{lo}{cur}" if hi == lo else f"{lo}-{hi}{cur}"

    def index_metadata(self) -> dict[str, Any]:
        """The structured fields retrieval filters and re-ranks on (see the module docs of retrieval.products)."""
        return {
            "shop": self.shop,
            "shopify_id": str(self.id),  # a string: JSON readers that use doubles would round it
            "title": self.title,
            "handle": self.handle,
            "vendor": self.vendor,
            "product_type": self.product_type,
            "tags": list(self.tags),
            "price_min": float(self.price_min) if self.price_min is not None else None,
            "price_max": float(self.price_max) if self.price_max is not None else None,
            "currency": self.currency,
            "available": self.available,
            "total_inventory": self.total_inventory,
            "url": self.url,
            "options": [{"name": o.name, "values": list(o.values)} for o in self.options],
            "colors": self.colors,
            "sizes": self.sizes,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


# --- parsing helpers ----------------------------------------------------------------------


def gid_to_int(value: Any) -> int:
    """``gid://shopify/Product/123`` or ``123`` (int or string) -> 123. Never through float."""
    if isinstance(value, bool):
        raise InvalidInput(f"not a Shopify id: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value or "").strip()
    if text.startswith("gid://"):
        text = text.rsplit("/", 1)[-1].split("?", 1)[0]
    if not (text.isascii() and text.isdigit() and len(text) <= 20):  # "²".isdigit() is True; int() refuses it
        raise InvalidInput(f"not a Shopify id: {str(value)[:40]!r}")
    return int(text)


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, dict):  # MoneyV2 {amount, currencyCode}
        value = value.get("amount")
    if isinstance(value, float):
        value = repr(value)
    try:
        amount = Decimal(str(value))
    except InvalidOperation as exc:
        raise InvalidInput(f"not a price: {value!r}") from exc
    return amount.quantize(Decimal("0.01")) if amount.is_finite() else None


def _when(value: Any) -> dt.datetime | None:
    if not value:
        return None
    when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _tags(value: Any) -> list[str]:
    items = value.split(",") if isinstance(value, str) else (value or [])
    seen: dict[str, None] = {}
    for tag in items:
        if tag and str(tag).strip():
            seen.setdefault(str(tag).strip(), None)
    return list(seen)


def _clean_options(raw: Iterable[dict[str, Any]]) -> list[ProductOption]:
    options = []
    for option in raw or []:
        name = str(option.get("name") or "").strip()
        values = [str(v) for v in option.get("values") or [] if str(v).strip()]
        if not name or (name == "Title" and values in ([], ["Default Title"])):
            continue  # Shopify's placeholder option of a product without variants
        options.append(ProductOption(name=name, values=values))
    return options


def _option_values(options: list[ProductOption], names: tuple[str, ...], vocabulary: frozenset[str]) -> list[str]:
    found: dict[str, None] = {}
    for option in options:
        named = any(n in option.name.lower() for n in names)
        for value in option.values:
            if named or (option.name.lower().startswith("option") and value.lower() in vocabulary):
                found.setdefault(value.lower(), None)
    return list(found)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("p", "br", "li", "div", "tr", "h1", "h2", "h3", "h4"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str | None) -> str:
    if not markup:
        return ""
    if "<" not in markup:
        return _squash(html.unescape(markup))
    parser = _Text()
    parser.feed(markup)
    parser.close()
    return _squash("".join(parser.parts))


def _squash(text: str) -> str:
    lines = (re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)[:MAX_DESCRIPTION]


# --- from GraphQL -------------------------------------------------------------------------


def variant_from_graphql(node: dict[str, Any]) -> Variant:
    return Variant(
        id=gid_to_int(node["id"]),
        title=str(node.get("title") or ""),
        sku=node.get("sku") or None,
        price=_decimal(node.get("price")),
        available=bool(node.get("availableForSale")),
        inventory=node.get("inventoryQuantity"),
        selected_options=[(str(o.get("name")), str(o.get("value"))) for o in node.get("selectedOptions") or []],
    )


def from_graphql(node: dict[str, Any], *, shop: str, currency: str | None = None,
                 variants: Iterable[dict[str, Any]] | None = None) -> ShopifyProduct:
    """A ``Product`` node of the paginated query or a product row of a bulk export.

    ``variants``: variant nodes given separately (bulk rows, follow-up pages); otherwise the
    node's own ``variants.nodes`` (or ``edges``) are used.
    """
    if variants is None:
        connection = node.get("variants") or {}
        if isinstance(connection, list):
            variants = connection
        else:
            variants = connection.get("nodes") or [e["node"] for e in connection.get("edges") or []]
    price_range = node.get("priceRangeV2") or {}
    currency = ((price_range.get("minVariantPrice") or {}).get("currencyCode")) or currency
    return ShopifyProduct(
        id=gid_to_int(node["id"]),
        shop=shop,
        title=str(node.get("title") or "").strip() or "(untitled)",
        handle=str(node.get("handle") or ""),
        vendor=node.get("vendor") or None,
        product_type=node.get("productType") or None,
        tags=_tags(node.get("tags")),
        description=html_to_text(node.get("description") if node.get("description") is not None else node.get("descriptionHtml")),
        status=str(node.get("status") or "ACTIVE").lower(),
        options=_clean_options(node.get("options") or []),
        variants=[variant_from_graphql(v) for v in variants],
        currency=currency,
        total_inventory=node.get("totalInventory"),
        updated_at=_when(node.get("updatedAt")),
    )


def assemble_bulk(rows: Iterable[dict[str, Any]], *, shop: str, currency: str | None = None,
                  ) -> tuple[list[ShopifyProduct], list[tuple[int | str, str]]]:
    """Bulk-operation JSONL rows -> products. Child rows (variants) carry ``__parentId`` and may
    come anywhere in the file, so all rows are read first. Returns (products, [(id, why)] failures)."""
    products: dict[str, dict[str, Any]] = {}
    children: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        parent = row.get("__parentId")
        if parent:
            children.setdefault(str(parent), []).append(row)
        elif str(row.get("id", "")).startswith("gid://shopify/Product/"):
            products[str(row["id"])] = row
    result, failures = [], []
    for gid, row in products.items():
        try:
            result.append(from_graphql(row, shop=shop, currency=currency, variants=children.get(gid, [])))
        except (InvalidInput, ValueError, KeyError, TypeError) as exc:
            failures.append((_safe_id(gid), f"unreadable product data ({exc})"))
    return result, failures


def _safe_id(value: Any) -> int | str:
    try:
        return gid_to_int(value)
    except InvalidInput:
        return str(value)


# --- from a webhook's REST payload --------------------------------------------------------


def from_rest(payload: dict[str, Any], *, shop: str, currency: str | None = None) -> ShopifyProduct:
    """``products/create`` and ``products/update`` bodies (parsed with ``json.loads``: ints stay exact)."""
    raw_options = payload.get("options") or []
    names = [str(o.get("name") or "") for o in sorted(raw_options, key=lambda o: o.get("position") or 0)]
    variants = []
    for v in payload.get("variants") or []:
        values = [v.get(f"option{i}") for i in (1, 2, 3)]
        selected = []
        for i, value in enumerate(values):
            if value is None:
                continue
            name = names[i] if i < len(names) and names[i] else ("Option" if i == 0 else f"Option {i + 1}")
            selected.append((name, str(value)))
        quantity = v.get("inventory_quantity")
        tracked = v.get("inventory_management") not in (None, "")
        available = (quantity or 0) > 0 or v.get("inventory_policy") == "continue" or (
            "inventory_management" in v and not tracked)
        variants.append(Variant(
            id=gid_to_int(v.get("id") if v.get("id") is not None else v.get("admin_graphql_api_id")),
            title=str(v.get("title") or ""), sku=v.get("sku") or None, price=_decimal(v.get("price")),
            available=bool(available), inventory=quantity, selected_options=selected,
        ))
    options = _clean_options(raw_options) if any(o.get("values") for o in raw_options) else _options_of(variants)
    quantities = [v.inventory for v in variants if v.inventory is not None]
    return ShopifyProduct(
        id=gid_to_int(payload.get("id") if payload.get("id") is not None else payload.get("admin_graphql_api_id")),
        shop=shop,
        title=str(payload.get("title") or "").strip() or "(untitled)",
        handle=str(payload.get("handle") or ""),
        vendor=payload.get("vendor") or None,
        product_type=payload.get("product_type") or None,
        tags=_tags(payload.get("tags")),
        description=html_to_text(payload.get("body_html")),
        status=str(payload.get("status") or "active").lower(),
        options=options,
        variants=variants,
        currency=currency,
        total_inventory=sum(quantities) if quantities else None,
        updated_at=_when(payload.get("updated_at")),
    )


def _options_of(variants: list[Variant]) -> list[ProductOption]:
    by_name: dict[str, dict[str, None]] = {}
    for variant in variants:
        for name, value in variant.selected_options:
            by_name.setdefault(name, {}).setdefault(value, None)
    return _clean_options({"name": n, "values": list(v)} for n, v in by_name.items())
