"""Tenant, channel installation and API key tables."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import JSON, Boolean, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from parley.db import Base, TenantOwned, TimestampMixin, UTCDateTime, new_id


class Tenant(TimestampMixin, Base):
    __tablename__ = "tenant"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    persona: Mapped[str] = mapped_column(Text, default="")
    # Bumped by every successful indexing or deletion: the answer cache keys on it.
    index_version: Mapped[int] = mapped_column(Integer, default=0)
    # The embedding model the tenant's index was built with (reindex when it changes).
    embedding_model: Mapped[str | None] = mapped_column(String(128))
    embedding_dimension: Mapped[int | None] = mapped_column(Integer)
    max_upload_bytes: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="active")
    #: What `POST /api/documents` does with a file: ``index`` (the knowledge base) or
    #: ``pass-through`` (refused: files go to `POST /api/v1/process`, which keeps nothing; `passthrough`).
    api_upload_mode: Mapped[str] = mapped_column(String(16), default="index", server_default="index")


class ChannelKind(str, enum.Enum):
    slack = "slack"
    instagram = "instagram"
    shopify = "shopify"
    web = "web"


class ChannelInstallation(TenantOwned, TimestampMixin, Base):
    """A Slack workspace, Instagram account or Shopify shop mapped to one tenant.

    `secrets_encrypted` is a Fernet token over a JSON object of secrets (tokens); it is never
    logged and never leaves the repository decrypted except through `reveal_secrets`.
    """

    __tablename__ = "channel_installation"
    __table_args__ = (UniqueConstraint("kind", "external_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    kind: Mapped[ChannelKind] = mapped_column(
        Enum(ChannelKind, name="channel_kind", native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
    )
    external_id: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # non-secret: scopes, bot user id, ...
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active / revoked
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:  # never show secrets
        return f"ChannelInstallation(kind={self.kind.value if self.kind else None!r}, external_id={self.external_id!r}, tenant_id={self.tenant_id!r})"


class ApiKey(TenantOwned, Base):
    """An admin API key of one tenant. Only its SHA-256 is stored; the key is shown once."""

    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class UploadMode(str, enum.Enum):
    """Who may add documents to the tenant's knowledge through one channel."""

    #: The channel's own administrators (Slack: the user who installed the app and the workspace's
    #: admins and owners; Instagram: the account's configured uploaders; web: holders of an admin
    #: API key), plus the listed uploaders. The default.
    admins = "admins"
    #: Only the listed uploaders.
    listed = "listed"
    #: Anyone who can message the bot (replacing someone else's document still needs the right).
    anyone = "anyone"
    #: Nobody: uploads through this channel are closed.
    nobody = "nobody"


class UploaderPolicy(TenantOwned, TimestampMixin, Base):
    """A tenant's upload mode for one channel; no row means `UploadMode.admins`."""

    __tablename__ = "uploader_policy"
    __table_args__ = (UniqueConstraint("tenant_id", "channel"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # slack / instagram / web
    mode: Mapped[UploadMode] = mapped_column(
        Enum(UploadMode, name="upload_mode", native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=UploadMode.admins,
    )


class Uploader(TenantOwned, Base):
    """A person the tenant allows to add documents through one channel (their id on that channel:
    a Slack user id, an Instagram-scoped id, ``api_key:<id>`` for the web)."""

    __tablename__ = "uploader"
    __table_args__ = (UniqueConstraint("tenant_id", "channel", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(String(32), ForeignKey("tenant.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(255))
    #: May replace a document someone else uploaded (a new version under the same name).
    may_replace: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str] = mapped_column(String(255), default="")
    added_by: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
