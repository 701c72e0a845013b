"""Our handle on one fork server ("zygote", `zygote.py`), used by `client.py` in the worker:
`ForkServer` starts the zygote and sends it one request per document, `Job` reads what that
document's grandchild and the zygote say back. The protocol is described in `zygote.py`; which
fork server to use, replace or bypass is decided in `client.py`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from ingestion.documents.sandbox.child import write_all

MAIN = "import sys; from ingestion.documents.sandbox.zygote import main; sys.exit(main())"
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
                write_all(theirs[-1], stdin_data)
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


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
