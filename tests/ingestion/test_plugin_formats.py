"""Formats added by a parser plugin (PARLEY_PARSER_PLUGINS): one registry, `parley.formats`, that the
plugin fills with its format and parser, in the sandbox (which parses with it) and in any process
that loads it (which then accepts it); and the real document worker indexing such a file that
came in through `parley ingest`."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from ingestion.documents.errors import UnsupportedDocument
from ingestion.documents.extract import register_format
from ingestion.documents.sandbox import extract_document
from knowledge.models import DocumentStatus
from parley import formats
from parley.errors import ConfigurationError
from tests.ingestion.test_document_worker import _parley, _state, stack  # noqa: F401 - `stack` is a fixture
from tests.support import services
from tests.support.plugins import NOTE_LABEL, NOTE_MIME, write_note_plugin

NOTES = b"Opening hours: Monday to Friday, 9:00 to 17:00.\nReturns: within 30 days, with the receipt.\n"


@pytest.fixture
def note_plugin(tmp_path: Path) -> Path:
    return write_note_plugin(tmp_path / "plugins")


@pytest.fixture
def worker_env(note_plugin: Path) -> dict[str, str]:
    """The `stack` fixture's worker loads the note plugin."""
    return {"PARLEY_PARSER_PLUGINS": str(note_plugin)}


def test_loading_a_plugin_fills_a_registry_of_its_own(note_plugin: Path) -> None:
    # When the plugin is loaded (as the gateway does at start-up), twice
    loaded = formats.load_format_plugins([note_plugin])
    again = formats.load_format_plugins([note_plugin], into=loaded)
    # Then that registry claims .note files by name, names them in what it accepts, once
    assert again is loaded
    assert loaded.claimed("Shop.NOTE", "application/octet-stream").mime_type == NOTE_MIME
    assert [f.mime_type for f in loaded].count(NOTE_MIME) == 1
    assert loaded.describe() == f"PDF, Word (.docx), text, Markdown, HTML and {NOTE_LABEL} (or a .zip of them)"
    assert ".note" in loaded.accept().split(",")
    # And this process's own registry is as it was: only the built-in formats
    assert formats.registry().claimed("shop.note", None) is None
    assert formats.registry().describe() == "PDF, Word (.docx), text, Markdown and HTML (or a .zip of them)"


def test_a_plugin_that_is_not_there_or_names_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        formats.load_format_plugins([tmp_path / "missing.py"])
    with pytest.raises(ValueError, match="at least 4 bytes"):
        register_format("application/x-short", magic=b"%x", extract=lambda data: [])
    with pytest.raises(ValueError, match="magic prefix, file extensions or MIME aliases"):
        register_format("application/x-unclaimed", extract=lambda data: [])


async def test_the_sandbox_parses_a_plugin_format_with_the_plugins_parser(note_plugin: Path) -> None:
    # When a .note file is parsed with the plugin loaded
    doc = await extract_document(NOTES, filename="shop.note", plugins=[note_plugin])
    # Then the plugin's parser read it: a heading over each topic
    assert doc.mime_type == NOTE_MIME
    assert [(b.kind, b.text) for b in doc.blocks] == [
        ("heading", "Opening hours"), ("paragraph", "Monday to Friday, 9:00 to 17:00."),
        ("heading", "Returns"), ("paragraph", "within 30 days, with the receipt."),
    ]
    # And the same bytes under another name are plain text: the claim is the extension's
    plain = await extract_document(NOTES, filename="shop.txt", plugins=[note_plugin])
    assert plain.mime_type == "text/plain"


async def test_the_content_still_decides_and_a_refusal_names_the_plugin_format(note_plugin: Path) -> None:
    # When an image named like a note is parsed, with and without the plugin
    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    with pytest.raises(UnsupportedDocument) as with_plugin:
        await extract_document(png, filename="photo.note", plugins=[note_plugin])
    with pytest.raises(UnsupportedDocument) as without:
        await extract_document(png, filename="photo.png")
    # Then it is refused as the image it is, and what is supported includes the plugin's format
    assert with_plugin.value.code == "unsupported_type"
    assert with_plugin.value.message == (
        f"this file is a PNG image; only PDF, Word (.docx), text, Markdown, HTML and {NOTE_LABEL} documents are supported")
    assert without.value.message == (
        "this file is a PNG image; only PDF, Word (.docx), text, Markdown and HTML documents are supported")


@pytest.mark.skipif(not services.reachable("127.0.0.1", 5672), reason="RabbitMQ is not reachable on 127.0.0.1:5672")
def test_the_worker_indexes_a_plugin_format_from_parley_ingest(stack: dict[str, str], db_url: str,  # noqa: F811
                                                               tmp_path: Path) -> None:
    # Given a worker whose parser sandbox loads the note plugin, and a folder with a note and a photo
    folder = tmp_path / "kb"
    folder.mkdir()
    (folder / "shop.note").write_bytes(NOTES)
    (folder / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    # When the admin ingests the folder and waits
    done = _parley(stack, "--json", "ingest", str(folder), "--tenant", "acme")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # Then the note is indexed as the plugin's format, in the sections its parser found
    assert (report["total"], report["done"], report["failed"]) == (2, 1, 1), report
    docs = asyncio.run(_state(db_url, tmp_path))["docs"]
    note = docs["shop.note"]
    assert (note.status, note.mime_type) == (DocumentStatus.indexed, NOTE_MIME) and note.chunk_count >= 1
    # And the photo failed with the worker's list of what it reads, the plugin's format included
    assert docs["photo.png"].status == DocumentStatus.failed
    assert f"HTML and {NOTE_LABEL} documents are supported" in docs["photo.png"].error
