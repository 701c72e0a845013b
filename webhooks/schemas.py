"""The contract a receiver sees: the JSON body of every Parley webhook (Standard Webhooks' shape)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class WebhookPayload(BaseModel):
    """``{"type", "timestamp", "id", "data"}``: the event type (``document.indexed`` …), when it
    happened (ISO 8601, UTC, milliseconds, ``Z``), the ``webhook-id`` again (for receivers that log
    bodies), and the event's ids and metadata (the README's table lists them per type)."""

    model_config = ConfigDict(extra="ignore")

    type: str
    timestamp: str
    id: str
    data: dict[str, Any]
