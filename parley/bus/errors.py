"""Retryable vs permanent failures, as the consumer wrapper sees them.

Handlers raise domain errors; this maps them. A :class:`~parley.errors.ParleyError` is retried iff
its ``retryable`` is true (``Unavailable`` is; ``InvalidInput``, ``NotFound`` ... are not). An
invalid payload is permanent. Any other exception is treated as transient (a driver timeout, a
vendor's 5xx) and retried, but only up to ``max_attempts`` like everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import pydantic

from parley.errors import ParleyError

_MAX_REASON = 2000
#: How the reason of a retryable failure that ran out of attempts begins (:meth:`Failure.exhausted`):
#: the dead letters of those may succeed when replayed; every other dead letter failed for good.
EXHAUSTED_PREFIX = "gave up after "
#: Appended to the reason when the domain's ``on_dead_letter`` hook failed too (a bug of ours, not
#: of the message: replaying may succeed once it is fixed).
HOOK_FAILED_NOTE = "(and the on_dead_letter hook failed)"


class Retryable(ParleyError):
    """Transient: the same message may succeed later (database unreachable, vendor 5xx, rate limit)."""

    code = "retryable"
    retryable = True


class Permanent(ParleyError):
    """Trying again cannot help (unreadable file, unknown tenant): dead-letter at once."""

    code = "permanent"
    retryable = False


@dataclass(frozen=True)
class Failure:
    """Why one attempt failed: a stable code and a reason a person can read."""

    code: str
    reason: str
    retryable: bool

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        if isinstance(exc, ParleyError):
            return cls(exc.code, _clip(f"{exc.code}: {exc.message}"), exc.retryable)
        if isinstance(exc, pydantic.ValidationError):
            return cls("invalid_payload", _clip(f"invalid_payload: {exc}"), False)
        return cls("unexpected", _clip(f"{type(exc).__name__}: {exc}"), True)

    def exhausted(self, attempts: int) -> Failure:
        return Failure(self.code, _clip(f"{EXHAUSTED_PREFIX}{attempts} attempts; last error: {self.reason}"), False)

    def human_reason(self) -> str:
        """The reason for a person: 'PDF is password-protected', not 'pdf_encrypted: PDF is
        password-protected' nor 'gave up after 5 attempts; last error: ...'."""
        reason = self.reason
        marker = "last error: "
        if marker in reason:
            reason = reason.split(marker, 1)[1]
        prefix = f"{self.code}: "
        return reason[len(prefix):] if reason.startswith(prefix) else reason


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
