"""Tenant isolation as a property, through the real gateway app and the real retrieval service.

Hypothesis builds worlds of tenants whose documents look alike (the same templates; some files are
word for word the same in every tenant) but carry each tenant's own brand and code words, then asks
random questions, some of them fishing for another tenant's code word. Every example adds tenants
to the same database, so later examples run against everything the earlier ones created.

For every response a tenant's API key (or its dashboard session) gets, the property is:
- nothing in it belongs to another tenant: no id, file name, brand, code word or chunk of theirs;
- every citation is one of the asking tenant's own chunks;
- every resource of another tenant (document, job, conversation message, dead letter) is a 403/404.

Example-based versions of the 404s live in tests/bot/test_web.py and test_admin.py; one fixed world of
look-alike tenants in tests/retrieval/test_isolation.py.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from parley.bus import Envelope, Failure, record_dead_letter
from parley.bus.contracts import DOCUMENT_UPLOADED
from parley.db import unit_of_work
from parley.vectors import create_vector_index
from tenants import service as tenants
from tests.bot.conftest import Stack, embedder, make_stack, stack  # noqa: F401  (fixtures)
from tests.retrieval.support import Embeddings, Seeded, add_document, create_tenant

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

TEMPLATES = {
    "returns": "# Returns at {brand}\n\nYou can return unworn items within {n} days of delivery for a full refund. "
               "Quote the return code {code} on the parcel.\n",
    "shipping": "# Shipping at {brand}\n\nOrders leave our warehouse within {n} business days. Mention voucher {code} "
                "at checkout for free express delivery.\n",
    "warranty": "# Warranty\n\n{brand} repairs any manufacturing defect for {n} months. Register the product with the "
                "serial prefix {code}.\n",
    "hours": "# Opening hours\n\nThe {brand} store opens at {n} o'clock on weekdays. The staff entrance code is {code}.\n",
}
#: A question each template's document answers (used to check the tenant's index is live before the checks).
PROBES = {"returns": "What is the return code {code}?", "shipping": "Which voucher is {code}?",
          "warranty": "Which serial prefix is {code}?", "hours": "What is the staff entrance code {code}?"}
#: Word for word the same file in every tenant that has it: only the citation ids tell them apart.
SHARED = "# Care guide\n\nWash linen shirts cold and hang them to dry. Never tumble dry wool or cashmere.\n"
QUESTIONS = [
    "How many days do I have to return an item?",
    "How long does shipping take?",
    "How long is the warranty?",
    "When does the store open?",
    "How do I wash a linen shirt?",
    "What is the code {foreign_code}?",
    "What is the return policy of {foreign_brand}?",
    "{foreign_code}",
]


@dataclass(repr=False)
class Known:
    """One tenant as the test knows it: its credentials and everything that is its own."""

    tenant_id: str
    key: str
    brand: str
    codes: set[str] = field(default_factory=set)
    markers: set[str] = field(default_factory=set)  # strings only this tenant's data contains
    typed: set[str] = field(default_factory=set)  # what this tenant itself sent (its own data, whatever it says)
    chunk_ids: set[str] = field(default_factory=set)
    documents: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    admin: aiohttp.ClientSession | None = None
    csrf: str = ""

    def __repr__(self) -> str:
        return f"Known({self.tenant_id}, {self.brand}, codes={sorted(self.codes)})"


class World:
    """The stack, a vector writer standing in for the workers, and every tenant made so far.
    (A plain class: hypothesis prints dataclass arguments field by field, the whole world each time.)"""

    def __init__(self, stack: Stack, writer: Any, emb: Embeddings, base: str) -> None:
        self.stack, self.writer, self.emb, self.base = stack, writer, emb, base
        self.known: list[Known] = []

    def __repr__(self) -> str:
        return f"World({len(self.known)} tenants)"


@pytest.fixture
async def world(stack: Stack, embedder: Any) -> AsyncIterator[World]:  # noqa: F811
    writer = create_vector_index(stack.settings, role="writer", sessions=stack.sessions)
    w = World(stack, writer, Embeddings(embedder), str(stack.client.make_url("")).rstrip("/"))
    yield w
    for k in w.known:
        if k.admin is not None:
            await k.admin.close()
    await writer.aclose()


tenant_specs = st.lists(
    st.tuples(st.lists(st.sampled_from(sorted(TEMPLATES)), min_size=1, max_size=3, unique=True),
              st.integers(min_value=2, max_value=60), st.booleans()),
    min_size=2, max_size=3,
)
questions = st.lists(st.tuples(st.integers(0, 99), st.sampled_from(QUESTIONS), st.integers(0, 99)), min_size=1, max_size=4)


# No shrinking: every example adds tenants to one database, so a re-run is never the same world, and
# each costs seconds; the failing example is reported as generated (with the seed to replay it).
@settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=tenant_specs, asks=questions)
async def test_no_tenant_ever_sees_another_tenants_data(world: World, specs: list[tuple[list[str], int, bool]],
                                                       asks: list[tuple[int, str, int]]) -> None:
    # Given two or three new tenants with look-alike documents (and every tenant of earlier examples)
    new = [await _tenant(world, templates, n, shared) for templates, n, shared in specs]
    # (the oracle is not blind: another tenant's code word in a response would be caught)
    with pytest.raises(AssertionError):
        _clean(world, new[0], {"answer": f"the code is {sorted(new[1].codes)[0]}"}, typed_ok=True)
    # When their people ask questions, some fishing for another tenant's code word or brand
    for asker_i, question, foreign_i in asks:
        asker = new[asker_i % len(new)]
        others = [k for k in world.known if k is not asker]
        foreign = others[foreign_i % len(others)]
        text = question.format(foreign_code=sorted(foreign.codes)[0], foreign_brand=foreign.brand)
        body = await _chat(world, asker, text)
        # Then the answer and its citations are the asker's own
        _clean(world, asker, body, typed_ok=False)
        assert {c["chunk_id"] for c in body["citations"]} <= asker.chunk_ids
    # And every list a tenant can read, with its key or its dashboard session, holds only its own data
    for k in new:
        for path in ("/api/documents", "/api/jobs", "/api/conversations"):
            _clean(world, k, await _get(world, k, path), typed_ok=True)
        for path in ("/admin/api/documents", "/admin/api/jobs", "/admin/api/conversations", "/admin/api/dead-letters?all=1",
                     "/admin/api/session", "/admin/api/channels"):
            _clean(world, k, await _admin(world, k, "GET", path), typed_ok=True)
        # And every resource of another tenant is refused, never shown
        for other in [o for o in world.known if o is not k][-4:]:
            for path in (f"/api/documents/{other.documents[0]}", f"/api/jobs/{other.jobs[0]}",
                         f"/api/conversations/{other.messages[0]}"):
                await _get(world, k, path, status=(403, 404))
                await _admin(world, k, "GET", path.replace("/api/", "/admin/api/"), status=(403, 404))
            await _admin(world, k, "POST", f"/admin/api/dead-letters/{other.dead[0]}/replay", status=(403, 404))
        # (while its own resources are there: the 404s above are not a broken route)
        await _get(world, k, f"/api/documents/{k.documents[0]}")
        await _admin(world, k, "GET", f"/admin/api/jobs/{k.jobs[0]}")


# --- building a tenant through the real paths -----------------------------------------------------


async def _tenant(world: World, templates: list[str], n: int, shared: bool) -> Known:
    token = uuid.uuid4().hex[:8]
    brand = f"Brand{token[:5].upper()}"
    seeded: Seeded = await create_tenant(world.stack.sessions, f"t-{token}", brand)
    async with unit_of_work(world.stack.sessions, admin=True) as session:
        _, key = await tenants.create_api_key(session, tenant_id=seeded.tenant_id, name="property")
    k = Known(seeded.tenant_id, key, brand, markers={seeded.tenant_id, brand, f"t-{token}"})
    # documents indexed as a worker would (tests/retrieval/support.py), one code word each
    probe = ""
    for template in templates:
        code = f"Q{uuid.uuid4().hex[:7].upper()}"
        k.codes.add(code)
        probe = probe or PROBES[template].format(code=code)
        await add_document(world.stack.sessions, world.writer, world.emb, seeded, f"{template}-{token}.md",
                           TEMPLATES[template].format(brand=brand, n=n, code=code))
    if shared:
        await add_document(world.stack.sessions, world.writer, world.emb, seeded, f"care-{token}.md", SHARED)
    k.chunk_ids = set(seeded.chunk_ids)
    k.documents = list(seeded.document_ids.values())
    k.markers |= k.codes | k.chunk_ids | set(k.documents) | set(seeded.document_ids)
    # two files uploaded through the web API: documents and a job (they stay queued: no worker here)
    form = aiohttp.FormData()
    for i in range(2):
        form.add_field("file", f"Upload {i} of {brand}.\n".encode(), filename=f"upload-{i}-{token}.txt", content_type="text/plain")
    uploaded = await _request(world, k, "POST", "/api/documents", status=(202,), data=form)
    k.jobs.append(uploaded["job_id"])
    k.documents += [d["id"] for d in uploaded["documents"]]
    k.markers |= {uploaded["job_id"], *(d["id"] for d in uploaded["documents"]), f"upload-0-{token}", f"upload-1-{token}"}
    # one dead letter, recorded as the consumer wrapper records one
    envelope = Envelope.new(DOCUMENT_UPLOADED, tenant_id=k.tenant_id, payload={"document_id": k.documents[-1]})
    async with unit_of_work(world.stack.sessions, admin=True) as session:
        row = await record_dead_letter(session, queue="documents", message_id=envelope.id, message_type=envelope.type,
                                       tenant_id=k.tenant_id, correlation_id=envelope.correlation_id,
                                       failure=Failure("pdf_encrypted", f"the file of {brand} is password-protected", False),
                                       attempts=[], body=envelope.to_bytes())
    k.dead.append(row.id)
    k.markers.add(envelope.id)
    # signed in to its dashboard with its key
    k.admin = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    login = await k.admin.post(f"{world.base}/admin/login", data={"api_key": key, "next": "/admin/documents"}, allow_redirects=False)
    assert login.status == 303, await login.text()
    k.csrf = (await _admin(world, k, "GET", "/admin/api/session"))["csrf"]
    world.known.append(k)
    # the retrieval service answers from its documents (so the answers below are not vacuously clean)
    body = await _chat(world, k, probe)
    assert body["citations"], (probe, body)
    assert {c["chunk_id"] for c in body["citations"]} <= k.chunk_ids
    return k


async def _chat(world: World, k: Known, text: str) -> dict[str, Any]:
    body = await _request(world, k, "POST", "/api/chat", json={"message": text})
    k.typed.add(text)
    k.messages.append(body["message_id"])
    k.markers.add(body["message_id"])
    return body


# --- HTTP -----------------------------------------------------------------------------------------


async def _request(world: World, k: Known, method: str, path: str, *, status: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
    response = await world.stack.client.request(method, path, headers={"Authorization": f"Bearer {k.key}"}, **kwargs)
    text = await response.text()
    assert response.status in status, (method, path, response.status, text[:500])
    if status != (200,) and status != (202,):
        _clean(world, k, text, typed_ok=True, sent=path)  # an error must not describe the foreign resource either
    return json.loads(text) if text else None


async def _get(world: World, k: Known, path: str, *, status: tuple[int, ...] = (200,)) -> Any:
    return await _request(world, k, "GET", path, status=status)


async def _admin(world: World, k: Known, method: str, path: str, *, status: tuple[int, ...] = (200,)) -> Any:
    assert k.admin is not None
    headers = {"X-CSRF-Token": k.csrf} if method != "GET" else {}
    response = await k.admin.request(method, f"{world.base}{path}", headers=headers, allow_redirects=False)
    text = await response.text()
    assert response.status in status, (method, path, response.status, text[:500])
    if status != (200,):
        _clean(world, k, text, typed_ok=True, sent=path)  # an error must not describe the foreign resource either
    return json.loads(text) if text and response.content_type == "application/json" else text


# --- the property ---------------------------------------------------------------------------------


def _clean(world: World, viewer: Known, body: Any, *, typed_ok: bool, sent: str = "") -> None:
    """No string that belongs to another tenant appears in what ``viewer`` was given. With ``typed_ok``,
    what the viewer typed itself (a question naming another tenant's code word) may come back to it, and
    so may what it ``sent`` in this request (the id in a 404's "document <id> not found")."""
    text = body if isinstance(body, str) else json.dumps(body)
    allowed = ("\n".join(viewer.typed) if typed_ok else "") + "\n" + sent
    for other in world.known:
        if other is viewer:
            continue
        leaked = {m for m in other.markers if m in text and m not in allowed}
        assert not leaked, f"tenant {viewer.tenant_id} was shown {sorted(leaked)[:5]} of tenant {other.tenant_id}"
