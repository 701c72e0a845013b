"""Turning a context-dependent follow-up into a standalone question.

"and in blue?", "what about the second one", "how much is it?" mean nothing to a search index on
their own. `RuleRewriter` (offline, microseconds) resolves them against the conversation's
earlier turns; `LLMRewriter` asks the chat model when one is configured, and falls back to the
rules on any error. Both only act on messages the rules *detect* as follow-ups, so a standalone
question never pays for a model call.

The rules, applied to each user turn in order so that follow-ups of follow-ups resolve too
(each resolved question remembers its *topic*, the phrase a later "it" or "what about X" swaps):

* detection: a lead-in ("and ...", "what about ...", "how about ...", "also ..."), an ordinal
  reference ("the second one", "number 2", "the last one") when the previous assistant turn
  holds a list, or a pronoun ("it", "they", "that is") in a message of at most 10 words;
* an ordinal reference becomes the list item it points at (the item's name: the text before
  " - ", ":", "(" or ",");
* "and <prep> X" swaps the phrase after the same preposition in the previous question
  ("Do you ship to Canada?" + "and to Mexico?" -> "Do you ship to Mexico?"), or appends it when
  the previous question has no such preposition ("... running shoes" + "and for kids?");
* a colour or size swaps the previous question's colour or size;
* a name (capitalised words, or a resolved list item) swaps the previous topic;
* otherwise the fragment replaces the previous question's topic words (its content words minus
  intent words such as "long", "cost", "price"), or, failing that, is prefixed to it;
* a pronoun is replaced by the previous topic.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from retrieval.products import COLOURS
from retrieval.schemas import Turn
from retrieval.text import STOPWORDS, normalise_space, words

log = logging.getLogger("parley.retrieval")

_LEAD = re.compile(r"^(?:and|also|or|plus|what about|how about|what of|and what about|and how about|and also)\b[\s,]*", re.I)
_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3, "fifth": 4, "5th": 4, "last": -1}
_ORDINAL_REF = re.compile(
    r"\b(?:the\s+)?(first|second|third|fourth|fifth|1st|2nd|3rd|4th|5th|last)(?:\s+(?:one|item|option|product|link|result))?\b"
    r"|\b(?:number|no\.?|#)\s*([1-9])\b",
    re.I,
)
_LIST_ITEM = re.compile(r"^\s*(?:\d+[.)]|[-*•]|\[\d+\])\s+(.+?)\s*$", re.M)
_ITEM_NAME_END = re.compile(r"\s+[-–—]\s+|:|\(|,|\s+\[\d+\]")
_PRONOUN = re.compile(
    r"\b(it|its|they|them|their|theirs)\b"
    # a demonstrative only where it stands for a thing ("is that waterproof?", "how much does this cost",
    # "that one"), not in a relative clause ("a model that is waterproof")
    r"|(?:(?<=\bis )|(?<=\bare )|(?<=\bdoes )|(?<=\bdo )|(?<=\bwas )|(?<=\babout )|(?<=\bbuy )|(?<=\border )|(?<=\bget ))"
    r"(this|that|these|those)\b"
    r"|^(this|that|these|those)\b(?=\s+(?:is|are|was|were|does|do|cost|costs|come|comes|work|works|one|ones)\b|\s*[?.!]?\s*$)",
    re.I,
)
_QUESTION_START = re.compile(r"^(?:is|are|does|do|did|can|could|will|would|how|what|where|when|which|who|why|should)\b", re.I)
_PREPOSITIONS = frozenset("in to for with on at from under over by without".split())
_SIZES = frozenset("xxs xs s m l xl xxl xxxl small medium large".split())
_INTENT = frozenset(
    """long cost costs price prices pricing take takes work works often soon fast quickly quick expensive cheap
    big size sizes colour colours color colors come comes stock left time times open late early best good""".split()
)
_CAPITAL_RUN = re.compile(r"\b[A-Z][\w'-]*(?:\s+(?:[A-Z0-9][\w'-]*))*")


@dataclass(frozen=True)
class Resolved:
    question: str
    rewritten: bool
    topic: str | None


class Rewriter(Protocol):
    async def rewrite(self, message: str, turns: Sequence[Turn]) -> tuple[str, bool]:
        """(standalone question, whether it differs from the message)."""
        ...

    async def aclose(self) -> None: ...


class RuleRewriter:
    async def rewrite(self, message: str, turns: Sequence[Turn]) -> tuple[str, bool]:
        resolved = resolve(message, turns)
        return resolved.question, resolved.rewritten

    async def aclose(self) -> None:
        return None


def resolve(message: str, turns: Sequence[Turn]) -> Resolved:
    if not any(t.role == "user" for t in turns):
        return Resolved(normalise_space(message), False, None)  # nothing to depend on
    prev: Resolved | None = None
    listing: list[str] = []  # the items of the latest assistant turn that held a list
    for turn in turns:
        if turn.role == "user":
            prev = _resolve_one(turn.text, prev, listing)
        elif items := list_items(turn.text):
            listing = items
    return _resolve_one(message, prev, listing)


def is_followup(message: str, turns: Sequence[Turn]) -> bool:
    return resolve(message, turns).rewritten


# --- one turn ----------------------------------------------------------------------------------


def _resolve_one(message: str, prev: Resolved | None, items: list[str]) -> Resolved:
    text = normalise_space(message)
    if prev is None:
        return Resolved(text, False, _topic_of(text))
    lead = _LEAD.match(text)
    rest = text[lead.end():] if lead else text
    referent = None
    ref = _ORDINAL_REF.search(rest)
    if ref is not None and items:
        index = _ORDINALS[ref.group(1).lower()] if ref.group(1) else int(ref.group(2)) - 1
        if items and -len(items) <= index < len(items):
            referent = items[index]
            rest = rest[: ref.start()] + referent + rest[ref.end():]
    pronoun = None if referent else _PRONOUN.search(rest)
    if lead is None and referent is None and (pronoun is None or len(words(text)) > 10):
        return Resolved(text, False, _topic_of(text))
    if lead is not None and _QUESTION_START.match(rest):
        lead = None  # "and is it waterproof?": a whole question after the lead-in
        if referent is None and (pronoun is None or len(words(rest)) > 10):
            return Resolved(_ensure_question(rest), rest != text, _topic_of(rest))
    if lead is not None:
        fragment = rest.strip(" ?!.,")
        if not fragment:
            return Resolved(prev.question, True, prev.topic)
        return _combine(prev, fragment, referent)
    if referent is not None and pronoun is None:
        return Resolved(_ensure_question(rest), True, referent)
    assert pronoun is not None
    topic = prev.topic or prev.question
    replacement = topic if _is_name(topic) else f"the {topic}"
    if pronoun.group(1) and pronoun.group(1).lower() in ("its", "their", "theirs"):
        replacement += "'s"
    end = pronoun.end()
    if (one := re.match(r"\s+ones?\b", rest[end:])) is not None:
        end += one.end()  # "that one" is one reference
    question = rest[: pronoun.start()] + replacement + rest[end:]
    return Resolved(_ensure_question(question), True, topic)


def _combine(prev: Resolved, fragment: str, referent: str | None) -> Resolved:
    q = prev.question.rstrip(" ?!.")
    fwords = fragment.split()
    first = fwords[0].lower()
    # "and to Mexico?" -> swap the phrase after the same preposition, or append the phrase
    if first in _PREPOSITIONS and len(fwords) > 1:
        obj = fwords[1:]
        pattern = re.compile(rf"\b{re.escape(first)}\s+((?:\S+\s+){{0,{max(0, len(obj) - 1)}}}\S+?)(?=[\s?!.,]|$)", re.I)
        m = None
        for m in pattern.finditer(q):
            pass  # the last occurrence: questions end with their qualifiers
        if m is not None:
            topic = " ".join(obj) if prev.topic and prev.topic in m.group(1) else prev.topic
            return Resolved(_ensure_question(q[: m.start(1)] + " ".join(obj) + q[m.end(1):]), True, topic)
        return Resolved(_ensure_question(f"{q} {fragment}"), True, prev.topic)
    # a colour or a size swaps the previous one
    for vocab in (COLOURS, _SIZES):
        new = [w for w in words(fragment) if w in vocab]
        if new:
            old = [w for w in words(q) if w in vocab]
            if old:
                swapped = re.sub(rf"\b{re.escape(old[-1])}\b", new[0], q, count=1, flags=re.I)
                return Resolved(_ensure_question(swapped), True, prev.topic)
            return Resolved(_ensure_question(f"{q} in {new[0]}"), True, prev.topic)
    # a name swaps the previous topic
    name = referent or _capital_run(fragment)
    if name and prev.topic and prev.topic in q:
        return Resolved(_ensure_question(q.replace(prev.topic, name, 1)), True, name)
    # otherwise the fragment replaces the previous topic words
    span = _topic_span(q)
    subject = _strip_article(fragment)
    if span is not None:
        return Resolved(_ensure_question(q[: span[0]] + subject + q[span[1]:]), True, subject)
    return Resolved(_ensure_question(f"{subject}: {q}"), True, subject)


# --- pieces ------------------------------------------------------------------------------------


def list_items(text: str) -> list[str]:
    """Names of the items of a list in an assistant turn ("1. Trail Runner - 89.00 USD" -> "Trail Runner")."""
    out = []
    for m in _LIST_ITEM.finditer(text):
        name = _ITEM_NAME_END.split(m.group(1), maxsplit=1)[0].strip(" *_\"'")
        if name:
            out.append(name)
    return out


def _capital_run(text: str) -> str | None:
    """Capitalised words (a product or place name); a single capitalised first word does not count."""
    best = None
    for m in _CAPITAL_RUN.finditer(text):
        run = m.group(0)
        n = len(run.split())
        if run == "I" or (m.start() == 0 and n == 1 and run.lower() in STOPWORDS):
            continue
        if m.start() == 0 and n == 1 and text.strip() != run:
            continue
        if best is None or n > len(best.split()):
            best = run
    return best


def _topic_span(question: str) -> tuple[int, int] | None:
    """The last run of content words that are not intent words, as (start, end) offsets."""
    spans: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None
    for m in re.finditer(r"[\w'-]+", question):
        w = m.group(0).lower()
        if w not in STOPWORDS and w not in _INTENT and not w.isdigit():
            current = (current[0], m.end()) if current else (m.start(), m.end())
        elif current is not None:
            spans.append(current)
            current = None
    if current is not None:
        spans.append(current)
    return spans[-1] if spans else None


def _topic_of(question: str) -> str | None:
    name = _capital_run(question)
    if name:
        return name
    span = _topic_span(question.rstrip(" ?!."))
    return question[span[0]: span[1]] if span else None


def _is_name(topic: str) -> bool:
    return topic[:1].isupper()


def _strip_article(text: str) -> str:
    return re.sub(r"^(?:the|a|an|your|my)\s+", "", text, flags=re.I)


def _ensure_question(text: str) -> str:
    text = normalise_space(text).rstrip(" .!,")
    return text if text.endswith("?") else text + "?"


# --- with the chat model -------------------------------------------------------------------------

REWRITE_INSTRUCTION = (
    "You rewrite the customer's last message into one standalone question that can be understood "
    "without the conversation. Resolve pronouns and references such as 'the second one' from the "
    "conversation. Keep the customer's language and wording where possible. Do not answer it. "
    "Output only the rewritten question."
)


class LLMRewriter:
    """Asks the chat model, only for messages the rules detect as follow-ups; the rules on any failure."""

    def __init__(self, client: Any, model: str, *, timeout: float = 5.0) -> None:
        self.client = client
        self.model = model
        self.timeout = timeout

    async def rewrite(self, message: str, turns: Sequence[Turn]) -> tuple[str, bool]:
        fallback = resolve(message, turns)
        if not fallback.rewritten:
            return fallback.question, False
        convo = "\n".join(f"{t.role}: {t.text}" for t in turns[-8:])
        try:
            completion = await self.client.chat.completions.create(
                model=self.model,
                messages=[
                    {"role": "system", "content": REWRITE_INSTRUCTION},
                    {"role": "user", "content": f"Conversation:\n{convo}\n\nLast message: {message}"},
                ],
                temperature=0,
                max_tokens=100,
                timeout=self.timeout,
            )
            text = normalise_space(completion.choices[0].message.content or "")
        except Exception as exc:  # noqa: BLE001 - any failure: the rules' answer is good enough
            log.warning("follow-up rewrite by the chat model failed, using the rules: %s", exc.__class__.__name__)
            return fallback.question, True
        if not text or len(text) > 500:
            return fallback.question, True
        return text, True

    async def aclose(self) -> None:
        return None  # the client belongs to whoever made it
