"""Hostile parsers, loaded into the sandbox child only (`plugins=[this file]`).

Each registers a synthetic format recognised by a magic prefix; the test sends bytes that
start with it. Nothing here is imported by the test process itself.
"""

from __future__ import annotations

import ctypes
import os
import time

from ingestion.documents.extract import register_format
from ingestion.documents.model import Block


def _hang(data: bytes) -> list[Block]:
    time.sleep(3600)
    return []


def _spin(data: bytes) -> list[Block]:
    while True:
        pass


def _balloon(data: bytes) -> list[Block]:
    hoard = []
    while True:
        hoard.append(bytearray(32 * 1024 * 1024))


def _segfault(data: bytes) -> list[Block]:
    ctypes.string_at(0)
    return []


def _exit(data: bytes) -> list[Block]:
    os._exit(3)


def _chatty(data: bytes) -> list[Block]:
    print("a parser that prints to stdout")
    return [Block("paragraph", "the real answer")]


def _environment(data: bytes) -> list[Block]:
    return [Block("paragraph", " ".join(sorted(os.environ)))]


def _whoami(data: bytes) -> list[Block]:
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    return [Block("paragraph", f"{os.getpid()} {os.getppid()} {nice}")]


_remembered: list[bytes] = []


def _remember(data: bytes) -> list[Block]:
    """Leaves state behind (a global, an environment variable, a new format); says what it found."""
    found = f"remembered={len(_remembered)} env={os.environ.get('PARLEY_TEST_LEFTOVER', '-')}"
    _remembered.append(data)
    os.environ["PARLEY_TEST_LEFTOVER"] = "set"
    register_format("application/x-test-leftover", magic=b"%TEST-LEFTOVER", extract=_leftover)
    return [Block("paragraph", found)]


def _leftover(data: bytes) -> list[Block]:
    return [Block("paragraph", "a format registered by an earlier document")]


def _open_fds(data: bytes) -> list[Block]:
    """`fd=target` for every fd the parser holds (the listing's own fd is closed by then)."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            found.append(f"{name}={os.readlink(f'/proc/self/fd/{name}')}")
        except OSError:
            pass
    return [Block("paragraph", ";".join(found))]


register_format("application/x-test-hang", magic=b"%TEST-HANG", extract=_hang)
register_format("application/x-test-spin", magic=b"%TEST-SPIN", extract=_spin)
register_format("application/x-test-balloon", magic=b"%TEST-BALLOON", extract=_balloon)
register_format("application/x-test-segfault", magic=b"%TEST-SEGFAULT", extract=_segfault)
register_format("application/x-test-exit", magic=b"%TEST-EXIT", extract=_exit)
register_format("application/x-test-chatty", magic=b"%TEST-CHATTY", extract=_chatty)
register_format("application/x-test-environment", magic=b"%TEST-ENVIRONMENT", extract=_environment)
register_format("application/x-test-whoami", magic=b"%TEST-WHOAMI", extract=_whoami)
register_format("application/x-test-remember", magic=b"%TEST-REMEMBER", extract=_remember)
register_format("application/x-test-fds", magic=b"%TEST-FDS", extract=_open_fds)
