"""Sniff + extract untrusted bytes in a fresh, limited child process.

One child per document (a new interpreter running `_child.main`), so a parser that hangs, leaks,
crashes or is subverted takes nothing else down and leaves no state behind:
- wall time: the parent kills the child's process group at `time_limit_s`
  -> SandboxFailure("parse_timeout", "parsing took longer than 30 s");
- CPU time: RLIMIT_CPU in the child, same report (a second line of defence);
- memory: RLIMIT_AS in the child, `memory_limit_mb` on top of the bare interpreter
  -> SandboxFailure("memory_limit", "document needs more than 512 MB to parse");
- crash (signal, os._exit, garbage on stdout) -> SandboxFailure("parser_crashed", ...).
The child also gets no core dumps, no file writes, and a scrubbed environment (no API keys or
database URLs). It runs at the caller's niceness: lower it in the worker, not here.

Why a fresh interpreter per document and not a pool or multiprocessing's forkserver: it is
the simplest thing that replaces a killed child for free and gives every document its own
limits and a clean heap. The price is start-up (interpreter + the one parser's imports): child
CPU time per call on the 2-core dev box, under load, was 100-165 ms for text/HTML, 180-190 ms
for Markdown, 170-230 ms for DOCX, 220-315 ms for PDF (pypdf imports `cryptography`), against
1-20 ms for the parse itself (RUSAGE_CHILDREN around `extract_document_sync` vs. in-process
`extract`, median of 15-20 calls on the ../shared samples).
forkserver would be cheaper, but in Python 3.11 its children re-run the parent's `__main__`
script (e.g. the `parley` console script, which imports every package). If the overhead shows
in benchmarks, the next step is a preloaded fork server of our own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingestion.documents.errors import ExtractionError, SandboxFailure
from ingestion.documents.model import ExtractedDocument

DEFAULT_TIME_LIMIT_S = 30.0
DEFAULT_MEMORY_LIMIT_MB = 512

Source = bytes | bytearray | memoryview | str | os.PathLike[str]

_log = logging.getLogger(__name__)
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]
# `-c` rather than `-m`: runpy alone is ~15% of a text document's start-up.
_CHILD_MAIN = "import sys; from ingestion.documents._child import main; sys.exit(main())"
_MEMORY_HINTS = (b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc", b"out of memory")


async def extract_document(
    source: Source,
    *,
    filename: str | None = None,
    declared_mime: str | None = None,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
    plugins: Sequence[str | os.PathLike[str]] = (),
) -> ExtractedDocument:
    """Extract a document without blocking the event loop.

    `source` is the file's bytes, or a path the child reads itself (str or PathLike).
    `plugins` are Python files the child executes before parsing; they may call
    `extract.register_format` (tests use this to inject hostile parsers).
    Raises an `ExtractionError` subclass; cancelling the call kills the child.
    """
    command, stdin_data, limits = _prepare(
        source, filename, declared_mime, time_limit_s, memory_limit_mb, plugins
    )
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_child_env(), cwd=_PACKAGE_ROOT, process_group=0,
        )
    except OSError as exc:
        raise _unavailable(exc) from None
    timed_out = False
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin_data), time_limit_s)
    except TimeoutError:
        timed_out = True
        _kill(proc.pid)
        stdout, stderr = b"", b""
    finally:
        if proc.returncode is None:
            _kill(proc.pid)
            await proc.wait()
    return _outcome(proc.returncode, stdout, stderr, timed_out, limits)


def extract_document_sync(
    source: Source,
    *,
    filename: str | None = None,
    declared_mime: str | None = None,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
    plugins: Sequence[str | os.PathLike[str]] = (),
) -> ExtractedDocument:
    """Blocking twin of `extract_document`, for scripts and threads (never the event loop)."""
    command, stdin_data, limits = _prepare(
        source, filename, declared_mime, time_limit_s, memory_limit_mb, plugins
    )
    try:
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_child_env(), cwd=_PACKAGE_ROOT, process_group=0,
        )
    except OSError as exc:
        raise _unavailable(exc) from None
    timed_out = False
    try:
        stdout, stderr = proc.communicate(stdin_data, timeout=time_limit_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc.pid)
        stdout, stderr = proc.communicate()
    finally:
        if proc.poll() is None:
            _kill(proc.pid)
            proc.wait()
    return _outcome(proc.returncode, stdout, stderr, timed_out, limits)


# --- shared plumbing -----------------------------------------------------------------------------


def _prepare(
    source: Source,
    filename: str | None,
    declared_mime: str | None,
    time_limit_s: float,
    memory_limit_mb: int,
    plugins: Sequence[str | os.PathLike[str]],
) -> tuple[list[str], bytes | None, dict[str, Any]]:
    if time_limit_s <= 0 or memory_limit_mb <= 0:
        raise ValueError("time_limit_s and memory_limit_mb must be positive")
    request: dict[str, Any] = {
        "filename": filename,
        "declared_mime": declared_mime,
        "time_limit_s": time_limit_s,
        "memory_limit_mb": memory_limit_mb,
        "plugins": [str(Path(p).resolve()) for p in plugins],
    }
    stdin_data: bytes | None
    if isinstance(source, (bytes, bytearray, memoryview)):
        stdin_data = bytes(source)
    else:
        path = Path(source).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no document file at {path}")
        request["path"] = str(path)
        request["filename"] = filename or path.name
        stdin_data = None
    command = [sys.executable, "-s", "-X", "faulthandler", "-c", _CHILD_MAIN, json.dumps(request)]
    return command, stdin_data, request


def _child_env() -> dict[str, str]:
    """Only what the interpreter needs: the worker's secrets stay in the worker."""
    return {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": str(_PACKAGE_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONHASHSEED": "0",
    }


def _kill(pid: int) -> None:
    """Kill the child and anything it started (it leads its own process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _unavailable(exc: OSError) -> SandboxFailure:
    return SandboxFailure(
        "sandbox_unavailable",
        f"the document parser could not be started ({exc.strerror or type(exc).__name__})",
        retryable=True,
    )


def _outcome(
    returncode: int | None, stdout: bytes, stderr: bytes, timed_out: bool, limits: dict[str, Any]
) -> ExtractedDocument:
    tail = stderr[-2000:].decode("utf-8", "replace")
    if timed_out:
        raise _failure(SandboxFailure("parse_timeout", _too_slow(limits)), returncode, tail)
    if returncode == 0 and stdout:
        try:
            payload = json.loads(stdout)
            if payload["ok"]:
                if tail.strip():
                    _log.debug("document parser stderr: %s", tail)
                return ExtractedDocument.from_dict(payload["document"])
            error = ExtractionError.from_dict(payload["error"])
        except (ValueError, KeyError, TypeError):
            error = SandboxFailure(
                "parser_crashed",
                "the document parser returned an unreadable result",
                retryable=True,
            )
        if error.code in ("parser_error", "parser_crashed"):
            raise _failure(error, returncode, tail)
        raise error
    out_of_memory = any(hint in stderr for hint in _MEMORY_HINTS)
    if returncode is not None and returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU:
            raise _failure(SandboxFailure("parse_timeout", _too_slow(limits)), returncode, tail)
        if out_of_memory:
            raise _failure(_too_big(limits), returncode, tail)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        why = f"the document parser crashed ({name})"
        if sig == signal.SIGKILL:
            why = (
                "the document parser was killed (SIGKILL), "
                "possibly by the system running out of memory"
            )
        raise _failure(SandboxFailure("parser_crashed", why, retryable=True), returncode, tail)
    if out_of_memory:
        raise _failure(_too_big(limits), returncode, tail)
    why = f"the document parser exited unexpectedly (exit status {returncode})"
    raise _failure(SandboxFailure("parser_crashed", why, retryable=True), returncode, tail)


def _too_slow(limits: dict[str, Any]) -> str:
    return f"parsing took longer than {limits['time_limit_s']:g} s"


def _too_big(limits: dict[str, Any]) -> SandboxFailure:
    mb = limits["memory_limit_mb"]
    return SandboxFailure("memory_limit", f"document needs more than {mb} MB to parse")


def _failure(error: ExtractionError, returncode: int | None, stderr_tail: str) -> ExtractionError:
    _log.warning(
        "document parser failed: %s (exit %s); stderr tail:\n%s", error.code, returncode, stderr_tail
    )
    return error
