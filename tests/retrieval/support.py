"""Helpers of the retrieval tests (no tests here): a small real corpus, seeding, a running app,
and a local OpenAI-compatible chat server.

Seeding does what the document and catalog workers will do, with the real pieces: markdown is
chunked by ``ingestion.documents.chunking`` (fine in tests, never in retrieval code), embedded
by the real local model, written through a *writer-role* vector index (a separate instance, as a
worker process would have), with ``document`` and ``chunk`` rows for citations, and finally the
tenant's ``index_version`` is bumped. The app under test reads all of it through its own reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingestion.documents.chunking import chunk_document
from ingestion.documents.extract_markdown import markdown_blocks
from ingestion.documents.model import ExtractedDocument
from parley.crypto import load_service_token
from parley.db import unit_of_work
from knowledge.models import Chunk, Document, DocumentStatus
from parley.settings import Settings
from parley.vectors import IndexItem
from retrieval.app import RetrievalDeps, create_app
from retrieval.client import HttpRetrievalClient
from retrieval.config import RetrievalConfig
from tenants import service as tenant_service
from tenants.repository import TenantDirectory

# --- the corpus ----------------------------------------------------------------------------------

SHIPPING = """# Shipping

## Domestic
We ship every order within the United States with UPS Ground. Delivery takes 3 to 5 business days.
Orders over $50 ship free; smaller orders pay a flat $6.95.

## International
We ship to Canada and Mexico. International delivery takes 7 to 14 business days and costs $19.95 per order.
Customs duties are paid by the customer on delivery. We do not ship to Australia.
"""

RETURNS = """# Returns and refunds
You can return unworn items within 30 days of delivery for a full refund. Start a return from your order page and we
email you a prepaid return label. Refunds go back to the original payment method within 5 business days after the
parcel arrives at our warehouse. Sale items are final and cannot be returned.

# Exchanges
Exchanging an item for a different size or colour is free: choose "exchange" instead of "refund" on the return form.
"""

# The returns paragraph again, pasted into the FAQ: a near-duplicate the context must not hold twice.
FAQ = """# Frequently asked questions

## Returns
You can return unworn items within 30 days of delivery for a full refund. Start a return from your order page and we
email you a prepaid return label. Refunds go back to the original payment method within 5 business days after the
parcel arrives at our warehouse. Sale items are final and cannot be returned.

## Gift cards
Gift cards never expire and can be used online and in our Denver store.
"""

CARE = """# Caring for your boots

## Cleaning
Brush off dry mud and wipe the leather with a damp cloth. Never put boots in the washing machine or next to a heater.

## Waterproofing
Re-apply the waterproofing wax every three months, or after ten hikes in wet conditions.
"""

ACME_DOCUMENTS = {"shipping-policy.md": SHIPPING, "returns.md": RETURNS, "faq.md": FAQ, "boot-care.md": CARE}


@dataclass(frozen=True)
class ProductSpec:
    title: str
    description: str
    price: str
    available: bool
    colours: list[str]
    sizes: list[str] = field(default_factory=lambda: ["8", "9", "10", "11"])

    @property
    def handle(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


ACME_PRODUCTS = [
    ProductSpec("Trail Runner", "Lightweight trail running shoe with a grippy outsole for muddy paths.", "89.00", True, ["Red", "Blue"]),
    ProductSpec("Road Racer", "Cushioned road running shoe for long distances on asphalt.", "120.00", True, ["Black", "White"]),
    ProductSpec("Summit Parka", "Insulated waterproof parka for winter mountaineering.", "249.00", False, ["Green"], ["S", "M", "L"]),
]


# --- embedding with a memo (each text is embedded once per test session) --------------------------


class Embeddings:
    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self._memo: dict[str, np.ndarray] = {}

    def of(self, texts: list[str]) -> list[np.ndarray]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._memo]
        if missing:
            for text, vector in zip(missing, self.embedder.embed_documents_sync(missing)):
                self._memo[text] = vector
        return [self._memo[t] for t in texts]


# --- seeding ---------------------------------------------------------------------------------------


@dataclass
class Seeded:
    tenant_id: str
    name: str
    display_name: str
    chunk_ids: set[str] = field(default_factory=set)
    document_ids: dict[str, str] = field(default_factory=dict)  # filename -> id
    product_ids: dict[str, str] = field(default_factory=dict)  # title -> id


def item_id(tenant_id: str, document_id: str, ordinal: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"parley:{tenant_id}:{document_id}:{ordinal}"))


async def create_tenant(sessions: async_sessionmaker[AsyncSession], name: str, display_name: str, persona: str = "") -> Seeded:
    async with unit_of_work(sessions, admin=True) as session:
        tenant = await tenant_service.create_tenant(session, name=name, display_name=display_name, persona=persona)
        return Seeded(tenant.id, name, display_name)


async def bump(sessions: async_sessionmaker[AsyncSession], tenant_id: str) -> None:
    async with unit_of_work(sessions, admin=True) as session:
        await TenantDirectory(session).bump_index_version(tenant_id)


async def add_document(
    sessions: async_sessionmaker[AsyncSession], writer: Any, emb: Embeddings, seeded: Seeded, filename: str, markdown: str,
    *, bump_version: bool = True,
) -> str:
    """Chunk, embed and index one markdown document of a tenant, with its document and chunk rows."""
    chunks = chunk_document(ExtractedDocument("text/markdown", tuple(markdown_blocks(markdown)), title=filename))
    vectors = emb.of([c.embedding_text() for c in chunks])
    sha = hashlib.sha256(markdown.encode()).hexdigest()
    async with unit_of_work(sessions, tenant_id=seeded.tenant_id) as session:
        doc = Document(
            tenant_id=seeded.tenant_id, source="cli", filename=filename, mime_type="text/markdown",
            size_bytes=len(markdown.encode()), sha256=sha, blob_key=f"{seeded.tenant_id}/{sha}",
            status=DocumentStatus.indexed, idempotency_key=f"seed:{filename}", chunk_count=len(chunks),
        )
        session.add(doc)
        await session.flush()
        for c in chunks:
            session.add(Chunk(
                id=item_id(seeded.tenant_id, doc.id, c.ordinal), tenant_id=seeded.tenant_id, document_id=doc.id,
                ordinal=c.ordinal, heading_path=list(c.heading_path), text=c.text, token_count=c.token_estimate,
                content_hash=c.content_hash,
            ))
        document_id = doc.id
    items = [
        IndexItem(
            id=item_id(seeded.tenant_id, document_id, c.ordinal), document_id=document_id, text=c.text, vector=v,
            kind="document", title=filename, heading_path=list(c.heading_path), metadata={"ordinal": c.ordinal},
        )
        for c, v in zip(chunks, vectors)
    ]
    await writer.replace_document(seeded.tenant_id, document_id, items)
    seeded.chunk_ids.update(i.id for i in items)
    seeded.document_ids[filename] = document_id
    if bump_version:
        await bump(sessions, seeded.tenant_id)
    return document_id


async def add_products(
    sessions: async_sessionmaker[AsyncSession], writer: Any, emb: Embeddings, seeded: Seeded, products: list[ProductSpec]
) -> None:
    """Index products the way the catalog worker will: one item per product, facts in metadata."""
    texts = [f"{p.title}. {p.description} Colours: {', '.join(p.colours)}. Sizes: {', '.join(p.sizes)}." for p in products]
    vectors = emb.of(texts)
    items = []
    for p, text, v in zip(products, texts, vectors):
        product_id = "p" + hashlib.sha1(f"{seeded.tenant_id}:{p.handle}".encode()).hexdigest()[:20]
        seeded.product_ids[p.title] = product_id
        items.append(IndexItem(
            id=item_id(seeded.tenant_id, product_id, 0), document_id=product_id, text=text, vector=v, kind="product",
            title=p.title, metadata={
                "price_min": p.price, "price_max": p.price, "currency": "USD", "available": p.available,
                "url": f"https://{seeded.name}.example/products/{p.handle}",
                "options": [{"name": "Color", "values": p.colours}, {"name": "Size", "values": p.sizes}],
            },
        ))
    await writer.upsert(seeded.tenant_id, items)
    seeded.chunk_ids.update(i.id for i in items)
    await bump(sessions, seeded.tenant_id)


async def seed_acme(sessions: async_sessionmaker[AsyncSession], writer: Any, emb: Embeddings, name: str = "acme-outdoor") -> Seeded:
    seeded = await create_tenant(sessions, name, "Acme Outdoor", persona="Friendly and brief.")
    for filename, text in ACME_DOCUMENTS.items():
        await add_document(sessions, writer, emb, seeded, filename, text, bump_version=False)
    await add_products(sessions, writer, emb, seeded, ACME_PRODUCTS)
    return seeded


# --- a running app ---------------------------------------------------------------------------------


def service_headers(settings: Settings) -> dict[str, str]:
    """The service credential the gateway presents (the token the app built from ``settings`` expects)."""
    return {"Authorization": f"Bearer {load_service_token(settings)}"}


def make_config(**changes: Any) -> RetrievalConfig:
    """Exact rather than fast: the tenant row is read on every query (ttl 0), offline answers by default."""
    base = RetrievalConfig(tenant_ttl=0.0, answerer="extractive", warm_tenants=False)
    return base.with_(**changes)


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, *, embedder: Any | None, config: RetrievalConfig | None = None, **deps: Any
) -> AsyncIterator[tuple[TestServer, HttpRetrievalClient]]:
    """The real app from its factory on a local port, and the real HTTP client pointed at it.
    ``refresh_interval=0``: the reader applies new writes only when the service asks it to (on a
    new index version), so nothing in the tests depends on a background timer."""
    vector_options = deps.pop("vector_options", {"refresh_interval": 0})
    app = create_app(settings, deps=RetrievalDeps(embedder=embedder, config=config or make_config(), vector_options=vector_options, **deps))
    server = TestServer(app)
    await server.start_server()
    client = HttpRetrievalClient(str(server.make_url("")), timeout=60, token=load_service_token(settings))
    try:
        yield server, client
    finally:
        await client.aclose()
        await server.close()


# --- a local OpenAI-compatible chat server ------------------------------------------------------------


class ChatEmulator:
    """Speaks ``POST /v1/chat/completions`` (non-streaming). ``script`` holds one behaviour per
    request, consumed in order ("ok" when empty): "ok", "500", "429" (with Retry-After: 1), "slow"
    (answers only after ``release`` - past any client timeout), "hold" (sets ``held``, then waits
    for ``release`` and answers normally).

    Its "model" reads the context it is sent: it answers with the first sentence of passage [1]
    and cites [1], or with the next of ``answers`` (what a real model wrote, [n] markers and all);
    asked to rewrite a follow-up, it returns ``rewrite_reply``. `instructed` reads back what an
    answer request's system prompt told the model (language, citations, how to refuse).
    """

    def __init__(self) -> None:
        self.script: list[str] = []
        self.answers: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.rewrite_reply = "Does the Trail Runner come in blue?"
        self.server: TestServer | None = None

    @property
    def answer_requests(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if not _is_rewrite(r)]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self.server = TestServer(app)
        await self.server.start_server()
        return str(self.server.make_url("/v1"))

    async def close(self) -> None:
        self.release.set()
        if self.server is not None:
            await self.server.close()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        mode = self.script.pop(0) if self.script else "ok"
        if mode == "500":
            return web.json_response({"error": {"message": "upstream exploded", "type": "server_error"}}, status=500)
        if mode == "429":
            return web.json_response(
                {"error": {"message": "rate limited", "type": "rate_limit_exceeded"}}, status=429, headers={"Retry-After": "1"}
            )
        if mode == "slow":
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.release.wait(), 30)
        if mode == "hold":
            self.held.set()
            await self.release.wait()
        return web.json_response(self._completion(body))

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        if _is_rewrite(body):
            content = self.rewrite_reply
        elif self.answers:
            content = self.answers.pop(0)
        else:
            user = body["messages"][-1]["content"]
            m = re.search(r"^\[1\][^\n]*\n(.+?)(?:\n\n|$)", user, re.S | re.M)
            first = re.split(r"(?<=[.!?])\s", m.group(1).strip())[0] if m else "nothing"
            content = f"Our documents say: {first} [1]"
        return {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000, "model": body.get("model", "m"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
        }


def instructed(body: dict[str, Any]) -> dict[str, Any]:
    """What an answer request's system prompt tells the model: the language to answer in (named, or
    "question" when only "the language of the question"), the passage numbers it may cite, and the
    exact reply that means "not in the passages"."""
    system = body["messages"][0]["content"]
    named = re.search(r"The question is in (\w+): write the answer in \1\b", system)
    unnamed = "write the answer in the language the question is written in" in system.lower()
    cites = re.search(r"Cite the passage\(s\) .* square brackets.* \(1 to (\d+)\)", system)
    refuse = re.search(r"do not contain the answer, reply with exactly (\S+) and nothing else", system)
    return {"language": named.group(1) if named else "question" if unnamed else None,
            "cite_up_to": int(cites.group(1)) if cites else None, "not_found": refuse.group(1) if refuse else None}


def _is_rewrite(body: dict[str, Any]) -> bool:
    return "standalone question" in body["messages"][0]["content"]
