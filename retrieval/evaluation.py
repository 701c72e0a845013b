"""Answer quality on a question set: is the fact in the answer, is the right source cited first,
does the agent refuse exactly when it should, and how long are its answers.

One implementation serves `bench/answer_quality.py` (our own questions over ../shared/data) and
`parley eval --tenant T FILE.jsonl` (a tenant's questions over its own knowledge base).

The question file is JSON Lines, one case per line (blank lines and lines starting with ``#``
are skipped)::

    {"question": "What is the return window?", "facts": ["30 days"], "source": "returns.md"}
    {"question": "Do you ship to Mars?", "refuse": true}

* ``question`` (required): asked as a customer would.
* ``facts``: a string or a list of strings that must *all* appear in the answer (compared
  case-insensitively, with runs of whitespace collapsed, so a wrapped line still matches).
* ``source``: the document (its file name or title) or the product (its title) the answer should
  cite first. Matched case-insensitively against the first citation's title and file name.
* ``refuse``: true when the documents do not hold the answer; the agent should say so.
* anything else (``kind``, ``note``) is carried along and shown per case.

A case needs ``facts`` or ``source``, or ``refuse: true`` (and then neither of the others).

The figures (see `Report`): *facts* - share of answerable cases whose every fact is in the
answer; *right source* - share of answerable cases with a ``source`` whose first citation is it;
*refusal recall* - share of ``refuse`` cases refused; *refusal precision* - share of refusals that
were right; *false refusals* - share of answerable cases refused; answer length in characters
(median, p90) over the answers to answerable cases.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from parley.errors import InvalidInput
from retrieval.schemas import MAX_MESSAGE_CHARS, QueryResponse

#: The issue's targets; a report says which it meets.
TARGETS = {"facts": 0.90, "right_source": 0.95, "refusal_precision": 0.90, "false_refusals": 0.05, "median_chars": 600}

_SPACE = re.compile(r"\s+")
_KNOWN = {"question", "facts", "source", "refuse"}


@dataclass(frozen=True)
class Case:
    line: int
    question: str
    facts: tuple[str, ...] = ()
    source: str | None = None
    refuse: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def parse_cases(lines: Iterable[str], *, name: str = "the question file") -> list[Case]:
    """Cases from JSON Lines; a malformed line is an `InvalidInput` naming its line number."""
    cases = []
    for number, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue

        def bad(why: str) -> InvalidInput:
            return InvalidInput(f"{name}, line {number}: {why}")

        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise bad(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(data, dict):
            raise bad("expected a JSON object like {\"question\": ..., \"facts\": [...]}")
        question = data.get("question")
        if not isinstance(question, str) or not question.strip():
            raise bad("\"question\" must be a non-empty string")
        if len(question) > MAX_MESSAGE_CHARS:
            raise bad(f"\"question\" is longer than {MAX_MESSAGE_CHARS} characters")
        facts = data.get("facts", [])
        if isinstance(facts, str):
            facts = [facts]
        if not isinstance(facts, list) or not all(isinstance(f, str) and f.strip() for f in facts):
            raise bad("\"facts\" must be a string or a list of non-empty strings")
        source = data.get("source")
        if source is not None and (not isinstance(source, str) or not source.strip()):
            raise bad("\"source\" must be a non-empty string")
        refuse = data.get("refuse", False)
        if not isinstance(refuse, bool):
            raise bad("\"refuse\" must be true or false")
        if refuse and (facts or source):
            raise bad("a case with \"refuse\": true has no \"facts\" or \"source\" to find")
        if not refuse and not facts and not source:
            raise bad("give \"facts\" or \"source\" to check, or \"refuse\": true")
        extra = {k: v for k, v in data.items() if k not in _KNOWN}
        cases.append(Case(number, question.strip(), tuple(f.strip() for f in facts), source and source.strip(), refuse, extra))
    if not cases:
        raise InvalidInput(f"{name} holds no questions")
    return cases


def read_cases(path: str) -> list[Case]:
    try:
        with open(path, encoding="utf-8") as fh:
            return parse_cases(fh, name=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {path}: {exc}") from None


def _norm(text: str) -> str:
    return _SPACE.sub(" ", text).strip().casefold()


@dataclass(frozen=True)
class Outcome:
    """One case asked and judged."""

    case: Case
    answer: str
    refused: bool
    first_source: str | None  # the first citation's title (and file name, when it differs)
    facts_missing: tuple[str, ...]
    right_source: bool | None  # None: the case names no source

    @property
    def facts_present(self) -> bool:
        return not self.facts_missing

    @property
    def correct(self) -> bool:
        if self.case.refuse:
            return self.refused
        return not self.refused and self.facts_present and self.right_source is not False

    @property
    def chars(self) -> int:
        return len(self.answer)

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.case.line, "question": self.case.question, "expected": "refusal" if self.case.refuse else {
                "facts": list(self.case.facts), "source": self.case.source},
            "refused": self.refused, "facts_missing": list(self.facts_missing), "right_source": self.right_source,
            "first_source": self.first_source, "chars": self.chars, "correct": self.correct, "answer": self.answer,
            **self.case.extra,
        }


def judge(case: Case, response: QueryResponse, file_names: Mapping[str, str] | None = None) -> Outcome:
    """``file_names``: document id -> file name, so ``source`` may name the uploaded file even when
    the citation's title is the document's own title (an HTML page's <title>)."""
    answer = _norm(response.answer)
    refused = not response.found
    missing = tuple(f for f in case.facts if _norm(f) not in answer)
    first = response.citations[0] if response.citations else None
    names: list[str] = []
    if first is not None:
        names.append(first.title)
        filename = (file_names or {}).get(first.document_id)
        if filename and filename != first.title:
            names.append(filename)
    right = None
    if case.source is not None:
        right = not refused and any(_norm(case.source) == _norm(n) for n in names)
    return Outcome(case, response.answer, refused, " / ".join(names) or None, missing if not case.refuse else (), right)


def _share(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _percentile(values: Sequence[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # nearest rank


@dataclass
class Report:
    outcomes: list[Outcome]

    @property
    def answerable(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.case.refuse]

    def figures(self) -> dict[str, Any]:
        answerable = self.answerable
        unanswerable = [o for o in self.outcomes if o.case.refuse]
        with_source = [o for o in answerable if o.case.source is not None]
        with_facts = [o for o in answerable if o.case.facts]
        refusals = [o for o in self.outcomes if o.refused]
        lengths = [o.chars for o in answerable if not o.refused]
        return {
            "cases": len(self.outcomes),
            "answerable": len(answerable),
            "not_in_documents": len(unanswerable),
            "facts": _share(sum(o.facts_present and not o.refused for o in with_facts), len(with_facts)),
            "right_source": _share(sum(bool(o.right_source) for o in with_source), len(with_source)),
            "correct_refusals": sum(o.refused for o in unanswerable),
            "false_refusals_count": sum(o.refused for o in answerable),
            "refusal_recall": _share(sum(o.refused for o in unanswerable), len(unanswerable)),
            "refusal_precision": _share(sum(o.case.refuse for o in refusals), len(refusals)),
            "false_refusals": _share(sum(o.refused for o in answerable), len(answerable)),
            "median_chars": int(statistics.median(lengths)) if lengths else None,
            "p90_chars": _percentile(lengths, 0.9),
            "correct": _share(sum(o.correct for o in self.outcomes), len(self.outcomes)),
        }

    def targets(self) -> dict[str, bool | None]:
        return targets_met(self.figures())

    def to_json(self) -> dict[str, Any]:
        return {"figures": self.figures(), "targets": {k: {"target": TARGETS[k], "met": v} for k, v in self.targets().items()},
                "cases": [o.to_json() for o in self.outcomes]}

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.correct]


def targets_met(f: Mapping[str, Any]) -> dict[str, bool | None]:
    """Which targets the figures ``f`` (`Report.figures`) meet; None when there was nothing to measure."""

    def at_least(key: str) -> bool | None:
        return None if f[key] is None else f[key] >= TARGETS[key]

    def at_most(key: str) -> bool | None:
        return None if f[key] is None else f[key] <= TARGETS[key]

    return {
        "facts": at_least("facts"), "right_source": at_least("right_source"),
        "refusal_precision": at_least("refusal_precision"), "false_refusals": at_most("false_refusals"),
        "median_chars": at_most("median_chars"),
    }


def summary_rows(f: Mapping[str, Any]) -> list[dict[str, str]]:
    """The figures ``f`` as rows of (measure, value, target) for a table (`parley eval`, the bench)."""
    met = targets_met(f)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    def mark(key: str) -> str:
        return {True: "met", False: "MISSED", None: "-"}[met[key]]

    def chars(v: int | None) -> str:
        return "-" if v is None else f"{v} chars"

    return [
        {"measure": "fact in the answer", "value": pct(f["facts"]), "target": f">= 90 % ({mark('facts')})"},
        {"measure": "right source cited first", "value": pct(f["right_source"]), "target": f">= 95 % ({mark('right_source')})"},
        {"measure": "refusal precision", "value": pct(f["refusal_precision"]), "target": f">= 90 % ({mark('refusal_precision')})"},
        {"measure": "refusal recall (correct refusals)",
         "value": f"{pct(f['refusal_recall'])} ({f['correct_refusals']}/{f['not_in_documents']})", "target": ""},
        {"measure": "false refusals", "value": f"{pct(f['false_refusals'])} ({f['false_refusals_count']}/{f['answerable']})",
         "target": f"<= 5 % ({mark('false_refusals')})"},
        {"measure": "answer length, median", "value": chars(f["median_chars"]), "target": f"<= 600 ({mark('median_chars')})"},
        {"measure": "answer length, p90", "value": chars(f["p90_chars"]), "target": ""},
    ]


def failure_text(case: Mapping[str, Any]) -> str:
    """One failed case (`Outcome.to_json`) as a few readable lines: what was expected, what came back."""
    if case["expected"] == "refusal":
        why = "expected a refusal, got an answer"
    elif case["refused"]:
        why = "refused, but the documents hold it"
    else:
        bits = []
        if case["facts_missing"]:
            bits.append("missing " + ", ".join(repr(f) for f in case["facts_missing"]))
        if case["right_source"] is False:
            bits.append(f"first source {case['first_source']!r}, expected {case['expected']['source']!r}")
        why = "; ".join(bits)
    answer = "  " + case["answer"].replace("\n", "\n  ")
    return f"line {case['line']}: {case['question']}\n  -> {why}\n{answer}"


Ask = Callable[[str], Awaitable[QueryResponse]]
Names = Callable[[Sequence[str]], Awaitable[Mapping[str, str]]]


async def evaluate(cases: Sequence[Case], ask: Ask, file_names: Names | None = None) -> Report:
    """Ask every case (in order, one at a time: the figures, not the throughput, are measured here)."""
    outcomes = []
    for case in cases:
        response = await ask(case.question)
        ids = [c.document_id for c in response.citations[:1] if c.kind == "document"]
        names = await file_names(ids) if file_names is not None and ids else {}
        outcomes.append(judge(case, response, names))
    return Report(outcomes)


def report_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, ensure_ascii=False)


__all__ = [
    "Case", "Outcome", "Report", "TARGETS", "evaluate", "failure_text", "judge", "parse_cases", "read_cases", "report_json",
    "summary_rows", "targets_met",
]
