"""The sandbox child's work (see the package's docstring), run either in a fresh interpreter
(`python -c "...; child.main()" '<request json>'`, the fallback) or by a fork server's
freshly forked grandchild (`zygote.py`, which calls `run` with the request it received).

Sets its own limits first, reads the document (stdin, or the path in the request), runs
sniff + extract, and writes one JSON object to the original stdout. Parsers that print are
redirected to stderr so they cannot corrupt that answer. Nothing crosses back as pickle: the
parent validates plain JSON, so even a subverted child cannot run code in the worker.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import traceback
from typing import Any

from ingestion.documents.errors import ExtractionError, SandboxFailure
from parley import formats

_MIB = 1024 * 1024


#: A new interpreter gets a PDF's password here, not in its argv (which anyone on the host can read).
PASSWORD_ENV = "PARLEY_DOCUMENT_PASSWORD"


def main() -> int:
    request = json.loads(sys.argv[1])
    password = os.environ.pop(PASSWORD_ENV, None)
    if password:
        request["password"] = password
    return run(request)


def run(request: dict[str, Any]) -> int:
    """Parse one document with fds 0/1/2 as stdin/answer/log; returns the exit status."""
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # fd 1 (and sys.stdout) now lead to stderr
    memory_mb = int(request["memory_limit_mb"])
    # Prepared before the limits bite: reporting a MemoryError must not need memory.
    too_big = SandboxFailure("memory_limit", f"document needs more than {memory_mb} MB to parse")
    out_of_memory = _encode({"ok": False, "error": too_big.to_dict()})
    _apply_limits(float(request["time_limit_s"]), memory_mb)
    try:
        answer = _encode(_handle(request))
    except MemoryError:
        answer = out_of_memory
    write_all(answer_fd, answer)
    return 0


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    from ingestion.documents.extract import extract

    try:
        formats.load_format_plugins(request.get("plugins", ()), into=formats.registry())
        if request.get("path"):
            with open(request["path"], "rb") as handle:
                data = handle.read()
        else:
            data = sys.stdin.buffer.read()
        document = extract(
            data, filename=request.get("filename"), declared_mime=request.get("declared_mime"),
            password=request.get("password") or None,
        )
        return {"ok": True, "document": document.to_dict()}
    except ExtractionError as exc:
        return {"ok": False, "error": exc.to_dict()}
    except MemoryError:
        raise
    except Exception as exc:  # a bug or a library failure we did not map
        traceback.print_exc()  # to stderr: the parent logs it, the user never sees it
        why = f"the document could not be parsed because of an internal error ({type(exc).__name__})"
        return {"ok": False, "error": ExtractionError("parser_error", why).to_dict()}


def _apply_limits(time_limit_s: float, memory_limit_mb: int) -> None:
    cpu = max(1, math.ceil(time_limit_s))
    _set(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL one second later
    _set(resource.RLIMIT_CORE, 0, 0)  # never dump an untrusted document's memory to disk
    _set(resource.RLIMIT_FSIZE, 0, 0)  # a parser has no business writing files
    # The budget is on top of what this process already maps: the bare interpreter (~15 MB of
    # address space) when it was started for this document, so "512 MB" covers the parser's
    # imports (pypdf or python-docx with lxml: ~40 MB) and the document; or the fork server's
    # image (~70 MB, every parser imported), so the budget is the document's parse alone.
    address_space = _address_space() + memory_limit_mb * _MIB
    _set(resource.RLIMIT_AS, address_space, address_space)


def _set(limit: int, soft: int, hard: int) -> None:
    _, current_hard = resource.getrlimit(limit)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    try:
        resource.setrlimit(limit, (soft, hard))
    except (ValueError, OSError):  # pragma: no cover - platform without this limit
        pass


def _address_space() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


def _encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


if __name__ == "__main__":
    sys.exit(main())
