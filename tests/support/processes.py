"""Stopping the child processes that tests (and the benchmarks in bench/) start."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_process(
    proc: subprocess.Popen[bytes] | None, timeout: float = 60.0, *, sig: int = signal.SIGTERM
) -> int | None:
    """Stop a child the graceful way: send ``sig`` (SIGTERM), give it ``timeout`` seconds to exit, then SIGKILL.

    A child that leads its own process group (started with ``start_new_session=True``) is killed with its
    whole group, so whatever it forked goes too. Returns the exit status (negative: the signal that ended
    it, -9 when it had to be killed); None when there is no process.
    """
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()
    return proc.returncode
