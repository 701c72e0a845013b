"""The caller's side of the sandbox: `extract_document` / `extract_document_sync` (re-exported by
the package) send one document to a fork server's fresh grandchild, or, when no fork server can
be had, to a new interpreter (`child.main`); they enforce the wall-time limit, kill what is
cancelled, and turn how the child ended into an `ExtractedDocument` or an `ExtractionError`.
This process's fork servers (one per set of `plugins`) are kept in `_servers`: started on first
use, replaced when one dies, bypassed for a minute when one cannot start, stopped by `aclose()`
or at exit. See the package's docstring for the limits and why there is a fork server.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ingestion.documents.sandbox import forkserver
from ingestion.documents.sandbox.child import PASSWORD_ENV
from ingestion.documents.errors import ExtractionError, SandboxFailure
from ingestion.documents.model import ExtractedDocument

DEFAULT_TIME_LIMIT_S = 30.0
DEFAULT_MEMORY_LIMIT_MB = 512

Source = bytes | bytearray | memoryview | str | os.PathLike[str]

_log = logging.getLogger("ingestion.documents.sandbox")  # the package's name, as before the split
_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
# `-c` rather than `-m`: runpy alone is ~15% of a text document's start-up.
_CHILD_MAIN = "import sys; from ingestion.documents.sandbox.child import main; sys.exit(main())"
_MEMORY_HINTS = (b"MemoryError", b"Cannot allocate memory", b"std::bad_alloc", b"out of memory")
_ZYGOTE_RETRY_AFTER_S = 60.0  # after a failed start, new interpreters per call until then
_KILL_GRACE_S = 5.0  # how long the zygote has to confirm a kill before we kill the zygote


async def extract_document(
    source: Source,
    *,
    filename: str | None = None,
    declared_mime: str | None = None,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
    plugins: Sequence[str | os.PathLike[str]] = (),
    password: str | None = None,
) -> ExtractedDocument:
    """Extract a document without blocking the event loop.

    `source` is the file's bytes, or a path the child reads itself (str or PathLike).
    `plugins` are Python files the child executes before parsing; they may call
    `extract.register_format` (tests use this to inject hostile parsers).
    `password` opens a password-protected PDF; it reaches the child over the fork server's
    socket, or a new interpreter's environment, never a command line, and is never logged.
    Raises an `ExtractionError` subclass; cancelling the call kills the child.
    """
    command, stdin_data, limits = _prepare(
        source, filename, declared_mime, time_limit_s, memory_limit_mb, plugins, password
    )
    key, nice = tuple(limits["plugins"]), _niceness()
    for _ in range(2):  # a second try only when the zygote died before forking our child
        server = _servers.running(key) or await asyncio.to_thread(_servers.get, key, nice)
        if server is None:
            break
        try:
            return await _forked_async(server, limits, stdin_data, nice)
        except forkserver.Unusable as exc:
            if not exc.lost:
                break
            _servers.discard(server)
    return await _spawned_async(command, stdin_data, limits)


def extract_document_sync(
    source: Source,
    *,
    filename: str | None = None,
    declared_mime: str | None = None,
    time_limit_s: float = DEFAULT_TIME_LIMIT_S,
    memory_limit_mb: int = DEFAULT_MEMORY_LIMIT_MB,
    plugins: Sequence[str | os.PathLike[str]] = (),
    password: str | None = None,
) -> ExtractedDocument:
    """Blocking twin of `extract_document`, for scripts and threads (never the event loop)."""
    command, stdin_data, limits = _prepare(
        source, filename, declared_mime, time_limit_s, memory_limit_mb, plugins, password
    )
    key, nice = tuple(limits["plugins"]), _niceness()
    for _ in range(2):
        server = _servers.get(key, nice)
        if server is None:
            break
        try:
            return _forked_sync(server, limits, stdin_data, nice)
        except forkserver.Unusable as exc:
            if not exc.lost:
                break
            _servers.discard(server)
    return _spawned_sync(command, stdin_data, limits)


async def aclose() -> None:
    """Stop this process's fork servers (calls in flight finish first). Optional: it also
    happens at exit, and a fork server exits by itself when this process dies."""
    await asyncio.to_thread(_servers.close_all)


# --- through the fork server ---------------------------------------------------------------------


async def _forked_async(
    server: forkserver.ForkServer, limits: dict[str, Any], stdin_data: bytes | None, nice: int
) -> ExtractedDocument:
    job = server.launch(_fork_request(limits, nice), stdin_data)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def on_readable(fd: int) -> None:
        job.on_readable(fd)
        if fd not in job.open_fds:
            loop.remove_reader(fd)
        if job.done and not finished.done():
            finished.set_result(None)

    watched = list(job.open_fds)
    for fd in watched:
        loop.add_reader(fd, on_readable, fd)
    timed_out = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(finished), limits["time_limit_s"])
        except TimeoutError:
            timed_out = True
            job.kill()
            try:
                await asyncio.wait_for(finished, _KILL_GRACE_S)
            except TimeoutError:
                _servers.discard(server)  # wedged: killing it kills its grandchildren too
    except asyncio.CancelledError:
        job.kill()
        try:  # like the spawn path: return only once the child is gone
            await asyncio.wait_for(finished, _KILL_GRACE_S)
        except TimeoutError:
            _servers.discard(server)
        raise
    finally:
        for fd in watched:
            loop.remove_reader(fd)
        job.close()
    return _forked_outcome(job, timed_out, limits)


def _forked_sync(
    server: forkserver.ForkServer, limits: dict[str, Any], stdin_data: bytes | None, nice: int
) -> ExtractedDocument:
    job = server.launch(_fork_request(limits, nice), stdin_data)
    deadline = time.monotonic() + limits["time_limit_s"]
    timed_out = False
    try:
        with selectors.DefaultSelector() as selector:
            for fd in job.open_fds:
                selector.register(fd, selectors.EVENT_READ)
            while not job.done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if timed_out:
                        _servers.discard(server)
                        break
                    timed_out = True
                    job.kill()
                    deadline = time.monotonic() + _KILL_GRACE_S
                    continue
                for key, _ in selector.select(remaining):
                    job.on_readable(key.fd)
                    if key.fd not in job.open_fds:
                        selector.unregister(key.fd)
    finally:
        job.close()
    return _forked_outcome(job, timed_out, limits)


class _Registry:
    """This process's fork servers, one per plugin set, started on first use."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.servers: dict[tuple[str, ...], forkserver.ForkServer] = {}
        self.failed_at: dict[tuple[str, ...], float] = {}

    def running(self, plugins: tuple[str, ...]) -> forkserver.ForkServer | None:
        """The ready server for `plugins`, if there is one (never blocks)."""
        server = self.servers.get(plugins)
        return server if server is not None and server.usable() else None

    def get(self, plugins: tuple[str, ...], nice: int) -> forkserver.ForkServer | None:
        """The server for `plugins`, started (blocking) if needed; None: use new interpreters."""
        with self.lock:
            server = self.servers.get(plugins)
            if server is not None:
                if server.usable():
                    return server
                del self.servers[plugins]
                server.abandon()  # dead: this only reaps it
            failed = self.failed_at.get(plugins)
            if failed is not None and time.monotonic() - failed < _ZYGOTE_RETRY_AFTER_S:
                return None
            try:
                server = forkserver.ForkServer(plugins, nice, _child_env(), _PACKAGE_ROOT)
            except (OSError, forkserver.Unusable) as exc:
                self.failed_at[plugins] = time.monotonic()
                _log.warning("document sandbox: %s; starting an interpreter per document", exc)
                return None
            self.failed_at.pop(plugins, None)
            self.servers[plugins] = server
            return server

    def discard(self, server: forkserver.ForkServer) -> None:
        with self.lock:
            if self.servers.get(server.plugins) is server:
                del self.servers[server.plugins]
        server.abandon()

    def close_all(self, timeout: float = _KILL_GRACE_S) -> None:
        with self.lock:
            servers = list(self.servers.values())
            self.servers.clear()
        for server in servers:
            server.close()
        deadline = time.monotonic() + timeout
        for server in servers:
            server.wait(max(0.0, deadline - time.monotonic()))

    def forget_after_fork(self) -> None:
        """In a forked copy of this process: drop our copies, never touch the parent's zygotes."""
        for server in self.servers.values():
            server.control.close()
        self.servers.clear()
        self.lock = threading.Lock()


_servers = _Registry()
atexit.register(_servers.close_all)
os.register_at_fork(after_in_child=_servers.forget_after_fork)


def _fork_request(limits: dict[str, Any], nice: int) -> dict[str, Any]:
    request = {k: v for k, v in limits.items() if k != "plugins"}  # the zygote loaded them
    request["nice"] = nice
    return request


def _forked_outcome(job: forkserver.Job, timed_out: bool, limits: dict[str, Any]) -> ExtractedDocument:
    if job.pid is None:
        if timed_out:  # the zygote never answered: it was wedged (and has been killed)
            raise _failure(_stuck(), None, "")
        raise forkserver.Unusable(job.error or "the fork server exited", lost=job.error is None)
    if job.status is None and not timed_out:
        why = "the document parser was lost (its fork server exited)"
        tail = job.stderr[-2000:].decode("utf-8", "replace")
        raise _failure(SandboxFailure("parser_crashed", why, retryable=True), None, tail)
    return _outcome(job.status, bytes(job.stdout), bytes(job.stderr), timed_out, limits)


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)  # per thread on Linux: the calling thread's


# --- a new interpreter per call (no fork server) ---------------------------------------------------


async def _spawned_async(
    command: list[str], stdin_data: bytes | None, limits: dict[str, Any]
) -> ExtractedDocument:
    try:
        proc = await asyncio.create_subprocess_exec(
            *command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_child_env(limits.get("password")), cwd=_PACKAGE_ROOT, process_group=0,
        )
    except OSError as exc:
        raise _unavailable(exc) from None
    timed_out = False
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin_data), limits["time_limit_s"])
    except TimeoutError:
        timed_out = True
        _kill(proc.pid)
        stdout, stderr = b"", b""
    finally:
        if proc.returncode is None:
            _kill(proc.pid)
            await proc.wait()
    return _outcome(proc.returncode, stdout, stderr, timed_out, limits)


def _spawned_sync(
    command: list[str], stdin_data: bytes | None, limits: dict[str, Any]
) -> ExtractedDocument:
    try:
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=_child_env(limits.get("password")), cwd=_PACKAGE_ROOT, process_group=0,
        )
    except OSError as exc:
        raise _unavailable(exc) from None
    timed_out = False
    try:
        stdout, stderr = proc.communicate(stdin_data, timeout=limits["time_limit_s"])
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
    password: str | None = None,
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
    if password:  # for the fork server's socket; a new interpreter gets it in its environment
        request["password"] = password
    return command, stdin_data, request


def _child_env(password: str | None = None) -> dict[str, str]:
    """Only what the interpreter needs: the worker's secrets stay in the worker (a document's
    own password, when it has one, goes to the interpreter that opens it, in its environment)."""
    return {
        **({PASSWORD_ENV: password} if password else {}),
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


def _stuck() -> SandboxFailure:
    return SandboxFailure(
        "sandbox_unavailable", "the document parser could not be started (no answer)", retryable=True
    )


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
