"""Punctuation marks as rows of the text Sequence (text features 1.1) and the words-only 1.0 path.

On MELD dev, a logistic regression on the mean and max of the GloVe rows scores weighted F1
0.357 (emotion) / 0.467 (sentiment) without the marks and 0.468 / 0.587 with "?!.," kept:
"?" and "!" carry much of what a sentence feels like. These tests pin how marks become rows."""

from __future__ import annotations

import numpy as np
import pytest

from extractors.config import ExtractionConfig, TextConfig
from extractors.pipeline import feature_spec
from extractors.text import describe, words_to_sequence
from extractors.vectors import clean_word, load_vectors, trailing_marks
from mfsa_pipe.analysis.render import caption_words
from mfsa_pipe.analysis.model_choice import config_for
from mfsa_pipe.datasets.build import words_from_text

WORDS = [(" Oh", 0.0, 0.2), (" God,", 0.2, 0.6), (" what?!", 0.6, 1.0), (" the", 1.0, 1.1), (" U.S.", 1.1, 1.5)]


def recognised(words=WORDS):
    return [{"word": w, "start": a, "end": b, "probability": 0.8} for w, a, b in words]


@pytest.mark.parametrize("word, marks", [
    ("What?!", ["?", "!"]), ("it...", ["."]), ("U.S.", []), ("U.S.,", [","]), ("?", ["?"]),
    ('"Hi!"', ["!"]), ("don't", []), (" Americans,", [","]), ("well-", []), ("ok;", []),
    ("really?\u2026", ["?", "."]),  # NFKC: the ellipsis character is three dots
])
def test_trailing_marks(word, marks):
    assert trailing_marks(word, "?!.,") == marks
    assert trailing_marks(word, "") == []


def test_marks_are_rows_with_their_words_times():
    seq = words_to_sequence(recognised())
    kv = load_vectors("glove-6b-50d")
    assert seq.tokens == ["Oh", "God", ",", "what", "?", "!", "the", "U.S."]
    assert seq.meta["mark"] == [False, False, True, False, True, True, False, False]
    assert seq.meta["n_words"] == 5 and seq.meta["oov_rate"] == 0.0
    np.testing.assert_array_equal(seq.times[2], seq.times[1])  # "," spans "God": the same utterance
    np.testing.assert_array_equal(seq.times[4], seq.times[3])
    for row, token in zip(seq.features, seq.tokens):
        np.testing.assert_array_equal(row, kv[token.lower()])  # GloVe 6B has "?", "!", ",", "."
    assert seq.meta["word_probability"] == [0.8] * 8
    assert seq.source["version"] == "1.1" and seq.source["config"]["punctuation"] == "?!.,"
    assert seq.spec() == describe(TextConfig())


def test_words_only_config_is_described_as_before_marks_existed():
    """punctuation="" gives the 1.0 features and the 1.0 spec (no `punctuation` key), so
    checkpoints and caches made before the option keep matching."""
    config = TextConfig(punctuation="")
    seq = words_to_sequence(recognised(), config=config)
    assert seq.tokens == ["Oh", "God", "what", "the", "U.S."] and seq.meta["mark"] == [False] * 5
    spec = describe(config)
    assert spec["version"] == "1.0" and "punctuation" not in spec["config"]
    assert seq.spec() == spec


def test_only_marks_is_no_words():
    seq = words_to_sequence(recognised([(" ...", 0.0, 0.3), (" ?", 0.3, 0.5)]))
    assert seq.length == 0 and seq.meta["empty_reason"] == "no words" and seq.meta["n_words"] == 0


def test_a_checkpoint_of_words_only_features_gets_the_words_only_config():
    class Old:  # a checkpoint trained before marks: its text config has no `punctuation`
        feature_spec = feature_spec(ExtractionConfig(text=TextConfig(punctuation="")))

    assert "punctuation" not in Old.feature_spec["text"]["config"]
    config = config_for(Old(), None)
    assert config.text.punctuation == ""
    assert feature_spec(config) == Old.feature_spec

    class New:
        feature_spec = feature_spec(ExtractionConfig())

    assert config_for(New(), None).text.punctuation == "?!.,"


def test_transcript_words_take_marks_as_whisper_attaches_them():
    words = words_from_text("? Oh my God ! what ?! fine")
    assert [w["word"] for w in words] == ["Oh", "my", "God!", "what?!", "fine"]
    seq = words_to_sequence(words)
    assert seq.tokens == ["Oh", "my", "God", "!", "what", "?", "!", "fine"]


def test_captions_write_marks_after_their_word():
    seq = words_to_sequence(recognised())
    assert [w for _, _, w in caption_words(seq)] == ["Oh", "God,", "what?!", "the", "U.S."]
    assert caption_words(seq)[1][:2] == (0.2, 0.6)


def test_punctuation_option_is_validated():
    for bad in ("a?", "? !", 3):
        with pytest.raises(ValueError, match="punctuation"):
            TextConfig(punctuation=bad)
    assert clean_word("what?!") == "what"


def test_mis_encoded_and_typographic_punctuation_read_as_ascii():
    """A corpus read as published (MELD: cp1252 bytes as Latin-1, curly quotes, em dashes) gets the
    rows of its cleaned text, so a labelled sentence needs no cleaning before build-dataset."""
    from extractors.vectors import normalize_punctuation

    raw = "I\x92m \u201cfine\u201d\u2014really\u2026 don\u2019t ask\x85"
    clean = "I'm \"fine\"-really... don't ask..."
    assert normalize_punctuation(raw) == clean
    a, b = words_to_sequence(words_from_text(raw)), words_to_sequence(words_from_text(clean))
    assert a.tokens == b.tokens == ["I'm", 'fine"-really', ".", "don't", "ask", "."]
    np.testing.assert_array_equal(a.features, b.features)
    assert clean_word("don\x92t") == "don't" and clean_word("uh\u2014Wait") == "uh-Wait"
