"""Blob store: uploaded files on local disk, content-addressed per tenant.

Writes stream to a temporary file while hashing and counting, refuse anything over the size cap
as soon as it is exceeded, and land with an atomic rename under `<tenant>/<sha256[:2]>/<sha256>`,
so the same content is stored once per tenant and a reader never sees a half-written file.
Messages carry the key, never the bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from parley.errors import InvalidInput, NotFound, TooLarge
from parley.files import private_dir

_TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}/[0-9a-f]{2}/[0-9a-f]{64}$")
CHUNK = 1 << 16


@dataclass(frozen=True)
class StoredBlob:
    key: str
    sha256: str
    size: int
    #: False when the same content was stored already (content addressing): it may belong to other
    #: documents too, so a caller cleaning up after itself must leave it.
    created: bool = field(default=True, compare=False)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        if not _KEY.fullmatch(key):
            raise InvalidInput(f"invalid blob key {key!r}")
        return self.root / key

    async def put_stream(self, tenant_id: str, chunks: AsyncIterable[bytes], *, max_bytes: int) -> StoredBlob:
        if not _TENANT.fullmatch(tenant_id):
            raise InvalidInput(f"invalid tenant id for a blob: {tenant_id!r}")
        tmp_dir = self.root / tenant_id / "tmp"
        if not tmp_dir.is_dir():
            await asyncio.to_thread(private_dir, self.root)  # 0700 when Parley creates it (files are 0600: mkstemp)
            await asyncio.to_thread(tmp_dir.mkdir, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(f"file is larger than the limit of {_human(max_bytes)}")
                    digest.update(chunk)
                    await asyncio.to_thread(fh.write, chunk)
            sha = digest.hexdigest()
            key = f"{tenant_id}/{sha[:2]}/{sha}"
            final = self.root / key
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            created = not await asyncio.to_thread(final.exists)
            await asyncio.to_thread(os.replace, tmp_name, final)
            return StoredBlob(key=key, sha256=sha, size=size, created=created)
        except BaseException:
            with _suppress():
                os.unlink(tmp_name)
            raise

    async def put_bytes(self, tenant_id: str, data: bytes, *, max_bytes: int) -> StoredBlob:
        async def one() -> AsyncIterator[bytes]:
            for i in range(0, len(data), CHUNK):
                yield data[i : i + CHUNK]

        return await self.put_stream(tenant_id, one(), max_bytes=max_bytes)

    async def put_file(self, tenant_id: str, path: Path, *, max_bytes: int) -> StoredBlob:
        async def read() -> AsyncIterator[bytes]:
            with open(path, "rb") as fh:
                while chunk := await asyncio.to_thread(fh.read, CHUNK):
                    yield chunk

        return await self.put_stream(tenant_id, read(), max_bytes=max_bytes)

    def path_of(self, tenant_id: str, key: str) -> Path:
        """Local path of a blob; the key must belong to the tenant asking."""
        if not key.startswith(tenant_id + "/"):
            raise NotFound(f"no such file: {key}")
        path = self._path(key)
        if not path.exists():
            raise NotFound(f"stored file is missing: {key}")
        return path

    async def read(self, tenant_id: str, key: str) -> bytes:
        return await asyncio.to_thread(self.path_of(tenant_id, key).read_bytes)

    async def delete(self, tenant_id: str, key: str) -> None:
        with _suppress():
            await asyncio.to_thread(os.unlink, self.path_of(tenant_id, key))


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}".replace(".0 ", " ")
        n /= 1024  # type: ignore[assignment]
    return str(n)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], (FileNotFoundError, NotFound))
