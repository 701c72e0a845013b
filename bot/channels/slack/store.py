"""Bolt's installation and OAuth-state stores, backed by our own tables.

* `ParleyInstallationStore` keeps a workspace in ``channel_installation`` (kind ``slack``,
  external id = team id): non-secret facts in ``details``, the bot token (and refresh token when
  rotation is on) encrypted with the platform's `SecretBox`. Which tenant a new install belongs to
  comes from the signed OAuth state (`TenantOAuthFlow` puts it in ``custom_values``).
* `SignedStateStore`: the state is a signed token naming the tenant, a nonce and the install link
  it came from, valid for ``ttl`` seconds and consumable once (the nonce is recorded in
  ``webhook_event``, whose unique (source, external_id) makes a second use fail even across
  replicas). Consuming it spends its install link too, in the same transaction: a link installs
  once (`link_used` lets ``/slack/install`` say so before the round trip to Slack).

We store bot installations only: user tokens are neither requested nor kept, so a lookup for a
specific user's installation finds nothing and a user's token revocation changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.routing import InstallationDirectory, Route
from bot.models import WebhookEvent
from bot.signing import Signer
from parley.crypto import SecretBox
from parley.db import new_id, unit_of_work, utcnow
from parley.errors import Forbidden, ParleyError
from tenants.models import ChannelKind
from tenants.service import install_channel, revoke_channel

log = logging.getLogger("parley.gateway.slack")

STATE_PURPOSE = "slack-oauth-state"
INSTALL_PURPOSE = "slack-install"
#: ``webhook_event.source`` of the rows that record spent OAuth states and install links.
STATE_SOURCE = "slack_oauth_state"
LINK_SOURCE = "slack_install_link"
TENANT_KEY = "parley_tenant_id"


def workspace_id(enterprise_id: str | None, team_id: str | None, *, is_enterprise_install: bool | None = False) -> str | None:
    """The key of a Slack installation: the team id, or ``enterprise:E…`` for an organisation-wide
    (Enterprise Grid) install, which has no team of its own."""
    if is_enterprise_install and enterprise_id:
        return f"enterprise:{enterprise_id}"
    return team_id or (f"enterprise:{enterprise_id}" if enterprise_id else None)


def workspace_keys(enterprise_id: str | None, team_id: str | None, is_enterprise_install: bool | None = False) -> list[str]:
    """Where an event's installation may be stored, most specific first. An event of an org-wide
    install names a workspace (``team_id`` T…) *and* the organisation (``enterprise_id`` E…,
    ``is_enterprise_install: true``): the install is stored under ``enterprise:E…``. A workspace
    of an organisation whose app was installed org-wide is found through the organisation too."""
    keys = [k for k in (workspace_id(enterprise_id, team_id, is_enterprise_install=is_enterprise_install),
                        team_id, f"enterprise:{enterprise_id}" if enterprise_id else None) if k]
    return list(dict.fromkeys(keys))


async def find_workspace(directory: InstallationDirectory, enterprise_id: str | None, team_id: str | None,
                         is_enterprise_install: bool | None = False) -> Route | None:
    """The installation an event belongs to (`workspace_keys`), from the routing cache."""
    for key in workspace_keys(enterprise_id, team_id, is_enterprise_install):
        route = await directory.find(ChannelKind.slack, key)
        if route is not None:
            return route
    return None


class StoreError(Exception):
    """Raised to Bolt's OAuth flow (which reports a storage error) when an install cannot be saved."""


class ParleyInstallationStore(AsyncInstallationStore):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], box: SecretBox, directory: InstallationDirectory) -> None:
        self.sessions = sessions
        self.box = box
        self.directory = directory

    @property
    def logger(self) -> logging.Logger:
        return log

    # --- save -------------------------------------------------------------------------------
    async def async_save(self, installation: Installation) -> None:
        tenant_id = (installation.custom_values or {}).get(TENANT_KEY)
        external_id = workspace_id(installation.enterprise_id, installation.team_id,
                                   is_enterprise_install=installation.is_enterprise_install)
        if not tenant_id or not external_id:
            raise StoreError("an installation without a tenant or workspace cannot be saved")
        secrets = {k: v for k, v in {
            "bot_token": installation.bot_token,
            "bot_refresh_token": installation.bot_refresh_token,
            "bot_token_expires_at": installation.bot_token_expires_at,
        }.items() if v is not None}
        details = {
            "app_id": installation.app_id, "team_id": installation.team_id, "enterprise_id": installation.enterprise_id,
            "bot_id": installation.bot_id, "bot_user_id": installation.bot_user_id,
            "bot_scopes": list(installation.bot_scopes or []), "installer_user_id": installation.user_id,
            "is_enterprise_install": bool(installation.is_enterprise_install), "installed_at": installation.installed_at,
        }
        try:
            async with unit_of_work(self.sessions, admin=True) as session:
                await install_channel(session, box=self.box, tenant_id=tenant_id, kind=ChannelKind.slack,
                                      external_id=external_id, display_name=installation.team_name or external_id,
                                      details=details, secrets=secrets)
        except ParleyError as exc:
            raise StoreError(exc.message) from exc
        self.directory.forget(ChannelKind.slack, external_id)
        log.info("slack workspace installed", extra={"tenant_id": tenant_id, "team_id": external_id})

    async def async_save_bot(self, bot: Bot) -> None:  # token rotation refreshes
        route = await self.directory.find(ChannelKind.slack, workspace_id(
            bot.enterprise_id, bot.team_id, is_enterprise_install=bot.is_enterprise_install) or "")
        if route is None:
            return
        installation = _installation(route)
        installation.bot_token, installation.bot_refresh_token = bot.bot_token, bot.bot_refresh_token
        installation.bot_token_expires_at = bot.bot_token_expires_at
        installation.set_custom_value(TENANT_KEY, route.tenant_id)
        await self.async_save(installation)

    # --- find -------------------------------------------------------------------------------
    async def async_find_installation(self, *, enterprise_id: str | None, team_id: str | None, user_id: str | None = None,
                                      is_enterprise_install: bool | None = False) -> Installation | None:
        route = await find_workspace(self.directory, enterprise_id, team_id, is_enterprise_install)
        if route is None or not route.secrets.get("bot_token"):
            return None
        if user_id is not None and user_id != route.details.get("installer_user_id"):
            return None  # no user-level installations are kept
        return _installation(route)

    async def async_find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                             is_enterprise_install: bool | None = False) -> Bot | None:
        installation = await self.async_find_installation(enterprise_id=enterprise_id, team_id=team_id,
                                                          is_enterprise_install=is_enterprise_install)
        return installation.to_bot() if installation is not None else None

    # --- delete -----------------------------------------------------------------------------
    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self._revoke(enterprise_id, team_id, "tokens_revoked")

    async def async_delete_installation(self, *, enterprise_id: str | None, team_id: str | None,
                                        user_id: str | None = None) -> None:
        if user_id is not None:
            return  # a user's token: we keep none
        await self._revoke(enterprise_id, team_id, "uninstalled")

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self._revoke(enterprise_id, team_id, "app_uninstalled")

    async def _revoke(self, enterprise_id: str | None, team_id: str | None, why: str) -> None:
        external_id = workspace_id(enterprise_id, team_id)
        if not external_id:
            return
        async with unit_of_work(self.sessions, admin=True) as session:
            row = await revoke_channel(session, kind=ChannelKind.slack, external_id=external_id)
        self.directory.forget(ChannelKind.slack, external_id)
        log.info("slack installation removed", extra={"team_id": external_id, "reason": why,
                                                       "tenant_id": row.tenant_id if row else None})


def _installation(route: Route) -> Installation:
    d: dict[str, Any] = route.details
    return Installation(
        app_id=d.get("app_id"), enterprise_id=d.get("enterprise_id"), team_id=d.get("team_id"), team_name=route.display_name,
        bot_token=route.secrets.get("bot_token"), bot_id=d.get("bot_id"), bot_user_id=d.get("bot_user_id"),
        bot_scopes=d.get("bot_scopes") or [], bot_refresh_token=route.secrets.get("bot_refresh_token"),
        bot_token_expires_at=route.secrets.get("bot_token_expires_at"), user_id=d.get("installer_user_id") or "",
        is_enterprise_install=bool(d.get("is_enterprise_install")), installed_at=d.get("installed_at") or 0.0,
        custom_values={TENANT_KEY: route.tenant_id},
    )


class SignedStateStore(AsyncOAuthStateStore):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], signer: Signer, *, ttl: float = 600.0) -> None:
        self.sessions = sessions
        self.signer = signer
        self.ttl = ttl

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        tenant_id, link_id = kwargs.get("tenant_id"), kwargs.get("link_id")
        if not tenant_id or not link_id:
            raise Forbidden("an OAuth state needs a tenant: start from the tenant's install link")
        return self.signer.sign(STATE_PURPOSE, {"t": tenant_id, "n": new_id(), "l": link_id}, ttl=self.ttl)

    def tenant_of(self, state: str | None) -> str:
        return str(self.signer.verify(STATE_PURPOSE, state)["t"])

    async def async_consume(self, state: str) -> bool:
        try:
            data = self.signer.verify(STATE_PURPOSE, state)
        except Forbidden as exc:
            log.warning("slack OAuth state refused: %s", exc)
            return False
        if not data.get("l"):
            log.warning("slack OAuth state refused: it names no install link")
            return False
        try:
            async with unit_of_work(self.sessions, admin=True) as session:
                for source, external_id in ((STATE_SOURCE, data["n"]), (LINK_SOURCE, data["l"])):
                    session.add(WebhookEvent(source=source, external_id=str(external_id)[:255], topic="oauth",
                                             tenant_id=str(data["t"]), status="consumed", received_at=utcnow()))
        except IntegrityError:
            log.warning("slack OAuth state or its install link used twice", extra={"tenant_id": data.get("t")})
            return False
        return True

    async def link_used(self, link_id: str) -> bool:
        async with unit_of_work(self.sessions, admin=True) as session:
            found = await session.execute(select(WebhookEvent.id).where(WebhookEvent.source == LINK_SOURCE,
                                                                        WebhookEvent.external_id == link_id[:255]))
            return found.first() is not None
