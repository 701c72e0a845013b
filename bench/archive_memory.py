"""What unpacking one uploaded ZIP costs the document worker: peak memory, blobs written, time.

    .venv/bin/python bench/archive_memory.py

Each case runs in a fresh interpreter that reads the archive into memory (as the worker does: an
archive is at most the upload limit), then runs `is_archive` and `archive.unpack` with the default
limits (25 MB per member, 100 MB per archive) into a scratch blob store. Peak memory is VmHWM, the
high-water mark of that process's own resident memory, minus its value before unpacking.

Cases: the attack review's archive (24 distinct members of 8 MB, ~1000:1, 198 KB), the biggest
honest archive the limits take (12 members of 8 MB of text, ~10:1, 96 MB unpacked), and a
directory of 100,000 empty entries (9 MB).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024

_CHILD = """
import asyncio, json, sys, time
from pathlib import Path
from ingestion.documents.archive import ArchiveLimits, is_archive, unpack
from parley.blobs import BlobStore
from parley.bus import Permanent

def peak_kb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1])

data = Path(sys.argv[1]).read_bytes()
root = Path(sys.argv[2])
before = peak_kb()
started = time.perf_counter()
outcome = "not an archive"
if is_archive(data):
    try:
        unpacked = asyncio.run(unpack(BlobStore(root), "bench", data, ArchiveLimits(25 << 20, 100 << 20)))
        outcome = f"{len(unpacked.members)} members stored"
    except Permanent as exc:
        outcome = f"refused: {exc.code}"
seconds = time.perf_counter() - started
written = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
print(json.dumps({"outcome": outcome, "peak_mb": (peak_kb() - before) / 1024, "blobs_mb": written / (1 << 20),
                  "seconds": seconds}))
"""


def _attack() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(24):
            z.writestr(f"part-{i:02d}.txt", bytes([65 + i]) * (8 * MB))
    return out.getvalue()


def _honest() -> bytes:
    words = ("returns", "shipping", "billing", "repairs", "pickup", "warranty", "exchange", "linen", "wool")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(12):
            lines, size, n = [], 0, 0
            while size < 8 * MB:
                line = f"{i}.{n}: the {words[(n * 7 + i) % 9]} desk {n % 977} opens at {8 + n % 5}:{n % 60:02d}.\n"
                lines.append(line)
                size += len(line)
                n += 1
            z.writestr(f"handbook/part-{i:02d}.txt", "".join(lines))
    return out.getvalue()


def _directory() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as z:
        for i in range(100_000):
            z.writestr(zipfile.ZipInfo(f"{i}.txt"), b"")
    return out.getvalue()


def main() -> None:
    cases = {"attack review: 24 x 8 MB": _attack, "honest: 12 x 8 MB of text": _honest,
             "100,000 empty entries": _directory}
    print(f"{'case':30} {'zip':>8} {'unpacked':>9} {'outcome':>26} {'blobs':>9} {'peak RSS +':>10} {'time':>7}")
    for name, build in cases.items():
        data = build()
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            unpacked = sum(i.file_size for i in z.infolist())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.zip"
            path.write_bytes(data)
            run = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(Path(tmp) / "blobs")],
                                 capture_output=True, text=True, cwd=ROOT, check=False)
            if run.returncode != 0:
                sys.exit(f"{name}: {run.stderr}")
            r = json.loads(run.stdout)
        print(f"{name:30} {len(data) / MB:7.1f}M {unpacked / MB:8.0f}M {r['outcome']:>26} {r['blobs_mb']:8.1f}M "
              f"{r['peak_mb']:9.1f}M {r['seconds']:6.2f}s")


if __name__ == "__main__":
    main()
