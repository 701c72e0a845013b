"""Requests signed by a workspace's own Slack app (connected by token with its signing secret).

A workspace connected with ``parley channels connect slack --bot-token … --signing-secret …`` (or
the dashboard's form) runs an app of its own, whose requests are signed with *its* signing secret,
not the platform's. When the platform's secret does not verify a request, the workspace the body
names (``team_id``, ``authorizations[0]``, ``enterprise_id``: `find_workspace`) is looked up and
its own secret tried, on the same raw bytes, with the same 5-minute window and constant-time check
(`RequestSignature`). The request is then handled for that workspace only, which is the one Bolt
authorizes from the same body. A ``url_verification`` names no workspace (Slack sends it when the
Request URL is saved): every own secret is tried, at most `MAX_OWN_APPS` of them.

Total on whatever a stranger sends: any body gives True or False, never an exception.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from sqlalchemy import select

from bot.channels.routing import InstallationDirectory
from bot.channels.slack.signature import MAX_SKEW, RequestSignature
from bot.channels.slack.store import find_workspace
from parley.crypto import SecretBox
from parley.db import unit_of_work
from tenants.models import ChannelInstallation, ChannelKind
from tenants.repository import reveal_secrets

log = logging.getLogger("parley.gateway.slack")

MAX_OWN_APPS = 1000


def _body(raw: bytes) -> dict[str, Any] | None:
    try:
        text = raw.decode("utf-8")
        if text.lstrip().startswith("{"):
            data = json.loads(text)
        else:  # interactivity and slash commands: form fields, the JSON in ``payload``
            form = parse_qs(text, max_num_fields=100)
            data = json.loads(form["payload"][0]) if "payload" in form else {k: v[0] for k, v in form.items()}
    except (ValueError, KeyError, IndexError, RecursionError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _ids(body: dict[str, Any]) -> tuple[str | None, str | None, bool]:
    auth = body.get("authorizations")
    first = auth[0] if isinstance(auth, list) and auth and isinstance(auth[0], dict) else {}
    team = first.get("team_id") or body.get("team_id")
    if not team and isinstance(body.get("team"), dict):  # interactivity payloads: team.id
        team = body["team"].get("id")
    enterprise = first.get("enterprise_id") or body.get("enterprise_id")
    if not enterprise and isinstance(body.get("enterprise"), dict):
        enterprise = body["enterprise"].get("id")
    flag = first.get("is_enterprise_install", body.get("is_enterprise_install"))
    as_str = (lambda v: v if isinstance(v, str) and 0 < len(v) <= 64 else None)
    return as_str(enterprise), as_str(team), flag is True or flag == "true"


async def own_app_signature(directory: InstallationDirectory, box: SecretBox, raw: bytes, timestamp: str | None,
                            signature: str | None, clock: Any) -> bool:
    """Does the signing secret of the workspace this body names (or, for a url_verification, of any
    workspace with its own app) sign it?"""
    if not timestamp or not signature:
        return False
    body = _body(raw)
    if body is None:
        return False
    try:
        if body.get("type") == "url_verification":
            return await _any_own_secret(directory, box, raw, timestamp, signature, clock)
        enterprise, team, org_wide = _ids(body)
        if not (team or enterprise):
            return False
        route = await find_workspace(directory, enterprise, team, org_wide)
        secret = route.secrets.get("signing_secret") if route is not None else None
        return bool(secret) and RequestSignature(str(secret), clock).valid(raw, timestamp, signature)
    except Exception:  # a database hiccup is a refusal (Slack retries), never a 500 with a traceback
        log.exception("checking a workspace's own signing secret failed")
        return False


#: directory -> (valid until, every own signing secret): a url_verification storm reads the table once per ttl.
_OWN_SECRETS: dict[int, tuple[float, list[str]]] = {}


async def _any_own_secret(directory: InstallationDirectory, box: SecretBox, raw: bytes, timestamp: str,
                          signature: str, clock: Any) -> bool:
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12) or abs(clock() - int(timestamp)) > MAX_SKEW:
        return False  # stale or not a timestamp: nothing to look up
    now = time.monotonic()
    cached = _OWN_SECRETS.get(id(directory))
    if cached is not None and cached[0] > now:
        secrets = cached[1]
    else:
        async with unit_of_work(directory.sessions, admin=True) as session:
            rows = (await session.execute(select(ChannelInstallation).where(
                ChannelInstallation.kind == ChannelKind.slack, ChannelInstallation.status == "active")
                .limit(MAX_OWN_APPS))).scalars()
            secrets = [str(s) for s in (reveal_secrets(box, r).get("signing_secret") for r in rows
                                        if (r.details or {}).get("own_app")) if s]
        _OWN_SECRETS[id(directory)] = (now + directory.ttl, secrets)
    ok = False
    for secret in secrets:  # no early exit: the time taken does not say which one matched
        ok |= RequestSignature(str(secret), clock).valid(raw, timestamp, signature)
    return ok


def forget_own_secrets(directory: InstallationDirectory) -> None:
    """A workspace's own app was connected, rotated or disconnected here: read the secrets again."""
    _OWN_SECRETS.pop(id(directory), None)
