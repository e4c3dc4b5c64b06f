"""Text modality on real clips: GRID (word alignment), JFK (known sentence), silence; word vectors."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from faster_whisper import decode_audio

from extractors.config import TextConfig
from extractors.text import ID, SpeechModelError, TextExtractor, describe, load_recogniser
from extractors.vectors import VectorsError, clean_word, load_vectors, lookup, vectors_dim

from helpers import MEDIA_DIR as DATA

JFK = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
DIGITS = "zero one two three four five six seven eight nine".split()

# Bounds set from measured figures (tiny.en, int8, beam 1, VAD; see docs/text_features.md):
# GRID WER 0.0, mean timing error 0.130 s; JFK WER 0.0.
GRID_WER_MAX = 1 / 6  # one word of six
GRID_TIMING_MAX = 0.25  # seconds, mean over matched words of (|d start| + |d end|) / 2
JFK_WER_MAX = 0.1


# ------------------------------------------------------------------ scoring helpers


def normalise(words: list[str], times: list[tuple[float, float]] | None = None):
    """Lowercase, drop punctuation, split letter-digit runs and spell digits ("P2" -> "p two").

    GRID's transcripts spell letters and digits as words; Whisper writes "P2". A word split into
    n pieces shares its time span evenly between them.
    """
    out, out_times = [], []
    for i, word in enumerate(words):
        pieces = re.findall(r"[a-z']+|\d", word.lower())
        pieces = [DIGITS[int(p)] if p.isdigit() else p for p in pieces]
        for k, piece in enumerate(pieces):
            out.append(piece)
            if times is not None:
                start, end = times[i]
                step = (end - start) / len(pieces)
                out_times.append((start + k * step, start + (k + 1) * step))
    return out, out_times


def align(ref: list[str], hyp: list[str]) -> tuple[int, list[tuple[int, int]]]:
    """Levenshtein distance between word lists and the (ref, hyp) index pairs of exact matches."""
    n, m = len(ref), len(hyp)
    d = np.zeros((n + 1, m + 1), int)
    d[:, 0], d[0, :] = np.arange(n + 1), np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]))
    pairs, i, j = [], n, m
    while i and j:
        if ref[i - 1] == hyp[j - 1] and d[i, j] == d[i - 1, j - 1]:
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif d[i, j] == d[i - 1, j - 1] + 1:
            i, j = i - 1, j - 1
        elif d[i, j] == d[i - 1, j] + 1:
            i -= 1
        else:
            j -= 1
    return int(d[n, m]), pairs[::-1]


def wer(ref: list[str], hyp: list[str]) -> float:
    return align(ref, hyp)[0] / len(ref)


def read_align(path: Path) -> tuple[list[str], list[tuple[float, float]]]:
    words, times = [], []
    for line in path.read_text().split("\n"):
        if line.strip():
            start, end, word = line.split()
            if word != "sil":  # GRID's silence markers
                words.append(word)
                times.append((int(start) / 25000, int(end) / 25000))
    return words, times


def grid_scores(seq) -> tuple[float, float]:
    ref, ref_times = read_align(DATA / "grid_swwp2s.align")
    hyp, hyp_times = normalise(seq.tokens, [tuple(t) for t in seq.times])
    _, pairs = align(ref, hyp)
    errors = [(abs(ref_times[i][0] - hyp_times[j][0]) + abs(ref_times[i][1] - hyp_times[j][1])) / 2 for i, j in pairs]
    return wer(ref, hyp), float(np.mean(errors)) if errors else float("inf")


def test_scoring_helpers():
    assert normalise(["Set", "P2", "soon."])[0] == ["set", "p", "two", "soon"]
    assert normalise(["P2"], [(1.0, 2.0)])[1] == [(1.0, 1.5), (1.5, 2.0)]
    assert wer(["a", "b", "c"], ["a", "x", "c", "d"]) == pytest.approx(2 / 3)
    assert align(["a", "b", "c"], ["a", "c"])[1] == [(0, 0), (2, 1)]
    words, times = read_align(DATA / "grid_swwp2s.align")
    assert words == ["set", "white", "with", "p", "two", "soon"]
    assert times[0] == (0.49, 0.77)


# ------------------------------------------------------------------ speech -> words


@pytest.fixture(scope="module")
def extractor():
    return TextExtractor(TextConfig())


@pytest.fixture(scope="module")
def grid(extractor):
    audio = decode_audio(str(DATA / "grid_id2_vcd_swwp2s.mpg"), sampling_rate=16000)
    return audio, extractor.extract(audio, sample_rate=16000)


@pytest.fixture(scope="module")
def jfk(extractor):
    audio = decode_audio(str(DATA / "jfk.flac"), sampling_rate=16000)
    return audio, extractor.extract(audio, sample_rate=16000)


@pytest.mark.integration
def test_grid_words_and_timings(grid):
    audio, seq = grid
    word_error, timing_error = grid_scores(seq)
    print(f"GRID: tokens={seq.tokens} WER={word_error:.3f} mean timing error={timing_error:.3f} s")
    assert word_error <= GRID_WER_MAX
    assert timing_error <= GRID_TIMING_MAX
    duration = len(audio) / 16000
    assert np.all(seq.times[:, 0] <= seq.times[:, 1])
    assert np.all(np.diff(seq.times[:, 0]) >= 0)
    assert seq.times.min() >= 0 and seq.times.max() <= duration + 0.05


@pytest.mark.integration
def test_grid_sequence_contract(grid):
    _, seq = grid
    kv = load_vectors("glove-6b-50d")
    recorded = {k: v for k, v in asdict(TextConfig()).items() if k not in ("temperature_fallback", "lexicon")}  # recorded when on
    assert seq.source["id"] == ID and seq.source["config"] == recorded
    assert seq.rate is None and seq.dim == 50 and seq.features.dtype == np.float32
    assert seq.spec() == describe(TextConfig())
    marks = seq.meta["mark"]
    # words stripped of punctuation ("soon." -> "soon", "."); a mark row is one of the kept marks
    assert all(t in TextConfig().punctuation if m else t == clean_word(t) for t, m in zip(seq.tokens, marks))
    for token, row, oov in zip(seq.tokens, seq.features, seq.meta["oov"]):
        assert not oov
        np.testing.assert_array_equal(row, kv[token.lower()])
    meta = seq.meta
    assert meta["n_words"] == seq.length - sum(marks) and meta["oov_rate"] == 0.0 and meta["language"] == "en"
    assert len(meta["segments"]) >= 1
    assert " ".join(s["text"] for s in meta["segments"]).lower().startswith("set white with")
    assert set(meta["timings"]) >= {"speech", "vectors"}


@pytest.mark.integration
def test_jfk_sentence(jfk):
    audio, seq = jfk
    ref, _ = normalise(JFK.split())
    hyp, _ = normalise(seq.tokens)
    word_error = wer(ref, hyp)
    print(f"JFK: WER={word_error:.3f} speech={seq.meta['timings']['speech']:.3f} s for {len(audio) / 16000:.1f} s")
    assert word_error <= JFK_WER_MAX
    segments = seq.meta["segments"]
    assert len(segments) >= 2  # the pause before the second "ask" splits the utterance
    assert all(a["end"] <= b["start"] + 1e-6 for a, b in zip(segments, segments[1:]))
    assert seq.times[0, 0] >= segments[0]["start"] - 0.05 and seq.times[-1, 1] <= segments[-1]["end"] + 0.05


@pytest.mark.integration
def test_second_extraction_reuses_loaded_models(extractor, jfk):
    # Speed is measured by benchmarks/bench_extract.py, never asserted here.
    audio, _ = jfk
    seq = extractor.extract(audio, sample_rate=16000)  # model already loaded by the fixture
    assert seq.meta["timings"]["load"] < 0.01  # cached model and vectors: no reload


@pytest.mark.integration
def test_resamples_other_rates(extractor):
    audio = decode_audio(str(DATA / "jfk.flac"), sampling_rate=44100)
    seq = extractor.extract(audio, sample_rate=44100)
    ref, _ = normalise(JFK.split())
    assert wer(ref, normalise(seq.tokens)[0]) <= JFK_WER_MAX
    with pytest.raises(ValueError, match="mono"):
        extractor.extract(np.zeros((2, 16000), np.float32), sample_rate=16000)


@pytest.mark.integration
@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: np.zeros(3 * 16000, np.float32), "silence"),
        (lambda: np.zeros(0, np.float32), "no audio"),
        (lambda: decode_audio(str(DATA / "single_face.mp4"), sampling_rate=16000), "no speech detected"),
    ],
    ids=["digital-silence", "empty", "near-silent-clip"],
)
def test_no_speech_gives_empty_sequence(extractor, make, reason):
    seq = extractor.extract(make(), sample_rate=16000)
    assert seq.length == 0 and seq.tokens == [] and seq.dim == 50
    assert seq.meta["empty_reason"] == reason
    assert seq.meta["segments"] == [] and seq.meta["n_words"] == 0
    assert seq.spec() == describe(TextConfig())


@pytest.mark.integration
def test_model_loaded_once_per_process():
    a = load_recogniser(TextConfig())
    b = load_recogniser(TextConfig(beam_size=5, vad_filter=False, language="en"))  # decoding options only
    assert a is b


def test_config_validation_and_round_trip():
    config = TextConfig(beam_size=3, vad_filter=False, compute_type="int8", device="cuda:1")
    assert TextConfig(**asdict(config)) == config
    for bad in (dict(beam_size=0), dict(device="gpu"), dict(compute_type="int4"), dict(language="en-US"),
                dict(asr_backend="vosk"), dict(vectors="")):
        with pytest.raises(ValueError):
            TextConfig(**bad)


def test_greedy_decoding_unless_the_temperature_fallback_is_asked_for():
    """Whisper's temperature retries are off by default (4x the speech time on long videos, sampled
    words); a config recorded before the option existed loads with them off."""
    from extractors.config import ExtractionConfig
    from extractors.text import _FasterWhisper

    seen = []

    class Model:  # records the decoding options the recogniser passes on
        def transcribe(self, audio, **options):
            seen.append(options)
            return iter(()), type("Info", (), {"language": "en"})()

    recogniser = _FasterWhisper.__new__(_FasterWhisper)
    recogniser.model = Model()
    recogniser.transcribe(np.zeros(16000, np.float32), config=TextConfig())
    recogniser.transcribe(np.zeros(16000, np.float32), config=TextConfig(temperature_fallback=True))
    assert [s["temperature"] for s in seen] == [(0.0,), (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)]
    old = ExtractionConfig().to_dict()
    del old["text"]["temperature_fallback"]
    assert ExtractionConfig.from_dict(old).text.temperature_fallback is False
    # the features' spec records the option only when on: checkpoints made before it still match
    assert "temperature_fallback" not in describe(TextConfig())["config"]
    assert describe(TextConfig(temperature_fallback=True))["config"]["temperature_fallback"] is True


def test_model_errors_are_clear(tmp_path):
    with pytest.raises(SpeechModelError, match="no model.bin"):
        load_recogniser(TextConfig(asr_model=str(tmp_path)))
    with pytest.raises(SpeechModelError, match="no model.bin"):
        load_recogniser(TextConfig(asr_model=str(tmp_path / "missing")))
    with pytest.raises(SpeechModelError, match="Invalid model size 'no-such-model'"):
        load_recogniser(TextConfig(asr_model="no-such-model"))
    # a hub repository id: offline the download fails; online the repository does not exist
    with pytest.raises(SpeechModelError, match="network or a local cache"):
        load_recogniser(TextConfig(asr_model="mfsa-pipe-tests/no-such-repo"))


def test_openai_whisper_missing_says_how_to_install():
    try:
        import whisper  # noqa: F401
    except ImportError:
        with pytest.raises(SpeechModelError, match=r"pip install 'mfsa-pipe\[whisper\]'"):
            load_recogniser(TextConfig(asr_backend="openai-whisper"))
    else:
        pytest.skip("openai-whisper is installed")


# ------------------------------------------------------------------ words -> vectors


def test_glove_values_and_neighbours():
    kv = load_vectors("glove-6b-50d")
    assert len(kv) == 400_000 and kv.vector_size == 50
    np.testing.assert_allclose(kv["the"][:3], [0.418, 0.24968, -0.41242], atol=1e-6)  # glove.6B.50d.txt line 1
    assert kv.similarity("king", "queen") > 0.75 and kv.similarity("king", "banana") < 0.3
    assert "queen" in [w for w, _ in kv.most_similar("king", topn=5)]
    assert load_vectors("glove-6b-50d") is kv  # cached
    assert load_vectors("glove-wiki-gigaword-50") is kv  # gensim-data's copy of the same matrix, served offline
    assert vectors_dim("glove-6b-50d") == 50


def test_clean_word():
    cases = {" Americans,": "Americans", " soon.": "soon", ' "Hello"': "Hello", " don't": "don't",
             " can\u2019t": "can't", " U.S.": "U.S.", " self-esteem": "self-esteem", " 3.5.": "3.5",
             " 1,000": "1,000", " --": "", " ...": ""}
    assert {word: clean_word(word) for word in cases} == cases


def test_lookup_oov_and_contractions():
    kv = load_vectors("glove-6b-50d")
    tokens = ["Americans", "don't", "can't", "U.S.", "zxqvblorf", "zxq-blorf"]
    features, oov, composed = lookup(kv, tokens, lowercase=True)
    np.testing.assert_array_equal(features[0], kv["americans"])
    np.testing.assert_allclose(features[1], (kv["do"] + kv["n't"]) / 2, rtol=1e-6)  # PTB split, as GloVe
    np.testing.assert_allclose(features[2], (kv["ca"] + kv["n't"]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(features[3], kv["u.s."])
    assert oov.tolist() == [False, False, False, False, True, True]
    assert composed.tolist() == [False, True, True, False, False, False]
    assert not features[4:].any()  # OOV rows are zeros


def test_glove_text_file(tmp_path):
    path = tmp_path / "tiny.glove.txt"
    path.write_text("the 0.1 0.2 0.3\nKing 1 2 3\nat name@x.com 4 5 6\nthe 9 9 9\n\nn't 0 1 0\ndo 1 0 0\n")
    assert vectors_dim(str(path)) == 3
    kv = load_vectors(str(path))
    assert kv.index_to_key == ["the", "King", "at name@x.com", "n't", "do"]  # spaces kept, first duplicate wins
    np.testing.assert_allclose(kv["the"], [0.1, 0.2, 0.3])
    features, oov, composed = lookup(kv, ["king", "King", "don't", "queen"], lowercase=True)
    assert oov.tolist() == [True, True, False, True]  # lowercased keys miss the file's "King"
    np.testing.assert_array_equal(features[2], [0.5, 0.5, 0.0])  # mean("do", "n't")
    assert composed.tolist() == [False, False, True, False]


def test_cased_lookup_falls_back_to_lowercase(tmp_path):
    path = tmp_path / "cased.txt"
    path.write_text("and 1 0\nObama 0 1\n")
    kv = load_vectors(str(path))
    features, oov, _ = lookup(kv, ["And", "Obama", "obama"], lowercase=False)
    assert oov.tolist() == [False, False, True]  # sentence-initial "And" finds "and"; "obama" is not "Obama"
    np.testing.assert_array_equal(features[:2], [[1, 0], [0, 1]])


def test_word2vec_text_bin_and_kv_round_trip(tmp_path):
    source = load_vectors("glove-6b-50d")
    from gensim.models import KeyedVectors

    small = KeyedVectors(50)
    words = ["king", "queen", "banana", "the"]
    small.add_vectors(words, np.stack([source[w] for w in words]))
    small.save_word2vec_format(str(tmp_path / "w2v.txt"), binary=False)
    small.save_word2vec_format(str(tmp_path / "w2v.bin"), binary=True)
    small.save(str(tmp_path / "small.kv"))
    for name in ("w2v.txt", "w2v.bin", "small.kv"):
        spec = str(tmp_path / name)
        kv = load_vectors(spec)
        assert vectors_dim(spec) == 50 and kv.index_to_key == words, name
        np.testing.assert_allclose(kv["queen"], source["queen"], atol=1e-5)


def test_vector_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(VectorsError, match="not found"):
        load_vectors(str(tmp_path / "missing.txt"))
    with pytest.raises(VectorsError, match="unknown word vectors 'glove-7b'"):
        load_vectors("glove-7b")
    with pytest.raises(VectorsError, match="directory"):
        load_vectors(str(tmp_path))
    bad = tmp_path / "bad.txt"
    bad.write_text("a 1 2\nb 1\n")
    with pytest.raises(VectorsError, match="line 2"):
        load_vectors(str(bad))
    import gensim.downloader

    def offline(name, return_path=False):
        raise OSError("Name or service not known")

    monkeypatch.setattr(gensim.downloader, "load", offline)
    with pytest.raises(VectorsError, match="needs a network"):
        load_vectors("word2vec-google-news-300")
    assert vectors_dim("word2vec-google-news-300") == 300  # from the catalogue, no download


@pytest.mark.integration
def test_auto_device_falls_back_to_cpu_when_cuda_fails(monkeypatch):
    # A CUDA device that ctranslate2 cannot use (no driver here; elsewhere e.g. no libcublas.so.12).
    import ctranslate2

    import extractors.text as text

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(text, "_RECOGNISERS", {})
    with pytest.warns(UserWarning, match="running on CPU"):
        recogniser = load_recogniser(TextConfig())
    assert recogniser.info["device"] == "cpu" and recogniser.info["compute_type"] == "int8"
    with pytest.raises(SpeechModelError, match="on cuda"):
        load_recogniser(TextConfig(device="cuda"))
