"""The document formats Parley reads: one registry for every upload door and the document worker.

A `Format` is what a person may upload and what the document worker reads it as: its MIME type,
the file extensions and other MIME types that claim it, the label messages name it by, and, for a
format a plugin adds, its parser and the magic prefix that proves it. A plugin format without a
magic prefix is a text format: the worker reads a file as it when the bytes are text and the name
(or the declared type) claims it.

Who asks:
- the gateway's upload doors (`bot.conversation.uploads`: Slack and Instagram DMs, the web chat and
  the admin dashboard) refuse a file no format claims, before anything is downloaded or stored;
- the document worker, in its parser sandbox (`ingestion.documents.sniff` / `extract`): the content
  decides between the built-in formats, a plugin format is found by its magic or its claim and
  parsed by its parser, and a refusal names what is supported.

Plugins. PARLEY_PARSER_PLUGINS lists Python files; when executed, each registers formats with
`ingestion.documents.extract.register_format(...)` (a format and its parser) or
`register_format(Format(...))` here (the format only). `load_format_plugins(paths)` executes them
into a registry: the gateway does at start-up (its doors then accept those formats), and so do the
parser sandbox's fork server and child (so the worker reads them). A plugin therefore runs in
each of those processes, and should do nothing at import but register.

A registry lives in the process that filled it. `registry()` is this process's (the built-in
formats plus what was registered into it); the gateway keeps its own, from `load_format_plugins`.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path, PurePath
from typing import Any

from parley.errors import ConfigurationError

TEXT = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
ZIP = "application/zip"

#: bytes -> the document's blocks (`ingestion.documents.model.Block`); opaque to the kernel.
Parser = Callable[[bytes], Iterable[Any]]


def _dotted(ext: str) -> str:
    ext = ext.strip().lower()
    return ext if ext.startswith(".") else f".{ext}"


@dataclass(frozen=True)
class Format:
    #: The type the document is read as (and stored with once indexed).
    mime_type: str
    #: How messages name it ("Word (.docx)"); None: by its extensions, or not at all without any.
    label: str | None = None
    #: File extensions that claim it (".md"); lower-cased, a leading dot added.
    extensions: tuple[str, ...] = ()
    #: Other declared MIME types that mean it ("text/x-markdown").
    aliases: tuple[str, ...] = ()
    #: Plugin formats: a prefix of the content that proves it (at least 4 bytes); None: a text format.
    magic: bytes | None = None
    #: A container the document worker unpacks (each file inside becomes a document).
    archive: bool = False
    #: Plugin formats: the document worker's parser. None for the built-in ones (ingestion's own).
    parser: Parser | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mime_type", self.mime_type.strip().lower())
        object.__setattr__(self, "extensions", tuple(_dotted(e) for e in self.extensions))
        object.__setattr__(self, "aliases", tuple(a.strip().lower() for a in self.aliases))
        if self.magic is not None and len(self.magic) < 4:
            raise ValueError("a format's magic prefix must be at least 4 bytes")

    @property
    def name(self) -> str | None:
        """What messages call it, or None when a person would not recognise it."""
        return self.label or (", ".join(self.extensions) if self.extensions else None)

    def claims_type(self, mime: str) -> bool:
        return mime == self.mime_type or mime in self.aliases


BUILTIN: tuple[Format, ...] = (
    Format(PDF, "PDF", (".pdf",)),
    Format(DOCX, "Word (.docx)", (".docx",)),
    Format(TEXT, "text", (".txt", ".text", ".log", ".csv", ".tsv", ".rst", ".asc")),
    Format(MARKDOWN, "Markdown", (".md", ".markdown", ".mdown", ".mkd", ".mkdn", ".mdx", ".myst"),
           aliases=("text/x-markdown",)),
    Format(HTML, "HTML", (".html", ".htm"), aliases=("application/xhtml+xml",)),
    Format(ZIP, "a .zip", (".zip",), aliases=("application/x-zip-compressed",), archive=True),
)
_BUILTIN_BY_TYPE = {f.mime_type: f for f in BUILTIN}


def builtin(mime_type: str) -> Format:
    """A built-in format by its MIME type (KeyError for any other)."""
    return _BUILTIN_BY_TYPE[mime_type]


class FormatRegistry:
    """Formats in the order they were added; the latest one wins a lookup, so a plugin's format
    comes before a built-in one that claims the same extension."""

    def __init__(self, formats: Iterable[Format] = BUILTIN) -> None:
        self._formats: list[Format] = []
        for fmt in formats:
            self.add(fmt)

    def add(self, fmt: Format) -> None:
        """Add `fmt`; one already here with the same MIME type is replaced (loading twice is harmless)."""
        self._formats = [f for f in self._formats if f.mime_type != fmt.mime_type] + [fmt]

    def __iter__(self) -> Iterator[Format]:
        return iter(tuple(self._formats))

    def get(self, mime_type: str) -> Format | None:
        return next((f for f in self._formats if f.mime_type == mime_type), None)

    def by_extension(self, filename: str | None) -> Format | None:
        ext = extension(filename)
        return next((f for f in reversed(self._formats) if ext and ext in f.extensions), None)

    def by_type(self, declared_mime: str | None) -> Format | None:
        mime = base_type(declared_mime)
        return next((f for f in reversed(self._formats) if mime and f.claims_type(mime)), None)

    def claimed(self, filename: str | None, declared_mime: str | None) -> Format | None:
        """The format a file's name, else its declared type, says it is (claims, not proof)."""
        return self.by_extension(filename) or self.by_type(declared_mime)

    def by_magic(self, data: bytes) -> Format | None:
        """The plugin format whose magic prefix `data` starts with."""
        return next((f for f in reversed(self._formats) if f.magic is not None and data.startswith(f.magic)), None)

    def describe(self, *, archives: bool = True) -> str:
        """"PDF, Word (.docx), text, Markdown and HTML (or a .zip of them)", for messages."""
        documents = _unique(f.name for f in self._formats if not f.archive)
        text = _and(documents)
        containers = _unique(f.name for f in self._formats if f.archive)
        if archives and containers:
            text += f" (or {' or '.join(containers)} of them)"
        return text

    def accept(self) -> str:
        """Every extension, for a file picker's ``accept`` attribute (".pdf,.docx,...")."""
        return ",".join(_unique(ext for f in self._formats for ext in f.extensions))


def extension(filename: str | None) -> str:
    """".pdf" for "Report.PDF"; "" without one (".bashrc" has none)."""
    return PurePath(filename).suffix.lower() if filename else ""


def base_type(mime: str | None) -> str:
    """"text/plain" for "Text/Plain; charset=utf-8"; "" for None."""
    return (mime or "").split(";", 1)[0].strip().lower()


# --- this process's registry, and plugins ---------------------------------------------------------

_process = FormatRegistry()
#: Set while `load_format_plugins` executes plugin files: where their registrations go.
_loading: ContextVar[FormatRegistry | None] = ContextVar("parley_formats_loading", default=None)
_plugin_numbers = itertools.count()


def registry() -> FormatRegistry:
    """This process's registry (while plugins load: the one they load into)."""
    return _loading.get() or _process


def register_format(fmt: Format) -> None:
    """Add a format to the registry being filled (see `registry`); what plugin files call."""
    registry().add(fmt)


def load_format_plugins(paths: Sequence[str | PathLike[str]], *,
                        into: FormatRegistry | None = None) -> FormatRegistry:
    """Execute each plugin file, its registrations going into `into` (default: a new registry of
    the built-in formats); return that registry. A plugin's own exception propagates."""
    target = FormatRegistry() if into is None else into
    token = _loading.set(target)
    try:
        for path in paths:
            _execute(Path(path))
    finally:
        _loading.reset(token)
    return target


def _execute(path: Path) -> None:
    import importlib.util  # only plugin users pay for it

    if not path.is_file():
        raise ConfigurationError(f"parser plugin {path} does not exist (PARLEY_PARSER_PLUGINS)")
    spec = importlib.util.spec_from_file_location(f"_parley_format_plugin_{next(_plugin_numbers)}", path)
    if spec is None or spec.loader is None:
        raise ConfigurationError(f"parser plugin {path} cannot be loaded as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


def _unique(items: Iterable[str | None]) -> list[str]:
    return list(dict.fromkeys(i for i in items if i))


def _and(items: list[str]) -> str:
    if len(items) < 2:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
