"""Product catalogs for the emulated stores, as Admin GraphQL ``Product`` nodes.

* :func:`synthetic_catalog`: small, deterministic, no files needed (core tests).
* :func:`csv_catalog`: a realistic store from ../shared/data/catalog: Shopify's own product-import
  CSVs (variants as extra rows of a handle, Option1..3, Variant Price / Inventory Qty) plus the
  Leipzig benchmark's real electronics and software listings (name, description, manufacturer,
  price) as single-variant products. Raises :class:`CatalogMissing` when the folder is absent.

Product ids start above 2**53 on purpose: any float on the way would change them.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from tests.integrations.shopify_emulator import gid
from tests.support.services import SHARED_DATA

CATALOG_DIR = SHARED_DATA / "catalog"
BASE_ID = 9_007_199_254_740_993 * 100  # > 2**53, < 2**63
COLOURS = ["Blue", "Black", "Red", "Green", "White", "Grey"]
SIZES = ["S", "M", "L", "XL"]
KINDS = ["Shirt", "Hoodie", "Sneaker", "Backpack", "Mug", "Lamp", "Scarf", "Watch"]


class CatalogMissing(Exception):
    pass


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:80] or "product"


def product_node(pid: int, *, title: str, description: str = "", vendor: str | None = None, product_type: str | None = None,
                 tags: list[str] | None = None, options: list[tuple[str, list[str]]] | None = None,
                 variants: list[dict[str, Any]] | None = None, handle: str | None = None, status: str = "ACTIVE",
                 currency: str = "USD") -> dict[str, Any]:
    """``variants``: [{title, price, qty, sku, options: {name: value}}]; ids are derived from ``pid``."""
    variants = variants or [{"title": "Default Title", "price": "10.00", "qty": 5, "options": {"Title": "Default Title"}}]
    nodes = []
    for i, v in enumerate(variants):
        qty = int(v.get("qty", 0))
        nodes.append({"id": gid("ProductVariant", (1 << 60) + (pid % 10**12) * 256 + i), "title": v["title"], "sku": v.get("sku"),
                      "price": str(v["price"]), "availableForSale": qty > 0, "inventoryQuantity": qty,
                      "selectedOptions": [{"name": n, "value": val} for n, val in (v.get("options") or {}).items()]})
    prices = [Decimal(n["price"]) for n in nodes]
    return {
        "id": gid("Product", pid), "title": title, "handle": handle or f"{slug(title)}-{pid % 100000}",
        "vendor": vendor, "productType": product_type, "tags": tags or [], "description": description,
        "status": status, "totalInventory": sum(n["inventoryQuantity"] for n in nodes),
        "options": [{"name": n, "values": vals} for n, vals in (options or [("Title", ["Default Title"])])],
        "priceRangeV2": {"minVariantPrice": {"amount": str(min(prices)), "currencyCode": currency},
                         "maxVariantPrice": {"amount": str(max(prices)), "currencyCode": currency}},
        "variants": nodes,
    }


def synthetic_catalog(n: int, *, seed: int = 7, start: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(start, start + n):
        kind = KINDS[i % len(KINDS)]
        colours = rng.sample(COLOURS, 2)
        sizes = SIZES[: 2 + i % 3]
        base = Decimal(rng.randrange(900, 12000)) / 100
        variants = [{"title": f"{c} / {s}", "price": f"{base + j:.2f}", "qty": rng.choice([0, 3, 12]), "sku": f"SKU-{i}-{c[:2]}{s}",
                     "options": {"Color": c, "Size": s}} for c in colours for j, s in enumerate(sizes)]
        out.append(product_node(BASE_ID + i, title=f"{colours[0]} {kind} No. {i}", vendor=rng.choice(["Acme", "Globex", "Initech"]),
                                product_type=kind, tags=[kind.lower(), "synthetic"],
                                description=f"A {colours[0].lower()} {kind.lower()} for everyday use, item {i}.",
                                options=[("Color", colours), ("Size", sizes)], variants=variants))
    return out


def _price(text: str | None, key: str) -> Decimal:
    cleaned = re.sub(r"[^0-9.]", "", text or "")
    try:
        value = Decimal(cleaned) if cleaned else Decimal(0)
    except InvalidOperation:
        value = Decimal(0)
    if value <= 0:  # listings without a price get a stable made-up one
        value = Decimal(int(hashlib.sha256(key.encode()).hexdigest()[:6], 16) % 50000 + 499) / 100
    return value.quantize(Decimal("0.01"))


def _shopify_csv(path: Path, start: int) -> list[dict[str, Any]]:
    """Shopify's product-import format: the first row of a handle has the product, later rows add variants."""
    groups: dict[str, list[dict[str, str]]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row.get("Handle"):
                groups.setdefault(row["Handle"], []).append(row)
    products = []
    for offset, (handle, rows) in enumerate(groups.items()):
        head = rows[0]
        names = [head.get(f"Option{i} Name") or "" for i in (1, 2, 3)]
        variants, values = [], {n: [] for n in names if n}
        for row in rows:
            if not row.get("Variant Price") and not row.get("Option1 Value"):
                continue  # an image-only row
            opts = {n: row.get(f"Option{i} Value") or "" for i, n in enumerate(names, start=1) if n and row.get(f"Option{i} Value")}
            for n, v in opts.items():
                if v not in values[n]:
                    values[n].append(v)
            variants.append({"title": " / ".join(opts.values()) or "Default Title", "price": _price(row.get("Variant Price"), handle),
                             "qty": int(float(row.get("Variant Inventory Qty") or 0)), "sku": row.get("Variant SKU") or None, "options": opts})
        products.append(product_node(
            start + offset, title=head.get("Title") or handle, handle=handle, vendor=head.get("Vendor") or None,
            product_type=head.get("Type") or None, tags=[t.strip() for t in (head.get("Tags") or "").split(",") if t.strip()],
            description=re.sub(r"<[^>]+>", " ", head.get("Body (HTML)") or "").strip(),
            options=[(n, vals) for n, vals in values.items()] or None, variants=variants or None))
    return products


def _listings(path: Path, start: int, limit: int) -> list[dict[str, Any]]:
    products = []
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if len(products) >= limit:
                break
            title = (row.get("name") or row.get("title") or "").strip()
            if not title:
                continue
            pid = start + i
            vendor = (row.get("manufacturer") or "").strip() or None
            products.append(product_node(
                pid, title=title[:250], vendor=vendor, product_type=path.stem.split("__")[-1],
                description=(row.get("description") or "").strip()[:2000], tags=[path.stem.split("__")[-1].lower()],
                variants=[{"title": "Default Title", "price": _price(row.get("price"), title), "qty": pid % 7,
                           "options": {"Title": "Default Title"}}]))
    return products


def csv_catalog(min_products: int = 1000, *, folder: Path = CATALOG_DIR) -> list[dict[str, Any]]:
    if not folder.is_dir():
        raise CatalogMissing(f"../shared/data is missing (looked for {folder})")
    products: list[dict[str, Any]] = []
    for index, path in enumerate(sorted(folder.glob("shopifypartners__*.csv"))):
        products += _shopify_csv(path, BASE_ID + 1_000_000 * (index + 1))
    for index, path in enumerate(sorted(folder.glob("leipzig-er__*.csv"))):
        if len(products) >= min_products:
            break
        products += _listings(path, BASE_ID + 10_000_000 * (index + 1), min_products - len(products))
    if len(products) < min_products:
        raise CatalogMissing(f"only {len(products)} products could be built from {folder}")
    return products
