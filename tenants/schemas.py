"""Contracts of the tenants package."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict

from parley.errors import InvalidInput

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def validate_tenant_name(name: str) -> str:
    if not TENANT_NAME.fullmatch(name or ""):
        raise InvalidInput(
            f"invalid tenant name {name!r}: use 1-63 lowercase letters, digits and dashes, starting with a letter or digit"
        )
    return name


class TenantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    display_name: str
    status: str
    index_version: int
    embedding_model: str | None
    created_at: dt.datetime


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    name: str
    prefix: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class InstallationOut(BaseModel):
    """What may be shown of a channel installation: never its secrets."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    tenant_id: str
    kind: str
    external_id: str
    display_name: str
    status: str
    created_at: dt.datetime
