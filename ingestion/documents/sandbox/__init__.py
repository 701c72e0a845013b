"""Sniff + extract untrusted bytes in a fresh, limited process per document.

Every document is parsed in a process of its own that exits afterwards, so a parser that hangs,
leaks, crashes or is subverted takes nothing else down and leaves no state behind:
- wall time: the parent has the process group killed at `time_limit_s`
  -> SandboxFailure("parse_timeout", "parsing took longer than 30 s");
- CPU time: RLIMIT_CPU in the child, same report (a second line of defence);
- memory: RLIMIT_AS in the child, `memory_limit_mb` on top of what it maps when it starts
  -> SandboxFailure("memory_limit", "document needs more than 512 MB to parse");
- crash (signal, os._exit, garbage on stdout) -> SandboxFailure("parser_crashed", ...).
The child also gets no core dumps, no file writes, no fds but its stdin/stdout/stderr, and a
scrubbed environment (no API keys or database URLs). Results come back as JSON, never pickle.
It runs at the caller's niceness: lower it in the worker, not here.

Where the child comes from. Starting a fresh interpreter and importing the parsers costs
100-315 ms of CPU per document against 1-20 ms for the parse itself (pypdf alone pulls in
`cryptography`). So each worker process keeps a fork server (`zygote.py`, one per set of
`plugins`): a helper started from a clean interpreter (subprocess, scrubbed environment, no
inherited fds, its own process group) that has imported every parser and warmed them up once.
For each document it forks a grandchild that applies the limits, parses, writes its JSON answer
to a pipe the caller passed and exits: a fresh copy of the preloaded address space per
document (no process is ever reused, so one tenant's document cannot see another's), at the
price of a fork (fork + copy-on-write + exit of a ~50 MB image: ~10-25 ms of CPU per
document on the 2-core dev box, measured around `extract_document`). The zygote tells us the
grandchild's pid and, after reaping it, its exit status; we ask the zygote to kill it (it is
the only one that reaps, so a recycled pid is never signalled). If the zygote dies it is replaced on the next call (a call that was in
flight reports `parser_crashed`, retryable); if it cannot be started, calls fall back to a
new interpreter per document (`child.main`, the pre-fork-server path) and retry the fork
server a minute later. Grandchildren run concurrently (one per call in flight).
The fork servers exit when this process closes them (`aclose()`, or at exit) or dies.

The modules: `client.py` (the caller's side, in the worker: `extract_document`, the fork servers
this process keeps, the new-interpreter fallback, the limits' reports), `forkserver.py` (our
handle on one zygote: start it, send it a document, read the answer), `zygote.py` (the fork
server process itself), `child.py` (the parse, in a grandchild or a new interpreter). Plugin
files (`plugins`, PARLEY_PARSER_PLUGINS) are loaded into `parley.formats` by the zygote and by
a new interpreter before they parse.

The public names are imported lazily: the child and the zygote are started as modules of this
package, and must not pay for the client's imports (asyncio alone: ~100 ms per interpreter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ingestion.documents.sandbox.client import (
        DEFAULT_MEMORY_LIMIT_MB,
        DEFAULT_TIME_LIMIT_S,
        Source,
        aclose,
        extract_document,
        extract_document_sync,
    )

__all__ = [
    "DEFAULT_MEMORY_LIMIT_MB",
    "DEFAULT_TIME_LIMIT_S",
    "Source",
    "aclose",
    "extract_document",
    "extract_document_sync",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ingestion.documents.sandbox import client

        value = globals()[name] = getattr(client, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
