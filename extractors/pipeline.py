"""One media file -> its three modality sequences (`Extraction`), cached by content and config.

    extraction = extract("clip.mp4")          # probe, decode, text + acoustic + facial
    extraction.save("clip.features.npz")      # one .npz: arrays + JSON metadata, no pickle
    Extraction.load("clip.features.npz")

The audio is decoded once (16 kHz mono) and shared by the text and acoustic extractors;
frames are decoded while the facial extractor consumes them, so memory stays flat. The facial
stage runs in a worker thread beside decode -> speech -> acoustic (see `extract`).
A missing stream gives empty sequences whose meta["empty_reason"] says why.
`extract(path, modalities=("audio",))` runs only the stages those modalities need (no speech
recognition unless text is asked for); the others come back empty with the reason
"not requested", and `Extraction.modalities` records what was asked.
"""

from __future__ import annotations

import json
import os
import queue
import tempfile
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

import extractors.acoustic  # as modules: tests replace their extractor classes
import extractors.text
from extractors.cache import CACHE_FORMAT, cache_key, cache_path, hashed_config, resolve_cache_dir
from extractors.config import ExtractionConfig
from extractors.errors import MediaError
from extractors.media import MediaInfo, load_audio, probe, sample_frames
from extractors.sequence import MODALITIES, Sequence

FILE_FORMAT = "mfsa-pipe.extraction"
STAGES = ("probe", "cache", "decode", "speech", "acoustic", "facial", "done")  # what `progress` is told
NOT_REQUESTED = "not requested"  # meta["empty_reason"] of a modality left out by `modalities=`
_SYNONYMS = {"video": "vision", "visual": "vision", "face": "vision", "acoustic": "audio", "words": "text"}


def parse_modalities(value: "str | Iterable[str] | None") -> tuple[str, ...]:
    """("text", "audio", "vision") or a subset of it, in that order, from an iterable of names or a
    string such as "audio+video" ("+", "," or spaces between names; "video" means "vision").
    None or "" gives all three. Raises ValueError naming the allowed names."""
    if value is None:
        return MODALITIES
    parts = value.replace(",", "+").replace(" ", "+").split("+") if isinstance(value, str) else list(value)
    names = [str(p).strip().lower() for p in parts if str(p).strip()]
    if not names:
        return MODALITIES
    chosen = set()
    for name in names:
        name = _SYNONYMS.get(name, name)
        if name not in MODALITIES:
            raise ValueError(
                f"unknown modality {name!r}: use {', '.join(MODALITIES)} (\"video\" means vision), joined by '+'"
            )
        chosen.add(name)
    return tuple(m for m in MODALITIES if m in chosen)


def feature_spec(config: ExtractionConfig = ExtractionConfig()) -> dict[str, dict[str, Any]]:
    """{"text", "audio", "vision"} specs (id, version, config, dim, rate, columns) without running."""
    from extractors import facial  # lazy: OpenCV

    return {
        "text": extractors.text.describe(config.text),
        "audio": extractors.acoustic.describe(config.audio),
        "vision": facial.describe(config.vision),
    }


@dataclass
class Extraction:
    media: MediaInfo
    text: Sequence
    audio: Sequence
    vision: Sequence
    segments: list[dict[str, Any]]  # speech segments {start, end, text} from the recogniser
    config: ExtractionConfig
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds for this call
    cached: bool = False  # read from the cache rather than computed
    modalities: tuple[str, ...] = MODALITIES  # what was requested; the others are empty, "not requested"

    def sequences(self) -> dict[str, Sequence]:
        return {"text": self.text, "audio": self.audio, "vision": self.vision}

    def feature_spec(self) -> dict[str, dict[str, Any]]:
        return {name: seq.spec() for name, seq in self.sequences().items()}

    def save(self, path: str | os.PathLike) -> Path:
        """Write one .npz atomically (temporary file + rename); loads without pickle."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {}
        header: dict[str, Any] = {
            "format": FILE_FORMAT,
            "format_version": CACHE_FORMAT,
            "media": self.media.to_dict(),
            "config": self.config.to_dict(),
            "segments": _encode(self.segments, "segments", arrays),
            "timings": self.timings,
            "modalities": list(self.modalities),
            "sequences": {},
        }
        for name, seq in self.sequences().items():
            arrays[f"{name}.features"] = seq.features
            arrays[f"{name}.times"] = seq.times
            header["sequences"][name] = {
                "columns": list(seq.columns),
                "rate": seq.rate,
                "source": _encode(seq.source, f"{name}.source", arrays),
                "tokens": seq.tokens,
                "meta": _encode(seq.meta, f"{name}.meta", arrays),
            }
        arrays["header"] = np.array(json.dumps(header))
        path.parent.mkdir(parents=True, exist_ok=True)
        # the name cut to 48 characters (at most 192 bytes): the temporary fits wherever `path` fits
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:48]}.", suffix=".partial", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:  # a file object: np.savez would append .npz to a name
                np.savez(f, **arrays)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the mode open() would
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Extraction":
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            header = json.loads(str(arrays.pop("header")))
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as e:  # EOF: empty; zip: truncated
            raise ValueError(f"{path}: not an mfsa-pipe extraction file ({e})") from None
        if header.get("format") != FILE_FORMAT:
            raise ValueError(f"{path}: not an mfsa-pipe extraction file")
        if header.get("format_version") != CACHE_FORMAT:
            raise ValueError(
                f"{path}: extraction file format {header.get('format_version')}, this version reads "
                f"{CACHE_FORMAT}; extract the media again"
            )
        seqs = {}
        for name in MODALITIES:
            h = header["sequences"][name]
            seqs[name] = Sequence(
                features=arrays[f"{name}.features"],
                times=arrays[f"{name}.times"],
                columns=h["columns"],
                rate=h["rate"],
                source=_decode(h["source"], arrays),
                tokens=h["tokens"],
                meta=_decode(h["meta"], arrays),
            )
        return cls(
            media=MediaInfo.from_dict(header["media"]),
            config=ExtractionConfig.from_dict(header["config"]),
            segments=_decode(header["segments"], arrays),
            timings=header["timings"],
            modalities=tuple(header.get("modalities", MODALITIES)),  # files written before: all three
            **seqs,
        )


def _encode(value: Any, key: str, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-able copy of `value`; numpy arrays go into `arrays` and leave a reference behind."""
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{key}.{k}", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{key}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return arrays[value["__array__"]]
        return {k: _decode(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    return value


class _Cancelled(Exception):
    """Ends the facial stage early when the stages beside it failed (its result is not wanted)."""


class _Timed:
    """Wraps the frame iterator so that decoding time is counted apart from the facial model;
    it stops with _Cancelled at the next frame once `stop` is set."""

    def __init__(self, frames: Iterable[tuple[float, np.ndarray]], stop: threading.Event) -> None:
        self._frames = iter(frames)
        self._stop = stop
        self.seconds = 0.0

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        while True:
            if self._stop.is_set():
                getattr(self._frames, "close", lambda: None)()  # ends a prefetching decoder now
                raise _Cancelled
            start = time.perf_counter()
            try:
                item = next(self._frames)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - start
            yield item


class _Prefetched:
    """Frames decoded a few steps ahead in a thread of their own, in order. The face model waits
    on MediaPipe's graph with the GIL released, so decoding overlaps it: on a 1-minute 640x360
    clip decoding was a fifth of the facial stage's wall time, and on long videos that stage is
    the last to finish. At most `depth` frames wait (downscaled ones: memory stays flat); a
    decoding error is raised in the consumer; the producer ends when the consumer stops early."""

    def __init__(self, frames: Iterable[tuple[float, np.ndarray]], *, depth: int = 4) -> None:
        self._frames = frames
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        iterator = iter(self._frames)
        try:
            for item in iterator:
                if not self._put(("frame", item)):
                    return
            self._put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(("error", exc))
        finally:
            getattr(iterator, "close", lambda: None)()  # the decoder's container, closed in its own thread

    def __iter__(self) -> Iterator[tuple[float, np.ndarray]]:
        # the decoder starts with the first frame asked for: a consumer that never asks leaves no thread
        thread = threading.Thread(target=self._produce, name="mfsa-frames", daemon=True)
        thread.start()
        try:
            while True:
                kind, item = self._queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise item
                yield item
        finally:
            self._closed.set()
            thread.join()


def _empty(spec: dict[str, Any], reason: str, *, text: bool = False) -> Sequence:
    source = {k: spec[k] for k in ("id", "version", "config")}
    return Sequence.empty(columns=spec["columns"], rate=spec["rate"], source=source, reason=reason, text=text)


def extract(
    path: str | os.PathLike,
    *,
    config: ExtractionConfig = ExtractionConfig(),
    cache_dir: str | os.PathLike | bool | None = None,
    progress: Callable[[str], None] | None = None,
    modalities: "str | Iterable[str] | None" = None,
) -> Extraction:
    """Extract the three sequences of one media file (see the module docstring).

    cache_dir: None = the default cache ($MFSA_PIPE_CACHE or ~/.cache/mfsa-pipe), a path,
    or False for none. progress(stage) is called as each of STAGES begins.
    modalities: which of text/audio/vision to extract (see `parse_modalities`; None = all
    three). A stage no requested modality needs is skipped (text: no speech recognition; audio:
    no openSMILE; vision: no frame decoding); its Sequence is empty with the reason
    "not requested". A subset is cached under its own key; a cached full extraction of the same
    file serves it too.
    Raises MediaError for unusable input.
    """
    requested = parse_modalities(modalities)
    tell = progress or (lambda stage: None)
    started = time.perf_counter()
    tell("probe")
    media = probe(path)
    spec = feature_spec(config)
    timings: dict[str, float] = {"probe": time.perf_counter() - started}

    directory = resolve_cache_dir(cache_dir)
    cached_file = None
    if directory is not None:
        tell("cache")
        cached_file, hit = _cache_lookup(directory, media=media, config=config, spec=spec, requested=requested)
        if hit is not None:
            _as_cache_hit(hit, path, media=media, config=config, cached_file=cached_file,
                          timings={**timings, "cache_read": time.perf_counter() - started - timings["probe"]})
            hit.timings["total"] = time.perf_counter() - started
            tell("done")
            return hit

    tell("decode")
    # The facial stage (frame decoding, MediaPipe, TFLite) runs in a worker thread while this one
    # decodes the audio and runs speech (CTranslate2) and acoustic (openSMILE): all of them spend
    # their time in native code that releases the GIL, so on 2 cores the stages overlap instead
    # of queueing. Progress is still told in STAGES order, from this thread; a failure here
    # stops the facial thread at its next frame, a facial failure is raised at "facial" as before.
    stop = threading.Event()
    if "vision" in requested and media.has_video:
        _facial_imports(config)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfsa-facial") as pool:
        facial = pool.submit(_facial_stage, path, media=media, config=config, spec=spec, requested=requested, stop=stop)
        try:
            text, acoustic = _audio_stages(path, media=media, config=config, spec=spec, requested=requested,
                                           timings=timings, tell=tell)
            tell("facial")
            vision, facial_timings = facial.result()
        except BaseException:  # failures and Ctrl-C alike: do not wait for the facial stage
            stop.set()
            raise
    timings["decode"] += facial_timings["decode"]
    timings["facial"] = facial_timings["facial"]
    timings["total"] = time.perf_counter() - started

    result = Extraction(
        media=media,
        text=text,
        audio=acoustic,
        vision=vision,
        segments=[dict(s) for s in text.meta.get("segments", [])],
        config=config,
        timings=timings,
        modalities=requested,
    )
    if cached_file is not None:
        _write_cache(result, cached_file)
    tell("done")
    return result


def _cache_lookup(directory: Path, *, media: Any, config: ExtractionConfig, spec: dict[str, dict[str, Any]],
                  requested: tuple[str, ...]) -> tuple[Path, "Extraction | None"]:
    """(this extraction's cache file, a cached Extraction or None)."""
    config_dict = hashed_config(config)
    cached_file = cache_path(directory, cache_key(sha256=media.sha256, config=config_dict, spec=spec, modalities=requested))
    hit = _read_cache(cached_file)
    if hit is None and requested != MODALITIES:  # a full extraction of this file holds every subset
        hit = _read_cache(cache_path(directory, cache_key(sha256=media.sha256, config=config_dict, spec=spec)))
    if hit is not None and requested != MODALITIES:
        # a subset's key holds only its own modalities' options: the others are emptied as this
        # config describes them (another text config may have another width), and the config is this one
        hit = _restrict(hit, requested, spec)
        hit.config = config
    return cached_file, hit


def _audio_stages(path: str | os.PathLike, *, media: Any, config: ExtractionConfig, spec: dict[str, dict[str, Any]],
                  requested: tuple[str, ...], timings: dict[str, float],
                  tell: Callable[[str], None]) -> tuple[Sequence, Sequence]:
    """Decode the audio once, then (text, audio) Sequences; progress told at "speech", "acoustic"."""
    start = time.perf_counter()
    sr = config.audio.sample_rate
    needs_audio = media.has_audio and ("text" in requested or "audio" in requested)
    audio = load_audio(path, sample_rate=sr) if needs_audio else np.zeros(0, np.float32)
    timings["decode"] = time.perf_counter() - start
    no_audio = "the file has no audio stream" if not media.has_audio else "the audio stream is empty"

    tell("speech")
    text = _speech_stage(audio, config=config, spec=spec, requested=requested, no_audio=no_audio, timings=timings)
    tell("acoustic")
    acoustic = _acoustic_stage(audio, media=media, config=config, spec=spec, requested=requested, no_audio=no_audio,
                               timings=timings)
    return text, acoustic


def _speech_stage(audio: np.ndarray, *, config: ExtractionConfig, spec: dict[str, dict[str, Any]],
                  requested: tuple[str, ...], no_audio: str, timings: dict[str, float]) -> Sequence:
    start = time.perf_counter()
    if "text" not in requested:
        text = _empty(spec["text"], NOT_REQUESTED, text=True)
    elif audio.size:
        text = extractors.text.TextExtractor(config.text).extract(audio, sample_rate=config.audio.sample_rate)
    else:
        text = _empty(spec["text"], no_audio, text=True)
    text_seconds = time.perf_counter() - start
    reported = text.meta.get("timings") or {}
    if reported:
        # the recogniser's one-off model load counts with speech, as a first run pays it
        timings["speech"] = float(reported.get("load", 0.0)) + float(reported.get("speech", 0.0))
        timings["vectors"] = float(reported.get("vectors", 0.0))
    else:
        timings["speech"], timings["vectors"] = text_seconds, 0.0
    return text


def _acoustic_stage(audio: np.ndarray, *, media: Any, config: ExtractionConfig, spec: dict[str, dict[str, Any]],
                    requested: tuple[str, ...], no_audio: str, timings: dict[str, float]) -> Sequence:
    start = time.perf_counter()
    if "audio" not in requested:
        acoustic = _empty(spec["audio"], NOT_REQUESTED)
    elif audio.size:
        acoustic = extractors.acoustic.AcousticExtractor(config.audio).extract(audio, sample_rate=config.audio.sample_rate,
                                                           duration_s=media.duration_s)
    else:
        acoustic = _empty(spec["audio"], no_audio)
    timings["acoustic"] = time.perf_counter() - start
    return acoustic


def _facial_imports(config: ExtractionConfig) -> None:
    """The facial stage's lazy imports, done in the calling thread before its worker starts: two
    threads importing packages that import each other can deadlock in importlib. A missing
    package is left for the stage itself to report, as before."""
    if config.vision.backend != "mesh":
        return
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        import mediapipe  # noqa: F401
    except ImportError:
        pass


def _facial_stage(path: str | os.PathLike, *, media: Any, config: ExtractionConfig, spec: dict[str, dict[str, Any]],
                  requested: tuple[str, ...], stop: threading.Event) -> tuple[Sequence, dict[str, float]]:
    """(vision Sequence, {"decode": seconds waiting for decoded frames, "facial": the rest})."""
    import extractors.facial  # lazy: OpenCV; as a module: tests replace its extractor class

    start = time.perf_counter()
    if "vision" not in requested:
        return _empty(spec["vision"], NOT_REQUESTED), {"decode": 0.0, "facial": 0.0}
    if not media.has_video:
        return _empty(spec["vision"], "the file has no video stream"), {"decode": 0.0, "facial": 0.0}
    frames = _Timed(_Prefetched(sample_frames(path, rate=config.vision.rate, max_side=config.vision.max_side)), stop)
    vision = extractors.facial.FacialExtractor(config.vision).extract(frames, duration_s=media.duration_s,
                                                                      frame_size=(media.width, media.height))
    return vision, {"decode": frames.seconds, "facial": time.perf_counter() - start - frames.seconds}


def _restrict(extraction: Extraction, requested: tuple[str, ...], spec: dict[str, dict[str, Any]]) -> Extraction:
    """A full extraction seen as one of `requested` modalities only (the others emptied)."""
    for m in MODALITIES:
        if m not in requested:
            setattr(extraction, m, _empty(spec[m], NOT_REQUESTED, text=m == "text"))
    if "text" not in requested:
        extraction.segments = []
    extraction.modalities = requested
    return extraction


def _as_cache_hit(hit: Extraction, path: str | os.PathLike, *, media: Any, config: ExtractionConfig,
                  cached_file: Path, timings: dict[str, float]) -> None:
    """A cached extraction as this call's result: this file's name and path (same content), its timings."""
    if _lacks_speech_flags(hit) and _add_speech_flags(hit, path, sample_rate=config.audio.sample_rate):
        _write_cache(hit, cached_file)  # cached before the speech detector: seconds of decoding, not a new extraction
    hit.media, hit.cached, hit.timings = media, True, timings


def _lacks_speech_flags(extraction: Extraction) -> bool:
    return extraction.audio.length > 0 and "speech" not in extraction.audio.meta


def _add_speech_flags(extraction: Extraction, path: str | os.PathLike, *, sample_rate: int) -> bool:
    """The audio rows' speech flags, as the acoustic extractor stores them, for an extraction made
    before it computed them: the audio is decoded again, the features stay. False: no detector."""
    from extractors.speech_activity import speech_flags

    flags = speech_flags(load_audio(path, sample_rate=sample_rate), sample_rate=sample_rate,
                         times=extraction.audio.times)
    if flags is not None:
        extraction.audio.meta["speech"] = flags
    return flags is not None


def _read_cache(path: Path) -> Extraction | None:
    if not path.is_file():
        return None
    try:
        return Extraction.load(path)
    except (ValueError, KeyError, TypeError):  # a damaged or stale entry is recomputed
        return None


def _write_cache(extraction: Extraction, path: Path) -> None:
    try:
        extraction.save(path)
    except OSError:  # a read-only or full cache must not fail the extraction
        pass


__all__ = ["Extraction", "MediaError", "MediaInfo", "NOT_REQUESTED", "STAGES", "extract", "feature_spec", "parse_modalities"]
