"""Structure-aware chunking of an `ExtractedDocument`.

1. Split by headings: each heading opens a section whose heading path is the chain of
   enclosing headings (["Installation", "get-pip.py"]). Text never crosses a heading.
2. Cut each section into units that must stay whole: sentences of paragraphs and list items,
   rows of tables, code blocks (or groups of lines when a block is too big). Only a unit larger
   than `max_tokens` by itself is cut, at word boundaries - the one unavoidable mid-sentence cut.
3. Pack units greedily up to `target_tokens`; each new chunk of a section starts with up to
   `overlap_tokens` of whole units from the end of the previous one (no partial sentences, so
   an overlap budget smaller than the last sentence means no overlap). A chunk that continues a
   table starts with the table's header row, so a row in it still says what its cells are. A last
   piece smaller than `min_tokens` is merged into the previous chunk when the result stays under
   `max_tokens`.

Token counts are estimates, not a tokenizer: ~1.3 tokens per word (typical of BPE vocabularies
on English prose), a long word (URL, hash, identifier) one token per 4 characters, and one token
per CJK character (those scripts have no spaces). Good to ~20% on prose, which is all a chunk
budget needs. Everything here is a pure function of its input: same document, same chunks.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass

from ingestion.documents.model import Block, ExtractedDocument

_MAX_HEADING_CHARS = 200


@dataclass(frozen=True)
class ChunkingOptions:
    target_tokens: int = 300
    max_tokens: int = 450
    overlap_tokens: int = 40
    min_tokens: int = 60

    def __post_init__(self) -> None:
        if not 0 < self.target_tokens <= self.max_tokens:
            raise ValueError("need 0 < target_tokens <= max_tokens")
        if not 0 <= self.overlap_tokens < self.target_tokens:
            raise ValueError("need 0 <= overlap_tokens < target_tokens")
        if not 0 <= self.min_tokens <= self.target_tokens:
            raise ValueError("need 0 <= min_tokens <= target_tokens")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    heading_path: tuple[str, ...]
    text: str
    #: sha256 of the heading path and text: equal content under equal headings, equal hash.
    content_hash: str
    token_estimate: int
    page_start: int | None = None
    page_end: int | None = None

    def embedding_text(self) -> str:
        """The text to embed or index: headings first, they carry much of the meaning."""
        if not self.heading_path:
            return self.text
        return " > ".join(self.heading_path) + "\n\n" + self.text


@dataclass(frozen=True)
class _Unit:
    text: str
    tokens: int
    block: int  # index of the source block
    kind: str
    joiner: str  # separator from the previous unit of the same block
    page: int | None


# --- token estimate ------------------------------------------------------------------------------

_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def estimate_tokens(text: str) -> int:
    cjk = len(_CJK_CHAR.findall(text))
    words = _CJK_CHAR.sub(" ", text).split() if cjk else text.split()
    return math.ceil(round(sum(max(1.3, len(word) / 4) for word in words), 6)) + cjk


# --- sentences -----------------------------------------------------------------------------------

_SENTENCE_END = re.compile(
    r"[.!?\u2026]+[\"'\u201d\u2019)\]]*(?=\s)"  # Latin-style end, then whitespace
    r"|[\u3002\uff01\uff1f]+[\u300d\u300f\uff09]*"  # CJK full stops need no space
)
# Words ending in "." that do not end a sentence (common English words like "no" left out).
_ABBREVIATIONS = {
    "e.g", "i.e", "etc", "vs", "cf", "al", "approx", "fig", "nr", "vol", "pp", "mr", "mrs", "ms",
    "dr", "prof", "st", "jr", "sr", "inc", "ltd", "corp", "dept", "z.b", "bzw", "ca", "usw",
}
_LAST_WORD = re.compile(r"(\S+)$")


def split_sentences(text: str) -> list[tuple[str, str]]:
    """(separator before, sentence) pairs; the separator is "\\n", " " or "" (CJK sentences
    follow each other without a space). Joined back they give `text` up to whitespace."""
    pieces: list[tuple[str, str]] = []
    start, separator = 0, ""
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        rest = text[end:]
        stripped = rest.lstrip()
        if not stripped:
            break
        nxt = stripped[0]
        if match.group()[0] in ".!?\u2026":
            if nxt.islower():
                continue
            word = _LAST_WORD.search(text[start : match.start()])
            if match.group()[0] == "." and word:
                token = word.group(1).lower().lstrip("(\"'")
                if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                    continue
        pieces.append((separator, text[start:end].strip()))
        gap = rest[: len(rest) - len(stripped)]
        separator = "\n" if "\n" in gap else (" " if gap else "")
        start = end + len(gap)
    pieces.append((separator, text[start:].strip()))
    return [(sep, sentence) for sep, sentence in pieces if sentence]


# --- units -----------------------------------------------------------------------------------------


def _units(blocks: list[Block], first_index: int, max_tokens: int) -> list[_Unit]:
    units: list[_Unit] = []
    for index, block in enumerate(blocks, first_index):
        if block.kind == "table":
            pieces = [(row, "\n") for row in block.text.split("\n")]
        elif block.kind == "code":
            pieces = [(group, "\n") for group in _line_groups(block.text, max_tokens)]
        else:
            prefix = "  " * (block.level - 1) + "- " if block.kind == "list_item" else ""
            pieces = [
                (prefix + sentence if number == 0 else sentence, separator)
                for number, (separator, sentence) in enumerate(split_sentences(block.text))
            ]
        for text, joiner in pieces:
            units.extend(_unit(text, joiner, index, block, max_tokens))
    return units


def _unit(text: str, joiner: str, index: int, block: Block, max_tokens: int) -> list[_Unit]:
    tokens = estimate_tokens(text)
    if tokens <= max_tokens:
        return [_Unit(text, tokens, index, block.kind, joiner, block.page)]
    return [  # the one unavoidable cut: a single sentence / row / line over max_tokens
        _Unit(piece, estimate_tokens(piece), index, block.kind, joiner if n == 0 else " ", block.page)
        for n, piece in enumerate(_split_words(text, max_tokens))
    ]


def _split_words(text: str, max_tokens: int) -> list[str]:
    pieces, current, tokens = [], [], 0.0
    for word in text.split():
        cost = estimate_tokens(word)
        if current and tokens + cost > max_tokens:
            pieces.append(" ".join(current))
            current, tokens = [], 0.0
        if cost > max_tokens:  # a base64 blob, or CJK text with no sentence end: cut by characters
            size = max_tokens // 2 if _CJK_CHAR.search(word) else max_tokens * 4
            pieces.extend(word[i : i + size] for i in range(0, len(word), max(size, 1)))
            continue
        current.append(word)
        tokens += cost
    if current:
        pieces.append(" ".join(current))
    return pieces


def _line_groups(text: str, max_tokens: int) -> list[str]:
    if estimate_tokens(text) <= max_tokens:
        return [text]
    groups, current, tokens = [], [], 0
    for line in text.split("\n"):
        cost = estimate_tokens(line)
        if current and tokens + cost > max_tokens:
            groups.append("\n".join(current))
            current, tokens = [], 0
        current.append(line)
        tokens += cost
    if current:
        groups.append("\n".join(current))
    return groups


# --- packing ---------------------------------------------------------------------------------------


def _render(units: list[_Unit]) -> str:
    parts: list[str] = []
    previous: _Unit | None = None
    for unit in units:
        if previous is not None:
            if unit.block == previous.block:
                parts.append(unit.joiner)
            elif unit.kind == previous.kind == "list_item":
                parts.append("\n")
            else:
                parts.append("\n\n")
        parts.append(unit.text)
        previous = unit
    return "".join(parts)


def _pack(units: list[_Unit], options: ChunkingOptions) -> list[tuple[list[_Unit], int]]:
    """Greedy packing; each entry is (units, how many of them are overlap from before)."""
    chunks: list[tuple[list[_Unit], int]] = []
    current: list[_Unit] = []
    tokens = overlap = 0
    headers: dict[int, _Unit] = {}  # block -> the table's first row, its header
    for unit in units:
        if unit.kind == "table":
            headers.setdefault(unit.block, unit)
        if len(current) > overlap and tokens + unit.tokens > options.target_tokens:
            chunks.append((current, overlap))
            current = _tail(current, options.overlap_tokens, options.max_tokens - unit.tokens)
            header = headers.get(unit.block) if unit.kind == "table" else None
            if (header is not None and header is not unit and header not in current
                    and sum(u.tokens for u in current) + header.tokens + unit.tokens <= options.max_tokens):
                current.insert(0, header)  # a table row read on its own keeps the header that names its cells
            tokens, overlap = sum(u.tokens for u in current), len(current)
        current.append(unit)
        tokens += unit.tokens
    if len(current) > overlap:
        chunks.append((current, overlap))
    if len(chunks) >= 2:  # merge a small trailing piece into the previous chunk
        last, last_overlap = chunks[-1]
        fresh = last[last_overlap:]
        previous, previous_overlap = chunks[-2]
        if sum(u.tokens for u in fresh) < options.min_tokens and (
            sum(u.tokens for u in previous) + sum(u.tokens for u in fresh) <= options.max_tokens
        ):
            chunks[-2:] = [(previous + fresh, previous_overlap)]
    return chunks


def _tail(units: list[_Unit], overlap_tokens: int, budget: int) -> list[_Unit]:
    """Whole units from the end of a chunk, at most `overlap_tokens`, never the whole chunk."""
    tail: list[_Unit] = []
    total = 0
    for unit in reversed(units[1:]):
        if total + unit.tokens > min(overlap_tokens, budget):
            break
        tail.insert(0, unit)
        total += unit.tokens
    return tail


# --- public entry point ----------------------------------------------------------------------------


DEFAULT_OPTIONS = ChunkingOptions()


def chunk_document(doc: ExtractedDocument, options: ChunkingOptions = DEFAULT_OPTIONS) -> list[Chunk]:
    sections: list[tuple[tuple[str, ...], int, list[Block]]] = []
    path: list[tuple[int, str]] = []
    body: list[Block] = []
    body_start = 0
    for index, block in enumerate(doc.blocks):
        if block.kind != "heading":
            if not body:
                body_start = index
            body.append(block)
            continue
        if body:
            sections.append((tuple(text for _, text in path), body_start, body))
            body = []
        while path and path[-1][0] >= block.level:
            path.pop()
        path.append((block.level, block.text[:_MAX_HEADING_CHARS]))
    if body:
        sections.append((tuple(text for _, text in path), body_start, body))
    if not sections and doc.blocks:  # nothing but headings: keep them as text
        sections.append(((), 0, [Block("paragraph", b.text) for b in doc.blocks]))

    chunks: list[Chunk] = []
    for heading_path, start, blocks in sections:
        for units, _ in _pack(_units(blocks, start, options.max_tokens), options):
            chunks.append(_chunk(len(chunks), heading_path, units))
    return chunks


def _chunk(ordinal: int, heading_path: tuple[str, ...], units: list[_Unit]) -> Chunk:
    text = _render(units)
    digest = hashlib.sha256(
        json.dumps([list(heading_path), text], ensure_ascii=False).encode("utf-8")
    ).hexdigest()
    pages = [u.page for u in units if u.page is not None]
    return Chunk(
        ordinal=ordinal,
        heading_path=heading_path,
        text=text,
        content_hash=digest,
        token_estimate=estimate_tokens(text),
        page_start=min(pages) if pages else None,
        page_end=max(pages) if pages else None,
    )
