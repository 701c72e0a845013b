"""Errors raised while sniffing, extracting or sandboxing a document.

Every error has a stable machine `code`, a `message` a person can read (never a
traceback; a fragment that composes: "Couldn't index report.pdf: PDF is password-protected")
and a `retryable` flag: True only when the same file may succeed later
(the machine was short of resources), False when the file itself is the problem.

A ZIP archive of documents is unpacked by the worker, not parsed (`archive.py`); it fails with a
`parley.bus.Permanent` of its own codes: archive_bomb (compressed past 100:1, per member or as a
whole), archive_too_large (more than 2,000 files, or unpacking past PARLEY_ARCHIVE_MAX_UNPACKED_BYTES),
archive_damaged, archive_empty, parse_timeout (unpacking past the parse time limit).
"""

from __future__ import annotations

from typing import Any


class ExtractionError(Exception):
    def __init__(self, code: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": type(self).__name__,
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> ExtractionError:
        """Rebuild an error sent by the sandbox child (JSON, never pickle)."""
        cls = _KINDS.get(str(data.get("kind")), ExtractionError)
        return cls(
            str(data["code"]), str(data["message"])[:500], retryable=bool(data.get("retryable"))
        )


class UnsupportedDocument(ExtractionError):
    """Not a type we index: empty_file, unsupported_type, type_mismatch."""


class DocumentUnreadable(ExtractionError):
    """A supported type whose content cannot be read: pdf_encrypted, pdf_malformed, pdf_no_text,
    garbled_text, docx_malformed, archive_too_large, no_text."""


class SandboxFailure(ExtractionError):
    """The parser child hit a limit or died: parse_timeout, memory_limit, parser_crashed,
    sandbox_unavailable."""


_KINDS: dict[str, type[ExtractionError]] = {
    cls.__name__: cls
    for cls in (ExtractionError, UnsupportedDocument, DocumentUnreadable, SandboxFailure)
}
