"""Connecting channels without code: the one path behind `parley channels …` and the dashboard's
Channels page.

* **Slack by token**: a single-workspace app's Bot User OAuth Token (``xoxb-…``) is checked with
  ``auth.test`` against the configured Slack API, then stored exactly as the OAuth install stores
  one (`bot.channels.slack.store`): external id = the team id, or ``enterprise:E…`` for an
  organisation-wide install, ``details`` with the team, enterprise, bot id and bot user id, the
  token sealed. The app's own signing secret (``--signing-secret``) is sealed with it; events
  signed with it are accepted for that workspace only (`bot.channels.slack.routes`).
* **Instagram**: an account id and its token are checked against Graph (``GET /me`` with the token
  as ``Authorization: Bearer``; the id Graph returns must be the id given, or, for a Page token, the
  account must be readable with it: `account_of`), then stored sealed with
  the account's uploaders (``details["uploaders"]``, what ``admins`` means on Instagram:
  `tenants.uploaders`), and the account subscribed to the app's ``messages`` webhook
  (``POST /me/subscribed_apps``, best effort). The app secret (``--app-secret``) of a Meta app of
  the tenant's own signs that account's webhooks.
* **Disconnect**: Slack's token is revoked (``auth.revoke``, best effort), the secrets erased, the
  installation marked revoked; the routing cache forgets it at once (`InstallationDirectory.forget`;
  another gateway process within its cache's ttl).
* **Rotate**: the new token is checked like a new one and must name the same workspace or account;
  it replaces the old one in one update (other secrets kept).

A team or account already connected to another tenant is refused (`tenants.service.install_channel`).
Every change is one log line on the ``parley.audit`` logger (who, which tenant, what channel, when):
channel changes are not knowledge changes, so `knowledge.audit` (documents) does not hold them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels.routing import InstallationDirectory
from bot.channels.slack.own_apps import forget_own_secrets
from bot.channels.slack.store import workspace_id
from integrations.shopify.client import ShopifyClient
from integrations.shopify.config import ShopifyConfig
from integrations.shopify.errors import MissingScopes, TokenRevoked
from integrations.shopify.oauth import check_scopes
from parley.crypto import SecretBox
from parley.db import unit_of_work, utcnow
from parley.errors import InvalidInput, NotFound, Unavailable
from parley.repository import MIN_PREFIX, resolve_id
from tenants.models import ChannelInstallation, ChannelKind
from tenants.repository import InstallationRepository, reveal_secrets, seal_secrets
from tenants.service import install_channel, revoke_channel

audit = logging.getLogger("parley.audit")
log = logging.getLogger("parley.gateway.channels")

#: The channels a person can connect, disconnect and rotate here.
KINDS = ("slack", "instagram", "shopify")
TIMEOUT = aiohttp.ClientTimeout(total=20)
MAX_UPLOADERS = 100

#: Slack's auth.test errors, said in plain words (docs.slack.dev/reference/methods/auth.test).
SLACK_ERRORS = {
    "invalid_auth": "Slack does not know this token. Copy the Bot User OAuth Token (xoxb-…) again from your app's "
                    "\"OAuth & Permissions\" page",
    "not_authed": "no token was given. Paste the Bot User OAuth Token (xoxb-…) from your app's \"OAuth & Permissions\" page",
    "account_inactive": "the token belongs to a deactivated bot or a deleted workspace. Reinstall the app to your workspace "
                        "and paste the new token",
    "token_revoked": "this token was revoked (the app was uninstalled or its token reset). Reinstall the app to your "
                     "workspace and paste the new token",
    "token_expired": "this token has expired (token rotation is on for the app). Turn token rotation off, or connect it "
                     "through the install link instead",
    "no_permission": "the workspace does not let this token be used",
    "org_login_required": "the workspace is migrating to Enterprise Grid; try again once it is done",
    "ekm_access_denied": "the workspace's administrators have suspended access (Enterprise Key Management)",
    "missing_scope": "the token lacks a scope the check needs",
    "invalid_arguments": "Slack could not read the request",
    "not_allowed_token_type": "this kind of token cannot be used: paste the Bot User OAuth Token (xoxb-…)",
}


class TokenRefused(InvalidInput):
    """The vendor does not accept the token (or it belongs to another account): a 400 with its words."""

    code = "channel_token_refused"


class AccountMismatch(InvalidInput):
    code = "channel_account_mismatch"


@dataclass(frozen=True)
class Connected:
    kind: str
    tenant_id: str
    installation_id: str
    external_id: str
    display_name: str
    details: dict[str, Any]
    #: What the owner still has to paste into the vendor's settings (Instagram: webhook URL and verify token).
    setup: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "tenant_id": self.tenant_id, "id": self.installation_id, "external_id": self.external_id,
                "display_name": self.display_name, "details": self.details, "setup": self.setup}


@dataclass(frozen=True)
class Vendors:
    """Where the vendors' APIs are (the emulators in tests) and the gateway's public address."""

    slack_api_url: str = "https://slack.com/api/"
    graph_api_url: str = "https://graph.instagram.com"
    graph_api_version: str = "v26.0"
    public_url: str = "http://127.0.0.1:8080"
    instagram_verify_token: str | None = None
    shopify: ShopifyConfig | None = None

    def instagram_setup(self) -> dict[str, Any]:
        return {"webhook_url": f"{self.public_url.rstrip('/')}/instagram/webhook",
                "verify_token": self.instagram_verify_token,
                "fields": ["messages"],
                "note": "In your Meta app: Instagram > API setup > Configure webhooks: paste this callback URL and verify "
                        "token, then subscribe the account to the 'messages' field."
                        + ("" if self.instagram_verify_token else " The platform has no verify token yet "
                           "(PARLEY_INSTAGRAM_VERIFY_TOKEN): ask its operator to set one.")}

    def slack_setup(self) -> dict[str, Any]:
        return {"events_url": f"{self.public_url.rstrip('/')}/slack/events",
                "note": "In your Slack app: Event Subscriptions > Request URL: paste this address and subscribe the bot to "
                        "message.im; App Home: allow users to send messages to the app."}


def _audit(what: str, *, actor: str, tenant_id: str, kind: str, external_id: str, **extra: Any) -> None:
    audit.info("channel %s: %s %s by %s", what, kind, external_id, actor,
               extra={"audit": f"channel.{what}", "actor": actor, "tenant_id": tenant_id, "channel_kind": kind,
                      "external_id": external_id, "at": utcnow().isoformat(), **extra})


# --- vendor checks ---------------------------------------------------------------------------


async def _call(http: aiohttp.ClientSession, method: str, url: str, *, token: str, vendor: str,
                **kwargs: Any) -> tuple[int, Any]:
    try:
        async with http.request(method, url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT,
                                **kwargs) as resp:
            status = resp.status
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise Unavailable(f"{vendor} could not be reached to check the token ({type(exc).__name__}); try again") from exc
    return status, data


def _clean_token(token: str | None, what: str) -> str:
    token = (token or "").strip()
    if not token:
        raise InvalidInput(f"{what} is required")
    if len(token) > 4096 or any(c.isspace() or not c.isprintable() for c in token):
        raise InvalidInput(f"{what} must be one line of text without spaces (it looks cut or pasted twice)")
    return token


async def slack_identity(http: aiohttp.ClientSession, api_url: str, token: str) -> dict[str, Any]:
    """``auth.test`` for a bot token: what Slack says it is, or `TokenRefused` with Slack's error in words."""
    token = _clean_token(token, "a Slack bot token (xoxb-…)")
    if token.startswith(("xoxp-", "xoxe-", "xapp-")):
        raise TokenRefused("this is not a bot token: paste the Bot User OAuth Token, which starts with xoxb- "
                           "(your app's \"OAuth & Permissions\" page)")
    status, data = await _call(http, "POST", f"{api_url.rstrip('/')}/auth.test", token=token, vendor="Slack")
    if status == 429 or status >= 500 or not isinstance(data, dict):
        raise Unavailable(f"Slack answered {status} to auth.test; try again in a moment")
    if not data.get("ok"):
        error = str(data.get("error") or "unknown_error")
        words = SLACK_ERRORS.get(error, "see docs.slack.dev/reference/methods/auth.test")
        raise TokenRefused(f"Slack refused the token ({error}): {words}")
    if not data.get("bot_id"):
        raise TokenRefused("Slack says this token is not a bot's: paste the Bot User OAuth Token (xoxb-…)")
    if not data.get("team_id") and not data.get("enterprise_id"):
        raise TokenRefused("Slack did not say which workspace this token belongs to")
    return data


async def instagram_identity(http: aiohttp.ClientSession, graph_url: str, version: str, token: str) -> dict[str, Any]:
    """``GET /me?fields=user_id,username`` with the token: the professional account it belongs to."""
    token = _clean_token(token, "an Instagram access token")
    url = f"{graph_url.rstrip('/')}/{version}/me"
    status, data = await _call(http, "GET", url, token=token, vendor="Instagram", params={"fields": "user_id,username"})
    error = data.get("error") if isinstance(data, dict) else None
    if status == 429 or status >= 500 or (isinstance(error, dict) and error.get("is_transient")):
        raise Unavailable(f"Instagram answered {status} to the token check; try again in a moment")
    if isinstance(error, dict) or status != 200 or not isinstance(data, dict):
        error = error if isinstance(error, dict) else {}
        code, message = error.get("code"), error.get("message") or f"HTTP {status}"
        hint = (" The token is invalid or expired: generate a new one (Meta app > Instagram > API setup > Generate token)."
                if code == 190 else "")
        raise TokenRefused(f"Instagram refused the token ({error.get('type') or 'error'} {code or status}: {message}).{hint}")
    return data


async def account_of(http: aiohttp.ClientSession, vendors: Vendors, token: str, account_id: str) -> dict[str, Any]:
    """What Graph says of ``account_id`` with ``token``, which must be that account's: an Instagram
    user token's ``/me`` is the account itself; a Page token (Facebook Login) is not, and may read
    the Instagram account linked to its Page (``GET /{account_id}?fields=id,username``)."""
    who = await instagram_identity(http, vendors.graph_api_url, vendors.graph_api_version, token)
    if account_id in {str(who.get(k)) for k in ("user_id", "id") if who.get(k)}:
        return who
    url = f"{vendors.graph_api_url.rstrip('/')}/{vendors.graph_api_version}/{account_id}"
    status, node = await _call(http, "GET", url, token=token.strip(), vendor="Instagram", params={"fields": "id,username"})
    if status == 200 and isinstance(node, dict) and str(node.get("id") or "") == account_id:
        return {"user_id": account_id, "username": node.get("username"), "token_of": who.get("id")}
    raise AccountMismatch(f"this token belongs to {who.get('username') or who.get('name') or 'another account'} "
                          f"({who.get('user_id') or who.get('id')}), not the Instagram account {account_id}: paste the token "
                          f"of {account_id}, or give the account id Graph names")


async def shopify_identity(http: aiohttp.ClientSession, config: ShopifyConfig, shop: str, token: str) -> Any:
    """The shop's facts with ``token`` (which must open this shop, with read_products), or `TokenRefused`."""
    try:
        info = await ShopifyClient(http, config, shop=shop, access_token=token).shop_info()
        check_scopes(info.scopes, ("read_products",), shop=shop)
    except (TokenRevoked, MissingScopes) as exc:
        raise TokenRefused(f"Shopify refused the token for {shop}: {exc.message}") from exc
    return info


def shopify_refusals() -> tuple[type[Exception], ...]:
    """What Shopify raises for a token it does not take (the dashboard answers them 400)."""
    return (TokenRevoked, MissingScopes)


# --- the one place rows are read for a tenant ----------------------------------------------------


def _kind(kind: str | ChannelKind) -> ChannelKind:
    try:
        value = ChannelKind(kind)
    except ValueError:
        value = None
    if value is None or value.value not in KINDS:
        raise InvalidInput(f"unknown channel {kind!r}; use one of {', '.join(KINDS)}")
    return value


async def find_installation(session: AsyncSession, *, tenant_id: str, kind: ChannelKind, ref: str) -> ChannelInstallation:
    """The tenant's active installation of ``kind`` named by its external id (team id, account id, shop)
    or its installation id (or a unique prefix of it). Another tenant's is not found."""
    repo = InstallationRepository(session, tenant_id)
    ref = (ref or "").strip()
    if not ref:
        raise InvalidInput(f"name the {kind.value} installation (its id, or see `parley channels list`)")
    stmt = repo.select().where(ChannelInstallation.kind == kind, ChannelInstallation.status == "active")
    candidates = [ref, ref.lower()] if kind == ChannelKind.shopify else [ref]
    if kind == ChannelKind.shopify and "." not in ref:
        candidates.append(f"{ref.lower()}.myshopify.com")
    for external_id in candidates:
        row = (await session.execute(stmt.where(ChannelInstallation.external_id == external_id))).scalar_one_or_none()
        if row is not None:
            return row
    if len(ref) >= MIN_PREFIX:
        try:
            return await resolve_id(session, stmt, ChannelInstallation.id, ref, noun=f"{kind.value} installation",
                                    label=ChannelInstallation.external_id)
        except NotFound:
            pass
    raise NotFound(f"no connected {kind.value} installation {ref!r} for this tenant (see `parley channels list`)")


def installation_json(row: ChannelInstallation, vendors: Vendors | None = None) -> dict[str, Any]:
    details = dict(row.details or {})
    shown = {k: details[k] for k in ("team_id", "enterprise_id", "is_enterprise_install", "bot_id", "bot_user_id",
                                     "username", "uploaders", "connected_by", "connected_via", "own_app", "token_rotated_at",
                                     "shop_name", "token_kind", "messages_subscribed", "subscribe_error") if details.get(k) not in (None, "", [])}
    out = {"id": row.id, "kind": row.kind.value, "external_id": row.external_id, "display_name": row.display_name,
           "status": row.status, "details": shown,
           "created_at": row.created_at.isoformat() if row.created_at else None,
           "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}
    if vendors is not None and row.kind == ChannelKind.instagram:
        out["setup"] = vendors.instagram_setup()
    return out


async def list_channels(sessions: async_sessionmaker[AsyncSession], *, tenant_id: str,
                        vendors: Vendors | None = None) -> list[dict[str, Any]]:
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        rows = await InstallationRepository(session, tenant_id).list()
        return [installation_json(r, vendors) for r in rows if r.kind.value in KINDS]


# --- connect ---------------------------------------------------------------------------------


def _uploaders(values: Any) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = values.replace(",", " ").split()
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise InvalidInput("uploaders are a list of Instagram-scoped ids (IGSIDs)")
    out: list[str] = []
    for v in (v.strip() for v in values):
        if not v:
            continue
        if len(v) > 64 or not v.replace("-", "").replace("_", "").isalnum():
            raise InvalidInput(f"{v[:40]!r} is not an Instagram-scoped id (IGSID: the sender id of their DMs)")
        if v not in out:
            out.append(v)
    if len(out) > MAX_UPLOADERS:
        raise InvalidInput(f"at most {MAX_UPLOADERS} uploaders per account")
    return out


def _optional_secret(value: str | None, what: str) -> str | None:
    value = (value or "").strip()
    if not value:
        return None
    if len(value) > 256 or any(c.isspace() or not c.isprintable() for c in value):
        raise InvalidInput(f"{what} must be one line of text without spaces")
    return value


async def connect_slack(sessions: async_sessionmaker[AsyncSession], box: SecretBox, http: aiohttp.ClientSession, *,
                        tenant_id: str, bot_token: str, signing_secret: str | None = None, vendors: Vendors,
                        actor: str, directory: InstallationDirectory | None = None) -> Connected:
    """Connect a workspace by its bot token (checked with ``auth.test``), stored as OAuth would."""
    signing_secret = _optional_secret(signing_secret, "the signing secret")
    who = await slack_identity(http, vendors.slack_api_url, bot_token)
    enterprise_install = bool(who.get("is_enterprise_install"))
    team_id = None if enterprise_install else (str(who.get("team_id") or "") or None)
    external_id = workspace_id(who.get("enterprise_id"), team_id, is_enterprise_install=enterprise_install)
    assert external_id  # slack_identity refuses an answer without a team or enterprise
    details = {"app_id": who.get("app_id"), "team_id": team_id, "enterprise_id": who.get("enterprise_id"),
               "bot_id": who.get("bot_id"), "bot_user_id": who.get("user_id"), "bot_scopes": [],
               "installer_user_id": None, "is_enterprise_install": enterprise_install,
               "installed_at": utcnow().timestamp(), "connected_via": "token", "connected_by": actor,
               "url": who.get("url"), "own_app": bool(signing_secret)}
    secrets = {"bot_token": bot_token.strip(), **({"signing_secret": signing_secret} if signing_secret else {})}
    async with unit_of_work(sessions, admin=True) as session:
        row = await install_channel(session, box=box, tenant_id=tenant_id, kind=ChannelKind.slack, external_id=external_id,
                                    display_name=str(who.get("team") or external_id), details=details, secrets=secrets)
        done = Connected("slack", tenant_id, row.id, row.external_id, row.display_name, dict(row.details),
                         vendors.slack_setup())
    if directory is not None:
        directory.forget(ChannelKind.slack, external_id)
        forget_own_secrets(directory)
    _audit("connected", actor=actor, tenant_id=tenant_id, kind="slack", external_id=external_id, via="token")
    return done


async def connect_instagram(sessions: async_sessionmaker[AsyncSession], box: SecretBox, http: aiohttp.ClientSession, *,
                            tenant_id: str, account_id: str, token: str, app_secret: str | None = None,
                            uploaders: Any = None, vendors: Vendors, actor: str,
                            directory: InstallationDirectory | None = None) -> Connected:
    """Connect an Instagram professional account by its id and token (checked against Graph)."""
    account_id = (account_id or "").strip()
    if not account_id.isdigit() or len(account_id) > 32:
        raise InvalidInput("the Instagram account id is the number Meta shows for the professional account "
                           "(Meta app > Instagram > API setup, next to the account)")
    app_secret = _optional_secret(app_secret, "the app secret")
    people = _uploaders(uploaders)
    who = await account_of(http, vendors, token, account_id)
    subscribed, why = await subscribe_messages(http, vendors, token.strip())
    details = {"username": who.get("username"), "uploaders": people, "connected_via": "token", "connected_by": actor,
               "own_app": bool(app_secret), "messages_subscribed": subscribed,
               **({"subscribe_error": why} if why else {})}
    secrets = {"access_token": token.strip(), **({"app_secret": app_secret} if app_secret else {})}
    async with unit_of_work(sessions, admin=True) as session:
        row = await install_channel(session, box=box, tenant_id=tenant_id, kind=ChannelKind.instagram,
                                    external_id=account_id, display_name=str(who.get("username") or account_id),
                                    details=details, secrets=secrets)
        done = Connected("instagram", tenant_id, row.id, row.external_id, row.display_name, dict(row.details),
                         vendors.instagram_setup())
    if directory is not None:
        directory.forget(ChannelKind.instagram, account_id)
    _audit("connected", actor=actor, tenant_id=tenant_id, kind="instagram", external_id=account_id, via="token",
           uploaders=len(people))
    return done


async def subscribe_messages(http: aiohttp.ClientSession, vendors: Vendors, token: str) -> tuple[bool, str | None]:
    """Ask Meta to send this account's messages to the app's webhook (``POST /me/subscribed_apps
    ?subscribed_fields=messages``: the account with an Instagram token, its Page with a Page token).
    Best effort: the connection stands either way, and the answer is kept to be shown."""
    url = f"{vendors.graph_api_url.rstrip('/')}/{vendors.graph_api_version}/me/subscribed_apps"
    try:
        status, data = await _call(http, "POST", url, token=token, vendor="Instagram",
                                   params={"subscribed_fields": "messages"})
    except Unavailable as exc:
        return False, str(exc)
    if status == 200 and isinstance(data, dict) and data.get("success"):
        return True, None
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return False, f"Meta did not subscribe the account to messages ({message or f'HTTP {status}'}): subscribe it in the " \
                  "Meta app (Instagram > API setup > Configure webhooks)"


async def set_instagram_uploaders(sessions: async_sessionmaker[AsyncSession], *, tenant_id: str, ref: str, uploaders: Any,
                                  actor: str, directory: InstallationDirectory | None = None) -> dict[str, Any]:
    people = _uploaders(uploaders)
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        row = await find_installation(session, tenant_id=tenant_id, kind=ChannelKind.instagram, ref=ref)
        row.details = {**(row.details or {}), "uploaders": people}
        out = installation_json(row)
    if directory is not None:
        directory.forget(ChannelKind.instagram, out["external_id"])
    _audit("uploaders_set", actor=actor, tenant_id=tenant_id, kind="instagram", external_id=out["external_id"],
           uploaders=len(people))
    return out


# --- disconnect and rotate -------------------------------------------------------------------


async def disconnect(sessions: async_sessionmaker[AsyncSession], box: SecretBox, http: aiohttp.ClientSession, *,
                     tenant_id: str, kind: str, ref: str, vendors: Vendors, actor: str,
                     directory: InstallationDirectory | None = None) -> dict[str, Any]:
    """Stop the channel routing to the tenant and erase its secrets; Slack's token is revoked too
    (``auth.revoke``, best effort: it is erased here whatever Slack answers)."""
    channel = _kind(kind)
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        row = await find_installation(session, tenant_id=tenant_id, kind=channel, ref=ref)
        external_id, secrets = row.external_id, reveal_secrets(box, row)
    revoked_at_vendor: bool | None = None
    if channel == ChannelKind.slack and secrets.get("bot_token"):
        revoked_at_vendor = await _slack_revoke(http, vendors.slack_api_url, str(secrets["bot_token"]))
    async with unit_of_work(sessions, admin=True) as session:
        row = await revoke_channel(session, kind=channel, external_id=external_id)
        out = installation_json(row) if row is not None else {"kind": channel.value, "external_id": external_id}
    if directory is not None:
        directory.forget(channel, external_id)
        forget_own_secrets(directory)
    out["revoked_at_vendor"] = revoked_at_vendor
    _audit("disconnected", actor=actor, tenant_id=tenant_id, kind=channel.value, external_id=external_id,
           revoked_at_vendor=revoked_at_vendor)
    return out


async def _slack_revoke(http: aiohttp.ClientSession, api_url: str, token: str) -> bool:
    try:
        status, data = await _call(http, "POST", f"{api_url.rstrip('/')}/auth.revoke", token=token, vendor="Slack")
    except Unavailable as exc:
        log.warning("auth.revoke failed, the token is erased here anyway: %s", exc)
        return False
    ok = status == 200 and isinstance(data, dict) and bool(data.get("ok"))
    if not ok:
        log.warning("auth.revoke refused (%s), the token is erased here anyway",
                    data.get("error") if isinstance(data, dict) else status)
    return ok


async def rotate(sessions: async_sessionmaker[AsyncSession], box: SecretBox, http: aiohttp.ClientSession, *,
                 tenant_id: str, kind: str, ref: str, token: str, vendors: Vendors, actor: str,
                 signing_secret: str | None = None, app_secret: str | None = None,
                 directory: InstallationDirectory | None = None) -> dict[str, Any]:
    """Replace the channel's token with ``token``, checked first and required to name the same
    workspace, account or shop; the other secrets are kept (a new signing / app secret given replaces its own)."""
    channel = _kind(kind)
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        row = await find_installation(session, tenant_id=tenant_id, kind=channel, ref=ref)
        external_id, installation_id = row.external_id, row.id
        old_team = (row.details or {}).get("team_id")
    token = _clean_token(token, "the new token")
    update: dict[str, Any] = {}
    if channel == ChannelKind.slack:
        who = await slack_identity(http, vendors.slack_api_url, token)
        enterprise_install = bool(who.get("is_enterprise_install"))
        named = workspace_id(who.get("enterprise_id"), None if enterprise_install else who.get("team_id"),
                             is_enterprise_install=enterprise_install)
        if named != external_id:
            raise AccountMismatch(f"this token belongs to the Slack workspace {who.get('team') or '?'} ({named}), not "
                                  f"{external_id}{f' ({old_team})' if old_team and old_team != external_id else ''}: "
                                  "connect that workspace instead, or paste this workspace's token")
        update["bot_token"] = token
        secret = _optional_secret(signing_secret, "the signing secret")
        if secret:
            update["signing_secret"] = secret
        detail_update = {"bot_id": who.get("bot_id"), "bot_user_id": who.get("user_id")}
    elif channel == ChannelKind.instagram:
        who = await account_of(http, vendors, token, external_id)
        update["access_token"] = token
        secret = _optional_secret(app_secret, "the app secret")
        if secret:
            update["app_secret"] = secret
        detail_update = {"username": who.get("username")}
    else:
        info = await shopify_identity(http, vendors.shopify or ShopifyConfig.from_settings(), external_id, token)
        update["access_token"] = token
        update["scope"] = ",".join(sorted(info.scopes))
        detail_update = {"scopes": sorted(info.scopes), "shop_name": info.name}
    async with unit_of_work(sessions, tenant_id=tenant_id) as session:
        row = await InstallationRepository(session, tenant_id).get(installation_id)
        if row.status != "active":
            raise NotFound(f"the {channel.value} installation {external_id} was disconnected meanwhile")
        secrets = {**reveal_secrets(box, row), **update}
        row.secrets_encrypted = seal_secrets(box, secrets)  # one row, one update: old or new, never half
        row.details = {**(row.details or {}), **{k: v for k, v in detail_update.items() if v},
                       "token_rotated_at": utcnow().isoformat(), "token_rotated_by": actor}
        out = installation_json(row)
    if directory is not None:
        directory.forget(channel, external_id)
        forget_own_secrets(directory)
    _audit("token_rotated", actor=actor, tenant_id=tenant_id, kind=channel.value, external_id=external_id)
    return out
