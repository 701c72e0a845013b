"""The offline answer's shape (retrieval.extractive through ExtractiveAnswerer), on chunk text made
by the real chunker from real-looking markdown: lists, code, tables, dates, the length cap,
products, a second source, and the refusal test."""

from __future__ import annotations

from decimal import Decimal

from ingestion.documents.chunking import chunk_document
from ingestion.documents.extract_markdown import markdown_blocks
from ingestion.documents.model import Block, ExtractedDocument
from parley.vectors import Hit
from retrieval import extractive
from retrieval.answer import ExtractiveAnswerer, TenantProfile
from retrieval.context import Candidate, Passage
from retrieval.fusion import Fused
from retrieval.products import ProductFacts

TENANT = TenantProfile("t1", "demo", "Demo Store", "", 1)

COMPATIBILITY = """# Installation

## Compatibility

The current version of pip works on:

- Windows, Linux and MacOS.
- CPython 3.7, 3.8, 3.9, 3.10 and latest PyPy3.

pip is tested to work on the latest patch version of the Python interpreter, for each of the minor versions listed
above. Previous patch versions are supported on a best effort approach.

Other operating systems and Python versions are not supported by pip's maintainers.
"""


def passages_of(filename: str, markdown: str, *, start: int = 1, blocks: tuple[Block, ...] = ()) -> list[Passage]:
    """Every chunk the real chunker makes of ``markdown`` (or of extracted ``blocks``), as numbered passages."""
    chunks = chunk_document(ExtractedDocument("text/markdown", blocks or tuple(markdown_blocks(markdown)), title=filename))
    out = []
    for i, c in enumerate(chunks):
        h = Hit(f"{filename}:{c.ordinal}", filename, "document", filename, c.text, list(c.heading_path),
                {"filename": filename, "ordinal": c.ordinal}, 0.5)
        out.append(Passage(start + i, Candidate(Fused(h, 0.03, i + 1, i + 1, 0.5, 3.0), 0.03, None, True), c.text, 100))
    return out


async def answer(question: str, passages: list[Passage]):  # type: ignore[no-untyped-def]
    return await ExtractiveAnswerer().answer(question=question, passages=passages, tenant=TENANT)


async def test_a_list_stays_a_list_with_its_introduction() -> None:
    # Given pip's compatibility section (a list of versions under "works on:")
    # When a customer asks which Python versions are supported
    a = await answer("Which Python versions does pip support?", passages_of("installation.md", COMPATIBILITY))
    # Then every item of the list is there, as list lines, under the sentence that introduces it
    assert "The current version of pip works on:\n- Windows, Linux and MacOS.\n- CPython 3.7, 3.8, 3.9, 3.10 and latest PyPy3." in a.text
    assert a.cited == [1]
    assert a.text.endswith("More in installation.md, section “Installation › Compatibility”.")


async def test_a_long_list_keeps_the_items_that_match() -> None:
    cities = ("Berlin", "Hamburg", "Munich", "Cologne", "Frankfurt", "Stuttgart", "Dresden", "Leipzig", "Hanover", "Bremen",
              "Essen", "Dortmund")
    sunday = {"Hamburg", "Dresden", "Essen"}
    items = "\n".join(f"- {c}: pickup point at the main station, open {'on Sundays too' if c in sunday else 'Monday to Saturday'}"
                      for c in cities)
    passages = passages_of("pickup.md", f"# Pickup points\n\n{items}\n")
    a = await answer("Which pickup points are open on Sundays?", passages)
    # every item that matches, each whole, and none of the others
    for city in sunday:
        assert f"- {city}: pickup point at the main station, open on Sundays too" in a.text
    assert "Bremen" not in a.text and "Saturday" not in a.text and len(a.text) <= extractive.MAX_CHARS


async def test_a_command_stays_whole_with_the_sentence_that_explains_it() -> None:
    doc = "# Installation\n\n## Upgrading pip\n\nUpgrade your pip by running:\n\n```\n$ pip install --upgrade pip\n```\n"
    a = await answer("How do I upgrade pip?", passages_of("installation.md", doc))
    assert "Upgrade your pip by running:\n$ pip install --upgrade pip [1]" in a.text


async def test_a_long_code_block_gives_its_matching_lines_whole() -> None:
    lines = "\n".join(f"$ tool configure --option-{i} value-{i} --verbose --retries 3 --timeout 30" for i in range(12))
    command = "$ curl -X POST https://api.example.com/v2/mirrors -d 'Region=EU. Bucket=parley-mirror' # enable the mirror"
    doc = f"# Setup\n\nRun these commands in order:\n\n```\n{lines}\n{command}\n```\n"
    a = await answer("What command enables the mirror?", passages_of("setup.md", doc))
    assert command in a.text  # whole, though it holds ". B" (a sentence end to a prose splitter)
    assert "--option-5" not in a.text


async def test_a_table_row_keeps_its_header() -> None:
    doc = ("# Shipping rates\n\n| Country | Price | Delivery |\n|---|---|---|\n| Germany | 4.95 EUR | 2 days |\n"
           "| France | 9.95 EUR | 4 days |\n| Canada | 24.95 EUR | 10 days |\n")
    a = await answer("How much is shipping to Canada?", passages_of("rates.md", doc))
    assert "Country | Price | Delivery\nCanada | 24.95 EUR | 10 days" in a.text
    assert "France" not in a.text


async def test_the_date_is_kept_when_it_stands_on_a_line_of_its_own() -> None:
    # Given a press note as the PDF extractor gives it: one paragraph of hard-broken lines, the date on its own
    note = ("Spring Sale Announcement\nMarch 3, 2026\nOur spring sale brings 20 percent off every kettle and toaster\n"
            "in the shop and online, for members and guests alike, while stocks last.\nThe spring sale ends when the\n"
            "last kettle of the spring range is sold, and the announcement of the summer sale follows.")
    passages = passages_of("press.pdf", "", blocks=(Block("paragraph", note, page=1),))
    a = await answer("What date is the spring sale announcement from?", passages)
    assert "March 3, 2026" in a.text


async def test_an_answer_fits_a_phone_screen_and_points_to_the_rest() -> None:
    prose = " ".join(f"Sentence {i} talks about the return policy of store number {i} in some detail and at length." for i in range(40))
    a = await answer("What is the return policy?", passages_of("returns.md", f"# Returns\n\n{prose}\n"))
    assert len(a.text) <= extractive.MAX_CHARS
    assert a.text.endswith("More in returns.md, section “Returns”.")


async def test_a_second_source_only_when_nearly_as_relevant() -> None:
    shipping = passages_of("shipping.md", "# Shipping\n\nWe ship parcels to Canada within 7 days for 19.95 USD.\n")
    faq = passages_of("faq.md", "# Shipping questions\n\nParcels to Canada ship within 7 days; shipping costs 19.95 USD.\n", start=2)
    care = passages_of("care.md", "# Care\n\nWipe boots with a damp cloth after shipping them home.\n", start=2)
    both = await answer("How long does shipping to Canada take?", shipping + faq)
    weak = await answer("How long does shipping to Canada take?", shipping + care)
    assert both.cited == [1, 2] and "faq.md" in both.text
    assert weak.cited == [1] and "care.md" not in weak.text


async def test_products_keep_their_price_stock_and_link_line() -> None:
    h = Hit("p1", "product:1", "product", "Pink Armchair", "Pink Armchair\nStylish pink armchair", [],
            {"options": [{"name": "Color", "values": ["Pink"]}]}, 0.7)
    facts = ProductFacts(Decimal("750"), Decimal("750"), "USD", False, "https://demo.example/products/pink-armchair", frozenset())
    p = Passage(1, Candidate(Fused(h, 0.03, 1, 1, 0.7, 5.0), 0.03, None, True, facts), h.text, 20)
    a = await answer("Is the Pink Armchair in stock?", [p])
    assert "1. Pink Armchair - 750.00 USD, out of stock, color: Pink - https://demo.example/products/pink-armchair [1]" in a.text


def test_a_passage_answers_when_its_text_holds_the_fact_asked_for() -> None:
    [terms] = passages_of("terms.md", "Kettle terms. We accept Visa. Returns accepted within 30 days. Gift cards never expire.\n")
    [install] = passages_of("installation.md", COMPATIBILITY)
    [upgrade] = passages_of("upgrading.md", "# Upgrading\n\nUpgrade pip with `pip install --upgrade pip`; pip keeps your packages.\n", start=2)
    context = [install, upgrade]  # the passages the service selected together
    # the return window: "window" is stated as "within 30 days"
    assert extractive.answers("What is the return window?", terms)
    assert extractive.answers("Which Python versions does pip support?", install, context)
    # near misses: both passages are about pip (every one holds "pip"), neither holds the fact asked for
    assert not extractive.answers("How do I uninstall pip?", install, context)
    assert not extractive.answers("How do I uninstall pip?", upgrade, context)
    assert not extractive.answers("How long does pip take to install?", install, context)  # a duration asked, none stated


def test_a_refusal_names_the_nearest_topics() -> None:
    [install] = passages_of("installation.md", COMPATIBILITY)
    text = extractive.with_topics("I couldn't find that.", extractive.nearest_topics([install]))
    assert text == "I couldn't find that.\n\nClosest topics I have: “Compatibility” in installation.md."


def test_a_term_matches_the_stems_it_extends_or_ends_and_nothing_else():
    """The bisection in `extractive._extends` finds exactly what a suffix or prefix search would:
    a key that is the term plus 1-3 characters (1-5 for terms of 5 or more), or a key that ends
    with a term of 5 or more after at least one character."""
    import re

    from retrieval.extractive import Keys, _extends

    stems = frozenset("instal installation installer use used user usage python cpython jython pythonic "
                      "return returnable ship shipment shipp licens license lic ice price prices priceless".split())
    keys = Keys.of(stems)

    def reference(term: str) -> bool:
        joined = " " + " ".join(sorted(stems)) + " "
        options = []
        if len(term) >= 3:
            options.append(" " + re.escape(term) + "[^ ]{1,%d} " % (5 if len(term) >= 5 else 3))
        if len(term) >= 5:
            options.append("[^ ]" + re.escape(term) + " ")
        return bool(options) and re.search("|".join(options), joined) is not None

    for term in ["instal", "install", "use", "us", "python", "ython", "return", "ship", "lic", "licen", "ice",
                 "price", "pric", "pricel", "zzz", "cpython", "shipme", "installer"]:
        assert _extends(term, keys) == reference(term), term
    assert _extends("python", keys) and _extends("ython", keys) and not _extends("us", keys)
