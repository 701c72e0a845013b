"""The retrieval service's contracts: what the gateway sends (`QueryRequest`) and gets back (`QueryResponse`).

These models are the wire format of ``POST /v1/query`` and the in-process interface alike, so the
gateway can switch between the two without noticing. This module imports nothing of ours but
pydantic: ``bot`` may import it (and ``retrieval.client``) and nothing else of ``retrieval``.

Choices:

* Validation is strict on what we cannot answer sensibly (an empty message, a tenant id that
  cannot be one, absurd sizes) and lenient on the rest (unknown fields are ignored, so a newer
  gateway can talk to an older service).
* ``turns`` are the recent turns *before* ``message``, oldest first. Only the last
  ``MAX_TURNS`` matter for follow-up rewriting; longer histories are refused rather than
  silently cut, so a gateway bug shows up as a 400 instead of a slow service.
* Prices are decimal strings ("49.00"), never floats.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MESSAGE_CHARS = 4000
MAX_TURNS = 20
MAX_CITATIONS = 20
TENANT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"

#: Every key of ``QueryResponse.timings``, always present (0.0 for a stage that did not run).
TIMING_STAGES = ("rewrite", "cache", "embed", "vector", "keyword", "fusion", "generate", "total")


class Turn(BaseModel):
    """One earlier turn of the conversation."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS * 4)


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tenant_id: str = Field(pattern=TENANT_ID_PATTERN)
    conversation_id: str = Field(default="", max_length=256)
    message: str = Field(min_length=1, max_length=MAX_MESSAGE_CHARS)
    turns: list[Turn] = Field(default_factory=list, max_length=MAX_TURNS)
    max_citations: int | None = Field(default=None, ge=1, le=MAX_CITATIONS)

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message is blank")
        return value


class Citation(BaseModel):
    """A source the answer stands on. ``n`` is the number the answer cites it by ("[n]")."""

    n: int
    kind: Literal["document", "product"]
    title: str  # the document's name, or the product's title
    document_id: str
    chunk_id: str
    heading_path: list[str] = Field(default_factory=list)
    snippet: str = ""
    # products only
    price: str | None = None
    currency: str | None = None
    availability: Literal["in_stock", "out_of_stock"] | None = None
    url: str | None = None


class QueryResponse(BaseModel):
    answer: str
    citations: list[Citation] = Field(default_factory=list)
    cached: bool = False
    standalone_question: str
    #: stage -> milliseconds; keys are TIMING_STAGES.
    timings: dict[str, float] = Field(default_factory=dict)
    #: False when nothing relevant was found and the answer says so.
    found: bool = True
    #: "extractive", "openai", "none" (nothing found); "extractive" also after an OpenAI failure.
    answered_by: str = "extractive"


class ErrorBody(BaseModel):
    """The JSON body of every error response: ``{"error": code, "detail": ...}``."""

    error: str
    detail: object = None
    error_id: str | None = None
