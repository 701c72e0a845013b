"""Structured logging: one JSON object per line, with tenant, correlation and message ids bound
per request or message through context variables (they follow the work across `await`s)."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("parley_log_context", default={})

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Bind fields (tenant_id, correlation_id, message_id, ...) to every log line in this context."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


@contextlib.contextmanager
def silenced(name: str) -> Iterator[None]:
    """Mute a library's logger for a block whose failure the caller reports itself (e.g. aiormq's
    "error when creating transport" while a check probes a broker that is down)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def current_context() -> dict[str, Any]:
    return dict(_context.get())


class JsonFormatter(logging.Formatter):
    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "process": self.process_name,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_context.get())
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = f"{record.levelname[0]} {record.name}: {record.getMessage()}"
        ctx = _context.get()
        if ctx:
            base += " " + " ".join(f"{k}={v}" for k, v in ctx.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def configure_logging(*, process_name: str, level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(process_name) if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Never below WARNING, even at PARLEY_LOG_LEVEL=DEBUG: aiosqlite's DEBUG lines ("executing
    # functools.partial(<execute>, 'INSERT ...', ('<DM text>', ...))") carry every statement's
    # parameters, i.e. message and document text; SQLAlchemy's would too without hide_parameters.
    for noisy in ("aiormq", "aio_pika", "sqlalchemy.engine", "aiosqlite", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    quiet_protocol_errors()


class ProtocolErrorFilter(logging.Filter):
    """aiohttp logs each request its HTTP parser refuses (a control character in a header, a line
    too long, a bad method after the first request) as "Error handling request" at ERROR with the
    whole traceback, and anyone can send such requests: this turns each into one short WARNING line
    (the reason's first line, never the offending bytes). Other errors pass untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500:
            reason = (str(exc.message or "").strip().splitlines() or [type(exc).__name__])[0][:80]
            record.msg, record.args = "malformed HTTP request refused (%s): %s", (exc.code, reason)
            record.exc_info, record.exc_text = None, None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_protocol_errors() -> None:
    """Install `ProtocolErrorFilter` on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ProtocolErrorFilter) for f in server.filters):
        server.addFilter(ProtocolErrorFilter())
