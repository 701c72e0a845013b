"""The message envelope: JSON bytes on the wire, the same JSON in the outbox and the dead-letter table."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from parley.bus import context
from parley.db import new_id, utcnow

#: ``noun.past_tense_verb``: lowercase dotted words, e.g. ``document.uploaded``, ``catalog.sync_requested``.
TYPE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"

# AMQP headers the bus writes. Message id, correlation id and type also travel as AMQP properties.
H_TENANT = "x-parley-tenant-id"
H_ATTEMPT = "x-parley-attempt"
H_ATTEMPTS = "x-parley-attempts"  # [{attempt, at, error}], one entry per failed attempt
H_ERROR = "x-parley-error"  # the last failure, readable: "<code>: <message>"
H_ERROR_CODE = "x-parley-error-code"
H_QUEUE = "x-parley-queue"  # the work queue a dead letter came from
H_CONSUMER = "x-parley-consumer"
H_DEAD_AT = "x-parley-dead-lettered-at"
# Selects the delay tier on the headers exchange. Not "x-"-prefixed: RabbitMQ ignores x- headers when
# matching, and a binding on one then matches every message (seen here: one copy per tier).
H_DELAY = "parley-delay"
H_REPLAY_OF = "x-parley-replay-of"
H_REPLAYED_AT = "x-parley-replayed-at"
H_LANE = "x-parley-lane"  # fast or bulk (quorum mode): the lane a retry goes back to

M = TypeVar("M", bound=BaseModel)


class Envelope(BaseModel):
    """One message. Unknown fields are ignored, so an older consumer reads a newer producer's messages."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    type: str = Field(pattern=TYPE_PATTERN, max_length=64)
    id: str = Field(default="", min_length=1, max_length=64)
    tenant_id: str | None = Field(default=None, max_length=32)
    #: What "the same work" means to consumers; defaults to the message id.
    idempotency_key: str = Field(default="", min_length=1, max_length=200)
    attempt: int = Field(default=1, ge=1)
    correlation_id: str = Field(default="", min_length=1, max_length=64)
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    payload: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        data["id"] = data.get("id") or new_id()
        data["idempotency_key"] = data.get("idempotency_key") or data["id"]
        data["correlation_id"] = data.get("correlation_id") or context.correlation_id() or new_id()
        return data

    @field_validator("occurred_at")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        return value.astimezone(dt.UTC)

    @classmethod
    def new(
        cls,
        type: str,
        *,
        tenant_id: str | None,
        payload: BaseModel | dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
    ) -> Envelope:
        """A fresh message; the correlation id defaults to the one bound in the logging context."""
        data = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else dict(payload or {})
        return cls(
            type=type,
            tenant_id=tenant_id,
            payload=data,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Envelope:
        return cls.model_validate_json(data)

    def payload_as(self, model: type[M]) -> M:
        return model.model_validate(self.payload)

    def next_attempt(self) -> Envelope:
        return self.model_copy(update={"attempt": self.attempt + 1})
