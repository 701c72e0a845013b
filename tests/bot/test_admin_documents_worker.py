"""The dashboard's document changes through the real document worker process and broker: a
password-protected PDF given its password at upload and on "retry with password" (the password
sealed in the job message and nowhere in the clear), and a deletion whose vectors the worker removes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from sqlalchemy import select

from knowledge.models import KnowledgeEvent
from parley.bus import Envelope
from parley.bus.models import DeadLetter, OutboxMessage
from parley.db import unit_of_work
from parley.vectors import create_vector_index
from tests.bot.conftest import Stack, eventually, start_worker
from tests.bot import test_admin
from tests.bot.test_admin import Browser
from tests.bot.test_web import files
from tests.ingestion.samples import build_pdf, encrypt_pdf
from tests.support import services

browsers = test_admin.browsers  # the fixture: one cookie jar per signed-in person, closed at the end

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.shared]

#: Encrypted, user password "openpassword" (its provenance: ../shared/data/docs/README.md).
LOCKED = services.SHARED_DATA / "docs" / "pdf" / "pypdf__libreoffice-writer-password.pdf"
LOCKED_PASSWORD = "openpassword"
#: The password of a PDF made here (distinctive, so finding it anywhere is a leak).
MADE_PASSWORD = "Zq9-warranty-Pw!7"
WRONG_PASSWORD = "not-the-right-one-42"


def _pdf_form(name: str, data: bytes, password: str | None = None) -> FormData:
    form = FormData()
    if password is not None:
        form.add_field("password", password)
    form.add_field("file", data, filename=name, content_type="application/pdf")
    return form


async def _settled(admin: Browser, doc_id: str, *wanted: str) -> Callable[[], Any]:
    async def check() -> dict[str, Any] | None:
        page = await admin.json("GET", f"/admin/api/documents/{doc_id}/page")
        return page if page["document"]["status"] in wanted else None
    return check


@pytest.mark.timeout(240)
@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_a_protected_pdf_gets_its_password_at_upload_or_on_retry(
        stack: Stack, browsers: list[Browser], worker_processes: list[Any], tmp_path: Path) -> None:
    if not LOCKED.exists():
        pytest.skip(f"../shared/data is missing (looked for {LOCKED}); this test needs its encrypted PDF")
    log = tmp_path / "worker.log"
    worker_processes.append(start_worker(stack, log))
    admin = await Browser(stack).signed_in(stack.api_key)
    browsers.append(admin)
    tail = lambda: log.read_text()[-3000:]  # noqa: E731
    # Given a PDF protected by a password the admin gives with the upload, and one uploaded without
    made = encrypt_pdf(build_pdf([["Our warranty lasts three years from the day of purchase."]]), user_password=MADE_PASSWORD)
    [warranty] = (await admin.json("POST", "/admin/api/documents", status=202,
                                   data=_pdf_form("warranty.pdf", made, MADE_PASSWORD)))["documents"]
    [locked] = (await admin.json("POST", "/admin/api/documents", status=202,
                                 data=_pdf_form(LOCKED.name, LOCKED.read_bytes())))["documents"]
    # Then the first is indexed with its text, and the second fails as password-protected
    page = await eventually(await _settled(admin, warranty["id"], "indexed", "failed"), timeout=180, interval=0.2, log=tail)
    assert page["document"]["status"] == "indexed", page["document"]
    assert "three years" in page["chunks"]["shown"][0]["text"]
    page = await eventually(await _settled(admin, locked["id"], "failed"), timeout=120, interval=0.2, log=tail)
    assert page["document"]["error_code"] == "pdf_encrypted" and page["actions"]["retry_with_password"] is True

    # When the admin retries it with a wrong password
    await admin.json("POST", f"/admin/api/documents/{locked['id']}/retry", status=202, json={"password": WRONG_PASSWORD})
    # Then it fails again, saying the password does not open it
    async def failed_again() -> dict[str, Any] | None:
        page = await admin.json("GET", f"/admin/api/documents/{locked['id']}/page")
        return page if page["document"]["status"] == "failed" and "does not open it" in (page["document"]["error"] or "") else None
    await eventually(failed_again, timeout=120, interval=0.2, log=tail)
    # When they retry with the right one
    await admin.json("POST", f"/admin/api/documents/{locked['id']}/retry", status=202, json={"password": LOCKED_PASSWORD})
    # Then it is indexed, with its text, and the retries are in its history as the admin's
    page = await eventually(await _settled(admin, locked["id"], "indexed"), timeout=120, interval=0.2, log=tail)
    assert "Lorem ipsum" in page["chunks"]["shown"][0]["text"]
    assert [(e["action"], e["actor"]["channel"], e["detail"]) for e in page["events"]][:2] == [
        ("uploaded", "admin", "retried with a password"), ("uploaded", "admin", "retried with a password")]
    # And an indexed document cannot be "retried", nor can one be retried without a password
    again = await admin.request("POST", f"/admin/api/documents/{locked['id']}/retry", json={"password": LOCKED_PASSWORD})
    assert again.status == 400 and "only a PDF that failed as password-protected" in (await again.json())["detail"]
    empty = await admin.request("POST", f"/admin/api/documents/{warranty['id']}/retry", json={"password": ""})
    assert empty.status == 400 and "send the PDF's 'password'" in (await empty.json())["detail"]

    # And no password was ever written in the clear: not in the outbox, a dead letter, the audit log
    # or the worker's log; the job messages carried them sealed with the platform's key
    async with unit_of_work(stack.sessions, admin=True) as session:
        bodies = [o.body for o in (await session.execute(select(OutboxMessage))).scalars()]
        bodies += [d.body for d in (await session.execute(select(DeadLetter))).scalars()]
        details = [e.detail or "" for e in (await session.execute(select(KnowledgeEvent))).scalars()]
    stored = b"\n".join(b if isinstance(b, bytes) else b.encode() for b in bodies).decode() + "\n".join(details)
    for secret in (MADE_PASSWORD, LOCKED_PASSWORD, WRONG_PASSWORD):
        assert secret not in stored and secret not in log.read_text(), secret
    sealed = [Envelope.from_bytes(b).payload.get("sealed_password") for b in bodies]
    assert {stack.gw.box.decrypt(s) for s in sealed if s} == {MADE_PASSWORD, WRONG_PASSWORD, LOCKED_PASSWORD}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_the_worker_removes_the_vectors_of_a_document_deleted_in_the_dashboard(
        stack: Stack, browsers: list[Browser], worker_processes: list[Any], tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker_processes.append(start_worker(stack, log))
    admin = await Browser(stack).signed_in(stack.api_key)
    browsers.append(admin)
    tail = lambda: log.read_text()[-3000:]  # noqa: E731
    index = create_vector_index(stack.settings, role="writer", sessions=stack.sessions)
    try:
        # Given an indexed document, in the vector index
        [doc] = (await admin.json("POST", "/admin/api/documents", status=202, data=files(
            ("care.md", b"# Care\n\nWash cold, dry flat.\n\n## Ironing\n\nLow heat only.\n", "text/markdown"))))["documents"]
        await eventually(await _settled(admin, doc["id"], "indexed"), timeout=180, interval=0.2, log=tail)
        assert await index.count(stack.tenant_id) > 0
        # When the admin deletes it in the dashboard
        await admin.json("DELETE", f"/admin/api/documents/{doc['id']}", status=202)

        # Then the worker removes its vectors
        async def gone() -> bool:
            return await index.count(stack.tenant_id) == 0
        await eventually(gone, timeout=60, interval=0.2, log=tail)
    finally:
        await index.aclose()
