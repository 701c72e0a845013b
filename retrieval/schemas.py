"""The retrieval service's contracts: what the gateway sends (`QueryRequest`) and gets back (`QueryResponse`).

These models are the wire format of ``POST /v1/query`` and the in-process interface alike, so the
gateway can switch between the two without noticing. This module imports nothing of ours but
`parley.errors`: ``bot`` may import it (and ``retrieval.client``) and nothing else of ``retrieval``.
`question_problem` is here for the same reason: every door (each channel, the web chat API,
``parley ask``, the service itself) answers an empty, huge or wordless message with the same
polite reply.

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

from parley.errors import BadQuestion

MAX_MESSAGE_CHARS = 4000
MAX_TURNS = 20
MAX_CITATIONS = 20
MAX_SOURCES = 100
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
    #: Also return the ranking behind the answer: the first ``sources`` distinct documents and
    #: products with their scores (`RankedSource`), for evaluation and for "why did it answer that?".
    sources: int | None = Field(default=None, ge=1, le=MAX_SOURCES)
    #: Wait until the index holds every write the tenant committed before this request (a question
    #: sent with a file, asked once the file is indexed); otherwise an answer never waits for that.
    fresh: bool = False

    @field_validator("message")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("message is blank")
        return value


#: The polite replies to a message that cannot be looked up (`question_problem`), and to one whose
#: words no model of the service can read (`UNREADABLE_SCRIPT`, decided by the service).
EMPTY_QUESTION = "I didn't get a question there. What would you like to know?"
NO_WORDS = ("I can only look up questions written in words, and that message has none I can search for. "
            "What would you like to know?")
TOO_LONG = ("That message is {n:,} characters long; I can look up questions of up to {limit:,}. Could you ask it "
            "in a sentence or two? (To add a document, send it as a file instead.)")
UNREADABLE_SCRIPT = ("I can't read the writing of that question yet, so I can't look it up. "
                     "Could you ask it in another language, for example in English?")


def question_problem(text: str) -> str | None:
    """Why ``text`` cannot be a question to look up, as the polite reply its sender gets: empty or
    whitespace, longer than `MAX_MESSAGE_CHARS`, or without a single letter or digit (only emoji,
    punctuation or symbols). None when it can be looked up. Pure and cheap (one pass at most)."""
    stripped = text.strip()
    if not stripped:
        return EMPTY_QUESTION
    if len(stripped) > MAX_MESSAGE_CHARS:
        return TOO_LONG.format(n=len(stripped), limit=MAX_MESSAGE_CHARS)
    if not any(ch.isalnum() for ch in stripped):
        return NO_WORDS
    return None


def check_question(text: str) -> str:
    """``text`` stripped, or `BadQuestion` whose message is the polite reply (`question_problem`)."""
    problem = question_problem(text)
    if problem is not None:
        raise BadQuestion(problem)
    return text.strip()


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


class RankedSource(BaseModel):
    """One document (or product) of the ranking behind an answer, asked for with ``sources``.

    Sources are the service's ranking of the tenant's documents for the question, best first, one
    entry per document (its best-ranked chunk), relevant or not: the answer quotes from the first
    ones that pass the relevance test, so a source the answer does not cite shows what ranked near
    it and by how much. ``score`` is what the ranking is sorted by (the fused score, times a product's
    constraint factor); ``vector_score`` is the cosine similarity and ``keyword_score`` the BM25
    score of that chunk, each None when its search leg did not return it.
    """

    rank: int  # 1-based
    kind: Literal["document", "product"]
    document_id: str
    title: str
    chunk_id: str
    score: float
    vector_score: float | None = None
    keyword_score: float | None = None
    vector_rank: int | None = None
    keyword_rank: int | None = None
    cited: bool = False  # the answer cites this document


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
    #: The chat model's name when ``answered_by`` is "openai" (stored with feedback on the answer).
    answer_model: str | None = None
    #: The ranking behind the answer (`RankedSource`), only when the request asked for ``sources``.
    sources: list[RankedSource] | None = None


class ErrorBody(BaseModel):
    """The JSON body of every error response: ``{"error": code, "detail": ...}``."""

    error: str
    detail: object = None
    error_id: str | None = None
