"""Which language a customer's question is written in, well enough to tell a chat model.

Small models (the ones people run under Ollama or llama.cpp) tend to answer in the language of
the passages rather than of the question; naming the question's language in the instruction
("The question is in German: answer in German") fixes most of that. The guess is cheap and
dependency-free: the script of the letters for the languages that have their own (Cyrillic,
Greek, Arabic, Hebrew, Devanagari, Thai, Hangul, kana, Han), and for Latin script a vote of
frequent function words over the languages customers most often write in. None when it cannot
tell (a two-word question, a language it does not know): the instruction then says "the language
of the question" without naming it.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)

#: Unicode name prefix of a letter -> the language to name (the most common one writing that script).
_SCRIPTS = (("HIRAGANA", "Japanese"), ("KATAKANA", "Japanese"), ("HANGUL", "Korean"), ("CJK", "Chinese"),
            ("CYRILLIC", "Russian"), ("GREEK", "Greek"), ("ARABIC", "Arabic"), ("HEBREW", "Hebrew"),
            ("DEVANAGARI", "Hindi"), ("THAI", "Thai"))

#: Frequent function and question words, distinctive enough to vote (shared ones like "a" left out).
_WORDS = {
    "English": "the is are do does what when where how which who why can you your my of to and with for have there".split(),
    "German": "der die das ist sind und ich ihr sie wie was wann wo warum kann können ein eine nicht mit für habt gibt es zu".split(),
    "French": "le la les est sont et je vous quel quelle quand où comment pourquoi peut pouvez un une des du avec pour de au aux combien ce votre vos nous".split(),
    "Spanish": "el los las es son y yo usted qué cuándo dónde cómo por cuál puedo puede una con para hay tienen del mi su".split(),
    "Italian": "il lo gli è sono e io voi che quando dove come perché posso può una con per ci avete di del mio".split(),
    "Portuguese": "o os as é são e eu você que quando onde como porque posso pode uma com para há vocês tem".split(),
    "Dutch": "de het is zijn en ik jullie wat wanneer waar hoe waarom kan kunnen een niet met voor er".split(),
}
_OWN = {lang: set(ws) for lang, ws in _WORDS.items()}


def question_language(text: str) -> str | None:
    """The English name of the language ``text`` is most likely in, or None when it cannot tell."""
    scripts: Counter[str] = Counter()
    for ch in text:
        if ch.isalpha() and ord(ch) > 0x24F:  # beyond Latin (and its extensions)
            name = unicodedata.name(ch, "")
            for prefix, language in _SCRIPTS:
                if name.startswith(prefix):
                    scripts[language] += 1
                    break
    if scripts:
        if scripts["Japanese"]:  # kana anywhere: Japanese, whatever share of it is Han
            return "Japanese"
        return scripts.most_common(1)[0][0]
    words = [w.lower() for w in _WORD.findall(text)]
    votes = Counter(lang for lang, own in _OWN.items() for w in words if w in own)
    if not votes:
        return None
    (best, n), *rest = votes.most_common(2) + [("", 0)]
    return best if n >= 1 and n > rest[0][1] else None
