"""One tenant floods a running gateway; does another tenant's answer latency move, and do the limits hold?

    .venv/bin/python bench/burst.py
    .venv/bin/python bench/burst.py --no-limits          # the same flood with every limit out of reach

What runs where: the gateway is its own process (``parley gateway``, as ``parley up`` starts it) on a
fresh migrated SQLite database and a unique RabbitMQ prefix; this process plays Slack (signed
``message.im`` deliveries, and the Web API the gateway replies through, which records when each
reply arrived) and the retrieval service (answering after ``--answer-delay`` seconds).

The run:
1. before: the quiet tenant's customers ask ``--quiet-rate`` questions a second for ``--before`` s;
2. the flood, while the quiet tenant keeps asking: the flooding tenant's one customer sends 150 DMs
   in 3 s, 300 other customers one DM each in the same 3 s, and one API key 60 web-chat questions in
   1.5 s; the quiet tenant's questions during ``--during`` s from the flood's start are "during";
3. when every answer is out: 300 wrong API keys in 1 s from one address, then 300 wrong dashboard
   logins in 1 s from another (this process is a trusted proxy forwarding them).

Printed: how much of each flood was answered (stored) or dropped by the limits, the notices,
the web-chat and sign-in answers by status, the gateway's resident memory, and the quiet tenant's
answer latency (its DM sent -> the reply arriving at "Slack") p50/p99 before and during the flood.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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

from bench._common import delete_topology, free_port, stop_process, wait_until_serving  # noqa: E402
from bench.gateway_ack import NO_LIMITS, SECRET, percentile, prepare, serve_app, signed, team, token  # noqa: E402
from bot.models import InboundMessage  # noqa: E402
from parley.bus import RabbitBroker, Topology  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from parley.settings import Settings  # noqa: E402
from tenants import service as tenants  # noqa: E402
from tests.bot.emulators import SlackEmulator  # noqa: E402

FLOOD, QUIET = 0, 1  # tenant indexes (bench.gateway_ack.prepare makes T0BENCH000, T0BENCH001)


class TimedSlack(SlackEmulator):
    """The Slack emulator, noting when each reply arrived (keyed by the question tag the stub echoes)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}

    async def api(self, request: web.Request) -> web.StreamResponse:
        response = await super().api(request)
        if request.match_info["method"] == "chat.postMessage" and self.posted:
            text = str(self.posted[-1].get("text", ""))
            if "[" in text and "]" in text:
                self.arrived.setdefault(text.split("[", 1)[1].split("]", 1)[0], time.perf_counter())
        return response


def retrieval_stub(delay: float) -> web.Application:
    async def query(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(delay)
        tag = body["message"].split("]", 1)[0].lstrip("[")
        return web.json_response({"answer": f"Returns are accepted for 30 days. [{tag}]", "citations": [], "cached": False,
                                  "standalone_question": body["message"], "timings": {}})

    app = web.Application()
    app.router.add_post("/v1/query", query)
    return app


def delivery(tenant: int, user: str, tag: str, n: int) -> dict[str, Any]:
    ts = f"{1_800_000_000 + n}.{n % 1_000_000:06d}"
    event = {"type": "message", "channel": f"D{user[-8:]}", "channel_type": "im", "user": user,
             "text": f"[{tag}] what is your returns policy?", "ts": ts, "event_ts": ts, "team": team(tenant)}
    return {"token": "x", "team_id": team(tenant), "api_app_id": "A0BENCH", "type": "event_callback", "event": event,
            "event_id": f"Ev{n:010d}", "event_time": 1_800_000_000 + n,
            "authorizations": [{"team_id": team(tenant), "user_id": "U0BENCHBOT", "is_bot": True, "is_enterprise_install": False}]}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def statuses(settings: Settings, tenant_id: str, channel: str, prefix: str) -> dict[str, int]:
    engine = create_engine(settings, "bench")
    try:
        async with unit_of_work(create_sessionmaker(engine), admin=True) as session:
            stmt = (select(InboundMessage.status, func.count()).where(
                InboundMessage.tenant_id == tenant_id, InboundMessage.channel == channel,
                InboundMessage.text.like(f"[{prefix}%")).group_by(InboundMessage.status))
            return {status: n for status, n in (await session.execute(stmt)).all()}
    finally:
        await engine.dispose()


async def tenant_ids_and_key(settings: Settings) -> tuple[list[str], str]:
    engine = create_engine(settings, "bench")
    try:
        sessions = create_sessionmaker(engine)
        ids = []
        for name in ("bench-0", "bench-1"):  # FLOOD, QUIET (as bench.gateway_ack.prepare names them)
            async with unit_of_work(sessions, admin=True) as session:
                ids.append((await tenants.get_tenant(session, name_or_id=name)).id)
        async with unit_of_work(sessions, admin=True) as session:
            _, key = await tenants.create_api_key(session, tenant_id=ids[FLOOD], name="bench")
        return ids, key
    finally:
        await engine.dispose()


def summary(values: list[float]) -> str:
    if not values:
        return "none"
    return f"p50 {statistics.median(values):7.1f} ms  p99 {percentile(values, 99):7.1f} ms  (n={len(values)})"


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-burst-"))
    prefix = f"burst{uuid.uuid4().hex[:6]}."
    port = free_port()
    db_url = args.database_url or f"sqlite+aiosqlite:///{workdir / 'parley.db'}"
    settings = Settings(database_url=db_url, data_dir=workdir, amqp_prefix=prefix)
    await prepare(settings, 2)
    tenant_ids, api_key = await tenant_ids_and_key(settings)
    slack = TimedSlack()
    for t in (FLOOD, QUIET):
        slack.add_bot(token(t), team_id=team(t), bot_id="B0BENCH", bot_user_id="U0BENCHBOT")
    slack_runner, slack_url = await serve_app(slack.app())
    retrieval_runner, retrieval_url = await serve_app(retrieval_stub(args.answer_delay))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATABASE_URL=db_url, PARLEY_DATA_DIR=str(workdir), PARLEY_AMQP_PREFIX=prefix,
               PARLEY_GATEWAY_PORT=str(port), PARLEY_RETRIEVAL_URL=retrieval_url, PARLEY_SLACK_SIGNING_SECRET=SECRET,
               PARLEY_SLACK_API_URL=f"{slack_url}/api/", PARLEY_LOG_LEVEL="WARNING", PARLEY_LOG_JSON="true",
               # this process is the "proxy": each sign-in flood comes from its own forwarded address
               PARLEY_GATEWAY_TRUSTED_PROXIES="127.0.0.1",
               **(NO_LIMITS if args.no_limits else {}))
    log = open(workdir / "gateway.log", "wb")
    gateway = subprocess.Popen([sys.executable, "-m", "cli", "gateway"], env=env, stdout=log, stderr=log, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    sent_at: dict[str, float] = {}
    counter = iter(range(10_000_000))
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128)) as http:
            await wait_until_serving(http, f"{base}/healthz", gateway, workdir / "gateway.log")

            async def dm(tenant: int, user: str, tag: str) -> int:
                body = json.dumps(delivery(tenant, user, tag, next(counter)))
                sent_at[tag] = time.perf_counter()
                async with http.post(f"{base}/slack/events", data=body, headers=signed(body)) as r:
                    await r.read()
                    return r.status

            async def chat(tag: str) -> int:
                async with http.post(f"{base}/api/chat", json={"message": f"[{tag}] what is your returns policy?"},
                                     headers={"Authorization": f"Bearer {api_key}"}) as r:
                    await r.read()
                    return r.status

            async def at(delay: float, coro_fn: Any, *a: Any) -> Any:
                await asyncio.sleep(max(0.0, delay))
                return await coro_fn(*a)

            def quiet(tag_prefix: str, seconds: float) -> list[Any]:
                n = int(seconds * args.quiet_rate)
                return [at(i / args.quiet_rate, dm, QUIET, f"UQUIET{i % 40:04d}", f"{tag_prefix}{i:05d}") for i in range(n)]

            for i in range(3):  # auth.test and connections warmed up for both workspaces
                await dm(FLOOD, "UWARMUP0", f"warm-f{i}")
                await dm(QUIET, "UWARMUP1", f"warm-q{i}")
            await asyncio.sleep(1.0)
            rss_before = rss_mb(gateway.pid)

            # 1. before
            await asyncio.gather(*quiet("qb", args.before))
            # 2. the flood, the quiet tenant still asking
            flood = [at(i * 3.0 / 150, dm, FLOOD, "UFLOODER01", f"fs{i:05d}") for i in range(150)]
            crowd = [at(i * 3.0 / 300, dm, FLOOD, f"UCROWD{i:05d}", f"fc{i:05d}") for i in range(300)]
            web = [at(i * 1.5 / 60, chat, f"fw{i:05d}") for i in range(60)]
            results = await asyncio.gather(asyncio.gather(*quiet("qd", args.during)), asyncio.gather(*flood),
                                           asyncio.gather(*crowd), asyncio.gather(*web))
            rss_flood = rss_mb(gateway.pid)
            dm_statuses = [s for group in results[:3] for s in group]
            web_statuses = results[3]
            # everything answered (or stored unanswered) before the sign-in flood
            until = time.monotonic() + args.wait
            while time.monotonic() < until:
                async with http.get(f"{base}/readyz") as r:
                    if (await r.json()).get("answering") == 0:
                        break
                await asyncio.sleep(0.5)
            # 3. wrong keys: the API, then the dashboard's login form
            api = await asyncio.gather(*(at(i / 300, lambda i=i: _status(http.get(
                f"{base}/api/documents", headers={"Authorization": f"Bearer pk_wrong-{i}", "X-Forwarded-For": "198.51.100.1"})))
                for i in range(300)))
            logins = await asyncio.gather(*(at(i / 300, lambda i=i: _status(http.post(
                f"{base}/admin/login", data={"api_key": f"pk_wrong-{i}", "next": "/admin/"}, allow_redirects=False,
                headers={"X-Forwarded-For": "198.51.100.2"})))
                for i in range(300)))
            async with http.get(f"{base}/metrics") as r:
                metrics = await r.text()

        label = "limits OFF (--no-limits)" if args.no_limits else "limits on (defaults)"
        print(f"\nburst against one gateway, {label}; database {'PostgreSQL' if 'postgres' in db_url else 'SQLite'}; "
              f"answer delay {args.answer_delay:g}s; machine load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"every DM acked 200: {all(s == 200 for s in dm_statuses)} ({len(dm_statuses)} DMs)")
        one = await statuses(settings, tenant_ids[FLOOD], "slack", "fs")
        many = await statuses(settings, tenant_ids[FLOOD], "slack", "fc")
        print(f"flood, 150 DMs from one sender in 3 s:      stored {one}, dropped (limited) {150 - sum(one.values())}")
        print(f"flood, 300 senders x 1 DM in 3 s:           stored {many}, dropped (limited or shed) {300 - sum(many.values())}")
        notices = sum("faster than I can answer" in str(p.get("text")) or "answering a lot" in str(p.get("text"))
                      for p in slack.posted)
        print(f"'slow down' notices posted: {notices}")
        print(f"web chat, 60 questions from one key in 1.5 s: {_count(web_statuses)}")
        print(f"300 wrong API keys in 1 s:                  {_count(api)}")
        print(f"300 wrong dashboard logins in 1 s:          {_count(logins)}")
        print(f"gateway RSS: {rss_before:.0f} MB before, {rss_flood:.0f} MB after the flood")
        for line in metrics.splitlines():
            if line.startswith(("parley_gateway_questions_limited_total", "parley_gateway_answers_shed_total",
                                "parley_gateway_auth_lockouts_total", "parley_gateway_auth_throttled_total")):
                print(f"  {line}")
        before = [(slack.arrived[t] - sent_at[t]) * 1000 for t in sent_at if t.startswith("qb") and t in slack.arrived]
        during = [(slack.arrived[t] - sent_at[t]) * 1000 for t in sent_at if t.startswith("qd") and t in slack.arrived]
        missing = sum(1 for t in sent_at if t.startswith(("qb", "qd")) and t not in slack.arrived)
        print(f"quiet tenant ({args.quiet_rate:g} questions/s), DM sent -> reply at Slack:")
        print(f"  before the flood: {summary(before)}")
        print(f"  during the flood: {summary(during)}")
        if before and during:
            print(f"  ratio during/before: p50 x{statistics.median(during) / statistics.median(before):.2f}, "
                  f"p99 x{percentile(during, 99) / percentile(before, 99):.2f}; unanswered: {missing}")
    finally:
        stop_process(gateway, timeout=60)
        log.close()
        await slack_runner.cleanup()
        await retrieval_runner.cleanup()
        await delete_topology(RabbitBroker(settings.amqp_url, topology=Topology(prefix=prefix),
                                           connection_name=f"{prefix}cleanup"), start=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


async def _status(request: Any) -> int:
    async with request as r:
        await r.read()
        return r.status


def _count(values: list[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return dict(sorted(out.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answer-delay", type=float, default=0.5, help="seconds the retrieval stub takes per answer")
    parser.add_argument("--quiet-rate", type=float, default=4.0, help="the quiet tenant's questions per second")
    parser.add_argument("--before", type=float, default=8.0, help="seconds of quiet traffic before the flood")
    parser.add_argument("--during", type=float, default=10.0, help="seconds of quiet traffic from the flood's start")
    parser.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the answers after the flood")
    parser.add_argument("--no-limits", action="store_true", help="raise every limit out of reach (the comparison)")
    parser.add_argument("--database-url", default=None, help="an empty PostgreSQL database (default: a fresh SQLite file)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (database, gateway.log)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
