"""Messages per second through the real RabbitMQ with our own broker: publish with confirms, consume with acks.

    .venv/bin/python bench/broker_throughput.py --messages 20000 --prefetch 2 50
    .venv/bin/python bench/broker_throughput.py --queue-type quorum      # once parley.bus.topology declares quorum queues

What goes through is what the outbox relay publishes for an upload: a ``document.uploaded`` envelope
(`Envelope.new` + `Outgoing.of`, tenant header, priority) of the size a real job has, published by
`RabbitBroker.publish` (persistent, publisher confirms, ``--window`` publishes in flight at once: the
relay publishes its batch of 100 concurrently) and consumed by `RabbitBroker.consume` with a per-consumer
prefetch, each delivery acked. Only the broker path: no database, no handler (the document worker's
own cost per message is in bench/RESULTS.md, Ingestion and Message bus fairness).

Three phases on a queue prefix of its own (deleted at the end, whatever happens):

1. publish: ``--messages`` into the queue, nobody consuming: publish/s;
2. consume: the backlog drained by one consumer, for each ``--prefetch``: consume/s;
3. end to end: published at ``--rate`` per second for ``--seconds`` while one consumer (the first
   ``--prefetch``) takes them: latency from the publish call to the consumer holding the message,
   p50 / p99, and whether the consumer kept up.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import delete_topology, load_average, percentile  # noqa: E402
from parley.bus import Envelope, Outgoing, RabbitBroker, Topology  # noqa: E402
from parley.bus.contracts import DOCUMENT_UPLOADED, QUEUE_DOCUMENTS, DocumentUploaded  # noqa: E402
from parley.db import new_id  # noqa: E402

H_SENT = "x-bench-sent-ns"


def job_message(tenant_id: str, sent_ns: int | None = None, *, priority: int | None = 9) -> Outgoing:
    """A document job as the outbox relay publishes it (classic queues: the priority of a tenant's first
    message; quorum queues have none, so ``priority=None``)."""
    envelope = Envelope.new(DOCUMENT_UPLOADED, tenant_id=tenant_id, payload=DocumentUploaded(document_id=new_id()))
    headers = {H_SENT: sent_ns} if sent_ns is not None else {}
    return Outgoing.of(envelope, headers=headers, priority=priority)


def topology(queue_type: str) -> Topology:
    prefix = f"bench-broker-{uuid.uuid4().hex[:8]}-"
    if queue_type == "classic":
        return Topology(prefix=prefix, queues=(QUEUE_DOCUMENTS,))
    fields = {f.name for f in dataclasses.fields(Topology)}
    if "queue_type" not in fields:
        raise SystemExit("--queue-type quorum: this tree's parley.bus.topology has no queue_type yet (classic only)")
    declared = Topology(prefix=prefix, queues=(QUEUE_DOCUMENTS,), queue_type=queue_type)
    if declared.work_queue_arguments().get("x-queue-type") != queue_type:
        raise SystemExit(f"--queue-type {queue_type}: Topology(queue_type={queue_type!r}) still declares "
                         f"{declared.work_queue_arguments().get('x-queue-type')!r} work queues on this tree")
    return declared


async def publish_all(broker: RabbitBroker, messages: list[Outgoing], window: int) -> float:
    """Publish every message, ``window`` in flight at once; returns the seconds it took."""
    t0 = time.perf_counter()
    for start in range(0, len(messages), window):
        await asyncio.gather(*(broker.publish(m, routing_key=QUEUE_DOCUMENTS) for m in messages[start : start + window]))
    return time.perf_counter() - t0


async def drain(broker: RabbitBroker, expected: int, prefetch: int, timeout: float) -> tuple[float, list[float]]:
    """Consume ``expected`` messages with one consumer of ``prefetch``; returns (seconds, end-to-end ms of
    the messages that carried a send time)."""
    got = 0
    done = asyncio.Event()
    latencies: list[float] = []

    async def on_message(message: Any) -> None:
        nonlocal got
        sent = (message.headers or {}).get(H_SENT)
        if sent is not None:
            latencies.append((time.time_ns() - int(sent)) / 1e6)
        await message.ack()
        got += 1
        if got >= expected:
            done.set()

    t0 = time.perf_counter()
    subscription = await broker.consume(QUEUE_DOCUMENTS, prefetch=prefetch, callback=on_message)
    try:
        await asyncio.wait_for(done.wait(), timeout)
    except TimeoutError:
        raise SystemExit(f"only {got} of {expected} messages consumed within {timeout:.0f} s") from None
    finally:
        await subscription.close()
    return time.perf_counter() - t0, latencies


async def run(args: argparse.Namespace) -> dict[str, Any]:
    topo = topology(args.queue_type)
    broker = RabbitBroker(args.amqp_url, topology=topo, connection_name="bench-broker-throughput")
    try:
        await broker.start()
    except Exception as exc:  # noqa: BLE001 - say what to start instead of a traceback
        raise SystemExit(f"RabbitMQ at {args.amqp_url} is not reachable ({exc}); start it or pass --amqp-url") from None
    tenant = new_id()
    priority = 9 if args.queue_type == "classic" else None
    sample = job_message(tenant, priority=priority)
    out: dict[str, Any] = {
        "queue_type": args.queue_type, "message_bytes": len(sample.body), "window": args.window,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    try:
        out["consume"] = []
        for prefetch in args.prefetch:
            messages = [job_message(tenant, priority=priority) for _ in range(args.messages)]
            seconds = await publish_all(broker, messages, args.window)
            out.setdefault("publish", []).append({"messages": args.messages, "seconds": round(seconds, 2),
                                                  "per_s": round(args.messages / seconds), "load": load_average()})
            print(f"publish {args.messages} ({len(sample.body)} B, window {args.window}): "
                  f"{args.messages / seconds:,.0f} msg/s  (load {load_average()})", flush=True)
            seconds, _ = await drain(broker, args.messages, prefetch, timeout=600)
            out["consume"].append({"prefetch": prefetch, "messages": args.messages, "seconds": round(seconds, 2),
                                   "per_s": round(args.messages / seconds), "load": load_average()})
            print(f"consume {args.messages}, prefetch {prefetch}: {args.messages / seconds:,.0f} msg/s  "
                  f"(load {load_average()})", flush=True)

        total = int(args.rate * args.seconds)
        consumer = asyncio.create_task(drain(broker, total, args.prefetch[0], timeout=args.seconds + 120))
        t0 = time.perf_counter()
        for i in range(total):  # open loop at --rate: each publish starts at its own time
            delay = t0 + i / args.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await broker.publish(job_message(tenant, time.time_ns(), priority=priority), routing_key=QUEUE_DOCUMENTS)
        published_s = time.perf_counter() - t0
        _, latencies = await consumer
        out["end_to_end"] = {
            "rate": args.rate, "messages": total, "prefetch": args.prefetch[0],
            "achieved_publish_per_s": round(total / published_s), "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2), "max_ms": round(max(latencies), 2), "load": load_average(),
        }
        e2e = out["end_to_end"]
        print(f"end to end at {args.rate:g}/s ({total} messages, achieved {e2e['achieved_publish_per_s']}/s, "
              f"prefetch {args.prefetch[0]}): p50 {e2e['p50_ms']} ms, p99 {e2e['p99_ms']} ms, max {e2e['max_ms']} ms  "
              f"(load {load_average()})", flush=True)
    finally:
        await delete_topology(broker)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-url", default=os.environ.get("PARLEY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
                        help="the broker (default: $PARLEY_AMQP_URL or amqp://guest:guest@127.0.0.1:5672/)")
    parser.add_argument("--queue-type", choices=("classic", "quorum"), default="classic",
                        help="work queue type (quorum needs parley.bus.topology's queue_type)")
    parser.add_argument("--messages", type=int, default=20_000, help="messages per publish / consume phase (default 20,000)")
    parser.add_argument("--window", type=int, default=100,
                        help="publishes in flight at once, awaiting their confirms (default 100: the outbox relay's batch)")
    parser.add_argument("--prefetch", type=int, nargs="+", default=[2, 50],
                        help="consumer prefetch, one consume phase each (default: 2 = the document worker's, and 50)")
    parser.add_argument("--rate", type=float, default=500.0, help="messages/s published in the end-to-end phase (default 500)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the end-to-end phase (default 10)")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON at the end")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.window < 1 or min(args.prefetch) < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--messages, --window, --prefetch, --rate and --seconds must be positive")
    return args


def main() -> None:
    args = parse_args()
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
