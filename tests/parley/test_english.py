"""The English of user-facing counts and possessives: "1 section", "Acme Docs' documents"."""

from __future__ import annotations

import pytest

from parley.english import plural, possessive


@pytest.mark.parametrize(("n", "noun", "expected"), [
    (1, "section", "1 section"), (0, "section", "0 sections"), (12, "section", "12 sections"),
    (1234, "file", "1,234 files"), (1, "entry", "1 entry"), (3, "entry", "3 entries"), (2, "dead letter", "2 dead letters"),
])
def test_a_count_takes_the_noun_in_its_number(n: int, noun: str, expected: str) -> None:
    assert plural(n, noun) == expected


def test_an_irregular_plural_can_be_given() -> None:
    assert (plural(1, "child", "children"), plural(2, "child", "children")) == ("1 child", "2 children")


@pytest.mark.parametrize(("name", "expected"), [
    ("Acme", "Acme's"), ("Acme Docs", "Acme Docs'"), ("ACME OUTFITTERS", "ACME OUTFITTERS'"), (" Acme ", "Acme's"), ("", ""),
])
def test_a_possessive_reads_as_english(name: str, expected: str) -> None:
    assert possessive(name) == expected
