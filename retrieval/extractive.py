"""The offline answer: the unit of the best passage that carries the fact, short, with its source.

Three pure steps over the numbered passages the service selected (no model, deterministic):

1. **Units.** A chunk's text keeps its structure (ingestion/documents/chunking.py renders blocks
   separated by a blank line, list items as ``- item`` lines, table rows as ``a | b`` lines,
   code with its line breaks). A passage is cut back into the units a fact lives in: a sentence;
   a whole list (with the sentence that introduces it, "... works on:"), or its items one by one
   when it is long; a code block, or its lines when it is long, never part of a line; a table
   row with the table's header row; a line of hard-broken text (PDF). A sentence ending in ":"
   takes the list or code that follows it, so "Upgrade your pip by running:" comes with the command.
2. **Scores.** A unit scores one point per question term it contains as a word (`QuestionTerms`:
   light stems, word prefixes, a few synonyms such as window ~ within/days), half a point for one
   found only inside an identifier or file name ("ffi" in ffi_cif), and 1.5 per answer type it
   satisfies: a number for "how many / how long / how much", a date for "what date / which year", a
   version for "which version", a list for "which ...s / what are", code for "what command / how do
   I ... / look like", an identifier (FFI_OK, ffi_call) for "which function / macro / status code",
   a link for "where can I download".
3. **The answer.** From the first passage whose best unit is within `PASSAGE_MARGIN` of the best
   unit of any passage, the best unit and up to two more of at least `UNIT_MARGIN` x its score, in
   document order, within `BODY_CHARS` (a passage shorter than `SHORT_PASSAGE_CHARS` is quoted
   whole: its sentences explain each other). A second source is added only when its best unit scores at
   least `SECOND_SOURCE_MARGIN` x the first's and it still fits. Then the pointer to read on:
   "More in <file>, section <headings>." The whole reply aims at `MAX_CHARS` (a phone screen).
   Products are answered by their facts line (title, price, stock, options, link) instead.

`answers` is the refusal test the service applies before any answerer (extractive or chat model)
runs: a passage answers a question when at least half (`FACT_COVERAGE`) of the question's *fact*
terms occur in its text (synonyms count, and the answer type stands in for its word: a duration
for "long") - fact terms being those not already in the passage's title or headings nor in every
document selected with it, which only say what the passages are about ("pip") - and, when a
number, duration, date or version was asked for, the text has one in or next to a unit that
matches the question. A near miss - right topic, fact absent ("How do I uninstall pip?" against
pip's installation guide) - fails it. `bench/answer_quality.py` measures both on our question set
(bench/RESULTS.md: refusal precision and recall, false refusals).
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from retrieval.context import Candidate, Passage
from retrieval.text import split_sentences, stem, terms

MAX_CHARS = 600
BODY_CHARS = 430  # the quoted part; the rest is for the citation marks and the pointer line
UNIT_MARGIN = 0.6
PASSAGE_MARGIN = 0.8
SECOND_SOURCE_MARGIN = 0.9
FACT_COVERAGE = 0.5
TYPE_BONUS = 1.5
HEADING_BONUS = 0.5
PART_WEIGHT = 0.5
SHORT_PASSAGE_CHARS = 320
LIST_UNIT_CHARS = 450
CODE_UNIT_CHARS = 500

# Question words that name no fact (beyond retrieval.text.STOPWORDS).
_EXTRA_STOPWORDS = frozenset("since ever still already actually exactly really possible possibly".split())

# Stems that stand for each other in a question and a passage. Kept small and explicit: each pair
# is a way customers ask for something documents state differently.
_SYNONYMS: dict[str, frozenset[str]] = {
    "window": frozenset({"within", "day", "period"}),
    "way": frozenset({"method", "mechanism"}),
    "method": frozenset({"way", "mechanism"}),
    "cost": frozenset({"price", "costs"}),
    "price": frozenset({"cost", "costs"}),
    "deliver": frozenset({"ship", "shipping", "delivery"}),
    "delivery": frozenset({"ship", "deliver"}),
    "ship": frozenset({"deliver", "delivery"}),
    "refund": frozenset({"return"}),
    "colour": frozenset({"color"}),
    "color": frozenset({"colour"}),
    "wrote": frozenset({"author", "written"}),
    "author": frozenset({"wrote", "written"}),
}

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_IDENT_WORD = re.compile(r"\w+", re.UNICODE)
_DIGIT = re.compile(r"\d")
_MONTHS = "january february march april may june july august september october november december"
_DATE = re.compile(r"\b(?:(?:" + "|".join(m[:3] for m in _MONTHS.split()) + r")[a-z]*\.?\s+\d{1,2}|\d{1,2}\s+(?:"
                   + "|".join(m[:3] for m in _MONTHS.split()) + r")[a-z]*|(?:1[6-9]|20)\d\d|\d{1,2}/\d{1,2}/\d{2,4})\b", re.I)
_DURATION = re.compile(r"\b(?:\d+|one|two|three|four|five|six|seven|ten|twelve)(?:\s*(?:-|to|or)\s*\d+)?[\s-]+(?:business |working )?"
                       r"(?:second|minute|hour|day|week|month|year)s?\b", re.I)
_VERSION = re.compile(r"\b\d+\.\d+(?:\.\d+)?\b")
_IDENTIFIER = re.compile(r"\b[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]+\b|\b[a-z]+[A-Z][A-Za-z0-9]+\b")
_SIGNATURE = re.compile(r"\b\w+ ?\([^()]*[*,][^()]*\)")  # a C or Python signature: name (type *a, b)
_LINK = re.compile(r"https?://|\b\w+\.(?:com|org|io|net)\b")

# What kind of answer a question asks for.
_ASKS = {
    "number": re.compile(r"\bhow (?:many|much|large|big|old|often|far|heavy|tall|wide)\b|\bwhat (?:size|percentage|amount)\b"),
    "duration": re.compile(r"\bhow long\b|\bhow many (?:days|weeks|hours|minutes|months|years)\b"),
    "date": re.compile(r"\b(?:what|which) (?:date|day|year|month)\b|\bwhen (?:was|were|did)\b|\bwhat date\b"),
    "version": re.compile(r"\b(?:which|what)\b(?:\s+[\w.-]+){0,3}\s+versions?\b|\bsince which\b"),
    "list": re.compile(r"^\s*(?:which|what)\s+(?:[\w-]+\s+){0,2}[\w-]*[^s\W]s\b|^\s*what are\b|\blist (?:of|all)\b"),
    "code": re.compile(r"\bcommands?\b|\bhow (?:do|can|should|would) (?:i|you|we)\b|\bhow to\b|\blook like\b|\bexample\b"
                       r"|\bsignature\b|\bsyntax\b"),
    "identifier": re.compile(r"\b(?:which|what)\b(?:\s+\w+){0,2}\s+(?:function|macro|constant|status|error|code|type|abi|flag|variable|option)s?\b"),
    "link": re.compile(r"\bwhere (?:can|do|should) (?:i|you|we) (?:download|find|get)\b|\b(?:link|url) (?:to|for)\b"),
}
# For these the answer must hold the thing asked for; a passage without one does not answer.
_REQUIRED = ("number", "duration", "date", "version")
# The question words an answer type stands in for ("how long": a duration answers "long").
_TYPE_TERMS = {"number": frozenset({"large", "big", "much", "many", "old", "often", "far"}), "duration": frozenset({"long", "take"}), "date": frozenset({"date", "year", "day"}),
               "version": frozenset({"version"}), "code": frozenset({"command", "example", "look", "signature", "syntax"}),
               "link": frozenset({"download", "link", "url"})}


def asked_types(question: str) -> frozenset[str]:
    q = question.lower()
    return frozenset(name for name, pattern in _ASKS.items() if pattern.search(q))


def satisfies(kind: str, text: str, unit_kind: str) -> bool:
    if kind == "number":
        return bool(_DIGIT.search(text))
    if kind == "duration":
        return bool(_DURATION.search(text))
    if kind == "date":
        return bool(_DATE.search(text))
    if kind == "version":
        return bool(_VERSION.search(text))
    if kind == "list":
        return unit_kind == "list"
    if kind == "code":
        return unit_kind == "code" or "\n$ " in f"\n{text}" or bool(_SIGNATURE.search(text))
    if kind == "identifier":
        return bool(_IDENTIFIER.search(text))
    if kind == "link":
        return bool(_LINK.search(text))
    return False


# --- matching ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The stems of a text's words, as a set and sorted twice (as they are, and each spelled
    backwards), so that the stems a term extends or ends are found by bisection, without a
    regular expression to compile for every new term or a Python loop over every word."""

    stems: frozenset[str]

    @staticmethod
    def of(stems: frozenset[str]) -> Keys:
        return Keys(stems)

    @functools.cached_property
    def ordered(self) -> tuple[str, ...]:
        return tuple(sorted(self.stems))

    @functools.cached_property
    def backwards(self) -> tuple[str, ...]:
        return tuple(sorted(s[::-1] for s in self.stems))


@functools.lru_cache(maxsize=8192)
def keys_of(text: str) -> Keys:
    """Every stem: words split at underscores and hyphens, and identifiers whole ("ffi_prep_cif"
    gives ffi, prep, cif and ffi_prep_cif)."""
    return Keys.of(whole_keys(text).stems | _part_stems(text))


@functools.lru_cache(maxsize=8192)
def whole_keys(text: str) -> Keys:
    """The stems of the words that stand on their own (identifiers whole, "ffi_prep_cif")."""
    return Keys.of(frozenset(map(stem, set(_IDENT_WORD.findall(text.lower())))))


def _part_stems(text: str) -> frozenset[str]:
    """The stems of the pieces of identifiers and file names ("ffi" in ffi_cif, "zen" in zen_of_python.txt)."""
    return frozenset(stem(w) for ident in set(_IDENT_WORD.findall(text.lower())) if "_" in ident for w in _WORD.findall(ident))


def _starts_one_of(prefix: str, ordered: tuple[str, ...], longest: int) -> bool:
    """Some key of ``ordered`` (sorted) is ``prefix`` plus 1 to ``longest - len(prefix)`` characters."""
    i = bisect.bisect_right(ordered, prefix)
    while i < len(ordered) and ordered[i].startswith(prefix):
        if len(ordered[i]) <= longest:
            return True
        i += 1
    return False


def _extends(term: str, keys: Keys) -> bool:
    """A key that extends ``term`` by a short suffix (install ~ installation, use ~ used), or ends
    with it (python ~ cpython); never for a term too short for either."""
    n = len(term)
    if n >= 3 and _starts_one_of(term, keys.ordered, n + (5 if n >= 5 else 3)):
        return True
    return n >= 5 and _starts_one_of(term[::-1], keys.backwards, 1 << 30)


def _hits(term: str, keys: Keys) -> bool:
    if term in keys.stems:
        return True
    if _extends(term, keys):
        return True
    n = len(term)
    if n >= 5 and (term[: n - 1] in keys.stems or (n >= 6 and term[: n - 2] in keys.stems)):
        return True  # a key a little shorter than the term: "licens" ~ "license"
    synonyms = _SYNONYMS.get(term)
    return synonyms is not None and not synonyms.isdisjoint(keys.stems)


@dataclass(frozen=True)
class QuestionTerms:
    """A question's content terms and the answer types it asks for."""

    terms: tuple[str, ...]
    types: frozenset[str]

    @staticmethod
    def of(question: str) -> QuestionTerms:
        return _question_terms(question)

    def matched(self, text: str, among: Sequence[str] | None = None) -> set[str]:
        """The terms (or those of ``among``) found in ``text``."""
        keys = keys_of(text)
        return {t for t in (self.terms if among is None else among) if _hits(t, keys)}

    def matched_whole(self, text: str, among: Sequence[str] | None = None) -> set[str]:
        """The terms found as words of their own, not only inside an identifier or file name."""
        keys = whole_keys(text)
        return {t for t in (self.terms if among is None else among) if _hits(t, keys)}


@functools.lru_cache(maxsize=2048)
def _question_terms(question: str) -> QuestionTerms:
    return QuestionTerms(tuple(t for t in terms(question) if t not in _EXTRA_STOPWORDS), asked_types(question))


def term_coverage(query_terms: tuple[str, ...], text: str) -> float:
    """Share of ``query_terms`` (`retrieval.text.terms`) in ``text``, stems and synonyms included."""
    if not query_terms:
        return 0.0
    keys = keys_of(text)
    return sum(_hits(t, keys) for t in query_terms) / len(query_terms)


# --- units ---------------------------------------------------------------------------------------

_LIST_LINE = re.compile(r"^\s*- ")
_CODE_LINE = re.compile(r"^\s{2,}\S|^\$ |[;{}\\]\s*$|^#\w|^\s*/?\*|==|^\w+://|^[<>]")
_SENTENCE_END = re.compile(r"[.!?:,)\"”]\s*$")


@dataclass(frozen=True)
class Unit:
    kind: str  # "sentence" | "list" | "code" | "row" | "line"
    text: str
    order: int


def _is_code(lines: list[str]) -> bool:
    if any(_CODE_LINE.search(line) for line in lines):
        return True
    # several short lines none of which ends like prose (a config file, an address block)
    return len(lines) > 1 and all(len(line) < 60 and not _SENTENCE_END.search(line) for line in lines)


def _split_long(kind: str, lines: list[str], limit: int, order: int) -> list[Unit]:
    text = "\n".join(lines)
    if len(text) <= limit:
        return [Unit(kind, text, order)]
    return [Unit("line" if kind == "code" else "sentence", line.strip() if kind == "list" else line, order + i / 1000)
            for i, line in enumerate(lines) if line.strip()]


def _label_lines(lines: list[str], order: float) -> list[Unit]:
    """Lines of hard-broken text; a "Label:" line keeps the line after it ("Russian:" + the phrase)."""
    out: list[Unit] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.endswith(":") and i + 1 < len(lines):
            out.append(Unit("line", f"{line}\n{lines[i + 1].strip()}", order + i / 1000))
            i += 2
            continue
        out.append(Unit("line", line, order + i / 1000))
        i += 1
    return out


@functools.lru_cache(maxsize=2048)
def units_of(text: str) -> tuple[Unit, ...]:
    """The units of a passage (module docstring, step 1), in document order."""
    blocks = [b for b in re.split(r"\n[ \t]*\n", text) if b.strip()]
    out: list[Unit] = []
    pending: Unit | None = None  # a sentence ending in ":" waiting for what it introduces
    for number, block in enumerate(blocks):
        lines = [line.rstrip() for line in block.split("\n") if line.strip()]
        order = float(number)
        if all(_LIST_LINE.match(line) for line in lines):
            made = _split_long("list", lines, LIST_UNIT_CHARS, number)
        elif len(lines) > 1 and all(" | " in line for line in lines):
            header, rows = lines[0], lines[1:]
            made = [Unit("row", f"{header}\n{row}", order + i / 1000) for i, row in enumerate(rows)]
        elif _is_code(lines):
            made = _split_long("code", lines, CODE_UNIT_CHARS, number)
        elif len(lines) > 1:
            made = _label_lines(lines, order)
        else:
            made = [Unit("sentence", s, order + i / 1000) for i, s in enumerate(split_sentences(block))]
        introduces = pending is not None and made and (
            made[0].kind == "code" or (made[0].kind == "list" and pending.text.endswith(":")))
        if introduces and pending is not None:
            made[0] = Unit(made[0].kind, f"{pending.text}\n{made[0].text}", pending.order)
            out.pop()  # the introducing sentence now lives inside the unit it introduces
        pending = None
        out.extend(made)
        if out and out[-1].kind in ("sentence", "list") and len(out[-1].text) <= 300:
            pending = out[-1]  # a sentence (or a list ending in ":") followed by code explains it
    return tuple(out)


# --- scoring and choosing ------------------------------------------------------------------------


@dataclass
class Scored:
    passage: Passage
    units: list[tuple[float, int, Unit]] = field(default_factory=list)  # (score, terms matched, unit), best first

    @property
    def best(self) -> float:
        return self.units[0][0] if self.units else 0.0


_ANAPHOR = re.compile(r"^(?:This|These|That|Those|It|They|Such|Either)\b")


def score_units(q: QuestionTerms, passage: Passage) -> Scored:
    """Scores of a passage's units (module docstring, step 2). A sentence opening with "This", "It",
    "They" ... continues the one before: it shares that one's terms. Terms in the passage's headings
    add `HEADING_BONUS` each to every unit (comparing passages)."""
    heading = len(q.matched(" ".join(passage.hit.heading_path))) * HEADING_BONUS
    present = sorted(q.matched(passage.text))  # a term the passage lacks is in none of its units
    scored = []
    previous: set[str] = set()
    for unit in units_of(passage.text):
        found = q.matched(unit.text, present)
        matched = q.matched_whole(unit.text, sorted(found))
        context = PART_WEIGHT * len(found - matched)  # "ffi" inside ffi_cif: half a match
        if unit.kind == "row":  # the header is context: it is the same for every row
            header, row = unit.text.split("\n", 1)
            own = q.matched_whole(row, sorted(found))
            context, matched = HEADING_BONUS * len(found - own), own
        if unit.kind == "sentence" and _ANAPHOR.match(unit.text):
            matched |= previous
        previous = matched
        bonus = sum(TYPE_BONUS for kind in q.types if satisfies(kind, unit.text, unit.kind))
        scored.append((len(matched) + context + bonus + heading, len(matched), unit))
    scored.sort(key=lambda s: (-s[0], s[2].order))
    return Scored(passage, scored)


def pick_units(scored: Scored, budget: int) -> list[Unit]:
    """The best unit, and up to two more within `UNIT_MARGIN` of it that fit ``budget``, in document order."""
    if not scored.units:
        return []
    everything = sorted((u for _, _, u in scored.units), key=lambda u: u.order)
    if all(u.kind != "row" for u in everything) and sum(len(u.text) + 1 for u in everything) <= min(budget, SHORT_PASSAGE_CHARS):
        return everything  # a short passage is quoted whole: its sentences explain each other
    best_score, _, best = scored.units[0]
    chosen, used = [best], len(best.text)
    floor = max(1.0, UNIT_MARGIN * best_score)
    for score, own, unit in scored.units[1:]:
        if len(chosen) >= 3 or score < floor:
            break
        if not own:
            continue  # only the answer type or the headings in common: another row, another line
        if used + len(unit.text) + 1 <= budget:
            chosen.append(unit)
            used += len(unit.text) + 1
    return sorted(chosen, key=lambda u: u.order)


def _fit(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters: whole lines of code or lists, whole sentences of prose;
    only a single sentence longer than the limit is cut, at a word, with an ellipsis."""
    if len(text) <= limit:
        return text
    lines = text.split("\n")
    if len(lines) > 1:
        kept: list[str] = []
        for line in lines:
            if sum(len(k) + 1 for k in kept) + len(line) > limit - 2:
                break
            kept.append(line)
        if kept:
            return "\n".join(kept) + "\n…"
    return text[: limit - 1].rsplit(" ", 1)[0] + " …"


def render_units(units: Sequence[Unit], limit: int) -> str:
    parts: list[str] = []
    for unit in units:
        structured = unit.kind in ("list", "code", "row") or "\n" in unit.text
        if parts:
            parts.append("\n" if structured or "\n" in parts[-1] else " ")
        parts.append(unit.text)
    return _fit("".join(parts), limit)


def source_name(p: Passage | Candidate) -> str:
    filename = p.hit.metadata.get("filename") if isinstance(p.hit.metadata, dict) else None
    return str(filename or p.hit.title or p.hit.document_id)


def pointer(p: Passage) -> str:
    where = " › ".join(p.hit.heading_path)
    return f"{source_name(p)}, section “{where}”" if where else source_name(p)


def compose(question: str, passages: Sequence[Passage]) -> tuple[str, list[int]]:
    """The answer's text and the passage numbers it cites, in the order it cites them (documents only)."""
    q = QuestionTerms.of(question)
    scored = [score_units(q, p) for p in passages if p.hit.kind != "product"]
    if not scored:
        return "", []
    top = max(s.best for s in scored)
    primary = next(s for s in scored if s.best >= PASSAGE_MARGIN * top)
    body = render_units(pick_units(primary, BODY_CHARS), BODY_CHARS)
    blocks = [f"{body} [{primary.passage.n}]"]
    cited = [primary.passage.n]
    pointers = [pointer(primary.passage)]
    for other in scored:
        if other is primary or other.best < SECOND_SOURCE_MARGIN * primary.best or other.best <= 0:
            continue
        if (other.passage.hit.document_id, tuple(other.passage.hit.heading_path)) == (
                primary.passage.hit.document_id, tuple(primary.passage.hit.heading_path)):
            continue
        room = MAX_CHARS - sum(len(b) + 2 for b in blocks) - 60 - sum(len(x) for x in pointers)
        if len(other.units[0][2].text) > room:
            break  # a second source only when its unit fits whole
        extra = render_units(pick_units(other, room), room)
        blocks.append(f"{extra} [{other.passage.n}]")
        cited.append(other.passage.n)
        if pointer(other.passage) not in pointers:
            pointers.append(pointer(other.passage))
        break  # at most a second source
    blocks.append("More in " + "; and in ".join(pointers) + ".")
    return "\n\n".join(blocks), cited


# --- does a passage answer the question? --------------------------------------------------------


def answers(question: str, passage: Passage, context: Sequence[Passage] = ()) -> bool:
    """The refusal test (module docstring). ``context``: the passages selected with it; a term that
    every one of two or more holds says what they are all about ("pip"), not which fact is asked.
    Products answer by their facts: always True for them."""
    if passage.hit.kind == "product":
        return True
    q = QuestionTerms.of(question)
    if not q.terms:
        return True
    metadata = passage.hit.metadata if isinstance(passage.hit.metadata, dict) else {}
    topic = keys_of(" ".join([passage.hit.title or "", str(metadata.get("filename") or ""), *passage.hit.heading_path]))
    shared = _shared_terms(q.terms, tuple(p.text for p in context if p.hit.kind != "product"),
                           tuple(p.hit.document_id for p in context if p.hit.kind != "product"))
    facts = [t for t in q.terms if not _hits(t, topic) and t not in shared]
    text = passage.text
    units = units_of(text)
    for kind in _REQUIRED:
        if kind in q.types and not any(
            satisfies(kind, u.text, u.kind) and any(q.matched(v.text) for v in units[max(0, i - 1) : i + 2])
            for i, u in enumerate(units)
        ):
            return False  # the number, duration, date or version asked for, next to what it is about
    if not facts:
        return True  # every term is in the title or headings: the passage is about exactly this
    keys = keys_of(text)
    stood_in = set().union(*(_TYPE_TERMS.get(k, frozenset()) for k in q.types if any(
        satisfies(k, u.text, u.kind) for u in units_of(text))))
    found = [t for t in facts if _hits(t, keys) or t in stood_in]
    return len(found) >= FACT_COVERAGE * len(facts)


@functools.lru_cache(maxsize=256)
def _shared_terms(terms: tuple[str, ...], texts: tuple[str, ...], document_ids: tuple[str, ...]) -> frozenset[str]:
    """The terms every one of two or more documents holds (in its selected passages together).
    Cached: `answers` asks it once for every passage of the same selection."""
    stems: dict[str, set[str]] = {}
    for text, document_id in zip(texts, document_ids):
        stems.setdefault(document_id, set()).update(keys_of(text).stems)
    if len(stems) < 2:
        return frozenset()
    documents = [Keys.of(frozenset(s)) for s in stems.values()]
    return frozenset(t for t in terms if all(_hits(t, keys) for keys in documents))


def nearest_topics(passages: Sequence[Passage | Candidate], limit: int = 3) -> list[str]:
    """What the documents do cover near the question: distinct sections (or products), best first."""
    out: list[str] = []
    for p in passages:
        if p.hit.kind == "product":
            label = p.hit.title or p.hit.document_id
        else:
            where = p.hit.heading_path[-1] if p.hit.heading_path else ""
            label = f"“{where}” in {source_name(p)}" if where else source_name(p)
        if label not in out:
            out.append(label)
        if len(out) >= limit:
            break
    return out


def with_topics(refusal: str, topics: Sequence[str]) -> str:
    if not topics:
        return refusal
    return f"{refusal}\n\nClosest topics I have: {'; '.join(topics)}."
