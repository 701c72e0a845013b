"""Connecting channels without code (issue 16.6), through the dashboard's admin API and the CLI:
a Slack bot token checked with the emulated ``auth.test``, an Instagram account checked against the
emulated Graph, disconnect, rotate, and an Enterprise Grid org-wide install that routes.

Every event is signed as the vendor signs it and goes through the real gateway; answers go out
through the emulators, which record the token each call carried."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from parley.crypto import load_secret_box
from parley.db import unit_of_work
from tenants.models import ChannelInstallation, ChannelKind
from tenants.repository import reveal_secrets
from tests.bot.conftest import BOT_TOKEN, IG_ACCOUNT, IG_SECRET, TEAM, Stack, dm, slack_headers
from tests.bot.test_admin import Browser
from tests.bot.test_instagram import envelope, text_event

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

NEW_TEAM, NEW_TOKEN, NEW_BOT, NEW_BOT_USER = "T0NEWTEAM01", "xoxb-new-workspace-token", "B0NEWBOT01", "U0NEWBOT01"
ORG, ORG_TEAM, ORG_TOKEN = "E0ORG12345", "T0ORGWS001", "xoxb-org-wide-token"
NEW_IG, NEW_IG_TOKEN = "17841400000000002", "IGAA-new-account-token"


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[Browser]:
    browser = await Browser(stack).signed_in(stack.api_key)
    yield browser
    await browser.close()


def dm_for(team: str, text: str, *, enterprise: str | None = None, org_wide: bool = False, user: str = "U0CUSTOMER1",
           channel: str = "D0NEWDM001") -> dict[str, Any]:
    """Slack's captured message.im delivery, moved to another workspace (and organisation)."""
    payload = dm(text)
    payload["team_id"] = team
    payload["event"].update(team=team, user=user, channel=channel)
    payload["authorizations"] = [{"enterprise_id": enterprise, "team_id": team, "user_id": "U0BOTUSER9", "is_bot": True,
                                  "is_enterprise_install": org_wide}]
    if enterprise:
        payload["enterprise_id"] = enterprise
    return payload


async def installation(stack: Stack, kind: ChannelKind, external_id: str) -> ChannelInstallation | None:
    async with unit_of_work(stack.sessions, admin=True) as session:
        return (await session.execute(select(ChannelInstallation).where(
            ChannelInstallation.kind == kind, ChannelInstallation.external_id == external_id))).scalar_one_or_none()


async def answered_with(stack: Stack, before: int) -> list[dict[str, Any]]:
    await stack.settle()
    return stack.slack.posted[before:]


# --- Slack by token ---------------------------------------------------------------------------


async def test_a_pasted_slack_token_is_checked_stored_sealed_and_routes_events(stack: Stack, admin: Browser) -> None:
    # Given a workspace's own app whose bot token auth.test knows
    stack.slack.add_bot(NEW_TOKEN, team_id=NEW_TEAM, bot_id=NEW_BOT, bot_user_id=NEW_BOT_USER)
    # When the store owner pastes it on the dashboard
    done = await admin.json("POST", "/admin/api/channels/slack", 201, json={"bot_token": NEW_TOKEN})
    # Then it is stored as the OAuth install stores one: the team, the bot, the token sealed
    assert done["external_id"] == NEW_TEAM and done["details"]["bot_id"] == NEW_BOT
    row = await installation(stack, ChannelKind.slack, NEW_TEAM)
    assert row is not None and row.tenant_id == stack.tenant_id and row.status == "active"
    assert row.details["bot_user_id"] == NEW_BOT_USER and row.details["team_id"] == NEW_TEAM
    assert NEW_TOKEN not in (row.secrets_encrypted or "")
    assert reveal_secrets(load_secret_box(stack.settings), row)["bot_token"] == NEW_TOKEN
    assert stack.slack.calls["auth.test"] >= 1
    # And a signed DM from that workspace reaches the tenant and is answered with that token
    before = len(stack.slack.posted)
    assert (await stack.post_slack(dm_for(NEW_TEAM, "How long does shipping take?"))).status == 200
    [reply] = await answered_with(stack, before)
    assert reply["token"] == NEW_TOKEN and reply["channel"] == "D0NEWDM001"
    rows = [m for m in await stack.messages() if m.conversation_id.startswith(f"slack:{NEW_TEAM}:")]
    assert [m.tenant_id for m in rows] == [stack.tenant_id]
    # And it is listed with how it was connected
    listed = (await admin.json("GET", "/admin/api/channels"))["channels"]
    mine = next(c for c in listed if c["external_id"] == NEW_TEAM)
    assert mine["details"]["connected_via"] == "token" and mine["details"]["connected_by"].startswith("api_key:")


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_bad_or_revoked_slack_token_is_refused_in_plain_words(stack: Stack, admin: Browser) -> None:
    # Given a token Slack does not know, and one Slack says was revoked
    stack.slack.fail("auth.test", 200, {"ok": False, "error": "token_revoked"})
    revoked = await admin.request("POST", "/admin/api/channels/slack", json={"bot_token": "xoxb-was-revoked"})
    unknown = await admin.request("POST", "/admin/api/channels/slack", json={"bot_token": "xoxb-nobody-knows"})
    user_token = await admin.request("POST", "/admin/api/channels/slack", json={"bot_token": "xoxp-a-user-token"})
    # Then each is a 400 carrying Slack's error and what to do, and nothing is stored
    for response, words in ((revoked, "token_revoked"), (unknown, "invalid_auth"), (user_token, "xoxb-")):
        body = await response.json()
        assert response.status == 400 and body["error"] == "channel_token_refused", body
        assert words in body["detail"] and ("Reinstall" in body["detail"] or "Copy" in body["detail"]
                                            or "bot token" in body["detail"])
    async with unit_of_work(stack.sessions, admin=True) as session:
        kinds = [(r.kind, r.external_id) for r in (await session.execute(select(ChannelInstallation))).scalars()]
    assert sorted(kinds) == sorted([(ChannelKind.slack, TEAM), (ChannelKind.instagram, IG_ACCOUNT)])


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_a_workspace_of_another_tenant_is_refused(stack: Stack) -> None:
    # Given the other tenant's admin, pasting the bot token of acme's workspace
    other = await Browser(stack).signed_in(stack.other_api_key)
    acme_row = await installation(stack, ChannelKind.slack, TEAM)
    assert acme_row is not None
    try:
        response = await other.request("POST", "/admin/api/channels/slack", json={"bot_token": BOT_TOKEN})
        body = await response.json()
        # nor may it disconnect or rotate acme's workspace, by team id or installation id
        takes = [await other.request("POST", f"/admin/api/channels/slack/{ref}/{action}", json={"token": BOT_TOKEN})
                 for ref in (TEAM, acme_row.id) for action in ("disconnect", "rotate")]
    finally:
        await other.close()
    # Then it is refused, saying so, and the workspace still routes to acme
    assert response.status == 409 and "already connected to another tenant" in body["detail"], body
    assert [t.status for t in takes] == [404, 404, 404, 404]
    assert stack.slack.revoked == []
    row = await installation(stack, ChannelKind.slack, TEAM)
    assert row is not None and row.tenant_id == stack.tenant_id and row.status == "active"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_events_signed_by_the_workspaces_own_app_are_accepted_for_it_only(stack: Stack, admin: Browser) -> None:
    # Given a workspace connected with its own app's signing secret
    stack.slack.add_bot(NEW_TOKEN, team_id=NEW_TEAM, bot_id=NEW_BOT, bot_user_id=NEW_BOT_USER)
    await admin.json("POST", "/admin/api/channels/slack", 201, json={"bot_token": NEW_TOKEN, "signing_secret": "own-app-secret"})
    before = len(stack.slack.posted)
    # When Slack sends a DM of that workspace signed with that secret, and one claiming acme's first workspace
    mine = json.dumps(dm_for(NEW_TEAM, "Do you ship abroad?"))
    theirs = json.dumps(dm_for(TEAM, "Do you ship abroad?"))
    ok = await stack.client.post("/slack/events", data=mine, headers=slack_headers(mine, secret="own-app-secret"))
    forged = await stack.client.post("/slack/events", data=theirs, headers=slack_headers(theirs, secret="own-app-secret"))
    # Then the first is answered with the workspace's token, the other refused as unsigned
    assert ok.status == 200 and forged.status == 401
    [reply] = await answered_with(stack, before)
    assert reply["token"] == NEW_TOKEN
    # And the secret is sealed with the token, never in the clear
    row = await installation(stack, ChannelKind.slack, NEW_TEAM)
    assert row is not None and "own-app-secret" not in (row.secrets_encrypted or "")
    # And its url_verification (no workspace named) is answered when signed with that secret
    challenge = json.dumps({"token": "x", "challenge": "own-challenge", "type": "url_verification"})
    verified = await stack.client.post("/slack/events", data=challenge, headers=slack_headers(challenge, secret="own-app-secret"))
    assert verified.status == 200 and (await verified.json())["challenge"] == "own-challenge"


# --- Enterprise Grid --------------------------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_an_org_wide_install_routes_events_of_its_workspaces(stack: Stack, admin: Browser) -> None:
    # Given an org-wide (Enterprise Grid) install connected by its token: auth.test names the organisation
    stack.slack.add_org_bot(ORG_TOKEN, enterprise_id=ORG, bot_id="B0ORGBOT01", bot_user_id="W0ORGBOT01")
    done = await admin.json("POST", "/admin/api/channels/slack", 201, json={"bot_token": ORG_TOKEN})
    assert done["external_id"] == f"enterprise:{ORG}" and done["details"]["is_enterprise_install"] is True
    before = len(stack.slack.posted)
    # When a workspace of the organisation sends a DM: team_id T…, enterprise_id E…, is_enterprise_install
    payload = dm_for(ORG_TEAM, "What is your returns policy?", enterprise=ORG, org_wide=True, channel="D0ORGDM001")
    response = await stack.post_slack(payload)
    # Then it reaches the tenant and is answered with the org install's token
    assert response.status == 200
    [reply] = await answered_with(stack, before)
    assert reply["token"] == ORG_TOKEN and reply["channel"] == "D0ORGDM001"
    [message] = [m for m in await stack.messages() if m.conversation_id.startswith(f"slack:{ORG_TEAM}:")]
    assert message.tenant_id == stack.tenant_id and message.status == "answered"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_an_org_wide_oauth_install_routes_too(stack: Stack) -> None:
    # Given an org-wide install saved by the OAuth flow (oauth.v2.access: team null, enterprise E…, is_enterprise_install)
    from slack_sdk.oauth.installation_store.models.installation import Installation

    from bot.channels.slack.routes import SLACK
    from bot.channels.slack.store import TENANT_KEY

    stack.slack.add_org_bot(ORG_TOKEN, enterprise_id=ORG, bot_id="B0ORGBOT01", bot_user_id="W0ORGBOT01")
    await stack.client.server.app[SLACK].store.async_save(Installation(
        app_id="A0442TUPHGR", enterprise_id=ORG, enterprise_name="Acme Org", team_id=None, bot_token=ORG_TOKEN,
        bot_id="B0ORGBOT01", bot_user_id="W0ORGBOT01", bot_scopes=["chat:write", "im:history"], user_id="W0INSTALLER",
        is_enterprise_install=True, custom_values={TENANT_KEY: stack.tenant_id}))
    assert (row := await installation(stack, ChannelKind.slack, f"enterprise:{ORG}")) is not None
    assert row.tenant_id == stack.tenant_id
    # When a workspace of the organisation sends a DM
    before = len(stack.slack.posted)
    payload = dm_for(ORG_TEAM, "Do you ship abroad?", enterprise=ORG, org_wide=True, channel="D0ORGDM002")
    assert (await stack.post_slack(payload)).status == 200
    # Then it is answered with the org install's token
    [reply] = await answered_with(stack, before)
    assert reply["token"] == ORG_TOKEN and reply["channel"] == "D0ORGDM002"


# --- Instagram --------------------------------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_an_instagram_account_is_checked_against_graph_and_routes_its_webhooks(stack: Stack, admin: Browser) -> None:
    # Given a professional account whose token Graph knows
    stack.graph.add_account(NEW_IG_TOKEN, account_id=NEW_IG, username="acme.shop")
    # When the owner gives its id, token and uploaders on the dashboard
    done = await admin.json("POST", "/admin/api/channels/instagram", 201,
                            json={"account_id": NEW_IG, "token": NEW_IG_TOKEN, "uploaders": ["IGSID-DANA", "IGSID-LEE"]})
    # Then it is stored sealed with its uploaders, and the webhook settings to paste are shown
    assert done["display_name"] == "acme.shop" and done["details"]["uploaders"] == ["IGSID-DANA", "IGSID-LEE"]
    assert done["setup"]["webhook_url"] == "http://gateway.test/instagram/webhook" and done["setup"]["verify_token"] == "verify-me"
    # And Meta was asked to send the account's messages to the app's webhook
    assert stack.graph.subscriptions[NEW_IG_TOKEN] == ["messages"] and done["details"]["messages_subscribed"] is True
    row = await installation(stack, ChannelKind.instagram, NEW_IG)
    assert row is not None and NEW_IG_TOKEN not in (row.secrets_encrypted or "")
    assert reveal_secrets(load_secret_box(stack.settings), row)["access_token"] == NEW_IG_TOKEN
    # And a signed webhook for the account is answered through Graph with its token
    event = text_event("How long does shipping take?")
    event["recipient"]["id"] = NEW_IG
    response = await stack.post_instagram(envelope((NEW_IG, [event])))
    assert response.status == 200
    await stack.settle()
    assert stack.graph.send_authorizations[-1:] == [f"Bearer {NEW_IG_TOKEN}"]
    [message] = [m for m in await stack.messages() if m.conversation_id.startswith(f"instagram:{NEW_IG}:")]
    assert message.tenant_id == stack.tenant_id
    # And the uploaders are the account's administrators for documents
    standing = await stack.gw.channels["instagram"].standing(tenant_id=stack.tenant_id, route={"account": NEW_IG},
                                                             sender_id="IGSID-DANA")
    assert standing.admin


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_instagram_refuses_a_wrong_account_id_and_an_invalid_token(stack: Stack, admin: Browser) -> None:
    # Given a token of one account, and a token Graph does not know
    stack.graph.add_account(NEW_IG_TOKEN, account_id=NEW_IG, username="acme.shop")
    wrong = await admin.request("POST", "/admin/api/channels/instagram",
                                json={"account_id": "17841499999999999", "token": NEW_IG_TOKEN})
    invalid = await admin.request("POST", "/admin/api/channels/instagram", json={"account_id": NEW_IG, "token": "IGAA-bogus"})
    # Then the first names the account the token belongs to, the second carries Graph's OAuthException 190
    wrong_body, invalid_body = await wrong.json(), await invalid.json()
    assert wrong.status == 400 and wrong_body["error"] == "channel_account_mismatch" and NEW_IG in wrong_body["detail"]
    assert invalid.status == 400 and invalid_body["error"] == "channel_token_refused"
    assert "OAuthException 190" in invalid_body["detail"] and "generate a new one" in invalid_body["detail"]
    # And nothing was stored
    assert await installation(stack, ChannelKind.instagram, NEW_IG) is None
    assert await installation(stack, ChannelKind.instagram, "17841499999999999") is None
    # And a Page token (Facebook Login) is taken for the Instagram account linked to its Page
    stack.graph.add_page_token("EAAG-page-token", page_id="1090000000000001", page_name="Acme Page",
                               account_id="17841400000000003", username="acme.page")
    page = await admin.json("POST", "/admin/api/channels/instagram", 201,
                            json={"account_id": "17841400000000003", "token": "EAAG-page-token"})
    assert page["external_id"] == "17841400000000003" and page["display_name"] == "acme.page"


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_webhooks_signed_by_the_accounts_own_meta_app_count_for_that_account_only(stack: Stack, admin: Browser) -> None:
    # Given an account connected with the app secret of the tenant's own Meta app
    stack.graph.add_account(NEW_IG_TOKEN, account_id=NEW_IG, username="acme.shop")
    await admin.json("POST", "/admin/api/channels/instagram", 201,
                     json={"account_id": NEW_IG, "token": NEW_IG_TOKEN, "app_secret": "own-meta-app-secret"})
    mine = text_event("Do you ship abroad?", sender="IGSID-MINE")
    mine["recipient"]["id"] = NEW_IG
    theirs = text_event("Do you ship abroad?", sender="IGSID-THEIRS")  # for acme's first account
    # When one delivery signed with that secret carries an entry for it and one for the other account,
    # and another delivery is signed with a secret nobody has
    both = await stack.post_instagram(envelope((NEW_IG, [mine]), (IG_ACCOUNT, [theirs])), secret="own-meta-app-secret")
    forged = await stack.post_instagram(envelope((NEW_IG, [text_event("hi", sender="IGSID-X")])), secret="guessed")
    await stack.settle()
    # Then only the entry of the account whose secret signed it is taken; the forged one is a 401
    assert both.status == 200 and forged.status == 401
    senders = sorted(m.sender_id for m in await stack.messages() if m.channel == "instagram")
    assert senders == ["IGSID-MINE"]


# --- disconnect and rotate --------------------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_disconnect_stops_routing_at_once(stack: Stack, admin: Browser, caplog: pytest.LogCaptureFixture) -> None:
    # Given acme's workspace, answering (so the routing cache holds it)
    before = len(stack.slack.posted)
    assert (await stack.post_slack(dm("Do you ship abroad?"))).status == 200
    assert len(await answered_with(stack, before)) == 1
    # When the owner disconnects it on the dashboard
    row = await installation(stack, ChannelKind.slack, TEAM)
    assert row is not None
    with caplog.at_level(logging.INFO, logger="parley.audit"):
        out = await admin.json("POST", f"/admin/api/channels/slack/{row.id}/disconnect")
    # Then the change is recorded: who, which tenant, which workspace
    [record] = [r for r in caplog.records if r.name == "parley.audit"]
    assert record.audit == "channel.disconnected" and record.external_id == TEAM  # type: ignore[attr-defined]
    assert record.actor.startswith("api_key:") and record.tenant_id == stack.tenant_id  # type: ignore[attr-defined]
    # And Slack was asked to revoke the token, and the secrets are erased
    assert out["status"] == "revoked" and out["revoked_at_vendor"] is True and stack.slack.revoked == [BOT_TOKEN]
    row = await installation(stack, ChannelKind.slack, TEAM)
    assert row is not None and row.status == "revoked" and row.secrets_encrypted is None
    # And the next signed DM is acked (no 5xx), not stored and not answered
    stored = len(await stack.messages())
    later = await stack.post_slack(dm("Are you still there?"))
    assert later.status == 200
    assert await answered_with(stack, before + 1) == [] and len(await stack.messages()) == stored
    # And disconnecting again is a clear 404
    again = await admin.request("POST", f"/admin/api/channels/slack/{TEAM}/disconnect")
    assert again.status == 404 and "no connected slack installation" in (await again.json())["detail"]
    # And both are counted
    metrics = await (await stack.client.get("/metrics")).text()
    assert 'parley_gateway_channel_changes_total{change="disconnected",channel="slack"} 1.0' in metrics
    assert 'parley_gateway_channel_changes_total{change="refused",channel="slack"} 1.0' in metrics


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_rotate_replaces_the_token_the_next_send_uses(stack: Stack, admin: Browser) -> None:
    # Given new tokens for acme's workspace and Instagram account, and one of another workspace
    stack.slack.add_bot("xoxb-rotated-token", team_id=TEAM, bot_id="B0439P161B9", bot_user_id="U0442US8QGH")
    stack.slack.add_bot(NEW_TOKEN, team_id=NEW_TEAM, bot_id=NEW_BOT, bot_user_id=NEW_BOT_USER)
    stack.graph.add_account("IGAA-rotated-token", account_id=IG_ACCOUNT, username="acme")
    # When a token of another workspace is offered, then the right ones
    mismatch = await admin.request("POST", f"/admin/api/channels/slack/{TEAM}/rotate", json={"token": NEW_TOKEN})
    await admin.json("POST", f"/admin/api/channels/slack/{TEAM}/rotate", json={"token": "xoxb-rotated-token"})
    await admin.json("POST", f"/admin/api/channels/instagram/{IG_ACCOUNT}/rotate", json={"token": "IGAA-rotated-token"})
    # Then the wrong one is refused naming its workspace
    assert mismatch.status == 400 and NEW_TEAM in (await mismatch.json())["detail"]
    # And the next Slack answer and Instagram reply carry the new tokens
    before = len(stack.slack.posted)
    assert (await stack.post_slack(dm("How long does shipping take?"))).status == 200
    [reply] = await answered_with(stack, before)
    assert reply["token"] == "xoxb-rotated-token"
    assert (await stack.post_instagram(envelope((IG_ACCOUNT, [text_event("Do you ship abroad?")])), secret=IG_SECRET)).status == 200
    await stack.settle()
    assert stack.graph.send_authorizations[-1:] == ["Bearer IGAA-rotated-token"]
    # And the uploaders and other details were kept
    row = await installation(stack, ChannelKind.instagram, IG_ACCOUNT)
    assert row is not None and row.details["uploaders"] == ["IGSID-OWNER"] and row.details["token_rotated_at"]


# --- the dashboard's rules --------------------------------------------------------------------


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_channel_api_needs_a_session_and_its_csrf_token(stack: Stack, admin: Browser) -> None:
    # Given a stranger without a session, and the signed-in owner forgetting the CSRF token
    stranger = Browser(stack)
    try:
        anonymous = await stranger.request("POST", "/admin/api/channels/slack", json={"bot_token": NEW_TOKEN})
        setup_anonymous = await stranger.request("GET", "/admin/api/channels/setup")
    finally:
        await stranger.close()
    no_csrf = await admin.request("POST", f"/admin/api/channels/slack/{TEAM}/disconnect", csrf=False)
    # Then 401 and 403, and nothing changed
    assert anonymous.status == 401 and setup_anonymous.status == 401 and no_csrf.status == 403
    row = await installation(stack, ChannelKind.slack, TEAM)
    assert row is not None and row.status == "active"
    # And the setup tells the signed-in owner each path in: Slack OAuth link, Instagram webhook, Shopify
    setup = await admin.json("GET", "/admin/api/channels/setup")
    assert setup["slack"]["install_link"].startswith("http://gateway.test/slack/install?tenant=")
    assert setup["slack"]["token_paste"] is True and setup["slack"]["events_url"] == "http://gateway.test/slack/events"
    assert setup["instagram"]["webhook_url"] == "http://gateway.test/instagram/webhook"
    assert setup["shopify"]["custom_app"] is True and "handoff_settings" in setup
    # And the page carries the forms' script and an empty state naming the three paths
    page = await (await admin.request("GET", "/admin/channels")).text()
    assert "/admin/static/channels.js" in page and "Add to Slack" in page and "custom app" in page


# --- the CLI ----------------------------------------------------------------------------------


async def _parley(stack: Stack, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    env.update(PARLEY_DATABASE_URL=stack.settings.effective_database_url, PARLEY_DATA_DIR=str(stack.settings.data_dir),
               PARLEY_SLACK_API_URL=f"{stack.slack_url.rstrip('/')}/api/", PARLEY_GRAPH_API_URL=stack.graph_url.rstrip("/"),
               PARLEY_ENV_FILE="none", PARLEY_PUBLIC_URL="https://parley.example",
               PARLEY_INSTAGRAM_VERIFY_TOKEN="cli-verify-token", PARLEY_SLACK_CLIENT_ID="111.222",
               PARLEY_SLACK_CLIENT_SECRET="client-secret")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "cli", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_the_cli_connects_lists_links_rotates_and_disconnects(stack: Stack) -> None:
    # Given a workspace token and an Instagram account token the vendors know
    stack.slack.add_bot(NEW_TOKEN, team_id=NEW_TEAM, bot_id=NEW_BOT, bot_user_id=NEW_BOT_USER)
    stack.graph.add_account(NEW_IG_TOKEN, account_id=NEW_IG, username="acme.shop")
    # When the operator connects both (tries a bad token, prints the OAuth link), then lists, disconnects
    # the workspace and rotates the account's token (independent commands side by side: each is a process)
    slack, insta, bad, link = await asyncio.gather(
        _parley(stack, "channels", "connect", "slack", "--tenant", "acme", "--bot-token", NEW_TOKEN),
        _parley(stack, "channels", "connect", "instagram", "--tenant", "acme", "--account-id", NEW_IG,
                "--token", NEW_IG_TOKEN, "--uploader", "IGSID-DANA"),
        _parley(stack, "channels", "connect", "slack", "--tenant", "acme", "--bot-token", "xoxb-unknown"),
        _parley(stack, "channels", "link", "--tenant", "acme"))
    stack.graph.add_account("IGAA-cli-rotated", account_id=NEW_IG, username="acme.shop")
    listed, gone, rotated = await asyncio.gather(
        _parley(stack, "--json", "channels", "list", "--tenant", "acme"),
        _parley(stack, "channels", "disconnect", "--tenant", "acme", "slack", NEW_TEAM),
        _parley(stack, "channels", "rotate", "--tenant", "acme", "instagram", NEW_IG, "--token", "IGAA-cli-rotated"))
    # Then each says what happened; the bad token is one line with Slack's error and exit code 1
    assert slack[0] == 0 and NEW_TEAM in slack[1], slack
    assert insta[0] == 0 and "https://parley.example/instagram/webhook" in insta[1] and "cli-verify-token" in insta[1], insta
    assert bad[0] == 1 and "invalid_auth" in bad[2] and "Traceback" not in bad[2], bad
    rows = {(r["kind"], r["external_id"]): r for r in json.loads(listed[1])}
    assert rows[("slack", NEW_TEAM)]["details"]["connected_by"].startswith("cli")
    assert rows[("instagram", NEW_IG)]["details"]["uploaders"] == ["IGSID-DANA"]
    assert gone[0] == 0 and "Slack revoked the token" in gone[1], gone
    assert rotated[0] == 0 and "rotated the token of instagram" in rotated[1], rotated
    ig = await installation(stack, ChannelKind.instagram, NEW_IG)
    assert ig is not None and reveal_secrets(load_secret_box(stack.settings), ig)["access_token"] == "IGAA-cli-rotated"
    # And the OAuth link it printed starts the install on the gateway (a redirect to Slack's authorize page)
    assert link[0] == 0 and link[1].startswith("https://parley.example/slack/install?tenant="), link
    started = await stack.client.get("/slack/install?" + link[1].strip().split("?", 1)[1], allow_redirects=False)
    assert started.status == 302 and "oauth/v2/authorize" in started.headers["Location"]
    row = await installation(stack, ChannelKind.slack, NEW_TEAM)
    assert row is not None and row.status == "revoked" and NEW_TOKEN in stack.slack.revoked
    # And each change is in the audit log with who made it (no token in it)
    lines = [json.loads(line) for line in (stack.settings.data_dir / "logs" / "audit.log").read_text().splitlines()]
    assert sorted((r["audit"], r["channel_kind"], r["external_id"]) for r in lines) == [
        ("channel.connected", "instagram", NEW_IG), ("channel.connected", "slack", NEW_TEAM),
        ("channel.disconnected", "slack", NEW_TEAM), ("channel.token_rotated", "instagram", NEW_IG)]
    assert all(r["actor"].startswith("cli") and r["tenant_id"] == stack.tenant_id for r in lines)
    assert all(t not in json.dumps(lines) for t in (NEW_TOKEN, NEW_IG_TOKEN, "IGAA-cli-rotated"))
