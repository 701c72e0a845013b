"""Analytics from a seeded month of known conversations (tests/bot/analytics_seed.py): exact counts,
rates, resolution, feedback, percentiles, handoffs, delivery failures and the grouped to-do list,
on SQLite and PostgreSQL; tenant isolation; the --since window; the CSV's shape."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from bot.analytics import similarity
from bot.analytics.schemas import RESOLUTION_DEFINITION
from bot.analytics.service import CSV_COLUMNS, build_report, parse_since, percentiles, report_csv, report_json
from parley.db import unit_of_work
from parley.errors import InvalidInput
from tests.bot.analytics_seed import EXPECTED, EXPECTED_CHANNELS, seed

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


async def _report(db, tenant_id: str, since: str = "30d"):  # type: ignore[no-untyped-def]
    async with unit_of_work(db.sessions, tenant_id=tenant_id) as session:
        return await build_report(session, tenant_id=tenant_id, window=parse_since(since, now=NOW))


async def test_the_report_of_a_known_month_has_exact_figures(db) -> None:  # type: ignore[no-untyped-def]
    # Given a month of acme's conversations with known outcomes, and another tenant's traffic
    seeded = await seed(db.sessions, now=NOW)
    # When acme's report of the last 30 days is computed
    report = report_json(await _report(db, seeded.tenant_id))
    # Then every figure is the one the rows make (each derived in analytics_seed.EXPECTED)
    for key, value in EXPECTED.items():
        got = report[key]
        if isinstance(value, dict):
            got = {k: got[k] for k in value}
        assert got == value, key
    assert report["resolution"]["definition"] == RESOLUTION_DEFINITION
    # And per channel, ordered by questions
    assert [c["channel"] for c in report["channels"]] == ["slack", "instagram", "web"]
    for figures in report["channels"]:
        expected = EXPECTED_CHANNELS[figures["channel"]]
        assert {k: figures[k] for k in expected} == expected, figures["channel"]


async def test_the_todo_list_groups_alike_questions_and_keeps_others_apart(db) -> None:  # type: ignore[no-untyped-def]
    seeded = await seed(db.sessions, now=NOW)
    # When the to-do list of the last 30 days is built
    todo = (await _report(db, seeded.tenant_id)).todo
    # Then "where is my order", "where's my order?" and "order status please" are one group, first
    order = todo[0]
    assert order.count == 3 and order.refused == 3 and order.thumbs_down == 0
    assert order.representative == "where's my order?"  # the most recent wording of the group's key words
    assert set(order.examples) == {"where is my order", "where's my order?", "order status please"}
    assert order.key_words == ["order"] and order.channels == ["instagram", "slack"]
    assert order.comments == ["useless"]  # a refused answer rated 👎 is listed once, with its comment
    assert order.sources == ["shipping.md", "faq.md"]  # what the bot tried, most often first
    assert order.last_asked == NOW - dt.timedelta(days=1)
    # And "do you ship to Canada" and the 👎'd shipping answer are groups of their own, most recent first
    assert [(g.representative, g.count) for g in todo[1:]] == [("do you ship to Canada", 1),
                                                             ("How long does shipping take?", 1)]
    shipping = todo[2]
    assert shipping.thumbs_down == 1 and shipping.refused == 0
    assert sorted(shipping.comments) == ["too vague", "wrong"] and shipping.sources == ["shipping.md"]


async def test_another_tenants_rows_are_never_counted(db) -> None:  # type: ignore[no-untyped-def]
    # Given both tenants' traffic
    seeded = await seed(db.sessions, now=NOW)
    # When the other tenant's report is computed
    other = await _report(db, seeded.other_tenant_id)
    # Then it holds its 6 messages only, its one 👎 and one 👍, its own failure and handoff
    assert (other.messages, other.questions, other.refused, other.answered) == (6, 6, 5, 1)
    assert (other.feedback.up, other.feedback.down) == (1, 1)
    assert [(f.reason, f.by, f.count) for f in other.delivery_failures] == [("outside_window", "bot", 1)]
    assert [(g.representative, g.count) for g in other.todo] == [("where is my order", 5)]
    assert other.first_human_reply.handed_off == 1 and other.first_human_reply.waiting == 1
    # And acme's to-do list never shows the other tenant's comment
    acme = await _report(db, seeded.tenant_id)
    assert all("other tenant" not in g.comments for g in acme.todo)


async def test_the_since_window_moves_what_is_counted(db) -> None:  # type: ignore[no-untyped-def]
    seeded = await seed(db.sessions, now=NOW)
    # When the window is 60 days, the 40-day-old conversation C10 counts too
    wide = await _report(db, seeded.tenant_id, "60d")
    assert (wide.messages, wide.conversations, wide.refused) == (16, 10, 5)
    assert wide.todo[0].count == 4 and wide.todo[0].last_asked == NOW - dt.timedelta(days=1)
    assert [(f.reason, f.count) for f in wide.delivery_failures] == [("graph_refused", 2), ("outside_window", 2)]
    # When it is the last 24 hours: C4's order question, C8's warranty question (26 h ago: out), C9's handoff
    day = await _report(db, seeded.tenant_id, "24h")
    assert (day.messages, day.questions, day.refused, day.handed_off) == (2, 2, 1, 1)
    assert day.window.label == "the last 24 hours"
    # A date is a window from its midnight (UTC)
    dated = await _report(db, seeded.tenant_id, "2026-11-30")
    assert dated.window.since == dt.datetime(2026, 11, 30, tzinfo=dt.UTC) and dated.window.label == "since 2026-11-30"
    assert dated.messages == 9  # from C3 and C6 (Nov 30, 11:00 and noon) on; C1, C2 and C7 are older
    # And an empty window is all zeros with no rates (shown as "—"), not a division by zero
    quiet = await _report(db, seeded.tenant_id, "30m")
    assert quiet.empty and quiet.resolution.rate is None and quiet.answered_rate is None and quiet.todo == []


def test_since_accepts_durations_and_dates_and_explains_the_rest() -> None:
    assert parse_since("7d", now=NOW).since == NOW - dt.timedelta(days=7)
    assert parse_since("2w", now=NOW).label == "the last 2 weeks"
    assert parse_since("90m", now=NOW).since == NOW - dt.timedelta(minutes=90)
    assert parse_since(None, now=NOW).since == NOW - dt.timedelta(days=30)
    assert parse_since("2026-12-01T06:30:00+01:00", now=NOW).since == dt.datetime(2026, 12, 1, 5, 30, tzinfo=dt.UTC)
    for bad, says in (("yesterday", "neither a duration nor a date"), ("0d", "more than zero"),
                      ("2027-01-01", "in the future"), ("999d", "longer than 400 days"),
                      ("99999999999999w", "longer than 400 days"), ("1900-01-01", "more than 400 days ago")):
        with pytest.raises(InvalidInput, match=says):
            parse_since(bad, now=NOW)


def test_percentiles_are_the_median_and_the_nearest_rank_p95() -> None:
    assert percentiles(range(1, 21)).model_dump() == {"count": 20, "p50_ms": 10.5, "p95_ms": 19.0}
    assert percentiles([7.0]).model_dump() == {"count": 1, "p50_ms": 7.0, "p95_ms": 7.0}
    assert percentiles([]).model_dump() == {"count": 0, "p50_ms": None, "p95_ms": None}


def test_similarity_is_explainable_word_sets() -> None:
    assert similarity.key_words("Where's my order??") == {"order"}
    assert similarity.key_words("Do you ship to Canada?") == {"ship", "canada"}
    assert similarity.key_words("shipping to canada") == {"ship", "canada"}
    assert similarity.jaccard(similarity.key_words("order status please"), similarity.key_words("where is my order")) == 0.5
    groups = similarity.group(["hi", "Hi!", "return policy", "returns policies?", "refund"], text_of=str, order_of=lambda _: 0.0)
    assert [g.items for g in groups] == [["return policy", "returns policies?"], ["hi", "Hi!"], ["refund"]]


async def test_the_csv_is_the_todo_list_one_row_per_question(db) -> None:  # type: ignore[no-untyped-def]
    seeded = await seed(db.sessions, now=NOW)
    report = await _report(db, seeded.tenant_id)
    # When the report is exported
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    # Then there is one row per to-do question, with its group, in the documented columns
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == report.todo_questions == 5
    assert [r["group"] for r in rows] == ["1", "1", "1", "2", "3"]
    assert {r["question"] for r in rows if r["group"] == "1"} == {"where is my order", "where's my order?", "order status please"}
    assert all(r["group_question"] == "where's my order?" and r["group_count"] == "3" for r in rows[:3])
    down = next(r for r in rows if r["why"] == "thumbs_down")
    assert down["question"] == "How long does shipping take?" and down["channel"] == "slack"
    assert set(down["comments"].split("; ")) == {"too vague", "wrong"} and down["sources"] == "shipping.md"


def test_a_formula_in_a_question_is_exported_as_text() -> None:
    from bot.analytics.schemas import AnalyticsReport, TodoGroup, TodoQuestion, Window

    q = TodoQuestion(message_id="m", question="=HYPERLINK(\"http://x\")", channel="web", asked_at=NOW, why="refused")
    report = AnalyticsReport(tenant_id="t", window=Window(since=NOW, until=NOW, label=""), todo=[TodoGroup(
        representative=q.question, key_words=[], count=1, refused=1, thumbs_down=0, last_asked=NOW, examples=[q.question],
        sources=[], comments=[], channels=["web"], questions=[q])])
    row = list(csv.DictReader(io.StringIO(report_csv(report))))[0]
    assert row["question"].startswith("'=") and row["group_question"].startswith("'=")


def test_the_readme_states_the_resolution_rate_definition_the_report_carries() -> None:
    from pathlib import Path

    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    # The definition shown with the figure in the CLI, the dashboard and the JSON is the README's, word for word
    assert " ".join(RESOLUTION_DEFINITION.split()) in readme
    assert "parley analytics --tenant acme" in readme and "parley_gateway_questions_total{channel,outcome}" in readme
