"""The sandbox's fork server, driven for real through the `plugins` seam: every document gets a
fresh grandchild of one preloaded zygote, nothing survives between documents, and a dying or
unstartable zygote is replaced or bypassed without the caller noticing.

No timings are asserted: loops wait for an outcome (a process appearing or disappearing)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import pytest

from ingestion.documents import sandbox
from ingestion.documents.errors import SandboxFailure
from ingestion.documents.sandbox import extract_document, extract_document_sync
from tests.ingestion.samples import no_fork_server_plugin

HOSTILE = [Path(__file__).with_name("hostile_formats.py")]

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")


class Who(NamedTuple):
    pid: int
    ppid: int
    nice: int


async def whoami() -> Who:
    doc = await extract_document(b"%TEST-WHOAMI", plugins=HOSTILE)
    return Who(*map(int, doc.text.split()))


def whoami_sync() -> Who:
    return Who(*map(int, extract_document_sync(b"%TEST-WHOAMI", plugins=HOSTILE).text.split()))


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("\nPPid:\t", 1)[1].split("\n", 1)[0])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if parent_of(int(entry.name)) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie waits for a reaper we do not control)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    for _ in range(1200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_each_document_gets_a_fresh_child_of_one_preloaded_fork_server() -> None:
    first, second = await whoami(), await whoami()
    assert first.pid != second.pid  # no process is reused across documents
    assert first.ppid == second.ppid != os.getpid()  # both forked by the same zygote...
    zygote = first.ppid
    assert parent_of(zygote) == os.getpid()  # ...which is our child
    assert b"ingestion.documents.sandbox.zygote import main" in Path(f"/proc/{zygote}/cmdline").read_bytes()
    assert children_of(zygote) == []  # the grandchildren were reaped before we got the answer


async def test_state_left_by_one_parse_is_not_seen_by_the_next() -> None:
    first = await extract_document(b"%TEST-REMEMBER one", plugins=HOSTILE)
    second = await extract_document(b"%TEST-REMEMBER two", plugins=HOSTILE)
    assert first.text == second.text == "remembered=0 env=-"
    # the format the first parse registered is gone too: these bytes are plain text again
    plain = await extract_document(b"%TEST-LEFTOVER is just text", filename="t.txt", plugins=HOSTILE)
    assert (plain.mime_type, plain.text) == ("text/plain", "%TEST-LEFTOVER is just text")


async def test_the_parser_holds_no_fd_but_its_own() -> None:
    with socket.create_server(("127.0.0.1", 0)):  # stands in for the worker's db/broker sockets
        doc = await extract_document(b"%TEST-FDS", plugins=HOSTILE)
    fds = dict(item.split("=", 1) for item in doc.text.split(";"))
    assert set(fds) <= {"0", "1", "2", "3"}  # stdin, stdout (-> log), log, the answer pipe
    assert fds["0"].startswith("/memfd:parley-document")
    assert not [target for target in fds.values() if target.startswith("socket:")]


async def test_a_hung_parse_is_killed_and_the_fork_server_carries_on() -> None:
    before = await whoami()
    with pytest.raises(SandboxFailure) as info:
        await extract_document(b"%TEST-HANG", time_limit_s=2, plugins=HOSTILE)
    assert (info.value.code, info.value.message) == ("parse_timeout", "parsing took longer than 2 s")
    assert children_of(before.ppid) == []  # killed and reaped before the call returned
    after = await whoami()
    assert after.ppid == before.ppid


async def test_a_hung_parse_does_not_hold_up_other_documents() -> None:
    hung = asyncio.create_task(extract_document(b"%TEST-HANG", time_limit_s=300, plugins=HOSTILE))
    try:
        who = await whoami()
        await until(lambda: len(children_of(who.ppid)) == 1, "the hung grandchild runs")
        assert not hung.done()
    finally:
        hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung
    assert children_of(who.ppid) == []


async def test_crashes_are_reported_and_the_fork_server_carries_on() -> None:
    before = await whoami()
    with pytest.raises(SandboxFailure) as info:
        await extract_document(b"%TEST-SEGFAULT", plugins=HOSTILE)
    assert (info.value.code, info.value.message) == ("parser_crashed", "the document parser crashed (SIGSEGV)")
    with pytest.raises(SandboxFailure) as info:
        await extract_document(b"%TEST-EXIT", plugins=HOSTILE)
    assert info.value.message == "the document parser exited unexpectedly (exit status 3)"
    with pytest.raises(SandboxFailure) as info:
        await extract_document(b"%TEST-BALLOON", memory_limit_mb=128, plugins=HOSTILE)
    assert (info.value.code, info.value.message) == ("memory_limit", "document needs more than 128 MB to parse")
    after = await whoami()
    assert after.ppid == before.ppid


async def test_a_fork_server_killed_between_calls_is_replaced() -> None:
    before = await whoami()
    os.kill(before.ppid, signal.SIGKILL)
    after = await whoami()
    assert after.ppid != before.ppid and parent_of(after.ppid) == os.getpid()
    assert not running(before.ppid)
    os.kill(after.ppid, signal.SIGKILL)
    again = await asyncio.to_thread(whoami_sync)
    assert again.ppid not in (before.ppid, after.ppid) and parent_of(again.ppid) == os.getpid()


async def test_a_fork_server_dying_mid_parse_is_a_retryable_crash() -> None:
    zygote = (await whoami()).ppid
    hung = asyncio.create_task(extract_document(b"%TEST-HANG", time_limit_s=300, plugins=HOSTILE))
    await until(lambda: children_of(zygote), "the hung grandchild runs")
    [grandchild] = children_of(zygote)
    os.kill(zygote, signal.SIGKILL)
    with pytest.raises(SandboxFailure) as info:
        await hung
    assert info.value.code == "parser_crashed" and info.value.retryable
    assert info.value.message == "the document parser was lost (its fork server exited)"
    await until(lambda: not running(grandchild), "the orphaned grandchild dies with its zygote")
    assert (await whoami()).ppid != zygote


async def test_without_a_fork_server_each_document_gets_a_new_interpreter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = no_fork_server_plugin(
        tmp_path / "refuses_fork_servers.py",
        "register_format('application/x-test-parent', magic=b'%TEST-PARENT',\n"
        "                extract=lambda data: [Block('paragraph', str(os.getppid()))])\n"
    )
    with caplog.at_level(logging.WARNING, logger="ingestion.documents.sandbox"):
        doc = await extract_document(b"%TEST-PARENT", plugins=[plugin])
    assert int(doc.text) == os.getpid()  # our own child: the spawn-per-call path
    assert "sandbox fork server did not start" in caplog.text
    assert int(extract_document_sync(b"%TEST-PARENT", plugins=[plugin]).text) == os.getpid()
    with pytest.raises(SandboxFailure) as info:  # and its limits still hold
        await extract_document(b"%TEST-HANG", time_limit_s=2, plugins=[plugin, *HOSTILE])
    assert info.value.code == "parse_timeout"


def test_grandchildren_run_at_the_callers_niceness() -> None:
    base = whoami_sync()  # the zygote starts (or runs) at our niceness
    assert base.nice == os.getpriority(os.PRIO_PROCESS, 0)
    if base.nice >= 19:
        pytest.skip("already at the lowest priority")
    seen: list[Who] = []

    def nicer_thread() -> None:
        os.nice(1)  # per thread on Linux: the test process itself keeps its priority
        seen.append(whoami_sync())

    thread = threading.Thread(target=nicer_thread)
    thread.start()
    thread.join()
    assert seen[0].nice == base.nice + 1 and seen[0].ppid == base.ppid


async def test_aclose_stops_the_fork_servers_and_the_next_call_starts_one() -> None:
    zygote = (await whoami()).ppid
    await sandbox.aclose()
    assert not running(zygote)
    assert (await whoami()).ppid not in (zygote, os.getpid())


async def test_nothing_outlives_a_worker_killed_mid_parse() -> None:
    script = (
        "import asyncio, os, signal, sys\n"
        "from ingestion.documents.sandbox import extract_document\n"
        "async def main():\n"
        f"    hung = asyncio.create_task(extract_document(b'%TEST-HANG', time_limit_s=300, plugins=[{str(HOSTILE[0])!r}]))\n"
        "    while True:\n"
        f"        who = await extract_document(b'%TEST-WHOAMI', plugins=[{str(HOSTILE[0])!r}])\n"
        "        zygote = int(who.text.split()[1])\n"
        "        kids = [e for e in os.listdir('/proc') if e.isdigit() and os.path.exists(f'/proc/{e}/status')\n"
        "                and f'\\nPPid:\\t{zygote}\\n' in open(f'/proc/{e}/status').read()]\n"
        "        if kids:\n"
        "            print(zygote, *kids, flush=True)\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n"
        "        await asyncio.sleep(0.05)\n"
        "asyncio.run(main())\n"
    )
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2]
    )
    out, _ = await worker.communicate()
    assert worker.returncode == -signal.SIGKILL
    survivors = [int(pid) for pid in out.split()]
    assert len(survivors) >= 2  # the zygote and the hung grandchild
    await until(lambda: not any(running(pid) for pid in survivors), "the zygote and its grandchild exit")
