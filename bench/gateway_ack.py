"""Webhook ack latency of a running gateway while a burst of signed Slack DMs and file uploads arrives.

    .venv/bin/python bench/gateway_ack.py --dms 1000 --uploads 200 --concurrency 64 --answer-delay 1.0
    .venv/bin/python bench/gateway_ack.py --database-url postgresql+asyncpg://postgres@127.0.0.1/parley_bench

What runs where:
* the gateway is its own process, started as ``parley up`` starts it (``parley gateway``; ``--construction
  app`` for the bare ``bot.app.serve`` of earlier runs), configured through ``PARLEY_*`` variables,
  on a fresh migrated database (SQLite file by default, or the PostgreSQL URL given) and a
  unique RabbitMQ prefix;
* this process plays Slack (signed ``message.im`` and ``file_share`` deliveries, plus the Web API
  the gateway calls back: auth.test, chat.postMessage, file downloads) and the retrieval service
  (``POST /v1/query`` answering after ``--answer-delay`` seconds, so answering is slow on purpose).

The burst: ``--dms`` text DMs and ``--uploads`` file DMs, shuffled, arriving at ``--rate`` per
second (open loop: on schedule, whatever the gateway is doing), or with ``--rate 0`` as fast as
``--concurrency`` connections allow (closed loop: the gateway's throughput ceiling). Latency is measured per request from send to the 200 (the
ack Slack waits for), and the gateway's own view (``parley_gateway_ack_seconds``, handler only)
is read from /metrics. Target: p99 < 50 ms whatever the answer time. Then it waits (bounded) for
the answers and reports how many were answered and their end-to-end latency.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench._common import cpu_seconds, delete_topology, free_port, percentile, stop_process, wait_until_serving  # noqa: E402
from bot.models import InboundMessage  # noqa: E402
from cli import migrations  # noqa: E402
from parley.bus import RabbitBroker, Topology  # noqa: E402
from parley.crypto import load_secret_box  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from parley.settings import Settings  # noqa: E402
from tenants import service as tenants  # noqa: E402
from tenants.models import ChannelKind  # noqa: E402
from tests.bot.emulators import SlackEmulator  # noqa: E402

SECRET = "bench-signing-secret"
CHANNEL = "D0BENCH001"


#: Every gateway limit out of reach: this bench measures acks of DMs that are answered (its 50 senders
#: ask ~2 a second each); bench/burst.py measures the limits.
NO_LIMITS = {
    "PARLEY_GATEWAY_SENDER_QUESTIONS_PER_MINUTE": "1000000", "PARLEY_GATEWAY_SENDER_QUESTION_BURST": "1000000",
    "PARLEY_GATEWAY_TENANT_QUESTIONS_PER_MINUTE": "1000000", "PARLEY_GATEWAY_TENANT_QUESTION_BURST": "1000000",
    "PARLEY_GATEWAY_ANSWER_BACKLOG": "1000000", "PARLEY_GATEWAY_ANSWER_BACKLOG_TOTAL": "1000000",
    "PARLEY_GATEWAY_AUTH_MAX_FAILURES": "1000000",
}


def team(i: int) -> str:
    return f"T0BENCH{i:03d}"


def token(i: int) -> str:
    return f"xoxb-bench-token-{i:03d}"
#: How the gateway process is started. "cli" is what `parley up`, the supervisor and docker compose run
#: (`parley gateway`: the composition root's gateway); "app" is the bare app factory the first runs of
#: this benchmark used (``bot.app.serve(Settings())``), kept to compare the two in one run.
CONSTRUCTIONS = {
    "cli": [sys.executable, "-m", "cli", "gateway"],
    "app": [sys.executable, "-c",
            "import asyncio; from bot.app import serve; from parley.settings import Settings; asyncio.run(serve(Settings()))"],
}


def signed(body: str) -> dict[str, str]:
    ts = str(int(time.time()))
    sig = "v0=" + hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig, "Content-Type": "application/json"}


def delivery(i: int, files_url: str | None, tenants: int = 1) -> dict[str, Any]:
    TEAM = team(i % tenants)
    ts = f"{1_800_000_000 + i}.{i % 1_000_000:06d}"
    event: dict[str, Any] = {"type": "message", "channel": CHANNEL, "channel_type": "im", "user": f"U{i % 50:09d}",
                             "text": f"Question {i}: what is your returns policy?", "ts": ts, "event_ts": ts, "team": TEAM}
    if files_url:
        name = f"notes-{i}.txt"
        event.update(subtype="file_share", text="", files=[{
            "id": f"F{i:09d}", "name": name, "mimetype": "text/plain", "filetype": "text", "size": 64,
            "url_private_download": f"{files_url}/files-pri/{TEAM}-F{i:09d}/download/{name}", "file_access": "visible"}])
    return {"token": "x", "team_id": TEAM, "api_app_id": "A0BENCH", "type": "event_callback", "event": event,
            "event_id": f"Ev{i:010d}", "event_time": 1_800_000_000 + i,
            "authorizations": [{"team_id": TEAM, "user_id": "U0BENCHBOT", "is_bot": True, "is_enterprise_install": False}]}


def retrieval_stub(delay: float) -> web.Application:
    async def query(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(delay)
        return web.json_response({"answer": f"Returns are accepted for 30 days. ({body['message'][:20]})", "citations": [],
                                  "cached": False, "standalone_question": body["message"], "timings": {}})

    app = web.Application()
    app.router.add_post("/v1/query", query)
    return app


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def prepare(settings: Settings, n: int) -> None:
    engine = create_engine(settings, "bench")
    await migrations.upgrade(engine)
    sessions = create_sessionmaker(engine)
    box = load_secret_box(settings)
    for i in range(n):
        async with unit_of_work(sessions, admin=True) as session:
            tenant = await tenants.create_tenant(session, name=f"bench-{i}")
        async with unit_of_work(sessions, admin=True) as session:
            await tenants.install_channel(session, box=box, tenant_id=tenant.id, kind=ChannelKind.slack, external_id=team(i),
                                          secrets={"bot_token": token(i)},
                                          details={"team_id": team(i), "bot_id": "B0BENCH", "bot_user_id": "U0BENCHBOT"})
    await engine.dispose()


async def counts(settings: Settings) -> dict[str, int]:
    engine = create_engine(settings, "bench")
    try:
        async with unit_of_work(create_sessionmaker(engine), admin=True) as session:
            rows = (await session.execute(select(InboundMessage.status, func.count()).group_by(InboundMessage.status))).all()
            return {status: n for status, n in rows}
    finally:
        await engine.dispose()


async def answer_latencies(settings: Settings) -> list[float]:
    engine = create_engine(settings, "bench")
    try:
        async with unit_of_work(create_sessionmaker(engine), admin=True) as session:
            stmt = select(InboundMessage.answer_ms).where(InboundMessage.status == "answered", InboundMessage.answer_ms.is_not(None))
            return [v for v in (await session.execute(stmt)).scalars()]
    finally:
        await engine.dispose()


def server_side(metrics: str) -> dict[str, float]:
    """p50/p99 upper bounds from the gateway's own ack histogram (bucket edges)."""
    buckets = [(float(le), float(v)) for le, v in re.findall(
        r'parley_gateway_ack_seconds_bucket\{channel="slack",le="([0-9.e+-]+)"\} ([0-9.e+]+)', metrics)]
    total = buckets[-1][1] if buckets else 0
    out = {}
    for p in (50, 99):
        out[f"p{p}"] = next((le * 1000 for le, v in buckets if v >= total * p / 100), float("nan"))
    return out


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-gateway-"))
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    port = free_port()
    db_url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'parley.db'}"
    settings = Settings(database_url=db_url, data_dir=workdir, amqp_prefix=prefix)
    await prepare(settings, args.tenants)
    slack = SlackEmulator()
    for t in range(args.tenants):
        slack.add_bot(token(t), team_id=team(t), bot_id="B0BENCH", bot_user_id="U0BENCHBOT")
    slack_runner, slack_url = await serve_app(slack.app())
    retrieval_runner, retrieval_url = await serve_app(retrieval_stub(args.answer_delay))
    for i in range(args.dms + args.uploads + args.warmup):
        slack.files[f"{team(i % args.tenants)}-F{i:09d}/download/notes-{i}.txt"] = (f"{i:063d}\n".encode(), "text/plain")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATABASE_URL=db_url, PARLEY_DATA_DIR=str(workdir), PARLEY_AMQP_PREFIX=prefix,
               PARLEY_GATEWAY_PORT=str(port), PARLEY_RETRIEVAL_URL=retrieval_url, PARLEY_SLACK_SIGNING_SECRET=SECRET,
               PARLEY_SLACK_API_URL=f"{slack_url}/api/", PARLEY_GATEWAY_ANSWER_CONCURRENCY=str(args.answer_concurrency),
               PARLEY_LOG_LEVEL="WARNING", PARLEY_LOG_JSON="true", PARLEY_MAX_UPLOAD_BYTES=str(1 << 20), **NO_LIMITS)
    log = open(workdir / "gateway.log", "wb")
    nice = (lambda: os.nice(args.gateway_nice)) if args.gateway_nice else None
    gateway = subprocess.Popen(CONSTRUCTIONS[args.construction], env=env, stdout=log, stderr=log, cwd=ROOT, preexec_fn=nice)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as http:
            await wait_until_serving(http, f"{base}/readyz", gateway, workdir / "gateway.log")

            async def send(payload: dict[str, Any]) -> tuple[float, int]:
                body = json.dumps(payload)
                started = time.perf_counter()
                async with http.post(f"{base}/slack/events", data=body, headers=signed(body)) as r:
                    await r.read()
                    return (time.perf_counter() - started) * 1000, r.status

            for i in range(args.warmup):  # first requests pay for auth.test and connection set-up
                await send(delivery(10_000_000 + i, None, args.tenants))
            n = args.warmup
            kinds = ["dm"] * args.dms + ["upload"] * args.uploads
            random.Random(7).shuffle(kinds)
            payloads = [delivery(n + i, slack_url if kind == "upload" else None, args.tenants) for i, kind in enumerate(kinds)]
            cpu = cpu_seconds(gateway.pid)
            wall = time.perf_counter()
            if args.rate > 0:  # open loop: requests arrive on schedule whether or not earlier ones were answered
                async def at(i: int, payload: dict[str, Any]) -> tuple[float, int]:
                    await asyncio.sleep(max(0.0, wall + i / args.rate - time.perf_counter()))
                    return await send(payload)

                results = await asyncio.gather(*(at(i, p) for i, p in enumerate(payloads)))
            else:  # closed loop: as fast as --concurrency connections allow (the gateway's ceiling)
                results = await asyncio.gather(*(send(p) for p in payloads))
            wall = time.perf_counter() - wall
            cpu = cpu_seconds(gateway.pid) - cpu
            async with http.get(f"{base}/metrics") as r:
                server = server_side(await r.text())

        lat = {"dm": [], "upload": []}
        for kind, (ms, status) in zip(kinds, results):
            if status != 200:
                raise SystemExit(f"a request was answered {status}; see {workdir / 'gateway.log'}")
            lat[kind].append(ms)
        every = lat["dm"] + lat["upload"]
        arrival = f"arriving at {args.rate:g}/s" if args.rate > 0 else "closed loop"
        print(f"\nburst: {args.dms} DMs + {args.uploads} uploads from {args.tenants} workspaces {arrival}, "
              f"{args.concurrency} connections max, answer delay {args.answer_delay:g}s, "
              f"{args.answer_concurrency} answers at once per tenant, database {'PostgreSQL' if 'postgres' in db_url else 'SQLite'}")
        print(f"sent in {wall:.2f}s ({len(every) / wall:.0f} req/s); gateway CPU during the burst {cpu:.1f}s "
              f"({cpu / wall * 100:.0f}% of one core, {cpu / len(every) * 1000:.1f} ms per request incl. answering); "
              f"machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"{'':>10} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for name, values in (("dm", lat["dm"]), ("upload", lat["upload"]), ("all", every)):
            if values:
                print(f"{name:>10} {len(values):>6} {statistics.median(values):8.1f} {percentile(values, 90):8.1f} "
                      f"{percentile(values, 99):8.1f} {max(values):8.1f}")
        print(f"gateway's own ack histogram (handler only, bucket upper bounds): p50 <= {server['p50']:.1f} ms, "
              f"p99 <= {server['p99']:.1f} ms")
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            c = await counts(settings)
            if c.get("received", 0) + c.get("answering", 0) == 0:
                break
            await asyncio.sleep(1)
        c = await counts(settings)
        answers = await answer_latencies(settings)
        print(f"after the burst: {c} ; chat.postMessage calls: {len(slack.posted)}")
        if answers:
            print(f"answer end-to-end (receipt -> reply sent): p50 {statistics.median(answers):.0f} ms, "
                  f"p99 {percentile(answers, 99):.0f} ms over {len(answers)}")
        target = percentile(every, 99) < 50
        print(f"target p99 < 50 ms: {'met' if target else 'NOT met'}")
    finally:
        stop_process(gateway, timeout=60)
        log.close()
        await slack_runner.cleanup()
        await retrieval_runner.cleanup()
        await delete_topology(RabbitBroker(settings.amqp_url, topology=Topology(prefix=prefix),
                                           connection_name=f"{prefix}cleanup"), start=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dms", type=int, default=1000)
    parser.add_argument("--uploads", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64, help="simultaneous connections (Slack delivers in parallel)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="arrivals per second (open loop); 0: closed loop, as fast as the connections allow")
    parser.add_argument("--answer-delay", type=float, default=1.0, help="seconds the retrieval stub takes per answer")
    parser.add_argument("--tenants", type=int, default=10, help="workspaces (one tenant each) the DMs come from")
    parser.add_argument("--answer-concurrency", type=int, default=4, help="PARLEY_GATEWAY_ANSWER_CONCURRENCY (per tenant)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--gateway-nice", type=int, default=0,
                        help="niceness increment of the gateway process (negative needs root): on a shared machine, "
                             "-10 approximates a gateway with a core of its own")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the answers after the burst")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (database, gateway.log)")
    parser.add_argument("--construction", choices=sorted(CONSTRUCTIONS), default="cli",
                        help="cli: start the gateway as `parley up` does (`parley gateway`); "
                             "app: the bare bot.app.serve(Settings()) of earlier runs")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
