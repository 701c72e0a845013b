from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.documents.errors import DocumentUnreadable, ExtractionError, UnsupportedDocument
from ingestion.documents.extract import extract
from ingestion.documents.extract_pdf import looks_garbled
from ingestion.documents.model import Block, ExtractedDocument
from tests.ingestion.samples import blank_pdf, build_docx, build_pdf, build_zip, encrypt_pdf


def kinds(doc: ExtractedDocument) -> list[tuple[str, int, str]]:
    return [(b.kind, b.level, b.text) for b in doc.blocks]


def unreadable(data: bytes, **claims) -> DocumentUnreadable:
    with pytest.raises(DocumentUnreadable) as info:
        extract(data, **claims)
    return info.value


# --- plain text --------------------------------------------------------------------------------------


def test_plain_text_paragraphs_and_bullets() -> None:
    text = "Opening hours\r\nMon-Fri 9-17\r\n\r\n- returns within 30 days\r\n- free shipping\r\n\n\nThanks.\x0c"
    doc = extract(text.encode(), filename="faq.txt")
    assert doc.mime_type == "text/plain"
    assert kinds(doc) == [
        ("paragraph", 0, "Opening hours\nMon-Fri 9-17"),
        ("list_item", 1, "returns within 30 days"),
        ("list_item", 1, "free shipping"),
        ("paragraph", 0, "Thanks."),
    ]


def test_whitespace_only_text_has_no_text() -> None:
    error = unreadable(b"   \n\n\t  \n", filename="blank.txt")
    assert (error.code, error.message) == ("no_text", "document has no text")


# --- markdown ----------------------------------------------------------------------------------------

MARKDOWN = """\
(top-target)=
# Shipping

Orders ship in *two* days[^1]. See {ref}`the returns page <returns-label>`.

Returns
-------

1. Open the order
   - click **Return**
2. Print the label

```{note}
Labels expire after :ref:`14 days`.
```

```{pip-cli}
$ pip install parley
```

| Zone | Days |
|------|------|
| EU   | 2    |
| US   | 5    |

```python
print("hi")
```

<p>Inline <b>HTML</b> block</p>

[^1]: Business days only.
"""


def test_markdown_structure() -> None:
    doc = extract(MARKDOWN.encode(), filename="shipping.md")
    assert kinds(doc) == [
        ("heading", 1, "Shipping"),
        ("paragraph", 0, "Orders ship in two days. See the returns page."),
        ("heading", 2, "Returns"),
        ("list_item", 1, "Open the order"),
        ("list_item", 2, "click Return"),
        ("list_item", 1, "Print the label"),
        ("paragraph", 0, "Note: Labels expire after :ref:14 days."),
        ("code", 0, "$ pip install parley"),
        ("table", 0, "Zone | Days\nEU | 2\nUS | 5"),
        ("code", 0, 'print("hi")'),
        ("paragraph", 0, "Inline HTML block"),
        ("paragraph", 0, "Business days only."),
    ]


def test_markdown_directive_bodies_see_the_documents_link_references() -> None:
    text = "```{warning}\nRead [the docs][d] first.\n```\n\n[d]: https://example.com\n"
    doc = extract(text.encode(), filename="w.md")
    assert kinds(doc) == [("paragraph", 0, "Warning: Read the docs first.")]


# --- html --------------------------------------------------------------------------------------------

HTML = """<!DOCTYPE html><html><head><title> Store &amp; FAQ </title>
<style>p { color: red }</style><script>alert("x")</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/faq">FAQ</a></nav>
<div class="header"><p>Next: Shipping, Up: Top</p></div>
<h1>Help <a class="headerlink" href="#help">¶</a></h1>
<p>First paragraph<br>second line &euro;10
<p>Unclosed paragraph.
<ul><li>One<li>Two<ul><li>Two point one</ul></ul>
<table><tr><th>Size</th><th>Price</th></tr>
<tr><td>S</td><td><p>10</p></td></tr></table>
<pre>  indented
    code</pre>
<div hidden>secret</div>
<footer>© 2024 Shop</footer>
</body></html>"""


def test_html_structure_without_page_chrome() -> None:
    doc = extract(HTML.encode(), filename="faq.html")
    assert doc.title == "Store & FAQ"
    assert kinds(doc) == [
        ("heading", 1, "Help"),
        ("paragraph", 0, "First paragraph\nsecond line €10"),
        ("paragraph", 0, "Unclosed paragraph."),
        ("list_item", 1, "One"),
        ("list_item", 1, "Two"),
        ("list_item", 2, "Two point one"),
        ("table", 0, "Size | Price\nS | 10"),
        ("code", 0, "  indented\n    code"),
    ]


def test_html_with_only_chrome_has_no_text() -> None:
    page = b"<html><head><title>Empty</title><script>var a=1</script></head><body><nav>Menu</nav></body></html>"
    assert unreadable(page, filename="e.html").code == "no_text"


def test_html_charset_falls_back_to_cp1252() -> None:
    page = "<html><body><p>Café crème</p></body></html>".encode("cp1252")
    assert kinds(extract(page)) == [("paragraph", 0, "Café crème")]


# --- pdf ---------------------------------------------------------------------------------------------


def test_pdf_pages_become_paragraphs_with_page_numbers() -> None:
    pdf = build_pdf([["Returns are free.", "Within 30 days."], ["Page two (final)."]])
    doc = extract(pdf, filename="policy.pdf")
    assert doc.mime_type == "application/pdf" and doc.page_count == 2
    assert [(b.kind, b.page, b.text) for b in doc.blocks] == [
        ("paragraph", 1, "Returns are free.\nWithin 30 days."),
        ("paragraph", 2, "Page two (final)."),
    ]


def test_truncated_pdf_is_malformed() -> None:
    pdf = build_pdf([["Hello world, this will be cut."]])
    error = unreadable(pdf[: len(pdf) // 2], filename="cut.pdf")
    assert error.code == "pdf_malformed"
    assert error.message.startswith("PDF is damaged and cannot be opened (")
    assert "Traceback" not in error.message


def test_password_protected_pdf() -> None:
    locked = encrypt_pdf(build_pdf([["Top secret"]]), user_password="hunter2")
    error = unreadable(locked, filename="locked.pdf")
    assert (error.code, error.message) == ("pdf_encrypted", "PDF is password-protected")


def test_pdf_with_only_an_owner_password_opens() -> None:
    restricted = encrypt_pdf(build_pdf([["Readable by anyone"]]), user_password="")
    assert extract(restricted).blocks[0].text == "Readable by anyone"


def test_pdf_without_text() -> None:
    error = unreadable(blank_pdf(), filename="scan.pdf")
    assert error.code == "pdf_no_text"
    assert error.message.startswith("PDF has no extractable text")


def test_garbage_detection() -> None:
    assert looks_garbled("ɹɹং Θͨ͘͠ͱ͍;ݱ৅͸၊ఆ͞Εͨ༗ަػྲྀి౯ͷͻͱͭͷ੨͍র໌Ͱ͢ớ͋ΒΏΔಁ໌ͳ༓ྶͷෳ߹ମỜ")
    assert looks_garbled("\ue000\ue001\ue002 \ue003\ue004 abc")
    multilingual = (
        "English: Hello World Arabic: مرحبا بالعالم Russian: Привет, мир "
        "Chinese: 你好世界 Thai: สวัสดีชาวโลก Japanese: こんにちは世界"
    )
    assert not looks_garbled(multilingual)
    assert not looks_garbled("Ünïcödé café résumé naïve façade déjà vu")


# --- docx --------------------------------------------------------------------------------------------


def _rich_document(document) -> None:
    document.sections[0].header.paragraphs[0].text = "ACME Confidential"
    document.sections[0].footer.paragraphs[0].text = "Page 1"
    document.add_heading("Handbook", level=0)
    document.add_heading("Returns", level=1)
    document.add_paragraph("Items can be returned within 30 days.")
    document.add_paragraph("Keep the receipt", style="List Bullet")
    document.add_paragraph("Use the label", style="List Number")
    document.add_heading("Sizes", level=2)
    table = document.add_table(rows=3, cols=3)
    sizes = [("Size", "Chest", "Waist"), ("S", "90", "75"), ("M", "", "")]
    for row, cells in zip(table.rows, sizes, strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    merged = table.cell(2, 1).merge(table.cell(2, 2))
    merged.text = "ask us"
    document.add_paragraph("")


def test_docx_structure_without_headers_and_footers() -> None:
    doc = extract(build_docx(_rich_document), filename="handbook.docx")
    assert kinds(doc) == [
        ("heading", 1, "Handbook"),
        ("heading", 1, "Returns"),
        ("paragraph", 0, "Items can be returned within 30 days."),
        ("list_item", 1, "Keep the receipt"),
        ("list_item", 1, "Use the label"),
        ("heading", 2, "Sizes"),
        ("table", 0, "Size | Chest | Waist\nS | 90 | 75\nM | ask us"),
    ]
    assert "Confidential" not in doc.text and "Page 1" not in doc.text


def test_empty_docx_has_no_text() -> None:
    error = unreadable(build_docx(), filename="blank.docx")
    assert (error.code, error.message) == ("no_text", "document has no text")


def test_docx_with_broken_xml_is_malformed() -> None:
    good = build_docx(lambda d: d.add_paragraph("hello"))
    import io
    import zipfile

    members = {}
    with zipfile.ZipFile(io.BytesIO(good)) as archive:
        for name in archive.namelist():
            members[name] = archive.read(name)
    members["word/document.xml"] = b"<w:document><w:body><unclosed"
    error = unreadable(build_zip(members), filename="broken.docx")
    assert (error.code, error.message) == ("docx_malformed", "the Word document is damaged and cannot be read")


# --- model -------------------------------------------------------------------------------------------


def test_document_round_trips_through_json_shape() -> None:
    doc = ExtractedDocument("text/plain", (Block("heading", "A", 1), Block("paragraph", "b", 0, 3)), "T", 3)
    assert ExtractedDocument.from_dict(doc.to_dict()) == doc
    with pytest.raises(ValueError):
        evil = {"kind": "evil", "text": "", "level": 0, "page": None}
        ExtractedDocument.from_dict({**doc.to_dict(), "blocks": [evil]})


# --- the real samples --------------------------------------------------------------------------------

# file -> (error code or None, a piece of text that must be present when it works)
REAL_SAMPLES = {
    "pdf/pypdf__hello-world.pdf": (None, "Привет, мир"),
    "pdf/pypdf__crazyones.pdf": (None, "The misfits. The rebels."),
    "pdf/pypdf__two-different-pages.pdf": (None, "2"),
    "pdf/pypdf__encrypted-file.pdf": ("pdf_encrypted", None),
    "pdf/pypdf__libreoffice-writer-password.pdf": ("pdf_encrypted", None),
    "pdf/pdfminer__simple1.pdf": ("pdf_malformed", None),
    "pdf/pdfminer__jo.pdf": ("garbled_text", None),
    "pdf/pdfminer__zen_of_python_corrupted.pdf": (None, "Beautiful is better than ugly."),
    "pdf/pdfminer__encryption_base.pdf": (None, "Secret!"),
    "pdf/pdfminer__encryption_aes-256.pdf": ("pdf_encrypted", None),
    "docx/python-docx__test.docx": (None, "python-docx was here!"),
    "docx/python-docx__blk-paras-and-tables.docx": (None, "Text before Table; Between Text after"),
    "docx/python-docx__par-hyperlinks.docx": (None, "One awesome hyperlink."),
    "docx/python-docx__hdr-header-footer.docx": (None, "section without header of its own."),
    "docx/python-docx__tbl-2x2-table.docx": ("no_text", None),
    "docx/python-docx__having-images.docx": ("no_text", None),
    "docx/python-docx__doc-word-default-blank.docx": ("no_text", None),
    "html/libffi8-doc__Introduction.html": (None, "FFI stands for Foreign Function Interface."),
    "html/libffi8-doc__The-Basics.html": (None, "ffi_prep_cif"),
    "html/libffi8-doc__Complex-Type-Example.html": (None, "#include <ffi.h>"),
    "md/pip-doc__installation.md": (None, "Python comes with an ensurepip module"),
    "md/pip-doc__topics_authentication.md": (None, "Note: As mentioned in the standard library"),
    "md/pip-doc__topics_repeatable-installs.md": (None, "Warning: Beware of the setup_requires"),
}


@pytest.mark.shared
@pytest.mark.parametrize("relative", sorted(REAL_SAMPLES))
def test_real_sample(shared_docs: Path, relative: str) -> None:
    code, snippet = REAL_SAMPLES[relative]
    data = (shared_docs / relative).read_bytes()
    if code is None:
        doc = extract(data, filename=Path(relative).name)
        assert snippet in doc.text
    else:
        with pytest.raises(ExtractionError) as info:
            extract(data, filename=Path(relative).name)
        assert info.value.code == code
        assert "\n" not in info.value.message and "Traceback" not in info.value.message


@pytest.mark.shared
def test_real_html_keeps_no_navigation(shared_docs: Path) -> None:
    doc = extract((shared_docs / "html/libffi8-doc__Introduction.html").read_bytes())
    assert doc.blocks[0] == Block("heading", "1 What is libffi?", 2)
    assert "Next:" not in doc.text and "¶" not in doc.text


@pytest.mark.shared
def test_real_markdown_headings(shared_docs: Path) -> None:
    doc = extract((shared_docs / "md/pip-doc__installation.md").read_bytes(), filename="installation.md")
    headings = [(b.level, b.text) for b in doc.blocks if b.kind == "heading"]
    assert headings[:4] == [(1, "Installation"), (2, "Supported Methods"), (3, "ensurepip"), (3, "get-pip.py")]
    assert not any("{ref}" in b.text or "(compatibility-requirements)=" in b.text for b in doc.blocks)


def test_unsupported_is_an_extraction_error() -> None:
    with pytest.raises(UnsupportedDocument):
        extract(b"\x7fELF" + bytes(100))
