"""Soak: minutes of steady mixed load against `parley up`; errors, memory of every process, queue depth.

    .venv/bin/python bench/soak.py                      # 10 minutes (the recorded run), ~13 min in all
    .venv/bin/python bench/soak.py --minutes 1.5        # a short check
    .venv/bin/python bench/soak.py --minutes 30 --dm-rate 4

What runs: the real ``parley up`` (``python -m parley.cli up``: it migrates, then supervises the
retrieval service, the gateway, the documents worker and the catalog worker, workers at nice 19)
on the embedded defaults in a temp data dir, with a unique PARLEY_AMQP_PREFIX and free ports.
This process plays the outside world, on loopback only:

* Slack: the Web API emulator of tests/bot/emulators.py (auth.test, chat.postMessage, file
  downloads) and ``--workspaces`` installed workspaces, one tenant each, whose users send signed
  ``message.im`` events: DMs (SciFact claims as questions) at ``--dm-rate`` per second, and
  ``file_share`` DMs (a SciFact abstract as a text file) at ``--upload-rate`` per second;
* Shopify: the emulator of tests/integrations/shopify_emulator.py with a ``--products`` store
  connected to the first tenant (full sync before the clock starts), and signed
  ``products/update`` webhooks (a product renamed) at ``--webhook-rate`` per second.

Arrivals are open loop (on schedule whatever the platform is doing) and stop after ``--minutes``;
then the platform gets up to ``--drain-seconds`` to finish, and ``parley up`` is stopped with
SIGINT. Every ``--sample-seconds``: the RSS of each process of the tree, the ready messages of
each work queue, the published-but-unfinished backlog and the load average.

Reported: errors (non-200 answers to Slack or Shopify, DMs not answered, uploads not indexed,
dead letters, error log lines, restarts; target zero), each process's RSS at the start of the
load, at its end and its slope over the second half (target flat), queue depth over time.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from bench._common import delete_topology, free_port, stop_process  # noqa: E402
from bench.gateway_ack import SECRET, delivery, prepare, serve_app, signed, team, token  # noqa: E402
from bench.isolation import base_env, load, rss_mb, say, wait_http_ready  # noqa: E402
from bench.retrieval_quality import read_jsonl  # noqa: E402
from bot.models import InboundMessage  # noqa: E402
from parley import runtime  # noqa: E402
from parley.bus.models import DeadLetter, OutboxMessage, PendingMessage  # noqa: E402
from parley.db import create_engine, create_sessionmaker, unit_of_work  # noqa: E402
from knowledge.models import Document  # noqa: E402
from parley.settings import Settings  # noqa: E402

SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
NAMES = {"retrieval": "retrieval", "gateway": "gateway", "worker documents": "documents-worker",
         "worker catalog": "catalog-worker"}


def process_table(up_pid: int) -> dict[str, int]:
    """name -> pid for `parley up` and everything under it (children by command; their children as '<name>/child')."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        procs[int(entry)] = (int(stat[1]), cmd)
    out = {"parley-up": up_pid}
    for pid, (ppid, cmd) in procs.items():
        if ppid != up_pid:
            continue
        name = next((n for key, n in NAMES.items() if cmd.rstrip().endswith(key)), f"pid{pid}")
        out[name] = pid
        for gpid, (gppid, _gcmd) in procs.items():
            if gppid == pid:
                out[f"{name}/fork-server"] = gpid  # the parser fork server (its per-document children live ~ms)
    return out


def slope_mb_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS (MB) over time (minutes)."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return sum((t - mx) * (v - my) for t, v in points) / den if den else float("nan")


async def db_counts(sessions: Any) -> dict[str, Any]:
    async with unit_of_work(sessions, admin=True) as s:
        inbound = dict((await s.execute(select(InboundMessage.status, func.count()).group_by(InboundMessage.status))).all())
        docs = {k.value if hasattr(k, "value") else k: v for k, v in
                (await s.execute(select(Document.status, func.count()).group_by(Document.status))).all()}
        dead = dict((await s.execute(select(DeadLetter.queue, func.count()).group_by(DeadLetter.queue))).all())
        pending = dict((await s.execute(select(PendingMessage.queue, func.count()).group_by(PendingMessage.queue))).all())
        outbox = (await s.execute(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None)))).scalar_one()
    return {"inbound": inbound, "documents": docs, "dead_letters": dead, "pending": pending, "unpublished": outbox}


async def run(args: argparse.Namespace) -> None:
    from cryptography.fernet import Fernet

    from bench.shopify_sync import catalog
    from bot.channels.shopify import connect_custom_app
    from integrations.shopify.config import ShopifyConfig
    from parley.crypto import SecretBox
    from knowledge.repository import JobRepository
    from tests.bot.emulators import SlackEmulator
    from tests.integrations.shopify_emulator import ShopifyEmulator, running

    work = Path(tempfile.mkdtemp(prefix="parley-soak-"))
    prefix = f"soak{uuid.uuid4().hex[:6]}."
    secret_key = Fernet.generate_key().decode()
    gw_port, rt_port = free_port(), free_port()
    while True:  # `parley up` gives the documents worker's /metrics this port and the catalog worker's the next
        metrics_port = free_port()
        try:
            with socket.socket() as probe_socket:
                probe_socket.bind(("127.0.0.1", metrics_port + 1))
            break
        except OSError:
            continue
    settings = Settings(data_dir=work, amqp_prefix=prefix, secret_key=secret_key)
    say(f"data dir {work}; load {load()}")
    await prepare(settings, args.workspaces)  # migrates; tenants with Slack installs
    engine = create_engine(settings, "bench")
    sessions = create_sessionmaker(engine)
    async with unit_of_work(sessions, admin=True) as s:
        from tenants.models import Tenant

        tenant_ids = list((await s.execute(select(Tenant.id).order_by(Tenant.created_at))).scalars())

    slack = SlackEmulator()
    for t in range(args.workspaces):
        slack.add_bot(token(t), team_id=team(t), bot_id="B0BENCH", bot_user_id="U0BENCHBOT")
    slack_runner, slack_url = await serve_app(slack.app())
    shop = f"soak-{uuid.uuid4().hex[:8]}.myshopify.com"
    nodes, _real = catalog(args.products)
    shopify = ShopifyEmulator()
    shopify.add_products(shop, nodes)
    corpus = read_jsonl(SCIFACT / "corpus.jsonl")
    claims = [q["text"] for q in read_jsonl(SCIFACT / "queries.jsonl")]
    rng = random.Random(args.seed)

    up: subprocess.Popen[bytes] | None = None
    log_path = work / "parley-up.log"
    samples: list[dict[str, Any]] = []
    http_errors: Counter[str] = Counter()
    sent: Counter[str] = Counter()
    renamed: dict[int, str] = {}  # product id -> the title its last webhook carried
    async with running(shopify) as shopify_url, aiohttp.ClientSession() as http:
        config = ShopifyConfig(client_id=shopify.client_id, client_secret=shopify.client_secret,
                               base_url=f"{shopify_url}/{{shop}}", poll_interval=0.2)
        env = base_env(data_dir=work, amqp_prefix=prefix, secret_key=secret_key, gateway_port=gw_port,
                       retrieval_port=rt_port, slack_signing_secret=SECRET, slack_api_url=f"{slack_url}/api/",
                       shopify_client_id=config.client_id, shopify_client_secret=config.client_secret,
                       shopify_base_url=config.base_url, shopify_poll_interval="0.2", log_json="true",
                       worker_metrics_port=metrics_port)
        with open(log_path, "wb") as log:
            up = subprocess.Popen([sys.executable, "-m", "cli", "up"], env=env, cwd=ROOT, stdout=log, stderr=log)
        broker = runtime.rabbit_broker(settings, "soak-monitor")
        try:
            gateway_url, retrieval_url = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{rt_port}"
            await wait_http_ready(f"{retrieval_url}/readyz", up, log_path)
            await wait_http_ready(f"{gateway_url}/readyz", up, log_path)
            await broker.start()
            connected = await connect_custom_app(sessions, SecretBox(secret_key.encode()), tenant=tenant_ids[0], shop=shop,
                                                 token=shopify.issue_token(shop), config=config, http=http)
            t0 = time.monotonic()
            while True:  # the initial sync, before the clock starts (the gateway's relay publishes it)
                async with unit_of_work(sessions, tenant_id=tenant_ids[0]) as s:
                    job = await JobRepository(s, tenant_ids[0]).get(connected.job_id)
                if job.status.value != "running":
                    break
                if time.monotonic() - t0 > 600 or up.poll() is not None:
                    raise SystemExit(f"the initial catalog sync did not finish; see {log_path}")
                await asyncio.sleep(1)
            say(f"platform up; store of {len(nodes)} products synced in {time.monotonic() - t0:.0f}s "
                f"({job.done} indexed, {job.failed} failed); soak of {args.minutes:g} min starts; load {load()}")

            async def slack_event(i: int, upload: bool) -> None:
                payload = delivery(i, slack_url if upload else None, args.workspaces)
                event = payload["event"]
                if upload:
                    doc = corpus[i % len(corpus)]
                    body = f"{doc['title']}\n\n{doc['text']}\n".encode()
                    f = event["files"][0]
                    f["size"] = len(body)
                    slack.files[f"{team(i % args.workspaces)}-F{i:09d}/download/{f['name']}"] = (body, "text/plain")
                else:
                    event["text"] = f"{claims[i % len(claims)]} (asked by customer {i})"
                body = json.dumps(payload)
                await post("upload" if upload else "dm", f"{gateway_url}/slack/events", body.encode(), signed(body))

            async def webhook(i: int) -> None:
                pid = rng.choice(sorted(shopify.shops[shop].products))
                renamed[pid] = f"Soak product {i} {uuid.uuid4().hex[:6]}"
                shopify.update_product(shop, pid, title=renamed[pid])
                body, headers = shopify.signed_webhook("products/update", shop, shopify.rest_payload(shop, pid))
                await post("webhook", f"{gateway_url}/shopify/webhooks", body, headers)

            async def post(kind: str, url: str, body: bytes, headers: dict[str, str]) -> None:
                sent[kind] += 1
                try:
                    async with http.post(url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as r:
                        await r.read()
                        if r.status != 200:
                            http_errors[f"{kind} {r.status}"] += 1
                except Exception as exc:  # noqa: BLE001 - counted, reported
                    http_errors[f"{kind} {type(exc).__name__}"] += 1

            duration = args.minutes * 60
            start = time.monotonic()
            tasks: set[asyncio.Task[None]] = set()

            async def arrivals(rate: float, make: Any) -> None:
                if rate <= 0:
                    return
                i = 0
                while i / rate < duration:
                    await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                    task = asyncio.create_task(make(i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1

            async def sampler() -> None:
                while True:
                    now = time.monotonic() - start
                    table = process_table(up.pid)  # type: ignore[union-attr]
                    depth = {}
                    for kind in ("documents", "catalog", "notifications"):
                        try:
                            depth[kind] = sum([await broker.message_count(q) for q in broker.topology.work_queues(kind)])  # both lanes
                        except Exception:  # noqa: BLE001
                            depth[kind] = -1
                    counts = await db_counts(sessions)
                    samples.append({"t_s": round(now, 1), "rss_mb": {k: round(rss_mb(p), 1) for k, p in table.items()},
                                    "queue_ready": depth, "backlog": counts["pending"], "load": load()})
                    await asyncio.sleep(args.sample_seconds)

            sampling = asyncio.create_task(sampler())
            dm_base, up_base = 0, 10_000_000  # distinct event ids and files per stream
            await asyncio.gather(
                arrivals(args.dm_rate, lambda i: slack_event(dm_base + i, False)),
                arrivals(args.upload_rate, lambda i: slack_event(up_base + i, True)),
                arrivals(args.webhook_rate, webhook),
            )
            if tasks:
                await asyncio.gather(*list(tasks))
            load_end = time.monotonic() - start
            say(f"load done after {load_end:.0f}s: sent {dict(sent)}; draining (at most {args.drain_seconds:g}s)")
            deadline = time.monotonic() + args.drain_seconds
            while time.monotonic() < deadline:
                c = await db_counts(sessions)
                busy = c["inbound"].get("received", 0) + c["inbound"].get("answering", 0)
                busy += c["documents"].get("queued", 0) + c["documents"].get("processing", 0)
                if busy == 0 and c["unpublished"] == 0 and not any(c["pending"].values()):
                    break
                await asyncio.sleep(2)
            drained_s = time.monotonic() - start - load_end
            sampling.cancel()
            samples.append({"t_s": round(time.monotonic() - start, 1),
                            "rss_mb": {k: round(rss_mb(p), 1) for k, p in process_table(up.pid).items()},
                            "queue_ready": {k: sum([await broker.message_count(q) for q in broker.topology.work_queues(k)])
                                            for k in ("documents", "catalog", "notifications")},
                            "backlog": (await db_counts(sessions))["pending"], "load": load()})
            final = await db_counts(sessions)
            from knowledge.models import Product

            async with unit_of_work(sessions, tenant_id=tenant_ids[0]) as s:
                titles = dict((await s.execute(select(Product.shopify_id, Product.title).where(
                    Product.tenant_id == tenant_ids[0], Product.shop_domain == shop))).all())
            final["webhook_titles_current"] = f"{sum(titles.get(p) == t for p, t in renamed.items())}/{len(renamed)}"
        finally:
            stop_process(up, timeout=90, sig=signal.SIGINT)  # Ctrl-C, as a person stops `parley up`
            await delete_topology(broker)
            await slack_runner.cleanup()
            await engine.dispose()

    # --- report ---------------------------------------------------------------------------------------
    log_errors: Counter[str] = Counter()
    restarts = 0
    for line in log_path.read_text(errors="replace").splitlines():
        if "exited with" in line and "restarting" in line:
            restarts += 1
        if line.startswith("{"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("level") in ("error", "critical"):
                log_errors[f"{rec.get('process')}: {rec.get('msg', '')[:80]}"] += 1
    dms, uploads = sent["dm"], sent["upload"]
    answered = final["inbound"].get("answered", 0)
    print(f"\nsoak: {args.minutes:g} min, {args.workspaces} workspaces; sent {dms} DMs ({args.dm_rate:g}/s), {uploads} uploads "
          f"({args.upload_rate:g}/s), {sent['webhook']} product webhooks ({args.webhook_rate:g}/s); drained in {drained_s:.0f}s")
    print(f"errors: HTTP {dict(http_errors) or 0}; inbound messages {final['inbound']} "
          f"(DMs + uploads sent: {dms + uploads}); documents {final['documents']}; dead letters {final['dead_letters'] or 0}; "
          f"unpublished outbox {final['unpublished']}; products showing their last webhook's title "
          f"{final['webhook_titles_current']}; error log lines {sum(log_errors.values())}; restarts {restarts}; "
          f"chat.postMessage calls {len(slack.posted)}")
    for what, n in log_errors.most_common(8):
        print(f"  {n} x {what}")
    names = sorted({k for s in samples for k in s["rss_mb"]})
    half = samples[len(samples) // 2 :]
    print(f"\n{'process':<28} {'RSS start':>10} {'RSS end':>9} {'max':>8} {'2nd-half slope':>15}")
    growth = {}
    for name in names:
        points = [(s["t_s"] / 60, s["rss_mb"][name]) for s in samples if name in s["rss_mb"]]
        tail = [(s["t_s"] / 60, s["rss_mb"][name]) for s in half if name in s["rss_mb"]]
        growth[name] = {"start_mb": points[0][1], "end_mb": points[-1][1], "max_mb": max(v for _, v in points),
                        "second_half_mb_per_min": round(slope_mb_per_min(tail), 2)}
        g = growth[name]
        print(f"{name:<28} {g['start_mb']:>8.1f}MB {g['end_mb']:>7.1f}MB {g['max_mb']:>6.1f}MB {g['second_half_mb_per_min']:>+11.2f}MB/min")
    print(f"\n{'t (s)':>7}  {'documents':>9} {'catalog':>7} {'notices':>7}   backlog (published, unfinished)   load")
    for s in samples:
        q = s["queue_ready"]
        print(f"{s['t_s']:>7.0f}  {q['documents']:>9} {q['catalog']:>7} {q['notifications']:>7}   {str(s['backlog'] or {}):<33} {s['load']}")
    print(json.dumps({"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                      "sent": dict(sent), "http_errors": dict(http_errors), "final": final, "restarts": restarts,
                      "error_log_lines": dict(log_errors), "posted": len(slack.posted), "rss": growth,
                      "answered": answered}, indent=1, default=str))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"kept {work} (parley-up.log, parley.db)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--dm-rate", type=float, default=2.0, help="Slack DMs per second")
    parser.add_argument("--upload-rate", type=float, default=0.2, help="Slack file uploads per second")
    parser.add_argument("--webhook-rate", type=float, default=0.5, help="Shopify products/update webhooks per second")
    parser.add_argument("--workspaces", type=int, default=2, help="Slack workspaces, one tenant each")
    parser.add_argument("--products", type=int, default=300, help="products in the connected store")
    parser.add_argument("--sample-seconds", type=float, default=20.0)
    parser.add_argument("--drain-seconds", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the data directory (logs, database)")
    asyncio.run(run(parser.parse_args()))
