"""Web chat widgets: a tenant's chat embedded on its own site, with a public id and allowed origins.

A widget is a channel installation of kind ``web`` (no table of its own): its ``external_id`` is the
public widget id (``wgt_`` + 16 random characters; not a secret: it is in the tenant's page source),
its ``details["allowed_origins"]`` the sites that may embed it (``https://shop.example``, scheme +
host + port, nothing else), its status ``active`` or ``revoked``. Finding the tenant of a widget id
is the same cross-tenant routing step as finding the tenant of a Slack team (`route_installation`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncSession

from parley.db import utcnow
from parley.errors import InvalidInput
from parley.repository import resolve_id
from tenants.models import ChannelInstallation, ChannelKind
from tenants.repository import InstallationRepository, route_installation

PREFIX = "wgt_"
#: Sites one widget may be embedded on, at most.
MAX_ORIGINS = 20
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Widget:
    id: str
    tenant_id: str
    name: str
    origins: tuple[str, ...]
    active: bool


def normalize_origin(text: str) -> str:
    """``https://Shop.Example:443/`` -> ``https://shop.example``; `InvalidInput` for anything that is
    not a bare http(s) origin (a path, a query, a user, a wildcard)."""
    raw = (text or "").strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{raw!r} is not an origin: {exc}") from exc
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or not host or "*" in host or parts.username is not None or parts.password is not None \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidInput(f"{raw!r} is not an origin: give the site's scheme and host (and port), "
                           "like https://shop.example or http://localhost:3000")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return f"{scheme}://{netloc}"


def normalize_origins(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    origins = tuple(dict.fromkeys(normalize_origin(v) for v in values if v and v.strip()))
    if not origins:
        raise InvalidInput("a widget needs at least one allowed origin (the site that embeds it, e.g. https://shop.example)")
    if len(origins) > MAX_ORIGINS:
        raise InvalidInput(f"at most {MAX_ORIGINS} allowed origins per widget")
    return origins


def _widget(row: ChannelInstallation) -> Widget:
    origins = row.details.get("allowed_origins", []) if isinstance(row.details, dict) else []
    return Widget(id=row.external_id, tenant_id=row.tenant_id, name=row.display_name,
                  origins=tuple(str(o) for o in origins), active=row.status == "active")


def widget_json(widget: Widget) -> dict[str, Any]:
    return {"id": widget.id, "name": widget.name, "allowed_origins": list(widget.origins),
            "status": "active" if widget.active else "revoked"}


async def create_widget(session: AsyncSession, *, tenant_id: str, origins: list[str] | tuple[str, ...],
                        name: str = "") -> Widget:
    allowed = normalize_origins(origins)
    row = InstallationRepository(session, tenant_id).add(ChannelInstallation(
        kind=ChannelKind.web, external_id=PREFIX + secrets.token_urlsafe(12), display_name=(name or allowed[0])[:255],
        details={"allowed_origins": list(allowed)}, status="active"))
    await session.flush()
    return _widget(row)


async def _row(session: AsyncSession, tenant_id: str, widget_id: str) -> ChannelInstallation:
    """The tenant's widget ``widget_id``, or the one its unique prefix names (the one id resolver)."""
    stmt = InstallationRepository(session, tenant_id).select().where(ChannelInstallation.kind == ChannelKind.web)
    return await resolve_id(session, stmt, ChannelInstallation.external_id, widget_id, noun="widget")


async def list_widgets(session: AsyncSession, *, tenant_id: str) -> list[Widget]:
    return [_widget(r) for r in await InstallationRepository(session, tenant_id).list() if r.kind == ChannelKind.web]


async def set_origins(session: AsyncSession, *, tenant_id: str, widget_id: str, origins: list[str] | tuple[str, ...]) -> Widget:
    row = await _row(session, tenant_id, widget_id)
    row.details = {**(row.details or {}), "allowed_origins": list(normalize_origins(origins))}
    await session.flush()
    return _widget(row)


async def revoke_widget(session: AsyncSession, *, tenant_id: str, widget_id: str) -> Widget:
    """The widget stops at once: its frame is a 404, its visitors' sessions are refused."""
    row = await _row(session, tenant_id, widget_id)
    if row.status == "active":
        row.status, row.revoked_at = "revoked", utcnow()
    await session.flush()
    return _widget(row)


async def find_widget(session: AsyncSession, widget_id: str) -> Widget | None:
    """The active widget with this public id, whichever tenant it belongs to (the routing step)."""
    if not widget_id.startswith(PREFIX) or len(widget_id) > 64:
        return None
    row = await route_installation(session, ChannelKind.web, widget_id)
    return _widget(row) if row is not None else None
