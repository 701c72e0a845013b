from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from parley.blobs import BlobStore
from parley.errors import InvalidInput, NotFound, TooLarge


async def test_content_addressed_per_tenant(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    a = await store.put_bytes("t1", b"hello", max_bytes=100)
    again = await store.put_bytes("t1", b"hello", max_bytes=100)
    other = await store.put_bytes("t2", b"hello", max_bytes=100)
    assert a == again and a.sha256 == hashlib.sha256(b"hello").hexdigest() and a.size == 5
    # and the store says which write created the file (a cleanup must not delete content others share)
    assert a.created and not again.created and other.created
    assert other.key.startswith("t2/") and other.key != a.key
    assert await store.read("t1", a.key) == b"hello"
    with pytest.raises(NotFound):
        await store.read("t2", a.key)  # a tenant cannot read another tenant's blob by key


async def test_size_cap_stops_the_stream_and_leaves_nothing(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    pulled = 0

    async def endless():
        nonlocal pulled
        while True:
            pulled += 1
            yield b"x" * 1000

    with pytest.raises(TooLarge, match="larger than the limit"):
        await store.put_stream("t1", endless(), max_bytes=10_000)
    assert pulled == 11  # stopped reading as soon as the cap was passed
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_bad_keys_are_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    with pytest.raises(InvalidInput):
        await store.put_bytes("../etc", b"x", max_bytes=10)
    with pytest.raises((InvalidInput, NotFound)):
        await store.read("t1", "t1/../../etc/passwd")
