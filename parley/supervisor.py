"""`parley up`: run each process of the platform as a supervised child.

Answering and indexing never share a process: the gateway and retrieval service run at normal
priority, ingestion workers at the configured niceness (19 by default), each with its
math-library threads bounded so no process tries to use both cores. A child that dies is
restarted with backoff; Ctrl-C (SIGINT) or SIGTERM is forwarded to every child, which finishes
or returns its in-flight messages before exiting.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from rich.console import Console

from parley.settings import Settings

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class ProcessSpec:
    name: str
    command: list[str]  # `parley` sub-command and its arguments
    nice: int = 0
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)


def platform_processes(settings: Settings) -> list[ProcessSpec]:
    threads = {k: str(settings.embedding_threads) for k in THREAD_ENV}
    return [
        ProcessSpec("retrieval", ["retrieval"], url=settings.effective_retrieval_url, env=threads),
        ProcessSpec("gateway", ["gateway"], url=settings.effective_public_url, env=threads),
        ProcessSpec("documents-worker", ["worker", "documents"], nice=settings.worker_nice, env=threads),
        ProcessSpec("catalog-worker", ["worker", "catalog"], nice=settings.worker_nice, env=threads),
    ]


class _Child:
    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.next_start = 0.0

    def start(self) -> None:
        nice = self.spec.nice

        def lower_priority() -> None:  # runs in the child before exec
            if nice:
                os.nice(nice)

        env = {**os.environ, **self.spec.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parley.cli", *self.spec.command],
            env=env,
            preexec_fn=lower_priority,
            start_new_session=True,  # Ctrl-C reaches children only through us, in order
        )


def run(specs: list[ProcessSpec], *, console: Console, poll_s: float = 0.5, stop_timeout_s: float = 30.0) -> int:
    if not specs:
        console.print("[yellow]nothing to start: no platform process is available in this build[/yellow]")
        return 0
    children = [_Child(s) for s in specs]
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    for child in children:
        child.start()
    console.print("[bold]Parley is running[/bold] (Ctrl-C stops everything)")
    for child in children:
        where = f" at {child.spec.url}" if child.spec.url else ""
        prio = f", nice {child.spec.nice}" if child.spec.nice else ""
        console.print(f"  {child.spec.name:<18} pid {child.proc.pid if child.proc else '-'}{where}{prio}")

    while not stopping:
        time.sleep(poll_s)
        now = time.monotonic()
        for child in children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                child.restarts += 1
                delay = min(30.0, 2 ** min(child.restarts, 5) / 2)
                console.print(f"[red]{child.spec.name} exited with {code}; restarting in {delay:.0f}s[/red]")
                child.proc = None
                child.next_start = now + delay
            if child.proc is None and now >= child.next_start and not stopping:
                child.start()

    console.print("stopping: children finish or return their in-flight work…")
    for child in children:
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + stop_timeout_s
    for child in children:
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            console.print(f"[red]{child.spec.name} did not stop in time; killing it[/red]")
            child.proc.kill()
    console.print("stopped.")
    return 0
