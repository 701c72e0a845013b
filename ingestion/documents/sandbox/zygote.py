"""The sandbox's fork server ("zygote"): a helper process that has already imported the parsers
and forks one fresh, limited grandchild per document. This module is the server (`main`, run in
the helper); the client's handle on it (`ForkServer`, `Job`) is `forkserver.py`, and `client.py`
decides when to use, replace or bypass a fork server.

The client starts it from a clean interpreter (subprocess, scrubbed environment, no inherited
fds but one end of a socketpair, its own process group):

    python -s -X faulthandler -c "...; zygote.main()" <control fd> '<plugins json>' <niceness>

It imports every parser, loads the plugins, parses a few tiny built-in documents (so lazy
imports and caches are done once, here), freezes its heap for the garbage collector, and says
`ready <pid>` on the control socket. From then on it never parses anything itself.

Protocol (AF_UNIX SOCK_SEQPACKET, one datagram per message):
- control socket, client -> zygote: the request JSON (as for `child.run`, plus "nice"), with
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
`child.run` (rlimits, parse, JSON answer) and `os._exit`. A fork gives every document a
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
import sys
import traceback
from typing import Any, NoReturn

from ingestion.documents.sandbox import child
from parley import formats

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

    formats.load_format_plugins(plugins, into=formats.registry())  # the grandchildren inherit them
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
        code = child.run(request)
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


def _send(sock: socket.socket, message: bytes) -> None:
    try:
        sock.send(message)
    except OSError:  # the client is gone; EOF on its side says the rest
        pass


if __name__ == "__main__":
    sys.exit(main())
