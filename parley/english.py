"""English for the lines people read: "1 section", "12 sections", "Acme Docs' documents".

Every user-facing count and possessive goes through these two helpers, so "(1 sections)" and
"Acme Docs's" cannot come back one f-string at a time.
"""

from __future__ import annotations

#: Nouns whose plural is not the singular + "s" (only those our messages use).
_IRREGULAR = {"entry": "entries", "reply": "replies", "query": "queries", "copy": "copies"}


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``n`` and the noun in the right number, the count grouped by thousands: ``plural(1, "section")``
    -> "1 section", ``plural(1234, "file")`` -> "1,234 files". ``many`` overrides the plural form."""
    return f"{n:,} {noun if n == 1 else (many or _IRREGULAR.get(noun) or noun + 's')}"


def possessive(name: str) -> str:
    """The name's possessive: "Acme's", "Acme Docs'" (a name ending in s takes only the apostrophe).
    An empty name stays empty, so a caller never prints a lone "'s"."""
    name = name.strip()
    if not name:
        return ""
    return f"{name}'" if name[-1] in "sS" else f"{name}'s"
