"""Webhooks signed by a tenant's own Meta app (an account connected with its app secret).

An Instagram account connected with ``--app-secret`` (or the dashboard's field) is subscribed to
the webhook through a Meta app of the tenant's own, which signs ``X-Hub-Signature-256`` with *its*
secret. When none of the platform's secrets verifies a body, the accounts its entries name are
looked up and each one's own secret tried on the same raw bytes (constant time,
`signature_valid`); the accounts whose secret verified it are the only ones whose events are then
handled. Total: any body or header gives a set (maybe empty), never an exception.
"""

from __future__ import annotations

import json
import logging

from bot.channels.instagram.events import signature_valid
from bot.channels.routing import InstallationDirectory
from tenants.models import ChannelKind

log = logging.getLogger("parley.gateway.instagram")

#: Entries of one delivery whose accounts are looked up at most (Meta batches a few).
MAX_ENTRIES = 50


async def own_app_accounts(directory: InstallationDirectory, raw: bytes, header: str | None) -> set[str]:
    """The connected accounts named in the body whose own app secret signs it."""
    if not header or not header.startswith("sha256="):
        return set()
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        return set()
    entries = payload.get("entry") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        return set()
    accounts = {str(e.get("id")) for e in entries[:MAX_ENTRIES] if isinstance(e, dict) and isinstance(e.get("id"), (str, int))}
    verified: set[str] = set()
    for account in sorted(a for a in accounts if 0 < len(a) <= 64):
        try:
            route = await directory.find(ChannelKind.instagram, account)
        except Exception:  # the database is away: not verified (Meta retries a 401 later)
            log.exception("looking up an Instagram account's own app secret failed")
            return set()
        secret = route.secrets.get("app_secret") if route is not None else None
        if secret and signature_valid(raw, header, [str(secret)]):
            verified.add(account)
    return verified
