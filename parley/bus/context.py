"""Per-message logging context, kept in :mod:`parley.logging`'s context variable.

The consumer wrapper binds ``correlation_id``, ``message_id``, ``tenant_id`` and ``message_type``
around each handler, so every log line of that message carries them (the formatters of
:mod:`parley.logging` add the bound fields), and :meth:`parley.bus.Envelope.new` reads the bound
correlation id, so a message staged while handling a request or another message inherits it.
Plain ``contextvars`` underneath: each asyncio task sees its own values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from parley.logging import bound, current_context

FIELDS = ("correlation_id", "message_id", "tenant_id", "message_type")


@contextlib.contextmanager
def bind(**values: str | None) -> Iterator[None]:
    """Bind some of correlation_id / message_id / tenant_id / message_type for the block."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown context fields: {', '.join(sorted(unknown))}")
    with bound(**values):
        yield


def current() -> dict[str, str]:
    """The bus's bound values (only those set)."""
    ctx = current_context()
    return {name: ctx[name] for name in FIELDS if ctx.get(name) is not None}


def correlation_id() -> str | None:
    return current_context().get("correlation_id")
