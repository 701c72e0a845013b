"""What a failed Weaviate call means for Parley: retry later, give up with a reason, or "no such tenant".

The client raises its own exceptions (and lets some httpx and gRPC ones through); the edges only
understand :class:`~parley.errors.ParleyError`. :func:`translated` turns every failure of a call
into one of:

- :class:`VectorIndexUnavailable` (retryable: the consumer retries with backoff, HTTP answers 503)
  for what can pass: the server unreachable or starting, a timeout, gRPC ``UNAVAILABLE``, a 5xx or
  429, and anything not recognised;
- :class:`VectorIndexUnauthorized` (retryable too: keys are rotated on the server and in our
  environment at different moments) for a refused or missing API key;
- :class:`VectorIndexRejected` (permanent: dead-lettered at once, HTTP 500) for what the server will
  refuse again: a vector of another dimension than the tenant's index holds (after a change of the
  embedding model), a property of the wrong type, input the client itself refuses;
- :class:`TenantNotFound` for "tenant not found" (another process removed the tenant): readers
  treat it as an empty tenant.

Weaviate reports most data errors as gRPC status ``UNKNOWN`` with a text, and the client keeps
only that text for searches, so the permanent cases are recognised by the server's own wording.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import grpc
import httpx
from weaviate.exceptions import (
    AuthenticationFailedError,
    InsufficientPermissionsError,
    SchemaValidationError,
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateClosedClientError,
    WeaviateConnectionError,
    WeaviateGRPCUnavailableError,
    WeaviateInsertInvalidPropertyError,
    WeaviateInvalidInputError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

from parley.errors import NotFound, ParleyError, Unavailable

#: The server's wording for a vector whose length differs from the index's (hnsw, flat, quantizers, queue).
DIMENSION_MARKERS = (
    "vector dimensions do not match", "new node has a vector with length", "vector lengths don't match",
    "inconsistent vector lengths",
)
#: The server's wording for an object or query it refuses as such (schema and property validation).
VALIDATION_MARKERS = (
    "no such prop", "invalid text property", "invalid text array property", "invalid object", "invalid property",
    "invalid uuid", "not a string", "conflict for property", "data type",
)
TENANT_MARKERS = ("tenant not found", "no tenant found with key")
AUTH_MARKERS = ("unauthenticated", "anonymous access not enabled", "invalid api key", "api key")


class VectorIndexUnavailable(Unavailable):
    code = "vector_index_unavailable"


class VectorIndexUnauthorized(Unavailable):
    code = "vector_index_unauthorized"


class VectorIndexRejected(ParleyError):
    """The server refuses this input and will refuse it again."""

    code = "vector_index_rejected"
    retryable = False


class TenantNotFound(NotFound):
    code = "vector_tenant_not_found"


def _has(text: str, markers: Iterable[str]) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in markers)


def rejected_or_unavailable(what: str, reasons: Iterable[str]) -> ParleyError:
    """The error for server-side reasons (a batch's per-object errors, a query's message)."""
    reasons = [r for r in reasons if r]
    first = reasons[0] if reasons else "no reason given"
    if any(_has(r, DIMENSION_MARKERS) for r in reasons):
        return VectorIndexRejected(
            f"{what}: Weaviate refused a vector of another dimension than the index holds ({first}); after a change "
            "of the embedding model delete the tenant's index and reindex (`parley reindex --tenant T`)",
            code="vector_dimension_mismatch",
        )
    if any(_has(r, VALIDATION_MARKERS) for r in reasons):
        return VectorIndexRejected(f"{what}: Weaviate refused the data: {first}")
    if any(_has(r, TENANT_MARKERS) for r in reasons):
        return TenantNotFound(f"{what}: {first}")
    if any(_has(r, AUTH_MARKERS) for r in reasons):
        return _unauthorized(what, first)
    return VectorIndexUnavailable(f"{what}: Weaviate failed: {first}")


def _unauthorized(what: str, detail: str) -> ParleyError:
    return VectorIndexUnauthorized(
        f"{what}: Weaviate refused the credentials ({detail}); check PARLEY_WEAVIATE_API_KEY"
    )


def translate(exc: BaseException, what: str) -> ParleyError:
    """The :class:`ParleyError` for one failed client call doing ``what`` ("search tenant T", ...)."""
    text = _first_line(exc)
    if isinstance(exc, InsufficientPermissionsError):
        return VectorIndexUnauthorized(f"{what}: Weaviate denied the permission ({text}); the API key's role "
                                       "needs read and write access to the collection and its tenants")
    if isinstance(exc, AuthenticationFailedError):
        return _unauthorized(what, text)
    if isinstance(exc, UnexpectedStatusCodeError):
        status = exc.status_code
        if status == 401:
            return _unauthorized(what, text)
        if status in (400, 422):
            return rejected_or_unavailable(what, [text]) if _has(text, TENANT_MARKERS) else VectorIndexRejected(
                f"{what}: Weaviate refused the request: {text}")
        return rejected_or_unavailable(what, [text])
    if isinstance(exc, (WeaviateInvalidInputError, SchemaValidationError, WeaviateInsertInvalidPropertyError)):
        return VectorIndexRejected(f"{what}: {text}")
    if isinstance(exc, WeaviateGRPCUnavailableError):
        cause = exc.__cause__
        seen = f"{cause.code().name}: {cause.details()}" if isinstance(cause, grpc.aio.AioRpcError) else "not serving"
        return VectorIndexUnavailable(f"{what}: the gRPC health check failed ({seen}); every write and search goes "
                                      "over gRPC (PARLEY_WEAVIATE_GRPC_URL)")
    if isinstance(exc, WeaviateStartUpError) and isinstance(exc.__cause__, UnexpectedStatusCodeError):
        return translate(exc.__cause__, what)
    if isinstance(exc, (WeaviateStartUpError, WeaviateConnectionError, WeaviateTimeoutError, WeaviateClosedClientError)):
        return VectorIndexUnavailable(f"{what}: Weaviate is not reachable: {text}")
    if isinstance(exc, WeaviateBaseError):
        return rejected_or_unavailable(what, [text])
    if isinstance(exc, (httpx.HTTPError, grpc.RpcError, OSError, TimeoutError)):
        return VectorIndexUnavailable(f"{what}: Weaviate is not reachable: {text}")
    raise TypeError(f"not a Weaviate failure: {exc!r}")


#: What :func:`translated` turns into a :class:`ParleyError`; anything else (our bugs) passes unchanged.
CLIENT_FAILURES = (WeaviateBaseError, httpx.HTTPError, grpc.RpcError, OSError, TimeoutError)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """``with translated("search tenant T"): await ...``: client failures leave as ParleyErrors."""
    try:
        yield
    except CLIENT_FAILURES as exc:
        raise translate(exc, what) from exc


def _first_line(exc: BaseException) -> str:
    text = (getattr(exc, "message", None) or str(exc) or type(exc).__name__).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = " ".join(lines)
    return joined[:500] if joined else type(exc).__name__
