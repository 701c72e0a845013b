"""Helpers every benchmark needs: a free TCP port, the AMQP topology clean-up, stopping a child process,
waiting for a service to serve, a closed-loop driver, a percentile, a process's CPU time and the load average.

The benches run as scripts (``.venv/bin/python bench/x.py``): each puts the repository root on ``sys.path``
first, then imports ``bench._common`` like its other siblings.
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING, Any

from tests.support.processes import stop_process

if TYPE_CHECKING:
    from parley.bus import RabbitBroker

__all__ = [
    "closed_loop", "cpu_seconds", "delete_topology", "free_port", "load_average", "percentile", "stop_process",
    "wait_until_serving",
]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    import os
    from pathlib import Path

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile (0-100) of ``values``; NaN when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` prints them (to record beside each figure)."""
    import os

    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


async def closed_loop(ask: Any, *, concurrency: int, seconds: float) -> tuple[list[float], int]:
    """`concurrency` clients each awaiting `ask()` back to back for `seconds` (a closed loop); returns the
    latencies in ms of the calls that succeeded and how many raised (counted, not raised: the run goes on)."""
    import asyncio
    import time

    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await ask()
            except Exception:  # noqa: BLE001 - counted and reported
                errors += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def delete_topology(broker: RabbitBroker, *, start: bool = False) -> None:
    """Delete the bench's queues and exchanges (``broker``'s topology), then close ``broker``.

    ``start``: connect first (a broker made just for the clean-up). A failure is printed, not raised, so the
    clean-up never hides the bench's own outcome.
    """
    try:
        if start:
            await broker.start()
        await broker.delete_topology()
    except Exception as exc:  # noqa: BLE001 - clean-up: report it and go on
        print(f"(could not delete the bench topology {broker.topology.prefix}: {exc})", file=sys.stderr, flush=True)
    finally:
        await broker.close()


async def wait_until_serving(http: Any, url: str, process: Any, log: Any, *, timeout: float = 60.0,
                             interval: float = 0.2) -> float:
    """Poll `url` with the aiohttp session `http` until it answers 200 and return the seconds it took;
    exit with a pointer to the process's log when it died or did not come up within `timeout` seconds.
    `process` is a `subprocess.Popen` or an `asyncio.subprocess.Process`."""
    import asyncio
    import time

    import aiohttp

    def exited() -> bool:
        poll = getattr(process, "poll", None)
        return (poll() if poll is not None else process.returncode) is not None

    started = time.monotonic()
    while True:
        try:
            async with http.get(url) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except aiohttp.ClientError:
            pass
        if time.monotonic() - started > timeout or exited():
            raise SystemExit(f"{url} did not answer 200; see {log}")
        await asyncio.sleep(interval)
