"""Structured logging: one JSON object per line (or one readable, coloured line per event on a
terminal: see `wants_json`), with tenant, correlation and message ids bound per request or message
through context variables (they follow the work across `await`s)."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import os
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
    """One readable line per event: ``15:47:18.123 INFO  gateway  bot.app: message  tenant_id=… key=…``
    (the bound context and the record's extra fields as key=value), the traceback below it. With
    ``colour`` the level, the process and the keys are coloured (ANSI) for a terminal."""

    _LEVEL_COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31", "CRITICAL": "1;31"}

    def __init__(self, process_name: str = "", *, colour: bool = False) -> None:
        super().__init__()
        self.process_name = process_name
        self.colour = colour

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        level = self._paint(f"{record.levelname:<7}", self._LEVEL_COLOURS.get(record.levelname, "0"))
        who = f"{self._paint(self.process_name, '36')} " if self.process_name else ""
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            message = self._paint(message, "1")
        fields = {**_context.get(), **{k: v for k, v in record.__dict__.items()
                                       if k not in _RESERVED and not k.startswith("_")}}
        line = f"{self._paint(ts, '2')} {level} {who}{self._paint(record.name + ':', '2')} {message}"
        if fields:
            line += "  " + " ".join(f"{self._paint(k + '=', '2')}{_shown(v)}" for k, v in fields.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _shown(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if not text or any(c.isspace() for c in text) else text


def wants_json(setting: bool | None, stream: Any = None) -> bool:
    """JSON lines or readable ones: ``setting`` (PARLEY_LOG_JSON) when it is true or false; unset,
    readable when ``stream`` (stderr) is a terminal, JSON otherwise (a pipe, a file, a container log)."""
    if setting is not None:
        return setting
    stream = sys.stderr if stream is None else stream
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return True


def wants_colour(stream: Any = None) -> bool:
    """ANSI colours only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    stream = sys.stderr if stream is None else stream
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def make_formatter(process_name: str, *, json_lines: bool | None, stream: Any = None) -> logging.Formatter:
    """The formatter `configure_logging` installs for ``stream`` (see `wants_json`)."""
    if wants_json(json_lines, stream):
        return JsonFormatter(process_name)
    return TextFormatter(process_name, colour=wants_colour(stream))


def configure_logging(*, process_name: str, level: str = "INFO", json_lines: bool | None = None) -> None:
    """Log to stderr: JSON lines or readable ones as `wants_json` decides (``json_lines`` is
    PARLEY_LOG_JSON: None means "decide by the terminal")."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(process_name, json_lines=json_lines, stream=sys.stderr))
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
