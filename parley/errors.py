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


class RequestTimeout(ParleyError):
    """The client sent its request too slowly (a trickled body: `parley.http_server`)."""

    code = "request_timeout"


class TenantScopeError(ParleyError):
    """A query on tenant-owned rows was attempted without a tenant scope (a programming error)."""

    code = "tenant_scope"
