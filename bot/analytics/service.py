"""The analytics report: figures from the repository's aggregates, percentiles, the grouped to-do list.

    parse_since("7d" | "24h" | "90m" | "2w" | "2026-11-01" | ISO datetime, now=) -> Window
    build_report(session, tenant_id=, window=) -> AnalyticsReport
    report_csv(report) -> str        the to-do list, one row per question (see `CSV_COLUMNS`)

What each figure means is written once, in `bot.analytics.schemas.DEFINITIONS`.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.analytics import similarity
from bot.analytics.repository import (
    ANSWERED, BAD_QUESTION, HANDED_OFF, OVER_QUOTA, REFUSED, SILENT, AnalyticsRepository, TodoRow,
)
from bot.analytics.schemas import (
    AnalyticsReport, ChannelFigures, DeliveryFailureCount, Feedback, HumanReply, Latency, Resolution, TodoGroup,
    TodoQuestion, Window,
)
from parley.db import utcnow
from parley.errors import InvalidInput

#: The window when none is given.
DEFAULT_SINCE = "30d"
#: How many wordings, sources and comments a to-do group shows.
EXAMPLES = 5
SINCE_HELP = ("how far back: a duration (90m, 24h, 7d, 2w) or a date (2026-11-01, UTC) or an ISO date and time; "
              f"default {DEFAULT_SINCE}")
_DURATION = re.compile(r"^\s*(\d+)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"m": ("minutes", "minute"), "min": ("minutes", "minute"), "h": ("hours", "hour"), "d": ("days", "day"),
          "w": ("weeks", "week")}
#: The longest window (a year and a bit): older traffic is not what an owner's to-do list is for.
MAX_DAYS = 400


def parse_since(text: str | None, *, now: dt.datetime | None = None) -> Window:
    """The window from ``text`` until ``now``; an `InvalidInput` saying what is accepted otherwise."""
    now = now or utcnow()
    text = (text or DEFAULT_SINCE).strip()
    match = _DURATION.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        plural_name, singular = _UNITS[unit]
        if amount <= 0:
            raise InvalidInput(f"--since {text!r}: the duration must be more than zero ({SINCE_HELP})")
        delta = dt.timedelta(**{plural_name: min(amount, MAX_DAYS * 24 * 60 + 1)})  # a huge number: no overflow
        if delta > dt.timedelta(days=MAX_DAYS):
            raise InvalidInput(f"--since {text!r} is longer than {MAX_DAYS} days; give a shorter window")
        return Window(since=now - delta, until=now, label=f"the last {amount} {singular if amount == 1 else plural_name}")
    try:
        since = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--since {text!r} is neither a duration nor a date: {SINCE_HELP}") from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    if since >= now:
        raise InvalidInput(f"--since {text!r} is in the future; give a date before now")
    if now - since > dt.timedelta(days=MAX_DAYS):
        raise InvalidInput(f"--since {text!r} is more than {MAX_DAYS} days ago; give a later date")
    shown = since.date().isoformat() if since.time() == dt.time(0) else since.isoformat(timespec="minutes")
    return Window(since=since.astimezone(dt.UTC), until=now, label=f"since {shown}")


def percentiles(values: Iterable[float]) -> Latency:
    """Median and p95 (nearest rank: the smallest value with 95 % of the values at or below it)."""
    ordered = sorted(values)
    if not ordered:
        return Latency()
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return Latency(count=len(ordered), p50_ms=round(statistics.median(ordered), 1), p95_ms=round(p95, 1))


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def build_report(session: AsyncSession, *, tenant_id: str, window: Window) -> AnalyticsReport:
    repo = AnalyticsRepository(session, tenant_id, since=window.since, until=window.until)
    report = AnalyticsReport(tenant_id=tenant_id, window=window)
    by_channel: dict[str, ChannelFigures] = {}

    def channel(name: str) -> ChannelFigures:
        return by_channel.setdefault(name, ChannelFigures(channel=name))

    for row in await repo.outcomes():
        report.messages += row.count
        figures = channel(row.channel)
        if row.outcome in (ANSWERED, REFUSED, HANDED_OFF):
            setattr(figures, row.outcome, getattr(figures, row.outcome) + row.count)
            figures.questions += row.count
        elif row.outcome == SILENT:
            report.with_person += row.count
        elif row.outcome == BAD_QUESTION:
            report.not_questions += row.count
        elif row.outcome == OVER_QUOTA:
            report.over_quota += row.count
        else:
            report.other += row.count
    handed_conversations = 0
    for conv in await repo.conversations():
        figures = channel(conv.channel)
        figures.conversations = conv.conversations
        figures.conversations_with_questions = conv.with_questions
        figures.resolved = conv.resolved
        figures.resolution_rate = _rate(conv.resolved, conv.with_questions)
        report.conversations += conv.conversations
        report.resolution.conversations += conv.with_questions
        report.resolution.resolved += conv.resolved
        handed_conversations += conv.handed_off
    for figures in by_channel.values():
        report.questions += figures.questions
        report.answered += figures.answered
        report.refused += figures.refused
        report.handed_off += figures.handed_off
    report.answered_rate = _rate(report.answered, report.questions)
    report.refused_rate = _rate(report.refused, report.questions)
    report.handed_off_rate = _rate(report.handed_off, report.questions)
    report.resolution = Resolution(resolved=report.resolution.resolved, conversations=report.resolution.conversations,
                                   rate=_rate(report.resolution.resolved, report.resolution.conversations))
    report.handed_off_conversations = handed_conversations
    asked = report.resolution.conversations
    report.automation_rate = _rate(asked - handed_conversations, asked)

    up, down, rated = await repo.feedback()
    report.feedback = Feedback(up=up, down=down, up_rate=_rate(up, up + down), rated_answers=rated,
                               rated_share=_rate(rated, report.answered))

    latencies: dict[str, list[float]] = {}
    for name, ms in await repo.reply_latencies():
        latencies.setdefault(name, []).append(ms)
    report.reply_latency = percentiles(ms for values in latencies.values() for ms in values)
    for name, values in latencies.items():
        channel(name).reply_latency = percentiles(values)
    report.channels = sorted(by_channel.values(), key=lambda c: (-c.questions, c.channel))

    report.first_human_reply = _human_replies(await repo.human_replies())
    report.delivery_failures = [DeliveryFailureCount(reason=r, by=b, count=n) for r, b, n in await repo.delivery_failures()]
    rows, total = await repo.todo()
    report.todo = todo_groups(rows)
    report.todo_questions, report.todo_truncated = total, total > len(rows)
    return report


def _human_replies(rows: Sequence[tuple[str, dt.datetime, dt.datetime | None]]) -> HumanReply:
    waits = [(first - at).total_seconds() for _, at, first in rows if first is not None and first >= at]
    figures = percentiles(waits)
    return HumanReply(handed_off=len(rows), replied=len(waits), waiting=sum(1 for r in rows if r[2] is None),
                      p50_seconds=None if figures.p50_ms is None else round(figures.p50_ms, 1),
                      p95_seconds=None if figures.p95_ms is None else round(figures.p95_ms, 1))


def source_titles(citations: Any) -> list[str]:
    """The names of the sources in a citations (or ranked sources) JSON list, in order, once each."""
    seen: dict[str, None] = {}
    for item in citations if isinstance(citations, list) else []:
        title = item.get("title") or item.get("filename") or item.get("document") if isinstance(item, dict) else item
        if isinstance(title, str) and title.strip():
            seen.setdefault(title.strip(), None)
    return list(seen)


def todo_groups(rows: Sequence[TodoRow]) -> list[TodoGroup]:
    """The to-do list: the rows grouped by similarity (`bot.analytics.similarity`), biggest first."""
    groups = similarity.group(rows, text_of=lambda r: r.text, order_of=lambda r: r.received_at.timestamp())
    out = []
    for g in groups:
        members = sorted(g.items, key=lambda r: (r.received_at, r.message_id), reverse=True)
        # the representative: among the wordings with the group's key words (its most asked key), the
        # most asked one, the most recent of equals
        core = [r.text.strip() for r in members if similarity.key_words(r.text) == g.key] or [members[0].text.strip()]
        wordings = Counter(core)
        representative = max(wordings, key=lambda w: (wordings[w], -core.index(w)))
        sources = Counter(t for r in members for t in source_titles(r.citations))
        out.append(TodoGroup(
            representative=representative, key_words=sorted(w for w in g.key if not w.startswith("\0")),
            count=len(members), refused=sum(r.why == "refused" for r in members),
            thumbs_down=sum(r.why == "thumbs_down" for r in members), last_asked=members[0].received_at,
            examples=list(dict.fromkeys(r.text.strip() for r in members))[:EXAMPLES],
            sources=[t for t, _ in sorted(sources.items(), key=lambda kv: (-kv[1], kv[0]))][:EXAMPLES],
            comments=list(dict.fromkeys(c for r in members for c in r.comments))[:EXAMPLES],
            channels=sorted({r.channel for r in members}),
            questions=[TodoQuestion(message_id=r.message_id, question=r.text, channel=r.channel, asked_at=r.received_at,
                                    why=r.why, comments=list(r.comments), sources=source_titles(r.citations)) for r in members],
        ))
    return out


#: The CSV export: the to-do list, one row per question, with its group (number, representative
#: wording, size), so a spreadsheet can sort by group or filter by channel or reason.
CSV_COLUMNS = ("group", "group_question", "group_count", "question", "why", "channel", "asked_at", "comments", "sources",
               "message_id")


def report_csv(report: AnalyticsReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for n, g in enumerate(report.todo, 1):
        for q in g.questions:
            writer.writerow([n, _cell(g.representative), g.count, _cell(q.question), q.why, q.channel,
                             q.asked_at.isoformat(), _cell("; ".join(q.comments)), _cell("; ".join(q.sources)), q.message_id])
    return buffer.getvalue()


def _cell(text: str) -> str:
    """A cell a spreadsheet shows as text: a customer's "=HYPERLINK(…)" must not run as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def report_json(report: AnalyticsReport) -> dict[str, Any]:
    return report.model_dump(mode="json")

