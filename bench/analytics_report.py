"""How long one analytics report (`bot.analytics.service.build_report`) takes over a busy tenant's month.

    .venv/bin/python bench/analytics_report.py                      # 50,000 messages, SQLite and PostgreSQL
    .venv/bin/python bench/analytics_report.py --messages 200000 --backends postgres

One tenant's month is bulk-inserted into a fresh migrated database (SQLite in a temp folder; a
fresh PostgreSQL database on 127.0.0.1, dropped afterwards): messages spread over 30 days and three
channels, five to a conversation, 70 % answered, 15 % refused, 5 % handed off, the rest not
questions or without an outcome; 5 % of answers rated. The report of the last 30 days is then
built three times (fresh statistics are not gathered first: the worst case, right after a bulk
load). Reported: the best and every time, and the report's size. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from bot.analytics.service import build_report, parse_since  # noqa: E402
from bot.models import AnswerFeedback, InboundMessage  # noqa: E402
from cli import migrations  # noqa: E402
from parley.db import create_sessionmaker, new_id, unit_of_work, utcnow  # noqa: E402
from tenants import service as tenants  # noqa: E402
from tests.support import services  # noqa: E402

WORDS = "order status ship canada return refund size shoe price gift card warranty color delivery track invoice".split()


async def run(url: str, messages: int) -> str:
    engine = create_async_engine(url, poolclass=NullPool)
    await migrations.upgrade(engine)
    sessions = create_sessionmaker(engine)
    async with unit_of_work(sessions, admin=True) as session:
        tenant_id = (await tenants.create_tenant(session, name="bench")).id
    now, rnd = utcnow(), random.Random(1)
    rows, ratings = [], []
    for i in range(messages):
        outcome = rnd.choices(["answered", "refused", "handed_off", "silent", "bad_question", None], [70, 15, 5, 4, 3, 3])[0]
        message_id = new_id()
        rows.append({"id": message_id, "tenant_id": tenant_id, "channel": rnd.choice(["slack", "instagram", "web"]),
                     "external_event_id": message_id, "conversation_id": f"c{i // 5}", "sender_id": "s",
                     "text": "where is my " + " ".join(rnd.sample(WORDS, 3)), "status": "answered", "outcome": outcome,
                     "received_at": now - dt.timedelta(seconds=rnd.randint(0, 29 * 86400)), "attempts": 1, "context": {},
                     "answer_ms": rnd.uniform(200, 5000) if outcome in ("answered", "refused") else None,
                     "citations": [{"title": rnd.choice(WORDS) + ".md"}]})
        if outcome == "answered" and rnd.random() < 0.05:
            ratings.append({"id": new_id(), "tenant_id": tenant_id, "message_id": message_id, "channel": "slack",
                            "rating": rnd.choice(["up", "down"]), "rater_id": "r", "question": "", "sources": [],
                            "answerer": "extractive", "created_at": now, "updated_at": now})
    async with unit_of_work(sessions, admin=True) as session:
        for start in range(0, len(rows), 5000):
            await session.execute(insert(InboundMessage), rows[start:start + 5000])
        if ratings:
            await session.execute(insert(AnswerFeedback), ratings)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        async with unit_of_work(sessions, tenant_id=tenant_id) as session:
            report = await build_report(session, tenant_id=tenant_id, window=parse_since("30d"))
        times.append(time.perf_counter() - started)
    await engine.dispose()
    return (f"{messages:,} messages, {report.conversations:,} conversations, {report.todo_questions:,} to-do questions "
            f"in {len(report.todo)} groups: {min(times) * 1000:,.0f} ms best of 3 ({', '.join(f'{t:.2f} s' for t in times)})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    args = parser.parse_args()
    for backend in args.backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as folder:
                print("sqlite:    ", await run(f"sqlite+aiosqlite:///{folder}/bench.db", args.messages), flush=True)
            continue
        if not services.reachable(services.PG_HOST, services.PG_PORT):
            print("postgres:   skipped (not reachable on 127.0.0.1:5432)")
            continue
        name = await services.create_pg_database()
        try:
            print("postgres:  ", await run(services.pg_url(name), args.messages), flush=True)
        finally:
            await services.drop_pg_database(name)


if __name__ == "__main__":
    asyncio.run(main())
