"""One error hierarchy for the domain.

Each error has a stable machine `code` and a message a person can read. Domain code never
speaks HTTP: each edge maps these (HTTP middleware -> JSON, Slack -> a friendly DM,
consumer -> retry or dead-letter).
"""

from __future__ import annotations


class ParleyError(Exception):
    code = "error"
    #: True when trying the same thing again later may succeed (network, broker, locks).
    retryable = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class NotFound(ParleyError):
    code = "not_found"


class AlreadyExists(ParleyError):
    code = "already_exists"


class InvalidInput(ParleyError):
    code = "invalid_input"


class Unauthorized(ParleyError):
    code = "unauthorized"


class Forbidden(ParleyError):
    code = "forbidden"


class ConfigurationError(ParleyError):
    code = "configuration_error"


class TooLarge(InvalidInput):
    code = "too_large"


class UnsupportedType(InvalidInput):
    code = "unsupported_type"


class BadQuestion(InvalidInput):
    """A message that cannot be looked up (empty, far too long, no words at all); the message is
    the polite reply its sender gets (`retrieval.schemas.question_problem`)."""

    code = "bad_question"


class Unavailable(ParleyError):
    """A dependency (database, broker, vendor API) is not answering; try again later."""

    code = "unavailable"
    retryable = True


class RateLimited(ParleyError):
    """Too many requests from one caller (a sender, a tenant, an address); ``retry_after``: the
    seconds until trying again can succeed."""

    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class QuotaExceeded(ParleyError):
    """An action would pass a limit of the tenant's plan (`tenants.quotas`): nothing of it was done.

    ``resource`` names the limit (documents, stored_bytes, chunks, products, questions_per_day,
    questions_per_month, uploads_per_hour), ``limit`` its value, ``used`` what is stored or used
    now, ``requested`` what the action needed. ``rate``: a limit per period (questions, uploads),
    which passes with time (``retry_after`` seconds), rather than a size-like one that needs
    something removed or a bigger plan. The HTTP edge answers 429 for a rate and 413 otherwise,
    with these fields in the body beside ``error`` and ``detail``."""

    code = "quota_exceeded"

    def __init__(self, message: str, *, resource: str, limit: int, used: int, requested: int = 1,
                 rate: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.resource = resource
        self.limit = limit
        self.used = used
        self.requested = requested
        self.rate = rate
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        """The fields an HTTP answer or a ``--json`` output carries beside the code and the message."""
        return {"resource": self.resource, "limit": self.limit, "used": self.used, "requested": self.requested}


class RequestTimeout(ParleyError):
    """The client sent its request too slowly (a trickled body: `parley.http_server`)."""

    code = "request_timeout"


class TenantScopeError(ParleyError):
    """A query on tenant-owned rows was attempted without a tenant scope (a programming error)."""

    code = "tenant_scope"
