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
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from parley.settings import Settings

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class ProcessSpec:
    name: str
    command: list[str]  # `parley` sub-command and its arguments
    nice: int = 0
    url: str | None = None
    env: dict[str, str] = field(default_factory=dict)


DEFAULT_WORKER_METRICS_PORT = 8082


def log_env(settings: Settings, stream: object = None) -> dict[str, str]:
    """PARLEY_LOG_JSON as decided here, once, for the children: readable lines when `parley up`'s
    stderr is a terminal (the children write to the same one), JSON otherwise, unless set explicitly."""
    from parley.logging import wants_json

    return {"PARLEY_LOG_JSON": "true" if wants_json(settings.log_json, stream) else "false"}


def retrieval_replicas(settings: Settings) -> list[tuple[str, int, str]]:
    """(process name, port, URL) of each retrieval process `parley up` starts: one, "retrieval" on
    PARLEY_RETRIEVAL_PORT; with PARLEY_RETRIEVAL_REPLICAS=N, "retrieval-1".."retrieval-N" on that port
    and the next N-1."""
    n, host, port = settings.retrieval_replicas, settings.retrieval_host, settings.retrieval_port
    if n == 1:
        return [("retrieval", port, settings.effective_retrieval_url)]
    return [(f"retrieval-{i + 1}", port + i, f"http://{host}:{port + i}") for i in range(n)]


def platform_processes(settings: Settings) -> list[ProcessSpec]:
    """The processes: the retrieval service (or its PARLEY_RETRIEVAL_REPLICAS replicas, the gateway
    pointed at all of them through PARLEY_RETRIEVAL_URLS), the gateway and three workers. The workers
    get fixed /metrics ports (PARLEY_WORKER_METRICS_PORT and the next ones; 8082, 8083 and 8084 when it
    is 0, or the three after the last retrieval replica's port when those overlap) so a Prometheus
    scrape config can name them. Every child gets the parent's log format (`log_env`)."""
    threads = {k: str(settings.embedding_threads) for k in THREAD_ENV} | log_env(settings)
    replicas = retrieval_replicas(settings)
    default_metrics_port = DEFAULT_WORKER_METRICS_PORT
    if any(default_metrics_port <= port < default_metrics_port + 3 for _, port, _ in replicas):
        default_metrics_port = max(port for _, port, _ in replicas) + 1
    workers = []
    for offset, (name, kind) in enumerate((("documents-worker", "documents"), ("catalog-worker", "catalog"),
                                           ("webhooks-worker", "webhooks"))):
        env = dict(threads)
        url = None
        if settings.worker_metrics_port >= 0:
            port = (settings.worker_metrics_port or default_metrics_port) + offset
            env["PARLEY_WORKER_METRICS_PORT"] = str(port)
            url = f"http://{settings.worker_metrics_host}:{port}"
        workers.append(ProcessSpec(name, ["worker", kind], nice=settings.worker_nice, url=url, env=env))
    gateway_env = dict(threads)
    if len(replicas) > 1:
        gateway_env["PARLEY_RETRIEVAL_URLS"] = ",".join(url for _, _, url in replicas)
    return [
        *(ProcessSpec(name, ["retrieval"], url=url, env={**threads, "PARLEY_RETRIEVAL_PORT": str(port)})
          for name, port, url in replicas),
        ProcessSpec("gateway", ["gateway"], url=f"http://{settings.gateway_host}:{settings.gateway_port}", env=gateway_env),
        *workers,
    ]


def summary(children: list[_Child]) -> Table:
    table = Table(title="Parley is running (Ctrl-C stops everything)", title_justify="left")
    for column in ("process", "pid", "nice", "URL"):
        table.add_column(column)
    for child in children:
        pid = str(child.proc.pid) if child.proc is not None else "-"
        table.add_row(child.spec.name, pid, str(child.spec.nice), child.spec.url or "")
    return table


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
            [sys.executable, "-m", "cli", *self.spec.command],
            env=env,
            preexec_fn=lower_priority,
            start_new_session=True,  # Ctrl-C reaches children only through us, in order
        )


def run(specs: list[ProcessSpec], *, console: Console, notes: list[str] | None = None, poll_s: float = 0.5,
        stop_timeout_s: float = 30.0, on_started: Callable[[dict[str, int]], object] | None = None) -> int:
    """Start the children, print what runs where (and ``notes``), restart a child that dies, stop
    them all on SIGINT or SIGTERM (a second one kills them). ``on_started`` gets each child's pid
    once all are started. Returns 0 when every child stopped cleanly."""
    if not specs:
        console.print("[yellow]nothing to start: no platform process is available in this build[/yellow]")
        return 0
    children = [_Child(s) for s in specs]
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:  # a second Ctrl-C: do not wait any longer
            for child in children:
                if child.proc is not None and child.proc.poll() is None:
                    child.proc.kill()
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    for child in children:
        child.start()
    if on_started is not None:
        on_started({c.spec.name: c.proc.pid for c in children if c.proc is not None})
    console.print(summary(children))
    for note in notes or []:
        console.print(note, highlight=False)

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
                console.print(f"restarted {child.spec.name} (pid {child.proc.pid if child.proc else '-'})")

    console.print("stopping: children finish or return their in-flight work…")
    for child in children:
        if child.proc is not None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + stop_timeout_s
    clean = True
    for child in children:
        if child.proc is None:
            continue
        try:
            code = child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            console.print(f"[red]{child.spec.name} did not stop in time; killing it[/red]")
            child.proc.kill()
            code = child.proc.wait()
        if code != 0:
            clean = False
            console.print(f"[red]{child.spec.name} (pid {child.proc.pid}) exited with {code}[/red]")
    console.print("stopped." if clean else "stopped, not cleanly (see above).")
    return 0 if clean else 1
