"""PostgreSQL unreachable for a while: a TCP proxy between the worker and the database drops every
connection and refuses new ones, then comes back. The worker backs off, resumes by itself, and every
document still ends indexed: an outage is not the documents' fault and must not fail them."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from sqlalchemy.engine import make_url

from knowledge.models import DocumentStatus
from tests.faults.conftest import FaultStack
from tests.faults.support import (
    TcpProxy, audit, check_job, check_nothing_lost, eventually, finished_count, queue_depths, text_documents,
)
from tests.support import services

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

OUTAGE_S = 6.0
PREFETCH = 2  # the document worker's
WEB = {"channel": "web", "conversation_id": "outage"}


async def _done(stack: FaultStack, ids: list[str]) -> int:
    return await finished_count(stack.sessions, ids)


async def test_database_outage_is_waited_out_and_loses_nothing(stack: FaultStack) -> None:
    # Given a worker that reaches PostgreSQL through a proxy, and a 60-document job under way
    proxy = TcpProxy((services.PG_HOST, services.PG_PORT))
    await proxy.start()
    through_proxy = make_url(stack.settings.effective_database_url).set(host="127.0.0.1", port=proxy.port)
    worker = stack.worker(database_url=through_proxy.render_as_string(hide_password=False))
    worker.start()
    try:
        job = await stack.submit(text_documents(60, tag="o"), notify=WEB)
        ids = list(job.documents.values())
        await eventually(lambda: _at_least(stack, ids, 10), timeout=90, what="10 documents done", log=worker.log)
        # When the database becomes unreachable for a few seconds (connections dropped, new ones refused),
        # while more uploads arrive (the producers still reach the database)
        await proxy.cut()
        before = await _done(stack, ids)
        singles = []
        for name, content in text_documents(10, tag="x"):
            singles += (await stack.submit([(name, content)], as_job=False, notify=WEB)).documents.values()
        await asyncio.sleep(OUTAGE_S)
        # Then the worker holds what it has (its prefetch window) and leaves the rest queued: no message
        # burns its attempts through the delay tiers while the database is away
        depths = queue_depths(stack.prefix)
        waiting = len(ids) + len(singles) - before  # (+ up to PREFETCH whose commit landed as the link died)
        ready, unacked = depths["documents"]
        assert waiting <= ready + unacked <= waiting + PREFETCH and unacked <= PREFETCH, (waiting, depths)
        assert all(depths[name] == (0, 0) for name in depths if name.startswith("parley.delay")), depths
        await proxy.restore()
        # Then the worker, the same process, finishes everything once the database is back
        everything = ids + singles
        await eventually(lambda: _at_least(stack, everything, len(everything)), timeout=120, what="all documents done",
                         log=worker.log)
        await eventually(lambda: queue_depths(stack.prefix).get("documents") == (0, 0), timeout=60, interval=0.5,
                         what="queue drained")
        assert worker.alive() and worker.starts == 1
    finally:
        # before the proxy goes (a worker stops cleanly only if it reaches its database), off the event
        # loop that runs the proxy
        exit_code = await asyncio.to_thread(worker.stop)
        await proxy.close()
    assert exit_code == 0, worker.log()
    result = await audit(stack.sessions, tenant_id=stack.tenant_id, document_ids=everything, job_id=job.job_id)
    problems = check_nothing_lost(result, tenant_id=stack.tenant_id, expected=70) + check_job(result, total=60)
    assert not problems, "\n".join(problems)
    # And nothing failed because of the outage
    failed = Counter(f"{d.error_code}: {d.error}" for d in result.documents.values() if d.status == DocumentStatus.failed)
    assert not failed, failed
    assert sorted(n.payload["kind"] for n in result.notices) == ["indexed"] * 10 + ["job_done"]
    # And the outage was felt (deliveries were held and given back), yet every document was indexed at
    # its first attempt: waiting out the database cost no attempts
    outcomes = Counter(r["outcome"] for r in worker.records() if "outcome" in r)
    assert outcomes["requeued"] >= 1 and not outcomes["retry"] and not outcomes["dead"], outcomes
    assert all("attempt=1 " in r["msg"] for r in worker.records() if r.get("outcome") == "ok")


async def _at_least(stack: FaultStack, ids: list[str], n: int) -> bool:
    return await _done(stack, ids) >= n
