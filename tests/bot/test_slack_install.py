"""Multi-workspace install: the tenant's signed link -> Slack's authorize page -> our OAuth redirect
-> the workspace stored for that tenant, its token encrypted; forged links and replayed states refused."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

from parley.db import unit_of_work
from tenants.models import ChannelInstallation, ChannelKind
from tests.bot.conftest import Stack, dm

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

NEW_TEAM, NEW_TOKEN = "T0NEWTEAM1", "xoxb-newco-bot-token"


def _grant(stack: Stack, code: str) -> None:
    """What Slack's oauth.v2.access returns for the code (and what auth.test then says)."""
    stack.slack.oauth_codes[code] = {
        "ok": True, "access_token": NEW_TOKEN, "token_type": "bot", "scope": "chat:write,im:history,im:read,files:read",
        "bot_user_id": "U0NEWBOT", "app_id": "A0442TUPHGR", "team": {"id": NEW_TEAM, "name": "NewCo"},
        "enterprise": None, "is_enterprise_install": False, "authed_user": {"id": "U0NEWADMIN"},
    }
    stack.slack.add_bot(NEW_TOKEN, team_id=NEW_TEAM, bot_id="B0NEWBOT", bot_user_id="U0NEWBOT")


async def test_install_link_installs_the_workspace_for_its_tenant(stack: Stack) -> None:
    # Given the install link the admin API gives the tenant "other"
    got = await stack.client.get("/api/slack/install-link", headers={"Authorization": f"Bearer {stack.other_api_key}"})
    link = (await got.json())["url"]
    assert link.startswith("http://gateway.test/slack/install?tenant=")
    # When the admin opens it
    start = await stack.client.get(link.removeprefix("http://gateway.test"), allow_redirects=False)
    # Then they are sent to Slack's authorize page with our client id, scopes and a state bound to a cookie
    assert start.status == 302
    authorize = urlsplit(start.headers["Location"])
    query = parse_qs(authorize.query)
    assert (authorize.netloc, authorize.path) == ("slack.com", "/oauth/v2/authorize")
    assert query["client_id"] == ["111.222"] and "chat:write" in query["scope"][0] and "im:history" in query["scope"][0]
    state = query["state"][0]
    assert f"slack-app-oauth-state={state}" in start.headers["Set-Cookie"]
    # When Slack redirects back with a code
    _grant(stack, "code-1")
    cookie = {"Cookie": f"slack-app-oauth-state={state}"}
    done = await stack.client.get(f"/slack/oauth_redirect?code=code-1&state={state}", headers=cookie)
    # Then the workspace belongs to "other", with the bot token encrypted at rest
    assert done.status == 200
    async with unit_of_work(stack.sessions, admin=True) as session:
        row = (await session.execute(select(ChannelInstallation).where(
            ChannelInstallation.kind == ChannelKind.slack, ChannelInstallation.external_id == NEW_TEAM))).scalar_one()
    assert row.tenant_id == stack.other_tenant_id and row.status == "active"
    assert row.details["bot_user_id"] == "U0NEWBOT" and row.details["bot_id"] == "B0NEWBOT"
    assert NEW_TOKEN not in (row.secrets_encrypted or "") and row.secrets_encrypted
    # And a DM in the new workspace is answered with the new token
    message = dm("Hi NewCo")
    message["team_id"] = message["event"]["team"] = message["authorizations"][0]["team_id"] = NEW_TEAM
    assert (await stack.post_slack(message)).status == 200
    await stack.settle()
    [posted] = stack.slack.posted
    assert posted["token"] == NEW_TOKEN
    [stored] = await stack.messages()
    assert stored.tenant_id == stack.other_tenant_id

    # When the same state is presented again (a replayed redirect)
    _grant(stack, "code-2")
    replay = await stack.client.get(f"/slack/oauth_redirect?code=code-2&state={state}", headers=cookie)
    # Then it is refused
    assert replay.status == 401


@pytest.mark.parametrize("db_backend", ["sqlite"])
async def test_forged_or_missing_install_links_and_states_are_refused(stack: Stack) -> None:
    # Given a real link, then the same link with its signature tampered with
    got = await stack.client.get("/api/slack/install-link", headers={"Authorization": f"Bearer {stack.api_key}"})
    token = parse_qs(urlsplit((await got.json())["url"]).query)["tenant"][0]
    payload, mac = token.split(".")
    forged = f"{payload}.{mac[:-2]}{'AA' if not mac.endswith('AA') else 'BB'}"
    # When they are opened, and a redirect arrives with a made-up state
    bad = await stack.client.get(f"/slack/install?tenant={forged}", allow_redirects=False)
    none = await stack.client.get("/slack/install", allow_redirects=False)
    fake_state = await stack.client.get("/slack/oauth_redirect?code=x&state=abc.def", headers={"Cookie": "slack-app-oauth-state=abc.def"})
    no_cookie = await stack.client.get(f"/slack/oauth_redirect?code=x&state={token}")
    # Then nothing is installed
    assert (bad.status, none.status) == (403, 403)
    assert (await bad.json())["error"] == "forbidden"
    assert fake_state.status == 401 and no_cookie.status == 400
    async with unit_of_work(stack.sessions, admin=True) as session:
        rows = (await session.execute(select(ChannelInstallation).where(ChannelInstallation.kind == ChannelKind.slack))).all()
    assert len(rows) == 1  # only the seeded workspace
    # And the install link needs an API key
    assert (await stack.client.get("/api/slack/install-link")).status == 401


@pytest.mark.parametrize("db_backend", ["postgres"])
async def test_an_install_link_installs_one_workspace_once(stack: Stack) -> None:
    # Given one install link for "other", a day long, opened twice before either install finishes
    got = await (await stack.client.get("/api/slack/install-link", headers={"Authorization": f"Bearer {stack.other_api_key}"})).json()
    assert got["expires_in"] == 24 * 3600 and got["single_use"] is True
    path = got["url"].removeprefix("http://gateway.test")
    states = []
    for _ in range(2):
        start = await stack.client.get(path, allow_redirects=False)
        assert start.status == 302
        states.append(parse_qs(urlsplit(start.headers["Location"]).query)["state"][0])
    # When the first round trip comes back from Slack, Then the workspace is installed
    _grant(stack, "code-1")
    copycat = {**stack.slack.oauth_codes["code-1"], "team": {"id": "T0COPYCAT", "name": "Copycat"}}
    first = await stack.client.get(f"/slack/oauth_redirect?code=code-1&state={states[0]}",
                                   headers={"Cookie": f"slack-app-oauth-state={states[0]}"})
    assert first.status == 200
    # When the second one comes back (a copy of the link, another workspace), Then nothing is installed
    stack.slack.oauth_codes["code-2"] = copycat
    second = await stack.client.get(f"/slack/oauth_redirect?code=code-2&state={states[1]}",
                                    headers={"Cookie": f"slack-app-oauth-state={states[1]}"})
    assert second.status == 401
    async with unit_of_work(stack.sessions, admin=True) as session:
        teams = (await session.execute(select(ChannelInstallation.external_id).where(
            ChannelInstallation.kind == ChannelKind.slack))).scalars().all()
    assert sorted(teams) == sorted(["T043DB835ML", NEW_TEAM])
    # And the link, opened again, says it was used
    again = await stack.client.get(path, allow_redirects=False)
    assert again.status == 403 and "already used" in (await again.json())["detail"]
