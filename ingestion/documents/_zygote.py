"""The sandbox's fork server ("zygote"): a helper process that has already imported the parsers
and forks one fresh, limited grandchild per document. This module holds both ends of it: the
server (`main`, run in the helper) and the client's handle (`ForkServer`, `Job`, used by
sandbox.py, which decides when to use, replace or bypass a fork server).

The client starts it from a clean interpreter (subprocess, scrubbed environment, no inherited
fds but one end of a socketpair, its own process group):

    python -s -X faulthandler -c "...; _zygote.main()" <control fd> '<plugins json>' <niceness>

It imports every parser, loads the plugins, parses a few tiny built-in documents (so lazy
imports and caches are done once, here), freezes its heap for the garbage collector, and says
`ready <pid>` on the control socket. From then on it never parses anything itself.

Protocol (AF_UNIX SOCK_SEQPACKET, one datagram per message):
- control socket, client -> zygote: the request JSON (as for `_child.run`, plus "nice"), with
  four fds attached: a private reply channel (a socketpair end), the document on stdin (a memfd
  or /dev/null), the answer pipe and the log pipe;
- channel, zygote -> client: `pid <n>` once the grandchild exists, then `exit <code>` once it
  is reaped (code as `Popen.returncode`: negative for a signal), or `error <why>` if it could
  not be forked;
- channel, client -> zygote: `kill` (or closing the channel): SIGKILL the grandchild's group.
  Only the zygote kills and reaps, so a pid is never signalled after it could have been reused.
- EOF on the control socket (the client closed it, or died): finish the grandchildren in
  flight, then exit.

The grandchild: its own process group, SIGKILL if the zygote dies (PR_SET_PDEATHSIG), the three
fds it was given as 0/1/2 and every other fd closed before any document byte is read, then
`_child.run` (rlimits, parse, JSON answer) and `os._exit`. A fork gives every document a
fresh copy of the zygote's address space: nothing one parse changes survives it or is seen by
another. The zygote and its grandchildren are not dumpable, so same-uid processes (such as
another document's grandchild) cannot ptrace them or read their memory through /proc.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from ingestion.documents import _child

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_MAX_MESSAGE = 1 << 16


def main() -> int:
    control = socket.socket(fileno=int(sys.argv[1]))
    try:
        _nice_at_least(int(sys.argv[3]))
        _prctl(_PR_SET_DUMPABLE, 0)
        _preload(json.loads(sys.argv[2]))
    except BaseException as exc:  # report why, so the client logs it and falls back
        traceback.print_exc()
        _send(control, f"fail {type(exc).__name__}: {exc}"[:4000].encode("utf-8", "replace"))
        return 1
    gc.collect()
    gc.freeze()  # the grandchildren's collector never touches (and copies) the preloaded heap
    _send(control, b"ready %d" % os.getpid())
    _Server(control).serve()
    return 0


def _preload(plugins: list[str]) -> None:
    from ingestion.documents import extract as extracting
    from ingestion.documents import extract_docx, extract_html, extract_markdown, extract_pdf  # noqa: F401

    for number, plugin in enumerate(plugins):
        _child._load_plugin(plugin, number)
    for data, filename in _warm_up_samples():
        try:
            extracting.extract(data, filename=filename)
        except Exception:  # a warm-up that fails costs speed, not correctness
            traceback.print_exc()


def _warm_up_samples() -> list[tuple[bytes, str]]:
    text = "Warm up the parser for the sandbox fork server."
    samples = [
        (f"# Warm up\n\n{text} *a* [b](https://example.org)\n\n- one\n- two\n".encode(), "w.md"),
        (f"<html><head><title>W</title></head><body><h1>W</h1><p>{text}</p></body></html>".encode(), "w.html"),
        (text.encode(), "w.txt"),
        (_tiny_pdf(text), "w.pdf"),
    ]
    try:
        import io

        from docx import Document

        document, out = Document(), io.BytesIO()
        document.add_heading("Warm up", 1)
        document.add_paragraph(text)
        document.save(out)
        samples.append((out.getvalue(), "w.docx"))
    except Exception:
        traceback.print_exc()
    return samples


def _tiny_pdf(text: str) -> bytes:
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


class _Server:
    def __init__(self, control: socket.socket) -> None:
        self.control: socket.socket | None = control
        self.live: dict[int, socket.socket | None] = {}  # grandchild pid -> its reply channel
        self.selector = selectors.DefaultSelector()
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client decides when we stop
        self.selector.register(control, selectors.EVENT_READ, self._on_request)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._on_sigchld)

    def serve(self) -> None:
        while self.control is not None or self.live:
            for key, _ in self.selector.select():
                try:
                    key.data(key.fileobj)
                except Exception:  # one bad message must not take the server down
                    traceback.print_exc()
            self._reap()  # also catches an exit whose SIGCHLD raced the select

    def _on_request(self, control: socket.socket) -> None:
        try:
            message, fds, flags, _ = socket.recv_fds(control, _MAX_MESSAGE, 4)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            message, fds, flags = b"", [], 0
        if not message:  # the client is gone or closed us: finish what is in flight, then exit
            self.selector.unregister(control)
            control.close()
            self.control = None
            for fd in fds:
                os.close(fd)
            return
        if len(fds) != 4 or flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
            for fd in fds:
                os.close(fd)
            return
        channel = socket.socket(fileno=fds[0])
        stdio = fds[1:]
        try:
            request = json.loads(message)
            if not isinstance(request, dict):
                raise ValueError("request is not an object")
            pid = self._fork(request, stdio)
        except Exception as exc:
            _send(channel, f"error {type(exc).__name__}: {exc}"[:500].encode("utf-8", "replace"))
            channel.close()
            return
        finally:
            for fd in stdio:
                os.close(fd)
        self.live[pid] = channel
        _send(channel, b"pid %d" % pid)
        self.selector.register(channel, selectors.EVENT_READ, self._on_channel)

    def _fork(self, request: dict[str, Any], stdio: list[int]) -> int:
        for stream in (sys.stdout, sys.stderr):  # nothing of ours may be flushed twice
            stream.flush()
        zygote = os.getpid()
        pid = os.fork()
        if pid == 0:
            _grandchild(request, stdio, zygote)
        try:
            os.setpgid(pid, pid)  # also done in the child: whichever runs first wins the race
        except OSError:
            pass
        return pid

    def _on_channel(self, channel: socket.socket) -> None:
        pid = next((p for p, c in self.live.items() if c is channel), None)
        try:
            message = channel.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            message = b""
        if message and message != b"kill":
            return
        if pid is not None:
            _kill_group(pid)
        if not message:  # the client gave up on this document (cancelled, timed out, died)
            self.selector.unregister(channel)
            channel.close()
            if pid is not None:
                self.live[pid] = None

    def _on_sigchld(self, wake_r: int) -> None:
        try:
            while os.read(wake_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _reap(self) -> None:
        while self.live:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            channel = self.live.pop(pid, None)
            if channel is not None:
                _send(channel, b"exit %d" % os.waitstatus_to_exitcode(status))
                self.selector.unregister(channel)
                channel.close()


def _grandchild(request: dict[str, Any], stdio: list[int], zygote: int) -> NoReturn:
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setpgid(0, 0)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote:  # the zygote died before the line above took effect
            os._exit(code)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the control socket, other documents' fds
        _nice_at_least(request.get("nice"))
        code = _child.run(request)
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os._exit(code)


def _nice_at_least(nice: object) -> None:
    """Run at the caller's niceness. Only raising it is allowed, so a nicer zygote wins (the
    worker is never less nice than when it started the zygote, unless it is privileged)."""
    if isinstance(nice, int) and nice > os.getpriority(os.PRIO_PROCESS, 0):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:
            pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _prctl(option: int, value: int) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) != 0:  # pragma: no cover - not Linux
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _send(sock: socket.socket, message: bytes) -> None:
    try:
        sock.send(message)
    except OSError:  # the client is gone; EOF on its side says the rest
        pass


# --- the client's side (imported by sandbox.py in the worker) -------------------------------------

MAIN = "import sys; from ingestion.documents._zygote import main; sys.exit(main())"
START_TIMEOUT_S = 60.0  # interpreter + every parser's imports, on a loaded machine
MAX_REQUEST = 60_000  # bytes of request JSON in one control datagram
STDERR_KEEP = 256 * 1024  # the tail of a grandchild's log we keep


class Unusable(Exception):
    """This call cannot use the fork server. `lost`: it died before forking our child (nothing
    was parsed, a new server may be tried); otherwise it is alive but cannot take this call."""

    def __init__(self, why: str, *, lost: bool) -> None:
        super().__init__(why)
        self.lost = lost


class ForkServer:
    """Our handle on one zygote process; creating it blocks until the zygote is ready."""

    def __init__(self, plugins: tuple[str, ...], nice: int, env: dict[str, str], cwd: Path) -> None:
        self.plugins = plugins
        self.closed = False
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-s", "-X", "faulthandler", "-c", MAIN,
                 str(theirs.fileno()), json.dumps(list(plugins)), str(nice)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, cwd=cwd,
                pass_fds=(theirs.fileno(),), process_group=0,
            )
        except BaseException:
            self.control.close()
            raise
        finally:
            theirs.close()
        self.control.settimeout(START_TIMEOUT_S)
        try:
            hello = self.control.recv(4096)
        except OSError:  # includes the time-out
            hello = b""
        if not hello.startswith(b"ready "):
            self.abandon()
            if hello.startswith(b"fail "):
                why = hello[5:].decode("utf-8", "replace")
            else:
                why = f"exit status {self.proc.returncode}" if self.proc.returncode else "no answer"
            raise Unusable(f"the sandbox fork server did not start ({why})", lost=False)
        self.pid = int(hello.split()[1])
        self.control.setblocking(False)  # a full queue means a wedged zygote: never wait on it

    def usable(self) -> bool:
        return not self.closed and self.proc.poll() is None

    def launch(self, request: dict[str, Any], stdin_data: bytes | None) -> Job:
        """Have the zygote fork a grandchild for `request` (the document on its stdin)."""
        payload = json.dumps(request).encode("utf-8")
        if len(payload) > MAX_REQUEST:
            raise Unusable("request too long for the fork server", lost=False)
        ours: list[int] = []  # closed here on failure; kept (the Job's) on success
        theirs: list[int] = []  # the zygote's copies: always closed here once sent
        try:
            mine, remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            ours.append(mine.detach())
            theirs.append(remote.detach())
            if stdin_data is None:
                theirs.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            else:  # a memfd, not a pipe: writing it never waits for the reader
                theirs.append(os.memfd_create("parley-document"))
                _child._write_all(theirs[-1], stdin_data)
                os.lseek(theirs[-1], 0, os.SEEK_SET)
            for _ in range(2):  # the answer pipe, the log pipe
                read_end, write_end = os.pipe()
                ours.append(read_end)
                theirs.append(write_end)
        except OSError as exc:
            _close_all(ours + theirs)
            raise Unusable(f"no resources for a sandbox request ({exc})", lost=False) from None
        try:
            socket.send_fds(self.control, [payload], theirs)
        except BlockingIOError:  # a queue this long means a stuck zygote: bypass it this time
            _close_all(ours)
            raise Unusable("the fork server is not taking requests", lost=False) from None
        except OSError as exc:
            _close_all(ours)
            raise Unusable(f"the fork server is gone ({exc})", lost=True) from None
        finally:
            _close_all(theirs)
        for fd in ours:
            os.set_blocking(fd, False)
        channel, out_r, err_r = ours
        return Job(socket.socket(fileno=channel), out_r, err_r)

    def close(self) -> None:
        """Stop taking requests: the zygote finishes the grandchildren in flight, then exits."""
        if not self.closed:
            self.closed = True
            self.control.close()

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.abandon()

    def abandon(self) -> None:
        """Kill the zygote now (its grandchildren die with it) and reap it."""
        self.close()
        if self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
                pass


class Job:
    """One document in a grandchild, seen from the client: the reply channel, the answer and
    log pipes (all non-blocking; the caller polls `open_fds`), and what they said so far."""

    def __init__(self, channel: socket.socket, out_fd: int, err_fd: int) -> None:
        self.channel, self.out_fd, self.err_fd = channel, out_fd, err_fd
        self.open_fds = {channel.fileno(), out_fd, err_fd}
        self.pid: int | None = None
        self.status: int | None = None  # as Popen.returncode
        self.error: str | None = None  # the zygote could not fork
        self.lost = False  # the zygote died before reporting an exit status
        self.stdout, self.stderr = bytearray(), bytearray()
        self._closed = False

    @property
    def done(self) -> bool:
        return self.status is not None or self.error is not None or self.lost

    def on_readable(self, fd: int) -> None:
        if fd == self.out_fd or fd == self.err_fd:
            self._read_pipe(fd)
        else:
            self._read_channel()
        if self.done:  # the grandchild is gone: all it wrote is in the pipes already
            self._read_pipe(self.out_fd)
            self._read_pipe(self.err_fd)

    def _read_channel(self) -> None:
        while self.channel.fileno() in self.open_fds:
            try:
                message = self.channel.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message = b""
            kind, _, value = message.partition(b" ")
            if kind == b"pid" and value.isdigit():
                self.pid = int(value)
            elif kind == b"exit" and value.lstrip(b"-").isdigit():
                self.status = int(value)
            elif kind == b"error":
                self.error = value.decode("utf-8", "replace")
            else:  # EOF (or nonsense): the zygote is gone
                self.open_fds.discard(self.channel.fileno())
                self.lost = self.status is None and self.error is None

    def _read_pipe(self, fd: int) -> None:
        buffer = self.stdout if fd == self.out_fd else self.stderr
        while fd in self.open_fds:
            try:
                chunk = os.read(fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            if not chunk:
                self.open_fds.discard(fd)
                return
            buffer += chunk
            if buffer is self.stderr and len(buffer) > 2 * STDERR_KEEP:
                del buffer[:-STDERR_KEEP]

    def kill(self) -> None:
        try:
            self.channel.send(b"kill")
        except OSError:  # the zygote is gone, and so is the grandchild (PR_SET_PDEATHSIG)
            pass

    def close(self) -> None:
        """Closing the channel also tells the zygote to kill the grandchild if it still runs."""
        if not self._closed:
            self._closed = True
            self.channel.close()
            os.close(self.out_fd)
            os.close(self.err_fd)


if __name__ == "__main__":
    sys.exit(main())
