"""Markdown (CommonMark + tables, with MyST tolerated) -> blocks.

markdown-it-py is a real CommonMark parser (already installed with `rich`), so edge cases like
setext headings, lazy list continuation and nested fences are handled as a renderer would.

MyST (the pip docs are MyST): ```{note} and other admonition directives are prose and are
parsed as Markdown themselves; other directives (```{pip-cli}, ```{code-block}) are code;
navigation directives (toctree, include) are dropped. Roles like {ref}`text <target>` keep
their text, `(label)=` targets and footnote markers are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from markdown_it import MarkdownIt
from markdown_it.token import Token

from ingestion.documents.model import Block

_PARSER = MarkdownIt("commonmark").enable("table")
_MAX_DIRECTIVE_DEPTH = 3

_PROSE_DIRECTIVES = {
    "note", "warning", "tip", "important", "caution", "attention", "danger", "error", "hint",
    "seealso", "admonition", "sidebar", "topic", "margin", "dropdown", "tab-item", "card",
    "epigraph", "pull-quote", "versionadded", "versionchanged", "deprecated",
}
_VERSION_DIRECTIVES = {
    "versionadded": "Added in version",
    "versionchanged": "Changed in version",
    "deprecated": "Deprecated since version",
}
_DROPPED_DIRECTIVES = {"toctree", "contents", "include", "literalinclude", "image", "figure", "raw"}

_DIRECTIVE = re.compile(r"^\{([\w:.-]+)\}\s*(.*)$")
_OPTION_LINE = re.compile(r"^:[\w-]+:.*$")
_MYST_TARGET = re.compile(r"^\([^()\s]+\)=$")
_FOOTNOTE_REF = re.compile(r"\[\^[^\]\s]+\]")
_FOOTNOTE_DEF = re.compile(r"^\[\^[^\]\s]+\]:\s*")
_ROLE_AT_END = re.compile(r"\{[\w:.-]+\}$")
_ROLE_TARGET = re.compile(r"^(.*?)\s*<[^<>]+>$", re.DOTALL)


def markdown_blocks(text: str) -> list[Block]:
    return _parse(text, {}, 0)


def _parse(text: str, env: dict[str, Any], depth: int) -> list[Block]:
    # `env` collects link reference definitions; directive bodies reuse the outer document's.
    return list(_walk(_PARSER.parse(text, env), env, depth))


def _walk(tokens: Sequence[Token], env: dict[str, Any], depth: int) -> Iterator[Block]:
    heading: int | None = None
    list_depth = 0
    table: list[list[str]] | None = None
    for tok in tokens:
        kind = tok.type
        if kind == "heading_open":
            heading = int(tok.tag[1])
        elif kind == "heading_close":
            heading = None
        elif kind in ("bullet_list_open", "ordered_list_open"):
            list_depth += 1
        elif kind in ("bullet_list_close", "ordered_list_close"):
            list_depth -= 1
        elif kind == "table_open":
            table = []
        elif kind == "tr_open" and table is not None:
            table.append([])
        elif kind == "table_close" and table is not None:
            yield Block("table", "\n".join(" | ".join(row) for row in table if any(row)))
            table = None
        elif kind == "inline":
            text = _inline_text(tok.children or [])
            if table is not None and table:
                table[-1].append(text.replace("\n", " "))
            elif heading is not None:
                yield Block("heading", text, heading)
            elif list_depth:
                yield Block("list_item", text, list_depth)
            elif not _MYST_TARGET.match(text.strip()):
                yield Block("paragraph", text)
        elif kind == "fence":
            yield from _fence(tok, env, depth)
        elif kind == "code_block":
            yield Block("code", tok.content)
        elif kind == "html_block":
            from ingestion.documents.extract_html import html_document

            yield from html_document(tok.content).blocks


def _fence(tok: Token, env: dict[str, Any], depth: int) -> Iterator[Block]:
    match = _DIRECTIVE.match(tok.info.strip())
    if not match:
        yield Block("code", tok.content)
        return
    name, argument = match.group(1).lower(), match.group(2).strip()
    if name in _DROPPED_DIRECTIVES:
        return
    if name not in _PROSE_DIRECTIVES or depth >= _MAX_DIRECTIVE_DEPTH:
        yield Block("code", tok.content)
        return
    body = "\n".join(line for line in tok.content.split("\n") if not _OPTION_LINE.match(line))
    if name in _VERSION_DIRECTIVES:
        yield Block("paragraph", f"{_VERSION_DIRECTIVES[name]} {argument}.".replace(" .", "."))
        yield from _parse(body, env, depth + 1)
        return
    label = argument if name == "admonition" and argument else name.replace("-", " ").capitalize()
    inner = _parse(body, env, depth + 1)
    if inner and inner[0].kind == "paragraph":
        inner[0] = Block("paragraph", f"{label}: {inner[0].text}")
    elif argument and name != "admonition":
        inner.insert(0, Block("paragraph", f"{label}: {argument}"))
    yield from inner


def _inline_text(children: Sequence[Token]) -> str:
    parts: list[str] = []
    for child in children:
        kind = child.type
        if kind == "text":
            parts.append(child.content)
        elif kind == "code_inline":
            content = child.content
            if parts and _ROLE_AT_END.search(parts[-1]):  # MyST role: {ref}`title <target>`
                parts[-1] = _ROLE_AT_END.sub("", parts[-1])
                target = _ROLE_TARGET.match(content)
                content = target.group(1) if target and target.group(1) else content
            parts.append(content)
        elif kind == "softbreak":
            parts.append(" ")
        elif kind == "hardbreak":
            parts.append("\n")
        elif kind == "image":
            parts.append(child.content)  # the alt text
    return _FOOTNOTE_REF.sub("", _FOOTNOTE_DEF.sub("", "".join(parts)))
