"""Sealed uploads: unreadable on disk, opened only with the platform's key and only for a day,
and swept when a crash left one behind."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from parley.crypto import SecretBox
from parley.errors import NotFound
from passthrough.store import MAX_AGE_S, Sealed, SealedStore

TENANT, REQUEST = "t" * 32, "r" * 32


async def test_a_sealed_upload_is_unreadable_on_disk_and_opens_with_the_key(tmp_path: Path) -> None:
    # Given a file sealed for the worker
    store = SealedStore(tmp_path / "blobs", SecretBox(Fernet.generate_key()))
    secret_words = b"Marker-7f3a the contract text"
    await store.put(TENANT, REQUEST, Sealed(filename="Dana's contract.pdf", content_type="application/pdf", data=secret_words))
    # Then on disk it shows neither its bytes nor its name, and only its owner may read it
    [path] = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    raw = path.read_bytes()
    assert b"Marker-7f3a" not in raw and b"Dana" not in raw and oct(path.stat().st_mode & 0o777) == "0o600"
    # And the store opens it whole
    assert await store.get(TENANT, REQUEST) == Sealed("Dana's contract.pdf", "application/pdf", secret_words)
    # But another key does not open it
    other = SealedStore(tmp_path / "blobs", SecretBox(Fernet.generate_key()))
    with pytest.raises(NotFound, match="cannot be opened"):
        await other.get(TENANT, REQUEST)
    # When it is deleted, it is gone, and deleting again is harmless
    assert await store.delete(TENANT, REQUEST) is True
    assert await store.delete(TENANT, REQUEST) is False
    with pytest.raises(NotFound, match="no longer kept"):
        await store.get(TENANT, REQUEST)


async def test_a_sealed_upload_left_behind_is_swept_after_a_day(tmp_path: Path) -> None:
    store = SealedStore(tmp_path / "blobs", SecretBox(Fernet.generate_key()))
    await store.put(TENANT, REQUEST, Sealed("a.md", "text/markdown", b"# A\n"))
    await store.put(TENANT, "s" * 32, Sealed("b.md", "text/markdown", b"# B\n"))
    # Given one of them written more than a day ago (a worker crashed before deleting it)
    old = store.path(TENANT, REQUEST)
    past = time.time() - MAX_AGE_S - 60
    os.utime(old, (past, past))
    # When the worker sweeps, only that one goes
    assert await store.sweep() == 1
    assert not old.exists() and store.path(TENANT, "s" * 32).exists()
    # And ids that are not ids are refused before any path is built
    with pytest.raises(NotFound):
        store.path("../etc", REQUEST)


async def test_a_sealed_upload_older_than_a_day_is_not_opened(tmp_path: Path) -> None:
    # Given a sealed upload whose seal is more than a day old (its clock, not the file's)
    key = Fernet.generate_key()
    store = SealedStore(tmp_path / "blobs", SecretBox(key))
    await store.put(TENANT, REQUEST, Sealed("a.md", "text/markdown", b"# A\n"))
    stale = Fernet(key).encrypt_at_time(b'{"filename": "a.md", "content_type": "text/markdown"}\n# A\n',
                                        int(time.time()) - MAX_AGE_S - 60)
    store.path(TENANT, REQUEST).write_bytes(stale)
    # Then it is not opened
    with pytest.raises(NotFound, match="more than a day"):
        await store.get(TENANT, REQUEST)
