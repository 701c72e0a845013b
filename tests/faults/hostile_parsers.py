"""Hostile parsers for the worker's sandbox, loaded through PARLEY_PARSER_PLUGINS (never imported by
the tests themselves). Each format is recognised by a magic prefix; the rest of the file is free, so
each test document can be unique (the same bytes twice would be one document).

- ``%FAULT-CRASH``: the parser segfaults (a retryable crash: bounded retries, then the DLQ);
- ``%FAULT-HANG``:  the parser never returns (killed at the worker's parse time limit);
- ``%FAULT-FLAKY``: crashes until a file ``hostile_parsers.fixed`` exists beside this one (the
  "fix" an operator makes before replaying the dead letter), then parses.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

from ingestion.documents.extract import register_format
from ingestion.documents.model import Block

FIXED = Path(__file__).with_name("hostile_parsers.fixed")


def _crash(data: bytes) -> list[Block]:
    ctypes.string_at(0)
    return []


def _hang(data: bytes) -> list[Block]:
    time.sleep(3600)
    return []


def _flaky(data: bytes) -> list[Block]:
    if not FIXED.exists():
        ctypes.string_at(0)
    return [Block("paragraph", data.decode("utf-8", "replace").removeprefix("%FAULT-FLAKY").strip() or "fixed")]


register_format("application/x-fault-crash", magic=b"%FAULT-CRASH", extract=_crash)
register_format("application/x-fault-hang", magic=b"%FAULT-HANG", extract=_hang)
register_format("application/x-fault-flaky", magic=b"%FAULT-FLAKY", extract=_flaky)
