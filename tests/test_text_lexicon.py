"""The lexicon column after the word vectors (TextConfig.lexicon, extractors/lexicon.py)."""

import numpy as np
import pytest

import extractors.text
from extractors.config import ExtractionConfig, TextConfig
from extractors.lexicon import LexiconError, load_lexicon, valence_rows
from extractors.pipeline import feature_spec
from extractors.text import describe, words_to_sequence
from mfsa_pipe.analysis.model_choice import config_for
from mfsa_pipe.datasets import open_dataset
from mfsa_pipe.datasets.build import build_dataset, words_from_text
from tests.helpers import write_csv

VADER = TextConfig(lexicon="vader")


def valences(text: str) -> dict[str, float]:
    seq = words_to_sequence(words_from_text(text), config=VADER)
    return dict(zip(seq.tokens, seq.features[:, -1].tolist()))


def test_vader_ratings_scaled_to_one():
    lexicon = load_lexicon("vader")
    assert len(lexicon.valence) > 7000
    assert lexicon.valence["good"] == pytest.approx(1.9 / 4) and lexicon.valence["hate"] == pytest.approx(-2.7 / 4)
    assert max(lexicon.valence.values()) <= 1 and min(lexicon.valence.values()) >= -1


def test_rows_words_marks_and_unknown_words():
    v = valences("What a great day, qwzxvyy!")
    assert v["great"] == pytest.approx(3.1 / 4) and v["What"] == 0 and v["qwzxvyy"] == 0
    assert v[","] == 0 and v["!"] == 0  # marks carry no valence


def test_negation_within_three_words_flips_and_shrinks():
    assert valences("I am not happy")["happy"] == pytest.approx(-0.74 * 2.7 / 4)
    assert valences("it isn't bad")["bad"] == pytest.approx(-0.74 * -2.5 / 4)  # any "...n't"
    assert valences("never, ever good")["good"] == pytest.approx(-0.74 * 1.9 / 4)  # a mark between does not count
    assert valences("not that it was so very good")["good"] == pytest.approx(1.9 / 4)  # four words back: not negated


def test_valence_rows_skip_marks_in_the_window():
    lexicon = load_lexicon("vader")
    rows = valence_rows(lexicon, ["not", ",", ",", ",", "good"], np.array([False, True, True, True, False]))
    assert rows.shape == (5, 1) and rows.dtype == np.float32
    assert rows[4, 0] == pytest.approx(1.9 / 4)  # "not" is four rows back, only marks between: outside the window


def test_spec_columns_version_and_old_configs():
    seq = words_to_sequence(words_from_text("so sad."), config=VADER)
    spec = describe(VADER)
    assert seq.features.shape == (3, 51) and seq.columns[-1] == "lexicon_valence"
    assert seq.spec() == spec and spec["dim"] == 51 and spec["version"] == "1.2" and spec["config"]["lexicon"] == "vader"
    plain = describe(TextConfig())
    assert plain["dim"] == 50 and plain["version"] == "1.1" and "lexicon" not in plain["config"]  # as before the option
    empty = words_to_sequence(words_from_text("..."), config=VADER)
    assert empty.length == 0 and empty.features.shape == (0, 51)


def test_unknown_lexicon_refused():
    with pytest.raises(ValueError, match="lexicon must be '' .* vader"):
        TextConfig(lexicon="afinn")
    with pytest.raises(LexiconError, match="unknown lexicon"):
        load_lexicon("afinn")
    assert ExtractionConfig.from_dict({"text": {"lexicon": "vader"}}).text.lexicon == "vader"


def test_a_checkpoint_trained_with_the_lexicon_gets_it_in_analyze():
    class WithLexicon:
        feature_spec = feature_spec(ExtractionConfig(text=VADER))

    class Without:
        feature_spec = feature_spec(ExtractionConfig())

    assert config_for(WithLexicon(), None).text.lexicon == "vader"
    assert config_for(Without(), None).text.lexicon == ""
    assert feature_spec(config_for(WithLexicon(), None)) == WithLexicon.feature_spec


def test_build_dataset_text_rows_match_the_recognised_speech_path(tmp_path, monkeypatch):
    """A labelled sentence gets the same 51 columns as analyze gives the same recognised words."""
    text = "I don't love it, honestly."

    class FakeRecogniser:
        info = {"backend": "fake"}

        def transcribe(self, audio, *, config):
            return {"words": words_from_text(text), "segments": [], "language": "en"}

    monkeypatch.setattr(extractors.text, "load_recogniser", lambda config: FakeRecogniser())
    audio = (0.1 * np.sin(np.arange(16000) / 10.0)).astype(np.float32)
    heard = extractors.text.TextExtractor(VADER).extract(audio, sample_rate=16000)
    labels = write_csv(tmp_path / "t.csv", [{"id": "a", "text": text, "label": "neg"},
                                            {"id": "b", "text": "great!", "label": "pos"}], ["id", "text", "label"])
    build_dataset(labels, media_root=tmp_path, out=tmp_path / "t.h5", cache_dir=False,
                  config=ExtractionConfig(text=VADER))
    bundle = open_dataset(tmp_path / "t.h5")
    sample = next(s for split in bundle.splits.values() for s in split if s.id == "a")
    np.testing.assert_array_equal(sample.text, heard.features)
    assert bundle.feature_spec["text"] == describe(VADER)
    assert sample.text[heard.tokens.index("love"), -1] == pytest.approx(-0.74 * 3.2 / 4)


def test_cache_keys_without_a_lexicon_are_as_before_and_differ_with_one():
    from extractors.cache import cache_key, hashed_config

    plain, vader = ExtractionConfig(), ExtractionConfig(text=VADER)
    assert "lexicon" not in hashed_config(plain)["text"] and "lexicon" in plain.to_dict()["text"]
    keys = [cache_key(sha256="0" * 64, config=hashed_config(c), spec=feature_spec(c)) for c in (plain, vader)]
    assert keys[0] != keys[1]
