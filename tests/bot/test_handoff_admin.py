"""Working handoffs from the dashboard (its Handoff page's API) and from the `parley handoff` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bot.conversation.handoff import Handoffs
from parley.db import create_engine, create_sessionmaker, unit_of_work
from parley.settings import Settings
from tenants import handoff as handoff_settings
from tenants.handoff import HandoffPolicy
from tests.bot.conftest import TEAM, Stack, dm
from tests.bot.test_admin import Browser, _open, browsers  # noqa: F401 - the fixture
from tests.bot.test_handoff import STAFF_CHANNEL, customer_posts, settle, staff_posts
from tests.conftest import run_sync
from cli import main
from tenants.repository import TenantDirectory

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_handoff_page_sets_up_lists_and_works_conversations(stack: Stack, browsers: list[Browser]) -> None:
    acme = await _open(stack, browsers).signed_in(stack.api_key)
    # Given a tenant that has not set handoff up: the page says so and offers its Slack workspace
    page = await acme.request("GET", "/admin/handoff")
    assert page.status == 200 and 'data-view="handoff"' in await page.text()
    settings = await acme.json("GET", "/admin/api/handoff/settings")
    assert (settings["configured"], settings["active"]) == (False, False)
    assert [w["team_id"] for w in settings["slack_workspaces"]] == [TEAM]
    assert (await acme.json("GET", "/admin/api/handoff/conversations"))["conversations"] == []
    # When a channel name is given instead of its id, it is refused with what to type
    bad = await acme.json("POST", "/admin/api/handoff/settings", status=400, json={"staff_channel_id": "#support"})
    assert "Channel ID" in bad["detail"]
    # When the settings are saved
    saved = await acme.json("POST", "/admin/api/handoff/settings", json={
        "staff_channel_id": STAFF_CHANNEL, "hours": "Mon-Fri 9-17", "expected_wait": "an hour", "timeout_minutes": "20",
        "after_refusals": 3, "keywords": "refund, lawyer", "enabled": True})
    assert saved["active"] and saved["keywords"] == ["refund", "lawyer"] and saved["timeout_minutes"] == 20
    # And a customer asks for a person in Slack
    await stack.post_slack(dm("I want to speak to someone"))
    await settle(stack)
    # Then the page lists the conversation as waiting, with its transcript and transitions
    [listed] = (await acme.json("GET", "/admin/api/handoff/conversations"))["conversations"]
    assert listed["state"] == "waiting_for_human" and listed["handoff_reason"] == "asked"
    detail = await acme.json("GET", f"/admin/api/handoff/conversations/{listed['id']}")
    assert detail["messages"][0]["text"] == "I want to speak to someone" and detail["messages"][0]["outcome"] == "handed_off"
    assert [(e["from"], e["to"]) for e in detail["events"]] == [("bot", "waiting_for_human")]
    # When staff press Take twice, then Resolve, from the dashboard
    took = await acme.json("POST", f"/admin/api/handoff/conversations/{listed['id']}/take")
    again = await acme.json("POST", f"/admin/api/handoff/conversations/{listed['id']}/take")
    resolved = await acme.json("POST", f"/admin/api/handoff/conversations/{listed['id']}/resolve")
    await settle(stack)
    # Then the first take and the resolve change it, the repeat does nothing; the customer is told it is resolved
    assert (took["changed"], took["state"]) == (True, "with_human")
    assert (again["changed"], again["state"]) == (False, "with_human")
    assert (resolved["changed"], resolved["state"]) == (True, "closed")
    assert "resolved" in customer_posts(stack)[-1]["text"]
    assert any("resolved this conversation" in p["text"] for p in staff_posts(stack))
    # And an unknown action, and another tenant's view of the conversation, are refused
    await acme.json("POST", f"/admin/api/handoff/conversations/{listed['id']}/delete", status=400)
    other = await _open(stack, browsers).signed_in(stack.other_api_key)
    await other.json("GET", f"/admin/api/handoff/conversations/{listed['id']}", status=404)
    await other.json("POST", f"/admin/api/handoff/conversations/{listed['id']}/take", status=404)
    assert (await other.json("GET", "/admin/api/handoff/conversations"))["conversations"] == []


def _cli(data_dir: Path, *args: str) -> Result:
    """`parley ARGS` in-process (the real command; only the interpreter start-up is saved)."""
    return CliRunner().invoke(main, list(args), env={"PARLEY_DATA_DIR": str(data_dir), "COLUMNS": "200"})


def test_the_cli_configures_lists_shows_and_resolves(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    # Given a migrated embedded database with a tenant
    assert _cli(data_dir, "migrate").exit_code == 0
    assert _cli(data_dir, "tenants", "create", "acme").exit_code == 0
    # When nothing is set yet, config says what to do
    shown = _cli(data_dir, "handoff", "config", "--tenant", "acme")
    assert shown.exit_code == 0 and "not set up" in shown.stdout and "--staff-channel" in shown.stdout
    # When it is configured (the README's command)
    done = _cli(data_dir, "handoff", "config", "--tenant", "acme", "--staff-channel", "C0123ABCD", "--hours",
                "Mon-Fri 9-17 CET", "--wait", "about 2 hours", "--timeout-minutes", "30", "--keywords", "refund,lawyer",
                "--after-refusals", "2")
    assert done.exit_code == 0, done.output
    assert "handoff: on" in done.stdout and "refund, lawyer" in done.stdout and "30 minutes" in done.stdout
    data = json.loads(_cli(data_dir, "handoff", "config", "--tenant", "acme", "--json").stdout)
    assert data["staff_channel_id"] == "C0123ABCD" and data["after_refusals"] == 2
    # And a wrong channel id is one readable line, exit 1
    wrong = _cli(data_dir, "handoff", "config", "--tenant", "acme", "--staff-channel", "support")
    assert wrong.exit_code == 1 and "not a Slack channel id" in wrong.stderr and "Traceback" not in wrong.output

    # Given a conversation handed off (through the gateway's own code, on the same database)
    settings = Settings(data_dir=data_dir)

    async def hand_off() -> str:
        engine = create_engine(settings, "test")
        sessions = create_sessionmaker(engine)
        try:
            async with unit_of_work(sessions, admin=True) as session:
                tenant = await TenantDirectory(session).by_name("acme")
            async with unit_of_work(sessions, tenant_id=tenant.id) as session:
                policy = await handoff_settings.policy_for(session, tenant.id)
                assert isinstance(policy, HandoffPolicy) and policy.active
                row_id = await Handoffs(sessions=sessions, channels={}).hand_off(
                    session, tenant_id=tenant.id, channel="web", conversation_id="web:k:c1", customer_id="api_key:k",
                    route={}, trigger="keyword", policy=policy)
            assert row_id
            return row_id
        finally:
            await engine.dispose()

    row_id = run_sync(hand_off())
    # When it is listed and shown (by a unique prefix of its id)
    listed = json.loads(_cli(data_dir, "handoff", "list", "--tenant", "acme", "--json").stdout)
    assert [(r["id"], r["state"], r["handoff_reason"]) for r in listed] == [(row_id, "waiting_for_human", "keyword")]
    show = _cli(data_dir, "handoff", "show", row_id[:8], "--tenant", "acme")
    assert show.exit_code == 0 and "waiting for human" in show.stdout and "bot -> waiting_for_human (keyword" in show.stdout
    # When it is resolved, twice
    first = _cli(data_dir, "handoff", "resolve", row_id[:8], "--tenant", "acme")
    second = _cli(data_dir, "handoff", "resolve", row_id[:8], "--tenant", "acme")
    # Then it is closed once (the customer's notice waits for the running gateway), the repeat says so
    assert first.exit_code == 0 and "is now closed" in first.stdout and "gateway tells the customer" in first.stdout
    assert second.exit_code == 0 and "nothing to do" in second.stdout
    closed = json.loads(_cli(data_dir, "handoff", "list", "--tenant", "acme", "--state", "closed", "--json").stdout)
    assert [r["id"] for r in closed] == [row_id]
    missing = _cli(data_dir, "handoff", "take", "ffffffff", "--tenant", "acme")
    assert missing.exit_code == 1 and "no such conversation" in missing.stderr and "handoff list" in missing.stderr
