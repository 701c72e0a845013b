"""`parley analytics --tenant T [--since 7d] [--json] [--csv FILE]`: how a tenant's agent did.

The same report as the dashboard's Analytics page (`bot.analytics`): the figures with their
definitions, per channel, and the to-do list of questions it could not answer well.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli.app import Ctx, database, emit, main, out, run_async

EXAMPLE = "parley analytics --tenant acme --since 7d --csv todo.csv"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    return f"{value / 60:.0f} min" if value >= 60 else f"{value:.0f} s"


def _text(ctx: Ctx, name: str, report: Any, csv_note: str | None) -> None:
    from parley.english import plural

    say = lambda text="", **kw: out.print(text, highlight=False, markup=False, **kw)  # noqa: E731
    say(f"{name}: {report.window.label} ({report.window.since:%Y-%m-%d %H:%M} to {report.window.until:%Y-%m-%d %H:%M} UTC)")
    if report.empty:
        say("No traffic in this window yet: when customers write to the bot, their questions are counted here.")
        if csv_note:
            say(csv_note)
        return
    say(f"{plural(report.messages, 'message')} in {plural(report.conversations, 'conversation')}; "
        f"{plural(report.questions, 'question')} ({report.with_person} sent while a person owned the conversation, "
        f"{report.not_questions} not questions, {report.over_quota} over the plan's quota, "
        f"{report.other} without an outcome)")
    rows = [
        {"figure": "answered", "value": f"{_pct(report.answered_rate)} ({report.answered})"},
        {"figure": "refused", "value": f"{_pct(report.refused_rate)} ({report.refused})"},
        {"figure": "handed off", "value": f"{_pct(report.handed_off_rate)} ({report.handed_off})"},
        {"figure": "resolution rate", "value": f"{_pct(report.resolution.rate)} ({report.resolution.resolved} of "
                                                f"{report.resolution.conversations} conversations with a question)"},
        {"figure": "automation rate", "value": f"{_pct(report.automation_rate)} ({report.handed_off_conversations} "
                                                "conversations handed off)"},
        {"figure": "👍 rate", "value": f"{_pct(report.feedback.up_rate)} ({report.feedback.up} 👍, {report.feedback.down} 👎; "
                                       f"{_pct(report.feedback.rated_share)} of answers rated)"},
        {"figure": "reply latency", "value": f"median {_ms(report.reply_latency.p50_ms)}, p95 {_ms(report.reply_latency.p95_ms)} "
                                             f"over {plural(report.reply_latency.count, 'reply', 'replies')}"},
        {"figure": "first human reply", "value": f"median {_secs(report.first_human_reply.p50_seconds)}, p95 "
                                                 f"{_secs(report.first_human_reply.p95_seconds)} ({report.first_human_reply.replied} "
                                                 f"replied, {report.first_human_reply.waiting} still waiting)"},
    ]
    emit(ctx, rows, ["figure", "value"], title="figures")
    say("Resolution rate: " + report.resolution.definition, style="dim")
    emit(ctx, [{"channel": c.channel, "questions": c.questions, "answered": c.answered, "refused": c.refused,
                "handed off": c.handed_off, "resolved": f"{c.resolved} of {c.conversations_with_questions}",
                "reply p50 / p95": f"{_ms(c.reply_latency.p50_ms)} / {_ms(c.reply_latency.p95_ms)}"} for c in report.channels],
         ["channel", "questions", "answered", "refused", "handed off", "resolved", "reply p50 / p95"],
         title="by channel (resolved: of its conversations with a question)")
    if report.delivery_failures:
        emit(ctx, [{"reason": f.reason, "sent by": "a person" if f.by == "human" else "the bot", "count": f.count}
                   for f in report.delivery_failures], ["reason", "sent by", "count"], title="messages not delivered")
    say()
    if not report.todo:
        say("To do: nothing; every question was answered and no answer was rated 👎.")
    else:
        say(f"To do: {plural(report.todo_questions, 'question')} it could not answer well, in "
            f"{plural(len(report.todo), 'topic')}; add a document about each (biggest first):")
        for n, g in enumerate(report.todo, 1):
            why = ", ".join(p for p in (f"{g.refused} not found" if g.refused else "",
                                         f"{g.thumbs_down} rated 👎" if g.thumbs_down else "") if p)
            say(f"{n:>3}. {g.representative}  ×{g.count} ({why}; last asked {g.last_asked:%Y-%m-%d %H:%M})")
            others = [e for e in g.examples if e != g.representative]
            if others:
                say("     also: " + " | ".join(others))
            say("     tried: " + (", ".join(g.sources) or "nothing relevant"))
            for comment in g.comments:
                say(f"     “{comment}”")
    if csv_note:
        say(csv_note)


@main.command("analytics", section="knowledge", example=EXAMPLE)
@click.option("--tenant", "tenant_name", required=True, help="Tenant name or id.")
@click.option("--since", default="30d", show_default=True,
              help="How far back: a duration (90m, 24h, 7d, 2w) or a UTC date (2026-11-01) or ISO date and time.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, writable=True),
              help="Also write the to-do list to this CSV file: one row per question (its group, the group's "
                   "question and size, the question, why: refused or thumbs_down, channel, when, comments, sources).")
@click.pass_obj
@run_async
async def analytics_command(ctx: Ctx, tenant_name: str, since: str, csv_file: str | None) -> None:
    """How a tenant's agent did over a window: conversations and questions; answered, refused and
    handed-off rates; the resolution rate (defined under the figures); 👍/👎; median and p95 reply
    latency per channel; time to the first human reply; messages not delivered; and the to-do
    list: the questions it refused or whose answer got a 👎, grouped by similarity, each with how
    often it was asked, when last, its other wordings and the sources the bot tried.

    The dashboard's Analytics page (/admin/analytics) shows the same report.
    """
    from bot.analytics.service import build_report, parse_since, report_csv, report_json

    window = parse_since(since)  # a bad --since is one line before the database is opened
    async with database(ctx.settings) as db:
        tenant = await db.tenant(tenant_name)
        async with db.scoped(tenant.id) as session:
            report = await build_report(session, tenant_id=tenant.id, window=window)
    note = None
    if csv_file:
        Path(csv_file).write_text(report_csv(report), encoding="utf-8", newline="")
        from parley.english import plural

        rows = sum(g.count for g in report.todo)
        note = f"wrote {csv_file}: {plural(rows, 'to-do question')}, one a row" + (
            f" (the newest of {report.todo_questions:,})" if report.todo_truncated else "")
    if ctx.as_json:
        click.echo(json.dumps(report_json(report), ensure_ascii=False, indent=2))
        return
    _text(ctx, tenant.name, report, note)
