"""The dashboard's Analytics page over HTTP: it needs a sign-in, shows the signed-in tenant's figures
only (the same the service computes), explains a bad window, and downloads the to-do list as CSV;
and a question the gateway answers is counted in /metrics by channel and outcome."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

import pytest

from bot.analytics.schemas import RESOLUTION_DEFINITION
from bot.analytics.service import CSV_COLUMNS
from parley.db import utcnow
from tests.bot.analytics_seed import EXPECTED, EXPECTED_CHANNELS, seed
from tests.bot.conftest import Stack, dm
from tests.bot.test_admin import Browser

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.fixture
async def tabs(stack: Stack) -> AsyncIterator[list[Browser]]:
    opened: list[Browser] = []
    yield opened
    for tab in opened:
        await tab.close()


async def test_the_analytics_api_needs_a_sign_in_and_shows_the_tenants_figures(stack: Stack, tabs: list[Browser]) -> None:
    # Given acme's known month and the other tenant's traffic
    await seed(stack.sessions, now=utcnow(), tenant_id=stack.tenant_id, other_tenant_id=stack.other_tenant_id)
    anonymous = Browser(stack)
    tabs.append(anonymous)
    # When someone not signed in asks for the figures, the CSV or the page
    # Then the API answers 401 and the page sends them to the sign-in form
    assert (await anonymous.request("GET", "/admin/api/analytics")).status == 401
    assert (await anonymous.request("GET", "/admin/api/analytics.csv")).status == 401
    page = await anonymous.request("GET", "/admin/analytics")
    assert page.status in (302, 303) and "/admin/login" in page.headers["Location"]

    # When acme's owner signs in and opens the page and its figures
    owner = await Browser(stack).signed_in(stack.api_key)
    tabs.append(owner)
    shell = await owner.request("GET", "/admin/analytics")
    html = await shell.text()
    assert shell.status == 200 and 'data-view="analytics"' in html and "/admin/api/analytics.csv" in html
    assert "/admin/static/analytics.js" in html
    report = await owner.json("GET", "/admin/api/analytics")
    # Then they are the seeded month's, with the resolution rate's definition
    for key, value in EXPECTED.items():
        got = report[key] if not isinstance(value, dict) else {k: report[key][k] for k in value}
        assert got == value, key
    assert report["resolution"]["definition"] == RESOLUTION_DEFINITION
    for figures in report["channels"]:
        expected = EXPECTED_CHANNELS[figures["channel"]]
        assert {k: figures[k] for k in expected} == expected
    assert [(g["representative"], g["count"]) for g in report["todo"]][0] == ("where's my order?", 3)
    # And a window is taken as the CLI takes it; a bad one is a 400 that says what is accepted
    wide = await owner.json("GET", "/admin/api/analytics?since=60d")
    assert wide["messages"] == EXPECTED["messages"] + 1 and wide["window"]["label"] == "the last 60 days"
    bad = await owner.json("GET", "/admin/api/analytics?since=soon", status=400)
    assert bad["error"] == "invalid_input" and "7d" in bad["detail"]
    # And the CSV is the to-do list, one row per question, as a download
    download = await owner.request("GET", "/admin/api/analytics.csv")
    assert download.status == 200 and download.content_type == "text/csv"
    assert download.headers["Content-Disposition"].startswith('attachment; filename="parley-todo-')
    rows = list(csv.DictReader(io.StringIO(await download.text())))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == EXPECTED["todo_questions"]

    # And a window with no traffic (the last 30 minutes) is all zeros: no rate is made up, nothing to do
    quiet = await owner.json("GET", "/admin/api/analytics?since=30m")
    assert quiet["messages"] == 0 and quiet["resolution"]["rate"] is None and quiet["feedback"]["up_rate"] is None
    assert quiet["todo"] == [] and quiet["channels"] == []
    header_only = await (await owner.request("GET", "/admin/api/analytics.csv?since=30m")).text()
    assert list(csv.reader(io.StringIO(header_only))) == [list(CSV_COLUMNS)]

    # When the other tenant's owner signs in, they see their own traffic only
    other = await Browser(stack).signed_in(stack.other_api_key)
    tabs.append(other)
    theirs = await other.json("GET", "/admin/api/analytics")
    assert (theirs["messages"], theirs["refused"], theirs["feedback"]["down"]) == (6, 5, 1)
    assert [(g["representative"], g["count"]) for g in theirs["todo"]] == [("where is my order", 5)]


async def test_a_finished_question_is_counted_by_channel_and_outcome(stack: Stack) -> None:
    # When a customer asks the bot a question in a Slack DM and it is answered (or refused)
    assert (await stack.post_slack(dm("Do you ship to Canada?"))).status == 200
    await stack.settle()
    [row] = await stack.messages(channel="slack")
    assert row.outcome in ("answered", "refused")
    # Then /metrics counts it under its channel and outcome, and nothing under another outcome
    text = await (await stack.client.get("/metrics")).text()
    assert f'parley_gateway_questions_total{{channel="slack",outcome="{row.outcome}"}} 1.0' in text
    other = "refused" if row.outcome == "answered" else "answered"
    assert f'parley_gateway_questions_total{{channel="slack",outcome="{other}"}}' not in text
