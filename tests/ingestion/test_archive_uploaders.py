"""A ZIP's members are uploads of the archive's sender, with the sender's rights: a member that would
replace someone else's document is refused like a file sent on its own (recorded, its blob deleted,
the job not waiting for it)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

from sqlalchemy import select

from ingestion.documents.archive import ArchiveLimits, expand_archive
from knowledge.audit import Actor
from knowledge.models import Document, Job, KnowledgeEvent
from knowledge.service import submit_upload
from parley.blobs import BlobStore
from parley.db import bind_admin, bind_tenant
from tenants import service as tenants

MB = 1024 * 1024


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


async def test_a_member_that_would_replace_someone_elses_document_is_refused(db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async with db.sessions() as s:
        bind_admin(s)
        tenant = await tenants.create_tenant(s, name="acme")
        await s.commit()
    blobs = BlobStore(tmp_path)
    staff = Actor("slack", "U0STAFF", may_replace=True)
    listed = Actor("slack", "U0LISTED", may_replace=False)  # may add, may not replace
    theirs = b"# Returns\n\nNever returned.\n"
    async with db.sessions() as s:
        bind_tenant(s, tenant.id)
        # Given staff's pack.zip/returns.md (its archive since deleted), and the listed uploader's own
        # pack.zip holding another returns.md and a new care.md
        kept = await blobs.put_bytes(tenant.id, b"# Returns\n\n30 days.\n", max_bytes=MB)
        original = (await submit_upload(s, tenant_id=tenant.id, source="slack", filename="pack.zip/returns.md",
                                        declared_mime=None, blob=kept, actor=staff)).document
        data = _zip({"returns.md": theirs, "care.md": b"# Care\n\nWash cold.\n"})
        archive = (await submit_upload(s, tenant_id=tenant.id, source="slack", filename="pack.zip", declared_mime=None,
                                       blob=await blobs.put_bytes(tenant.id, data, max_bytes=MB), actor=listed)).document
        # When the worker expands it
        queued, skipped = await expand_archive(s, blobs, archive, data,
                                               limits=ArchiveLimits(max_member_bytes=MB, max_total_bytes=4 * MB))
        # Then care.md is queued, returns.md is refused with the reason and leaves no file behind
        assert queued == 1 and any(x.startswith("returns.md: not replaced") for x in skipped)
        docs = {d.filename: d for d in (await s.execute(select(Document))).scalars()}
        assert sorted(docs) == ["pack.zip", "pack.zip/care.md", "pack.zip/returns.md"]
        assert docs["pack.zip/returns.md"].id == original.id and docs["pack.zip/care.md"].uploader["id"] == "U0LISTED"
        sha = hashlib.sha256(theirs).hexdigest()
        assert not (tmp_path / tenant.id / sha[:2] / sha).exists() and (tmp_path / kept.key).exists()
        refused = (await s.execute(select(KnowledgeEvent).where(KnowledgeEvent.action == "refused"))).scalar_one()
        assert (refused.filename, refused.actor_id, refused.document_id) == ("pack.zip/returns.md", "U0LISTED", original.id)
        # And the archive's job counts only the member it got
        job = await s.get(Job, docs["pack.zip/care.md"].job_id)
        assert job is not None and job.total == 1
