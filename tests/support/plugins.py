"""A parser plugin for tests, written where a test asks (PARLEY_PARSER_PLUGINS names the file).

It adds a made-up text format, "notes": ``.note`` files of ``topic: text`` lines, each read as a
heading over its paragraph. Its parser is its own (not the plain-text one), so a test can tell
that a document went through it.
"""

from __future__ import annotations

from pathlib import Path

NOTE_MIME = "text/x-parley-note"
NOTE_LABEL = "notes (.note)"

NOTE_PLUGIN = f'''\
from ingestion.documents.extract import register_format
from ingestion.documents.model import Block


def _notes(data):
    for line in data.decode("utf-8").splitlines():
        topic, colon, text = line.partition(":")
        if colon and text.strip():
            yield Block("heading", topic.strip(), 1)
            yield Block("paragraph", text.strip())


register_format({NOTE_MIME!r}, extensions=[".note"], label={NOTE_LABEL!r}, extract=_notes)
'''


def write_note_plugin(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "notes_format.py"
    path.write_text(NOTE_PLUGIN)
    return path
