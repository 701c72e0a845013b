from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from ingestion.documents.chunking import (
    Chunk,
    ChunkingOptions,
    chunk_document,
    estimate_tokens,
    split_sentences,
)
from ingestion.documents.extract import extract
from ingestion.documents.model import Block, ExtractedDocument

SMALL = ChunkingOptions(target_tokens=60, max_tokens=90, overlap_tokens=25, min_tokens=20)


def doc(*blocks: Block) -> ExtractedDocument:
    return ExtractedDocument("text/plain", blocks)


def sentence(n: int) -> str:
    return f"Sentence number {n} talks about returns, shipping and sizes in detail."


def test_token_estimate_is_word_based() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("ten words " * 5) == 13  # 10 words * 1.3
    assert estimate_tokens("a" * 40) == 10  # a long "word" (hash, URL): one token per 4 chars
    assert estimate_tokens("你好世界") == 4  # no spaces: one token per CJK character


def test_sentences() -> None:
    text = 'Ship it, e.g. by post. Dr. Who said "Go!" Then left.\nNew line? yes. 日本語です。次'
    assert [s for _, s in split_sentences(text)] == [
        "Ship it, e.g. by post.",
        'Dr. Who said "Go!"',
        "Then left.",
        "New line? yes.",
        "日本語です。",
        "次",
    ]
    assert [sep for sep, _ in split_sentences(text)] == ["", " ", " ", "\n", " ", ""]


def test_heading_paths() -> None:
    document = doc(
        Block("paragraph", "Intro before any heading."),
        Block("heading", "Installation", 1),
        Block("paragraph", "Install it."),
        Block("heading", "Using get-pip.py", 2),
        Block("paragraph", "Run the script."),
        Block("heading", "Deep", 4),
        Block("paragraph", "Skipped a level."),
        Block("heading", "Upgrading", 2),
        Block("heading", "Empty section", 3),
        Block("heading", "FAQ", 1),
        Block("list_item", "Is it free?", 1),
        Block("list_item", "Yes.", 2),
    )
    chunks = chunk_document(document)
    assert [(c.ordinal, c.heading_path, c.text) for c in chunks] == [
        (0, (), "Intro before any heading."),
        (1, ("Installation",), "Install it."),
        (2, ("Installation", "Using get-pip.py"), "Run the script."),
        (3, ("Installation", "Using get-pip.py", "Deep"), "Skipped a level."),
        (4, ("FAQ",), "- Is it free?\n  - Yes."),
    ]
    assert chunks[2].embedding_text() == "Installation > Using get-pip.py\n\nRun the script."


def test_long_section_splits_at_sentences_with_overlap_and_size_limits() -> None:
    sentences = [sentence(n) for n in range(30)]
    chunks = chunk_document(doc(Block("heading", "Policy", 1), Block("paragraph", " ".join(sentences))), SMALL)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.heading_path == ("Policy",)
        assert chunk.token_estimate <= SMALL.max_tokens
        pieces = [s for _, s in split_sentences(chunk.text)]
        assert all(piece in sentences for piece in pieces), "a chunk cut a sentence"
    for before, after in itertools.pairwise(chunks):
        first_of_next = split_sentences(after.text)[0][1]
        assert before.text.endswith(first_of_next), "no overlap between consecutive chunks"
    covered = {s for c in chunks for _, s in split_sentences(c.text)}
    assert covered == set(sentences)


def test_table_rows_are_never_split() -> None:
    rows = [f"SKU-{n} | Linen shirt in colour {n} | size M | 49.90 EUR | in stock" for n in range(40)]
    chunks = chunk_document(doc(Block("table", "\n".join(rows))), SMALL)
    assert len(chunks) > 3
    for chunk in chunks:
        assert all(line in rows for line in chunk.text.split("\n"))


def test_a_chunk_that_continues_a_table_starts_with_its_header() -> None:
    # Given a price table longer than a chunk
    header = "SKU | Product | Size | Price | Stock"
    rows = [f"SKU-{n} | Linen shirt in colour {n} | size M | 49.90 EUR | in stock" for n in range(40)]
    chunks = chunk_document(doc(Block("table", "\n".join([header, *rows]))), SMALL)
    # Then every chunk begins with the header row (once), and every row is in some chunk
    assert len(chunks) > 3
    for chunk in chunks:
        lines = chunk.text.split("\n")
        assert lines[0] == header and lines.count(header) == 1
        assert chunk.token_estimate <= SMALL.max_tokens
    assert {line for c in chunks for line in c.text.split("\n")[1:]} == set(rows)


def test_overlap_never_crosses_a_heading() -> None:
    first = " ".join(sentence(n) for n in range(12))
    chunks = chunk_document(
        doc(
            Block("heading", "A", 1),
            Block("paragraph", first),
            Block("heading", "B", 1),
            Block("paragraph", "Only B."),
        ),
        SMALL,
    )
    assert chunks[-1].heading_path == ("B",)
    assert chunks[-1].text == "Only B."


def test_small_trailing_piece_merges_into_previous_chunk() -> None:
    options = ChunkingOptions(target_tokens=60, max_tokens=120, overlap_tokens=0, min_tokens=20)
    body = " ".join(sentence(n) for n in range(4)) + " Short end."
    chunks = chunk_document(doc(Block("paragraph", body)), options)
    assert chunks[-1].text.endswith(sentence(3) + " Short end.")
    assert all(c.text != "Short end." for c in chunks)


def test_oversized_sentence_is_cut_at_words_under_max() -> None:
    giant = " ".join(f"word{n}" for n in range(400)) + "."
    chunks = chunk_document(doc(Block("paragraph", giant)), SMALL)
    assert len(chunks) > 1
    assert all(c.token_estimate <= SMALL.max_tokens for c in chunks)
    assert " ".join(c.text for c in chunks).count("word399.") >= 1


def test_cjk_text_respects_limits_and_keeps_its_spacing() -> None:
    sentences = "".join(f"これは{n}番目の文です。" for n in range(60))
    chunks = chunk_document(doc(Block("paragraph", sentences)), SMALL)
    assert all(c.token_estimate <= SMALL.max_tokens for c in chunks)
    assert all(" " not in c.text for c in chunks)
    unbroken = "漢" * 2000  # no sentence end at all
    chunks = chunk_document(doc(Block("paragraph", unbroken)), SMALL)
    assert all(c.token_estimate <= SMALL.max_tokens for c in chunks)
    assert "".join(c.text for c in chunks).count("漢") >= 2000


def test_code_blocks_split_by_lines() -> None:
    code = "\n".join(f"    call_function_number_{n}(argument_one, argument_two)" for n in range(80))
    chunks = chunk_document(doc(Block("code", code)), SMALL)
    assert len(chunks) > 1
    lines = set(code.split("\n"))
    for chunk in chunks:
        assert all(line in lines for line in chunk.text.split("\n"))


def test_pages_and_hash() -> None:
    document = ExtractedDocument(
        "application/pdf",
        (Block("paragraph", "Page one text.", 0, 1), Block("paragraph", "Page two text.", 0, 2)),
        page_count=2,
    )
    (chunk,) = chunk_document(document)
    assert (chunk.page_start, chunk.page_end) == (1, 2)
    expected = hashlib.sha256(json.dumps([[], "Page one text.\n\nPage two text."]).encode()).hexdigest()
    assert chunk.content_hash == expected


def test_same_text_under_other_headings_hashes_differently() -> None:
    a = chunk_document(doc(Block("heading", "EU", 1), Block("paragraph", "Free returns.")))
    b = chunk_document(doc(Block("heading", "US", 1), Block("paragraph", "Free returns.")))
    assert a[0].text == b[0].text and a[0].content_hash != b[0].content_hash


def test_only_headings_still_produce_text() -> None:
    chunks = chunk_document(doc(Block("heading", "Title", 1), Block("heading", "Subtitle", 2)))
    assert [c.text for c in chunks] == ["Title\n\nSubtitle"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target_tokens": 0},
        {"target_tokens": 500, "max_tokens": 400},
        {"overlap_tokens": 300, "target_tokens": 300},
        {"min_tokens": -1},
    ],
)
def test_options_are_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ChunkingOptions(**kwargs)


@pytest.mark.shared
@pytest.mark.parametrize(
    "relative",
    [
        "md/pip-doc__installation.md",
        "md/pip-doc__topics_repeatable-installs.md",
        "html/libffi8-doc__The-Basics.html",
        "pdf/pypdf__crazyones.pdf",
        "docx/python-docx__blk-paras-and-tables.docx",
    ],
)
def test_real_documents_chunk_deterministically(shared_docs: Path, relative: str) -> None:
    data = (shared_docs / relative).read_bytes()
    first = chunk_document(extract(data, filename=Path(relative).name), SMALL)
    second = chunk_document(extract(data, filename=Path(relative).name), SMALL)
    assert first == second
    assert [c.ordinal for c in first] == list(range(len(first)))
    assert all(isinstance(c, Chunk) and c.text.strip() for c in first)
    assert all(c.token_estimate <= SMALL.max_tokens for c in first)


@pytest.mark.shared
def test_real_markdown_heading_paths(shared_docs: Path) -> None:
    document = extract((shared_docs / "md/pip-doc__installation.md").read_bytes(), filename="installation.md")
    paths = {c.heading_path for c in chunk_document(document)}
    assert ("Installation", "Supported Methods", "get-pip.py") in paths
    assert ("Installation", "Compatibility") in paths
