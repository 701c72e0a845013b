"""The sandbox, driven for real: hostile parsers are injected through the `plugins` seam (a file
the child loads and that registers synthetic formats), never by patching our code."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ingestion.documents.errors import DocumentUnreadable, SandboxFailure, UnsupportedDocument
from ingestion.documents.sandbox import extract_document, extract_document_sync
from tests.ingestion.samples import zip_bomb_docx

HOSTILE = [Path(__file__).with_name("hostile_formats.py")]


async def healthy_call_still_works() -> None:
    doc = await extract_document(b"Still alive.", filename="ok.txt", time_limit_s=20)
    assert doc.text == "Still alive."


async def test_text_round_trip() -> None:
    doc = await extract_document(b"# Title\n\nHello sandbox.", filename="a.md")
    assert doc.mime_type == "text/markdown"
    assert [(b.kind, b.text) for b in doc.blocks] == [("heading", "Title"), ("paragraph", "Hello sandbox.")]


async def test_domain_errors_cross_the_boundary_with_their_type() -> None:
    with pytest.raises(UnsupportedDocument) as info:
        await extract_document(b"\x89PNG\r\n\x1a\n" + bytes(64), filename="cat.png")
    assert info.value.code == "unsupported_type"
    assert info.value.message.startswith("this file is a PNG image")


async def test_zip_bomb_is_refused_in_the_child() -> None:
    with pytest.raises(DocumentUnreadable) as info:
        await extract_document(zip_bomb_docx(expanded_mb=20), filename="bomb.docx")
    assert info.value.code == "archive_too_large"


async def test_hanging_parser_is_killed_and_reported() -> None:
    with pytest.raises(SandboxFailure) as info:
        await extract_document(b"%TEST-HANG", time_limit_s=2, plugins=HOSTILE)
    assert (info.value.code, info.value.message) == ("parse_timeout", "parsing took longer than 2 s")
    assert info.value.retryable is False
    await healthy_call_still_works()


async def test_spinning_parser_is_reported() -> None:
    with pytest.raises(SandboxFailure) as info:
        await extract_document(b"%TEST-SPIN", time_limit_s=2, plugins=HOSTILE)
    assert (info.value.code, info.value.message) == ("parse_timeout", "parsing took longer than 2 s")
    await healthy_call_still_works()


async def test_memory_blow_up_is_reported() -> None:
    with pytest.raises(SandboxFailure) as info:
        await extract_document(b"%TEST-BALLOON", memory_limit_mb=128, time_limit_s=30, plugins=HOSTILE)
    assert (info.value.code, info.value.message) == ("memory_limit", "document needs more than 128 MB to parse")
    await healthy_call_still_works()


async def test_segfault_is_reported() -> None:
    with pytest.raises(SandboxFailure) as info:
        await extract_document(b"%TEST-SEGFAULT", plugins=HOSTILE)
    assert (info.value.code, info.value.message) == ("parser_crashed", "the document parser crashed (SIGSEGV)")
    assert info.value.retryable is True
    await healthy_call_still_works()


async def test_sudden_exit_is_reported() -> None:
    with pytest.raises(SandboxFailure) as info:
        await extract_document(b"%TEST-EXIT", plugins=HOSTILE)
    assert info.value.code == "parser_crashed"
    assert info.value.message == "the document parser exited unexpectedly (exit status 3)"
    await healthy_call_still_works()


async def test_parser_printing_to_stdout_does_not_corrupt_the_answer() -> None:
    doc = await extract_document(b"%TEST-CHATTY", plugins=HOSTILE)
    assert doc.text == "the real answer"


async def test_child_does_not_inherit_the_workers_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-leak")
    doc = await extract_document(b"%TEST-ENVIRONMENT", plugins=HOSTILE)
    assert "OPENAI_API_KEY" not in doc.text.split()
    assert "PYTHONPATH" in doc.text.split()


def _sandbox_children() -> list[int]:
    """Our parser processes: children running `sandbox.child`, or grandchildren under a fork server."""
    processes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(status.split("\nPPid:\t", 1)[1].split("\n", 1)[0])
        processes.append((int(entry.name), ppid, cmdline))
    me = os.getpid()
    zygotes = {pid for pid, ppid, cmd in processes if ppid == me and b"documents.sandbox.zygote import" in cmd}
    return [
        pid
        for pid, ppid, cmd in processes
        if (ppid == me and b"ingestion.documents.sandbox.child import main" in cmd) or ppid in zygotes
    ]


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
async def test_cancelling_the_call_kills_the_child() -> None:
    task = asyncio.create_task(extract_document(b"%TEST-HANG", time_limit_s=120, plugins=HOSTILE))
    for _ in range(600):  # wait (outcome, not duration) until the child exists
        if _sandbox_children():
            break
        await asyncio.sleep(0.05)
    assert _sandbox_children(), "the sandbox child never started"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _sandbox_children() == []


async def test_concurrent_calls_get_their_own_answers() -> None:
    texts = [f"Document number {n}." for n in range(4)]
    calls = (extract_document(t.encode(), filename=f"{n}.txt") for n, t in enumerate(texts))
    docs = await asyncio.gather(*calls)
    assert [d.text for d in docs] == texts


def test_sync_api_and_path_source(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text("# Notes\n\n- one\n- two\n")
    doc = extract_document_sync(path)
    assert doc.mime_type == "text/markdown"
    assert [b.kind for b in doc.blocks] == ["heading", "list_item", "list_item"]


def test_sync_api_reports_a_hang() -> None:
    with pytest.raises(SandboxFailure) as info:
        extract_document_sync(b"%TEST-HANG", time_limit_s=2, plugins=HOSTILE)
    assert info.value.message == "parsing took longer than 2 s"
    assert extract_document_sync(b"fine", filename="f.txt").text == "fine"


def test_missing_path_is_a_caller_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        extract_document_sync(tmp_path / "nope.pdf")


@pytest.mark.shared
async def test_real_files_through_the_sandbox(shared_docs: Path) -> None:
    doc = await extract_document(shared_docs / "pdf/pypdf__crazyones.pdf")
    assert doc.page_count == 1 and "The misfits. The rebels." in doc.text
    with pytest.raises(DocumentUnreadable) as info:
        await extract_document(shared_docs / "pdf/pdfminer__encryption_aes-256.pdf")
    assert (info.value.code, info.value.message) == ("pdf_encrypted", "PDF is password-protected")
    docx = await extract_document(shared_docs / "docx/python-docx__test.docx")
    assert docx.blocks[0].kind == "heading"
