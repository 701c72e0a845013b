"""Does a customer's message ask for a person? The phrase matcher behind the ``asked`` handoff trigger
(`bot.conversation.handoff`), and the tenant's keywords.

Matched on whole words of a normalized text (lower case, accents removed, punctuation a space), in
English, Spanish, Portuguese, French, German, Italian and Dutch: phrases ("talk to a human", "hablar
con una persona", "parler à un conseiller", "mit einem Menschen sprechen", "parlare con un
operatore", "praten met een medewerker", "falar com um atendente"), or a message that is nothing but
such a word ("agent!", "Mensch bitte"). A word alone inside a longer question ("the price per
person", "personne ne répond") is not a request, and "humane", "agenda", "personalised" never are.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

__all__ = ["asks_for_person", "keyword_in", "normalize"]
_PERSON = {
    "en": "human|humans|person|people|someone|somebody|agent|agents|operator|representative|rep|staff|employee|"
          "human being|real person|live agent|customer service|customer support|support agent|support team",
    "es": "persona|personas|humano|humana|agente|operador|operadora|asesor|asesora|representante|alguien|empleado",
    "pt": "pessoa|humano|humana|atendente|agente|operador|operadora|alguem|representante|funcionario",
    "fr": "humain|humaine|personne|conseiller|conseillere|agent|operateur|operatrice|quelqu un|representant",
    "de": "mensch|menschen|mitarbeiter|mitarbeiterin|berater|beraterin|person|jemandem|jemand|agenten|kundendienst",
    "it": "operatore|operatrice|persona|umano|essere umano|agente|qualcuno|consulente",
    "nl": "mens|medewerker|medewerkster|persoon|iemand|klantenservice",
}
_ART = r"(?:(?:a|an|the|some|your|one of your|un|una|uno|um|uma|une|le|la|el|o|een|einem|einer|einen|ein|eine|" \
       r"echten|echte|echt|vraie|vrai|real|live|actual|de verdad|di|du|al|com|avec)\s+){0,3}"

_PATTERNS = [
    # English: talk/speak/chat to a human, connect/transfer me to an agent, I want/need a person
    rf"\b(?:talk|speak|chat|connect|transfer|put|get)\s+(?:me\s+)?(?:to|with|through to)\s+{_ART}(?:{_PERSON['en']})\b",
    rf"\b(?:want|need|get|give me|looking for|can i have|can i get)\s+{_ART}(?:human|person|real person|live agent|agent|"
    r"operator|representative|human being|someone real)\b(?!\s+(?:resources|rights|error|nature|body|trafficking))",
    r"\b(?:real|live|actual)\s+(?:human|person|people|agent|operator)\b",
    r"\bhuman\s+(?:agent|support|help|operator|please)\b",
    # Spanish
    rf"\b(?:hablar|habla|comunicarme|contactar|ponerme|pasame|pasarme)\s+(?:con|a)\s+{_ART}(?:{_PERSON['es']})\b",
    r"\b(?:quiero|necesito)\s+(?:un|una)\s+(?:persona|humano|agente|operador|operadora|asesor|asesora)\b",
    r"\b(?:persona|agente)\s+(?:real|humano|humana|de verdad)\b",
    # Portuguese
    rf"\b(?:falar|fale|conversar|atendimento)\s+(?:com|a)\s+{_ART}(?:{_PERSON['pt']})\b",
    r"\b(?:quero|preciso de|preciso)\s+(?:um|uma)\s+(?:pessoa|humano|atendente|agente)\b",
    r"\b(?:pessoa\s+real|atendente\s+humano|atendimento\s+humano)\b",
    # French
    rf"\bparler\s+(?:a|avec)\s+{_ART}(?:{_PERSON['fr']})\b",
    r"\b(?:une\s+vraie\s+personne|un\s+vrai\s+humain|un\s+etre\s+humain|conseiller\s+humain|agent\s+humain)\b",
    r"\b(?:je\s+veux|je\s+voudrais|j\s+aimerais)\s+(?:un|une)\s+(?:humain|conseiller|conseillere|agent|operateur)\b",
    # German: mit einem Menschen sprechen / reden, einen Mitarbeiter, echter Mensch
    rf"\bmit\s+{_ART}(?:{_PERSON['de']})\s+(?:\w+\s+){{0,3}}?(?:sprechen|reden|chatten|verbinden|schreiben)\b",
    r"\b(?:sprechen|reden|verbinden)\s+mit\s+(?:einem|einer|jemandem)?\s*(?:echten\s+)?(?:mensch|menschen|mitarbeiter|"
    r"mitarbeiterin|berater|beraterin)\b",
    r"\b(?:echter|echten|echte)\s+(?:mensch|menschen|person|mitarbeiter)\b",
    r"\b(?:ich\s+will|ich\s+mochte|ich\s+moechte|ich\s+brauche)\s+(?:einen|eine)\s+(?:menschen|mitarbeiter|mitarbeiterin|"
    r"berater|beraterin)\b",
    # Italian
    rf"\b(?:parlare|parlo|parla)\s+(?:con|a)\s+{_ART}(?:{_PERSON['it']})\b",
    r"\b(?:persona\s+reale|operatore\s+umano|un\s+essere\s+umano)\b",
    r"\b(?:voglio|vorrei)\s+(?:un|una)\s+(?:operatore|operatrice|persona|umano)\b",
    # Dutch
    rf"\b(?:praten|spreken|chatten)\s+met\s+{_ART}(?:{_PERSON['nl']})\b",
    rf"\bmet\s+{_ART}(?:mens|medewerker|medewerkster|persoon|iemand)\s+(?:\w+\s+){{0,3}}?(?:praten|spreken|chatten)\b",
    r"\b(?:echt\s+mens|echte\s+persoon|echte\s+medewerker)\b",
]
_PHRASES = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))
#: A message that is nothing but one of these words (and maybe "please"): "human", "agent!", "Mensch bitte".
_BARE = frozenset({
    "human", "agent", "operator", "representative", "person", "someone", "live agent", "human agent", "real person",
    "talk to human", "speak to human", "talk to a human", "speak to a human", "customer service",
    "humano", "humana", "persona", "agente", "operador", "operadora", "asesor", "persona real",
    "pessoa", "atendente", "humain", "conseiller", "operateur", "mensch", "mitarbeiter", "echter mensch",
    "operatore", "umano", "mens", "medewerker",
})
_POLITE = re.compile(r"\b(?:please|pls|plz|por favor|por favour|s il vous plait|s il te plait|bitte|per favore|"
                     r"alstublieft|aub|now|ahora|agora|maintenant|jetzt|subito|nu)\b")


def normalize(text: str) -> str:
    """Lower case, accents removed, anything but letters and digits a single space."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.sub(r"[^\w]+|_", " ", plain).split())


def asks_for_person(text: str) -> bool:
    """Does the customer ask for a person, in plain words? Matched on whole words of a normalized
    text, so "humane society", "agenda" or "personalised" are not a request."""
    words = normalize(text)
    if not words:
        return False
    if _PHRASES.search(words):
        return True
    bare = " ".join(_POLITE.sub(" ", words).split())
    return bare in _BARE


def keyword_in(text: str, keywords: Sequence[str]) -> str | None:
    """The first tenant keyword the message holds as a word or phrase (a plural "s" allowed)."""
    words = normalize(text)
    for keyword in keywords:
        kw = normalize(keyword)
        if kw and re.search(rf"\b{re.escape(kw)}(?:s|es)?\b", words):
            return keyword
    return None
