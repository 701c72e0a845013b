"""Sealed uploads: a pass-through file between the gateway and the worker, and nowhere after.

The gateway writes ``<blob dir>/.passthrough/<tenant>/<request id>``: the file's name, declared
type and bytes, sealed with the platform's key (`parley.crypto.SecretBox`, Fernet), so even a
copy of the disk taken while it waits shows nothing of it. The directory is the blob store's,
which every process of an install shares, but outside its content-addressed tree (a tenant id
never starts with a dot): deleting a sealed upload can never remove an indexed document's file
that happens to have the same bytes. The worker deletes it when the result was delivered or the
request finally failed; `sweep` removes any a crash left behind past `MAX_AGE_S`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from parley.crypto import Expired, SecretBox
from parley.errors import NotFound, ParleyError
from parley.files import private_dir

#: A sealed upload older than this is not opened (and `sweep` deletes it): a day.
MAX_AGE_S = 24 * 3600
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DIRNAME = ".passthrough"


@dataclass(frozen=True)
class Sealed:
    filename: str
    content_type: str
    data: bytes


class SealedStore:
    def __init__(self, blob_dir: Path, box: SecretBox) -> None:
        self.root = Path(blob_dir) / DIRNAME
        self._box = box

    def path(self, tenant_id: str, request_id: str) -> Path:
        if not _ID.fullmatch(tenant_id) or not _ID.fullmatch(request_id):
            raise NotFound("no such pass-through upload")
        return self.root / tenant_id / request_id

    async def put(self, tenant_id: str, request_id: str, item: Sealed) -> None:
        header = json.dumps({"filename": item.filename, "content_type": item.content_type}).encode()
        token = await asyncio.to_thread(self._box.encrypt_bytes, header + b"\n" + item.data)
        path = self.path(tenant_id, request_id)

        def write() -> None:
            private_dir(self.root.parent)
            private_dir(self.root)
            private_dir(path.parent)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")  # 0600
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(token)
                os.replace(tmp, path)
            except BaseException:
                with _gone():
                    os.unlink(tmp)
                raise

        await asyncio.to_thread(write)

    async def get(self, tenant_id: str, request_id: str) -> Sealed:
        """The sealed upload; `NotFound` when it is gone (delivered, failed, swept) or too old."""
        path = self.path(tenant_id, request_id)
        try:
            token = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound("the uploaded file is no longer kept") from None
        try:
            raw = await asyncio.to_thread(self._box.decrypt_bytes, token, max_age=MAX_AGE_S)
        except Expired:
            raise NotFound("the uploaded file waited more than a day and is no longer kept") from None
        except ParleyError as exc:
            raise NotFound(f"the uploaded file cannot be opened here ({exc.message})") from None
        header, _, data = raw.partition(b"\n")
        meta = json.loads(header)
        return Sealed(filename=str(meta["filename"]), content_type=str(meta["content_type"]), data=data)

    async def delete(self, tenant_id: str, request_id: str) -> bool:
        """Delete it; True when there was one."""
        path = self.path(tenant_id, request_id)
        try:
            await asyncio.to_thread(os.unlink, path)
            return True
        except FileNotFoundError:
            return False

    async def sweep(self, *, max_age_s: float = MAX_AGE_S, now: float | None = None) -> int:
        """Delete sealed uploads (and half-written ones) older than ``max_age_s``; how many went."""
        cutoff = (time.time() if now is None else now) - max_age_s

        def run() -> int:
            removed = 0
            if not self.root.is_dir():
                return 0
            for tenant_dir in self.root.iterdir():
                if not tenant_dir.is_dir():
                    continue
                for path in tenant_dir.iterdir():
                    with _gone():
                        if path.stat().st_mtime < cutoff:
                            path.unlink()
                            removed += 1
            return removed

        return await asyncio.to_thread(run)


class _gone:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return isinstance(exc[1], FileNotFoundError)
