"""HTML -> blocks with the standard library's `html.parser`.

Why the stdlib parser and not lxml / selectolax / BeautifulSoup: we need a flat block list,
not a DOM, and a streaming handler gives that in ~150 lines; it is pure Python (a hostile page
can only raise, not crash the interpreter), tolerant of broken markup (unclosed <p> and <li>
are closed by the next block tag), adds no dependency, and the text arrives already decoded
by `sniff`. lxml would be faster on huge pages; the sandbox's time limit bounds us instead.

Dropped as page chrome: script, style, template, svg, nav, footer, form controls, hidden
elements, navigation panels by role or class (Texinfo's `div.header` / `div.nav-panel`,
`navbar`, `breadcrumb`) and "¶" permalinks. `<title>` becomes the document title, not a heading.
"""

from __future__ import annotations

from html.parser import HTMLParser

from ingestion.documents.model import Block, ExtractedDocument

_SKIP_TAGS = {
    "script", "style", "noscript", "template", "svg", "math", "nav", "footer", "iframe",
    "object", "canvas", "select", "button", "textarea", "datalist",
}
_SKIP_ROLES = {"navigation", "search", "banner", "contentinfo"}
_SKIP_CLASSES = {
    "header", "nav-panel", "navigation", "navbar", "breadcrumb", "breadcrumbs", "skip-link",
    "copiable-anchor", "headerlink",  # Texinfo / Sphinx "¶" permalinks
}
_VOID = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
    "source", "track", "wbr",
}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = {
    "address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details",
    "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "form", "header", "hr", "html",
    "legend", "li", "main", "menu", "ol", "p", "pre", "section", "summary", "ul", *_HEADINGS,
}
_LISTS = {"ul", "ol", "menu", "dir"}


class _Table:
    def __init__(self) -> None:
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def close_cell(self) -> None:
        if self.cell is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append(" ".join("".join(self.cell).split()))
            self.cell = None

    def text(self) -> str:
        self.close_cell()
        return "\n".join(" | ".join(row) for row in self.rows if any(row))


class _Handler(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.title: list[str] = []
        self._buf: list[str] = []
        self._skip: tuple[str, int] | None = None  # (tag, nesting depth) of a dropped subtree
        self._in_title = False
        self._heading: int | None = None
        self._pre = 0
        self._lists = 0
        self._items: list[int] = []  # list depth of each open <li>
        self._tables: list[_Table] = []

    # -- parser callbacks --

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if tag == self._skip[0]:
                self._skip = (tag, self._skip[1] + 1)
            return
        if tag not in _VOID and _is_chrome(tag, attrs):
            self._skip = (tag, 1)
            return
        if tag == "title":
            self._in_title = True
        elif tag == "br":
            self._text("\n" if not self._in_cell() else " ")
        elif tag == "table":
            self._flush()
            self._tables.append(_Table())
        elif tag == "tr" and self._tables:
            table = self._tables[-1]
            table.close_cell()
            table.rows.append([])
        elif tag in ("td", "th") and self._tables:
            table = self._tables[-1]
            table.close_cell()
            table.cell = []
        elif self._in_cell() or self._tables:
            if tag in _BLOCK_TAGS:
                self._text(" ")
        elif tag in _BLOCK_TAGS:
            self._flush()
            self._open_block(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[0]:
                depth = self._skip[1] - 1
                self._skip = (tag, depth) if depth else None
            return
        if tag == "title":
            self._in_title = False
        elif tag == "table" and self._tables:
            text = self._tables.pop().text()
            if self._in_cell():
                self._text(" " + text.replace("\n", " ") + " ")
            elif text:
                self.blocks.append(Block("table", text))
        elif tag in ("td", "th") and self._tables:
            self._tables[-1].close_cell()
        elif self._tables:
            if tag in _BLOCK_TAGS:
                self._text(" ")
        elif tag in _BLOCK_TAGS:
            self._flush()
            self._close_block(tag)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._in_title:
            self.title.append(data)
        elif self._pre:
            self._buf.append(data)
        else:
            self._text(data.replace("\n", " "))

    def close(self) -> None:
        super().close()
        self._flush()
        while self._tables:
            text = self._tables.pop().text()
            if text:
                self.blocks.append(Block("table", text))

    # -- helpers --

    def _in_cell(self) -> bool:
        return bool(self._tables) and self._tables[-1].cell is not None

    def _text(self, text: str) -> None:
        if self._in_cell():
            self._tables[-1].cell.append(text)  # type: ignore[union-attr]
        else:
            self._buf.append(text)

    def _open_block(self, tag: str) -> None:
        if tag in _HEADINGS:
            self._heading = _HEADINGS[tag]
        elif tag == "pre":
            self._pre += 1
        elif tag in _LISTS:
            self._lists += 1
        elif tag == "li":
            depth = max(self._lists, 1)
            while self._items and self._items[-1] >= depth:  # an unclosed sibling <li>
                self._items.pop()
            self._items.append(depth)

    def _close_block(self, tag: str) -> None:
        if tag in _HEADINGS:
            self._heading = None
        elif tag == "pre":
            self._pre = max(self._pre - 1, 0)
        elif tag in _LISTS:
            while self._items and self._items[-1] >= max(self._lists, 1):
                self._items.pop()
            self._lists = max(self._lists - 1, 0)
        elif tag == "li" and self._items:
            self._items.pop()

    def _flush(self) -> None:
        text = "".join(self._buf)
        self._buf.clear()
        if not text.strip():
            return
        if self._heading is not None:
            self.blocks.append(Block("heading", text, self._heading))
        elif self._pre:
            self.blocks.append(Block("code", text))
        elif self._items:
            self.blocks.append(Block("list_item", text, self._items[-1]))
        else:
            self.blocks.append(Block("paragraph", text))


def _is_chrome(tag: str, attrs: list[tuple[str, str | None]]) -> bool:
    if tag in _SKIP_TAGS:
        return True
    values = dict(attrs)
    if "hidden" in values or values.get("aria-hidden") == "true":
        return True
    if (values.get("role") or "").lower() in _SKIP_ROLES:
        return True
    classes = set((values.get("class") or "").lower().split())
    return bool(classes & _SKIP_CLASSES)


def html_document(text: str) -> ExtractedDocument:
    handler = _Handler()
    handler.feed(text)
    handler.close()
    title = "".join(handler.title).strip() or None
    return ExtractedDocument("text/html", tuple(handler.blocks), title)
