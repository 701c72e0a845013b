"""Several retrieval replicas behind the one `RetrievalClient` interface: tenant affinity, failover, return.

    client = retrieval_client(settings.effective_retrieval_urls, token=..., timeout=30, try_timeout=5,
                              probe_interval=2, registry=metrics.registry)
    # one URL: the plain HttpRetrievalClient, exactly as with one service; several: ReplicatedRetrievalClient

Choices, and why:

* **Rendezvous hashing** (highest random weight): each replica scores ``blake2b(replica, tenant)`` and
  a tenant's preference order is the replicas by score. Every tenant is answered by its first replica
  while that one is up, so each replica keeps its own subset of tenants warm (index in memory,
  answer cache hot). Adding or removing a replica moves only the tenants whose first choice it is
  (about 1/N of them); the others keep their replica. No ring, no virtual nodes, no state to share
  between gateways: two gateways with the same list agree.
* **Failover.** A try that cannot connect, times out (``try_timeout``; the last replica left gets
  whatever remains of ``timeout``), or gets a 5xx/429 (`Unavailable`) goes to the next replica in
  the tenant's order. The refusals that every replica would repeat - `NotFound`, `Forbidden`,
  `InvalidInput`, `Unauthorized` - are raised at once, never retried elsewhere.
* **Down and back.** A replica that failed is marked down and skipped by every question; a background
  probe asks its ``/readyz`` after ``probe_interval`` seconds, doubling up to ``max_probe_interval``,
  and marks it up once it answers 200 (ready: warmed up, database reachable). Its tenants then
  return to it. With every replica down the question fails at once with `Unavailable` (retryable:
  the gateway's answer retry asks again later) naming each replica and why it is down.
* **The cache across replicas.** Each replica caches answers under the tenant's index version read
  from the database and serves a cached answer only when the version its reader is known to hold is
  that version (`retrieval.service`), so a tenant moving from A to B and back to A never gets A's
  answer from before the move once the tenant's index changed.

Metrics (in the registry given, the gateway's): ``parley_gateway_retrieval_tries_total{replica,outcome}``
(ok, refused - a 4xx answer -, failed), ``parley_gateway_retrieval_failovers_total``,
``parley_gateway_retrieval_replica_up{replica}``. Logged: a replica marked down (warning, with the
reason) and back (info). `states` reports each replica for ``/readyz`` and `parley status`.

Imports only aiohttp, prometheus_client, `parley` and `retrieval.client` / `retrieval.schemas`
(the gateway may import this module).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, Counter, Gauge

from parley.errors import ConfigurationError, ParleyError, Unavailable
from retrieval.client import HttpRetrievalClient, RetrievalClient
from retrieval.schemas import QueryRequest, QueryResponse

log = logging.getLogger("parley.retrieval.replicas")


def rendezvous_score(replica: str, tenant_id: str) -> int:
    """The replica's weight for the tenant: 64 bits of blake2b over both (stable across processes and runs)."""
    digest = hashlib.blake2b(f"{replica}\x00{tenant_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(tenant_id: str, replicas: Sequence[str]) -> list[str]:
    """The tenant's preference order over ``replicas``: highest score first (ties, never seen in
    practice, by name so the order is total)."""
    return sorted(replicas, key=lambda r: (-rendezvous_score(r, tenant_id), r))


@dataclass
class Replica:
    url: str
    client: HttpRetrievalClient
    up: bool = True
    down_since: float | None = None
    reason: str = ""
    probe_delay: float = 0.0
    answered: int = 0
    failed: int = 0
    probe: asyncio.Task[None] | None = None


class ReplicatedRetrievalClient:
    """`RetrievalClient` over several retrieval replicas (module docstring). ``timeout``: the most one
    question may take over all its tries; ``try_timeout``: the most one replica is given while another
    is left to ask."""

    def __init__(
        self, urls: Sequence[str], *, token: str | None = None, timeout: float = 30.0, try_timeout: float = 5.0,
        probe_interval: float = 2.0, max_probe_interval: float = 10.0, registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        urls = list(dict.fromkeys(u.rstrip("/") for u in urls if u.strip()))
        if not urls:
            raise ConfigurationError("no retrieval replica given: set PARLEY_RETRIEVAL_URLS (comma-separated URLs)")
        if timeout <= 0 or try_timeout <= 0 or probe_interval <= 0:
            raise ConfigurationError("timeout, try_timeout and probe_interval must be > 0 seconds")
        self.timeout = timeout
        self.try_timeout = min(try_timeout, timeout)
        self.probe_interval = probe_interval
        self.max_probe_interval = max(max_probe_interval, probe_interval)
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._token = token
        self.replicas: dict[str, Replica] = {}
        for url in urls:
            self.replicas[url] = Replica(url, HttpRetrievalClient(url, timeout=timeout, session=None, token=token))
        self._closed = False
        self._tries = self._failovers = self._up = None
        if registry is not None:
            self._tries = Counter("parley_gateway_retrieval_tries", "Questions sent to a retrieval replica, by replica and "
                                  "outcome (ok, refused: a 4xx answer, failed: unreachable, timed out or 5xx).",
                                  ["replica", "outcome"], registry=registry)
            self._failovers = Counter("parley_gateway_retrieval_failovers", "Questions asked of a further replica after "
                                      "one failed.", registry=registry)
            self._up = Gauge("parley_gateway_retrieval_replica_up", "1 when the retrieval replica is in use, 0 while it "
                             "is marked down.", ["replica"], registry=registry)
            for url in urls:
                self._up.labels(url).set(1)

    @property
    def urls(self) -> list[str]:
        return list(self.replicas)

    def order(self, tenant_id: str) -> list[str]:
        """The tenant's replicas in preference order (up or not)."""
        return rendezvous_order(tenant_id, self.urls)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
            for replica in self.replicas.values():
                replica.client = HttpRetrievalClient(replica.url, timeout=self.timeout, session=self._session,
                                                     token=self._token)
        return self._session

    async def query(self, req: QueryRequest) -> QueryResponse:
        self._http()
        order = [self.replicas[url] for url in self.order(req.tenant_id)]
        candidates = [r for r in order if r.up]
        if not candidates:
            raise Unavailable("every retrieval replica is down: " + "; ".join(f"{r.url} ({r.reason})" for r in order))
        deadline = self._clock() + self.timeout
        problems = []
        for n, replica in enumerate(candidates):
            left = deadline - self._clock()
            if left <= 0:
                break
            last = n == len(candidates) - 1
            budget = left if last else min(self.try_timeout, left)
            if n:
                if self._failovers is not None:
                    self._failovers.inc()
            try:
                async with asyncio.timeout(budget):
                    response = await replica.client.query(req)
            except TimeoutError:
                reason = f"no answer within {budget:.1f} s"
            except Unavailable as exc:
                reason = str(exc)
            except ParleyError:  # not found, forbidden, malformed, wrong token: every replica would say so
                self._count(replica.url, "refused")
                raise
            else:
                replica.answered += 1
                self._count(replica.url, "ok")
                return response
            replica.failed += 1
            self._count(replica.url, "failed")
            problems.append(f"{replica.url}: {reason}")
            self.mark_down(replica.url, reason)
        raise Unavailable("no retrieval replica answered: " + "; ".join(problems))

    def _count(self, url: str, outcome: str) -> None:
        if self._tries is not None:
            self._tries.labels(url, outcome).inc()

    # --- down and back ---------------------------------------------------------------------------

    def mark_down(self, url: str, reason: str) -> None:
        replica = self.replicas[url]
        replica.reason = reason[:300]
        if not replica.up or self._closed:
            return
        replica.up, replica.down_since, replica.probe_delay = False, self._clock(), self.probe_interval
        if self._up is not None:
            self._up.labels(url).set(0)
        log.warning("retrieval replica marked down; its tenants go to the next replica", extra={"replica": url, "reason": replica.reason})
        if replica.probe is None or replica.probe.done():
            # a fresh context: the probe outlives the question that failed, and must not log under its ids
            replica.probe = asyncio.get_running_loop().create_task(
                self._probe(replica), name=f"retrieval-probe-{url}", context=contextvars.Context())

    def mark_up(self, url: str) -> None:
        replica = self.replicas[url]
        if replica.up:
            return
        down_for = self._clock() - (replica.down_since or self._clock())
        replica.up, replica.down_since, replica.reason = True, None, ""
        if self._up is not None:
            self._up.labels(url).set(1)
        log.info("retrieval replica is back; its tenants return to it", extra={"replica": url, "down_s": round(down_for, 1)})

    async def _probe(self, replica: Replica) -> None:
        while not replica.up and not self._closed:
            await asyncio.sleep(replica.probe_delay)
            problem = await self.check(replica.url)
            if problem is None:
                self.mark_up(replica.url)
                return
            replica.reason = problem
            replica.probe_delay = min(replica.probe_delay * 2, self.max_probe_interval)

    async def check(self, url: str) -> str | None:
        """None when the replica's ``/readyz`` answers 200 now, else why not."""
        try:
            async with self._http().get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=min(self.try_timeout, 5.0))) as resp:
                if resp.status == 200:
                    return None
                return f"/readyz answered {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            return f"/readyz unreachable: {exc.__class__.__name__}"

    def states(self) -> list[dict[str, Any]]:
        """Each replica: URL, up, seconds down, why, questions answered and failed (by this process)."""
        now = self._clock()
        return [{"url": r.url, "up": r.up, "down_s": None if r.down_since is None else round(now - r.down_since, 1),
                 "reason": r.reason, "answered": r.answered, "failed": r.failed} for r in self.replicas.values()]

    async def aclose(self) -> None:
        self._closed = True
        probes = [r.probe for r in self.replicas.values() if r.probe is not None and not r.probe.done()]
        for task in probes:
            task.cancel()
        for task in probes:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None and not self._session.closed:
            await self._session.close()


def retrieval_client(urls: Sequence[str], *, token: str | None, timeout: float, try_timeout: float = 5.0,
                     probe_interval: float = 2.0, registry: CollectorRegistry | None = None) -> RetrievalClient:
    """The client for these retrieval URLs: one URL, the plain `HttpRetrievalClient` (as with a single
    service); several, a `ReplicatedRetrievalClient`."""
    if len(urls) == 1:
        return HttpRetrievalClient(urls[0], timeout=timeout, token=token)
    return ReplicatedRetrievalClient(urls, token=token, timeout=timeout, try_timeout=try_timeout,
                                     probe_interval=probe_interval, registry=registry)


async def replica_report(urls: Sequence[str], *, timeout: float = 3.0) -> list[dict[str, Any]]:
    """Each URL's ``/readyz`` now (`parley status`): url, status (ready, not ready, unreachable), checks."""
    out: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        async def one(url: str) -> dict[str, Any]:
            try:
                async with http.get(f"{url.rstrip('/')}/readyz") as resp:
                    body = await resp.json(content_type=None)
                    checks = body.get("checks", {}) if isinstance(body, dict) else {}
                    return {"url": url, "status": "ready" if resp.status == 200 else "not ready",
                            "checks": {k: v for k, v in checks.items() if v != "ok"}}
            except aiohttp.ClientConnectorError:
                return {"url": url, "status": "unreachable", "checks": {"connection": "refused: not running there?"}}
            except asyncio.TimeoutError:
                return {"url": url, "status": "unreachable", "checks": {"readyz": f"no answer within {timeout:g} s"}}
            except (aiohttp.ClientError, ValueError) as exc:
                return {"url": url, "status": "unreachable", "checks": {"readyz": exc.__class__.__name__}}

        out = list(await asyncio.gather(*(one(u) for u in urls)))
    return out
