"""Word lexicons: a per-word valence column beside the word vectors (`TextConfig.lexicon`).

"vader": the sentiment lexicon of VADER (Hutto & Gilbert, ICWSM 2014: about 7,500 words, slang
and emoticons, each rated -4 .. +4 by ten people; MIT, shipped inside the PyPI package
vaderSentiment). A word's row gets its mean rating / 4, in [-1, 1]; 0 for a word the lexicon
lacks and for a punctuation row; times -0.74 when one of the three words before it is a negation
(VADER's own rule and constant), so "not good" reads negative. VADER's sentence rules
(intensifiers, "but", capitals, exclamation marks) are left out: the model reads the words in
order, and each row must depend on the words alone, not on where an utterance is cut.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np

from extractors.errors import SetupError

__all__ = ["LEXICONS", "Lexicon", "LexiconError", "lexicon_columns", "load_lexicon", "valence_rows"]

LEXICONS = ("vader",)  # the names TextConfig.lexicon accepts ("" = none)
NEGATION_SCALE = -0.74  # VADER's N_SCALAR
NEGATION_WINDOW = 3  # words before a word that can negate it (VADER's)
RATING_SCALE = 4.0  # VADER rates -4 .. +4


class LexiconError(SetupError, RuntimeError):
    """The lexicon named in the configuration cannot be loaded; the message says why."""


@dataclass(frozen=True)
class Lexicon:
    name: str
    valence: dict[str, float]  # lower-case word -> rating in [-1, 1]
    negations: frozenset[str]

    def is_negation(self, word: str) -> bool:
        return word in self.negations or word.endswith("n't")


def lexicon_columns(name: str) -> tuple[str, ...]:
    """The feature columns a lexicon adds after the word vectors (none for "")."""
    return ("lexicon_valence",) if name else ()


@functools.lru_cache(maxsize=4)
def load_lexicon(name: str) -> Lexicon:
    if name not in LEXICONS:
        raise LexiconError(f"unknown lexicon {name!r}; known: {', '.join(LEXICONS)} (or '' for none)")
    try:
        from vaderSentiment.vaderSentiment import NEGATE

        text = (resources.files("vaderSentiment") / "vader_lexicon.txt").read_text(encoding="utf-8")
    except (ImportError, OSError) as exc:
        raise LexiconError(f"the 'vader' lexicon needs the PyPI package vaderSentiment ({exc}); "
                           "`pip install vaderSentiment`") from exc
    valence = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            valence[parts[0].lower()] = float(parts[1]) / RATING_SCALE
    return Lexicon(name=name, valence=valence, negations=frozenset(NEGATE))


def valence_rows(lexicon: Lexicon, tokens: list[str], mark: np.ndarray) -> np.ndarray:
    """(n, 1) float32: each token's valence (0 for marks), negated where a negation precedes it."""
    words = [t.lower() for t in tokens]
    out = np.zeros((len(words), 1), np.float32)
    for i, word in enumerate(words):
        if mark[i]:
            continue
        value = lexicon.valence.get(word, 0.0)
        before = [w for w, m in zip(words[max(0, i - NEGATION_WINDOW):i], mark[max(0, i - NEGATION_WINDOW):i]) if not m]
        if value and any(lexicon.is_negation(w) for w in before):
            value *= NEGATION_SCALE
        out[i, 0] = value
    return out
