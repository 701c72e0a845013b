"""The gateway's knobs, built once from `Settings`.

`GatewayConfig.from_settings` reads each field from `Settings` (``PARLEY_SLACK_*``,
``PARLEY_INSTAGRAM_*``, ...); knobs `Settings` does not list (``PARLEY_SLACK_SCOPES``,
``PARLEY_META_APP_SECRET``, ``PARLEY_GRAPH_API_VERSION``) are read from the environment. Tests build a
`GatewayConfig` directly and pass it in `GatewayDeps`.

Why these defaults:

* Answering is bounded per tenant (4 at once) and in total (64): one tenant's burst queues behind
  its own semaphore instead of taking every retrieval slot.
* A reply is retried 5 times with exponential backoff from 0.5 s (capped at 30 s, or the vendor's
  ``Retry-After``) inside a 180 s deadline; a message still ``answering`` after that deadline
  belongs to a dead process, so the recovery sweep may take it over.
* Recovery answers ``received``/``answering`` messages younger than 30 minutes: older ones would
  surprise the customer more than they help (and Slack has stopped retrying by then).
* Webhook bodies are capped at 1 MB (Slack and Meta events are a few KB); uploads stream and are
  capped by the tenant's limit or ``max_upload_bytes``.
* Questions: a sender may ask 10 at once and then one every 5 s (a person typing fast is well
  inside that; a script is not); a tenant 100 at once, then 10 a second (more than 4 answers at
  once per tenant get through anyway); at most 200 of a tenant's questions (2,000 in all) wait
  for an answer in one gateway, so memory stays bounded whatever arrives.
* Sign-in: 10 wrong keys in a minute from one address lock it out for 5 minutes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from parley.settings import Settings

#: users:read: users.info says whether a sender is a workspace admin (who may add documents).
#: channels:history, groups:history: staff replies in the tenant's (public or private) staff channel's
#: handoff threads reach the gateway (`bot.channels.slack.desk`).
SLACK_SCOPES = ("chat:write", "im:history", "im:read", "files:read", "users:read", "channels:history", "groups:history")

# Settings fields with a non-empty default: an explicit environment passed to `from_settings` may still override them.
_DEFAULTED = frozenset({"slack_api_url", "graph_api_url", "gateway_answer_concurrency", "gateway_recovery_minutes"})


@dataclass(frozen=True)
class GatewayConfig:
    public_url: str = "http://127.0.0.1:8080"
    max_upload_bytes: int = 25 * 1024 * 1024
    max_webhook_bytes: int = 1024 * 1024
    # --- Slack ---------------------------------------------------------------------------
    slack_signing_secret: str | None = None
    slack_client_id: str | None = None
    slack_client_secret: str | None = None
    slack_scopes: tuple[str, ...] = SLACK_SCOPES
    slack_api_url: str = "https://slack.com/api/"
    slack_authorize_url: str = "https://slack.com/oauth/v2/authorize"
    #: An install link is single use and lives a day (it was reusable for a week).
    slack_install_link_ttl: float = 24 * 3600.0
    slack_state_ttl: float = 600.0
    # --- Instagram (Meta) ----------------------------------------------------------------
    #: Every secret that may sign Meta's webhooks (Instagram app secret and/or Meta app secret).
    instagram_app_secrets: tuple[str, ...] = ()
    instagram_verify_token: str | None = None
    graph_api_url: str = "https://graph.instagram.com"
    graph_api_version: str = "v26.0"
    # --- answering -----------------------------------------------------------------------
    answer_concurrency_per_tenant: int = 4
    answer_concurrency_total: int = 64
    answer_deadline: float = 180.0
    retrieval_timeout: float = 30.0
    attempts: int = 5
    retry_base: float = 0.5
    retry_cap: float = 30.0
    history_turns: int = 10
    recovery_minutes: float = 30.0
    recovery_sweep_seconds: float = 30.0
    download_timeout: float = 120.0
    notify_max_attempts: int = 5
    #: On shutdown, answers in progress get this long before they are cancelled (and given back).
    shutdown_grace: float = 10.0
    # --- limits (bot/limits.py; the PARLEY_GATEWAY_* settings say why) ------------------
    sender_questions_per_minute: float = 12.0
    sender_question_burst: int = 10
    tenant_questions_per_minute: float = 600.0
    tenant_question_burst: int = 100
    answer_backlog_per_tenant: int = 200
    answer_backlog_total: int = 2000
    auth_max_failures: int = 10
    auth_failure_window: float = 60.0
    auth_lockout: float = 300.0
    #: Web chat widget visitors: new anonymous sessions one address may open (a burst, then per minute).
    widget_session_burst: int = 10
    widget_sessions_per_minute: float = 6.0
    #: Reverse proxies whose X-Forwarded-For is believed (addresses or CIDR networks).
    trusted_proxies: tuple[str, ...] = ()
    #: Senders, tenants and addresses the limiters remember at most (least recently seen forgotten first).
    limiter_max_keys: int = 100_000
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_signing_secret)

    @property
    def slack_oauth_enabled(self) -> bool:
        return bool(self.slack_client_id and self.slack_client_secret)

    @property
    def instagram_enabled(self) -> bool:
        return bool(self.instagram_app_secrets)

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> GatewayConfig:
        env = os.environ if environ is None else environ

        def read(name: str, default: Any = None) -> Any:
            value = getattr(settings, name, None)
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            if value is None or value == "" or (name in _DEFAULTED and value == Settings.model_fields[name].default):
                value = env.get(f"PARLEY_{name.upper()}", default)
            return default if value is None or value == "" else value

        secrets = read("instagram_app_secrets", "")
        if isinstance(secrets, str):
            secrets = [s for s in (x.strip() for x in secrets.split(",")) if s]
        meta_secret = read("meta_app_secret")
        all_secrets = tuple(dict.fromkeys([*secrets, *([meta_secret] if meta_secret else [])]))
        scopes = read("slack_scopes", ",".join(SLACK_SCOPES))
        if isinstance(scopes, str):
            scopes = [s.strip() for s in scopes.split(",") if s.strip()]
        return cls(
            public_url=settings.effective_public_url,
            max_upload_bytes=settings.max_upload_bytes,
            slack_signing_secret=read("slack_signing_secret"),
            slack_client_id=read("slack_client_id"),
            slack_client_secret=read("slack_client_secret"),
            slack_scopes=tuple(scopes),
            slack_api_url=read("slack_api_url", cls.slack_api_url),
            instagram_app_secrets=all_secrets,
            instagram_verify_token=read("instagram_verify_token"),
            graph_api_url=read("graph_api_url", cls.graph_api_url),
            graph_api_version=read("graph_api_version", cls.graph_api_version),
            answer_concurrency_per_tenant=int(read("gateway_answer_concurrency", cls.answer_concurrency_per_tenant)),
            recovery_minutes=float(read("gateway_recovery_minutes", cls.recovery_minutes)),
            notify_max_attempts=settings.max_attempts,
            sender_questions_per_minute=settings.gateway_sender_questions_per_minute,
            sender_question_burst=settings.gateway_sender_question_burst,
            tenant_questions_per_minute=settings.gateway_tenant_questions_per_minute,
            tenant_question_burst=settings.gateway_tenant_question_burst,
            answer_backlog_per_tenant=settings.gateway_answer_backlog,
            answer_backlog_total=settings.gateway_answer_backlog_total,
            auth_max_failures=settings.gateway_auth_max_failures,
            auth_failure_window=settings.gateway_auth_failure_window_seconds,
            auth_lockout=settings.gateway_auth_lockout_seconds,
            trusted_proxies=tuple(p.strip() for p in settings.gateway_trusted_proxies.split(",") if p.strip()),
        )
