"""`analyze`: one video in, a report, an annotated video, a timeline plot and the features out.

    report = analyze("talk.mp4", out_dir="talk_analysis")          # default model if shipped
    report = analyze("talk.mp4", out_dir="out", checkpoint="model.ckpt", render_video=False)
    report = analyze("talk.mp4", out_dir="out", no_model=True)     # signals only

Order matters for resumable batches: the features, the plot and the video are written first
(each atomically); report.json is written last, so its presence means the folder is complete.
No model is never replaced by a random one: without a checkpoint the report says plainly that
no fused prediction was made (`notice`) and carries the extracted signals only.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from extractors.acoustic import LOUDNESS_COLUMN, VOICING_COLUMN
from extractors.config import ExtractionConfig
from extractors.errors import UserError
from extractors.hashing import file_sha256
from extractors.sequence import MODALITIES
from mfsa_pipe.analysis.inference import Predictor
from mfsa_pipe.analysis.model_load import ModelLoad
from mfsa_pipe.analysis.report import (
    NO_MODEL_NOTICE,
    REPORT_NAME,
    CheckpointInfo,
    HeadPrediction,
    InputInfo,
    ModalitySummary,
    ModalityUse,
    ModelInfo,
    Prediction,
    Provenance,
    Report,
    UtteranceReport,
    UtteranceSignals,
)
from mfsa_pipe.atomic import fit_name
from mfsa_pipe.checkpoint import load_checkpoint
from mfsa_pipe.checkpoint_header import CheckpointHeader, read_checkpoint_header
from mfsa_pipe.datasets.base import LabelSpec
from mfsa_pipe.default_model import default_checkpoint_path
from mfsa_pipe.devices import check_device, resolve_device
from mfsa_pipe.presence import absent_modalities
from mfsa_pipe.segmentation import (
    DEFAULT_WINDOW_S,
    Utterance,
    make_utterances,
    slice_rows,
    speech_coverage,
    utterance_samples,
)

FEATURES_NAME = "features.npz"
TIMELINE_NAME = "timeline.png"


class AnalyzeError(UserError):
    """Bad input or output location; the message is meant for the user, as is."""


@dataclass
class ResolvedModel:
    """The checkpoint to use (None: no model) and why, for the report and the terminal. With
    `header_only`, until the model is loaded: the CheckpointHeader of a checked file."""

    checkpoint: Any | None
    path: Path | None
    reason: str  # "given", "default", "no-model", "no-default"


def check_input(path: str | os.PathLike) -> Path:
    """The input as an absolute path; raises AnalyzeError for missing, directory, unreadable."""
    p = Path(path).expanduser()
    if not p.exists():
        raise AnalyzeError(f"{p}: no such file; check the path")
    if p.is_dir():
        raise AnalyzeError(f"{p}: is a directory; give one video file (use `mfsa-pipe batch` for folders)")
    if not p.is_file():
        raise AnalyzeError(f"{p}: not a regular file; give a video file")
    try:
        with open(p, "rb") as f:
            f.read(1)
    except OSError as e:
        raise AnalyzeError(f"{p}: cannot be read ({e.strerror or e}); check its permissions") from None
    return p.resolve()


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Create `out_dir` and prove it is writable; raises AnalyzeError otherwise."""
    d = Path(out_dir).expanduser()
    if d.exists() and not d.is_dir():
        raise AnalyzeError(f"{d}: exists and is not a folder; choose another --out")
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise AnalyzeError(f"{d}: the output folder cannot be written ({e.strerror or e}); choose another --out") from None
    return d.resolve()


def resolve_model(checkpoint: str | os.PathLike | Any | None, *, no_model: bool,
                  header_only: bool = False) -> ResolvedModel:
    """Load the given checkpoint, else the shipped default, else none (stated in the report).
    header_only: read and check only its fields (no torch; see checkpoint_header), where it can."""
    if no_model:
        return ResolvedModel(None, None, "no-model")
    read = _read_header_or_load if header_only else load_checkpoint
    if checkpoint is None:
        default = default_checkpoint_path()
        if default is None:
            return ResolvedModel(None, None, "no-default")
        return ResolvedModel(read(default), default, "default")
    if hasattr(checkpoint, "feature_spec") and hasattr(checkpoint, "label_spec"):  # already loaded
        return ResolvedModel(checkpoint, Path(checkpoint.path) if getattr(checkpoint, "path", None) else None, "given")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise AnalyzeError(f"{path}: no such checkpoint file" + ("" if not path.is_dir() else " (it is a folder)"))
    return ResolvedModel(read(path), path.resolve(), "given")


def _read_header_or_load(path: Path) -> Any:
    """The checkpoint's CheckpointHeader, or the loaded Checkpoint of a file only torch reads."""
    return read_checkpoint_header(path) or load_checkpoint(path)


def setup_model(
    checkpoint: str | os.PathLike | Any | None, *, no_model: bool, config: Any | None, header_only: bool = False
) -> tuple[ResolvedModel, Any]:
    """The model (or none) and the extraction config to use with it. A checkpoint trained on
    other features is refused here, before any expensive extraction (it would produce nonsense)."""
    from extractors.pipeline import feature_spec  # lazy: the pipeline loads PyAV (FFmpeg)

    model = resolve_model(checkpoint, no_model=no_model, header_only=header_only)
    config = config_for(model.checkpoint, config)
    if model.checkpoint is not None:
        model.checkpoint.check_feature_spec(feature_spec(config), context=f"checkpoint {model.path or ''}".strip())
    return model, config


def config_for(checkpoint: Any | None, config: Any | None) -> Any:
    """The extraction config: the caller's, else the one the checkpoint was trained with (so its
    features match by construction), else the defaults."""
    if config is not None:
        return config
    if checkpoint is not None:
        try:
            sections = {m: dict(checkpoint.feature_spec[m].get("config") or {}) for m in MODALITIES}
            if sections["text"]:  # text features 1.0 had no marks and no `punctuation` option
                sections["text"].setdefault("punctuation", "")
            return ExtractionConfig.from_dict(sections)
        except (KeyError, TypeError, ValueError):
            pass  # an older/foreign config: the spec check below says what differs
    return ExtractionConfig()


def run_key(*, sha256: str, config: dict[str, Any], checkpoint_sha256: str | None, render_video: bool) -> str:
    """What makes two runs on the same file interchangeable (batch skips a finished match)."""
    blob = json.dumps({"sha256": sha256, "config": config, "checkpoint": checkpoint_sha256, "video": render_video}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def output_name(path: Path) -> str:
    """`<stem>.annotated.mp4`; a stem too long for that to be a legal file name is shortened
    (the report's `outputs` names the file written)."""
    return fit_name(path.stem, ".annotated.mp4")


def refuse_still_image(path: Path) -> None:
    """A photo opens as a one-frame video of 0.04 s; raise AnalyzeError before any work. Anything
    ffmpeg cannot open is left to the media probe, which says why."""
    import av

    try:
        with av.open(str(path)) as container:
            demuxer = container.format.name
    except (av.error.FFmpegError, OSError):
        return
    # ffmpeg's image demuxers: image2 and one <codec>_pipe per format (jpeg_pipe, png_pipe, webp_pipe ...)
    if demuxer in ("image2", "image2pipe") or demuxer.endswith("_pipe"):
        kind = demuxer.removesuffix("_pipe")
        raise AnalyzeError(f"{path}: is a still image ({kind}), not a video; give a video or audio file")


def _missing_ancestor(path: Path) -> Path | None:
    """The outermost folder of `path` (itself included) that does not exist yet."""
    missing = None
    for p in (path, *path.parents):
        if p.exists():
            break
        missing = p
    return missing


def _remove_if_empty(out: Path, top: Path | None) -> None:
    """Remove `out` and its parents up to `top` while they are empty: a run that stopped before
    writing anything leaves no folder behind (a folder holding anything is kept)."""
    chain = (out, *out.parents)
    if top is None or top not in chain:
        return
    for p in chain:
        try:
            p.rmdir()
        except OSError:
            return
        if p == top:
            return


def analyze(
    path: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | Any | None = None,
    out_dir: str | os.PathLike,
    device: str = "auto",
    render_video: bool = True,
    no_model: bool = False,
    config: Any | None = None,
    progress: Callable[[str], None] | None = None,
    cache_dir: str | os.PathLike | bool | None = None,
    window_s: float = DEFAULT_WINDOW_S,
) -> "Report":
    """Analyse one video and write its outputs into `out_dir` (see the module docstring).

    progress(stage) is told each stage as it begins: the extractor's stages, then "segment",
    "model", "features", "timeline", "render", "report". Raises AnalyzeError (bad path or out
    folder, a still image), mfsa_pipe.devices.DeviceError (a device this machine cannot use),
    extractors.errors.MediaError (unusable media), mfsa_pipe.checkpoint.CheckpointError
    (unreadable or malformed checkpoint) and SpecMismatchError (checkpoint trained on other
    features). The checks all come before the output folder is made, except two of a checkpoint
    file's: its model config and the fit of its weights, checked as the model loads in the
    background during extraction (a failure stops the run at the next stage); a run that fails or
    is interrupted before writing anything removes the folders it made.
    """
    started = time.perf_counter()
    # every refusal but a checkpoint's config and weight fit (see _model_load) comes before the output
    # folder is made, so a refused run leaves nothing behind
    src = check_input(path)
    check_device(device)
    refuse_still_image(src)
    model, config = setup_model(checkpoint, no_model=no_model, config=config, header_only=True)
    loading = _model_load(model, device=device)
    target = Path(os.path.abspath(Path(out_dir).expanduser()))  # ".." resolved by name, as mkdir walks it
    made = _missing_ancestor(target)
    out = prepare_out_dir(target)
    try:
        return _analyze(
            src, out=out, model=model, config=config, loading=loading, device=device, started=started,
            render_video=render_video, progress=progress, cache_dir=cache_dir, window_s=window_s,
        )
    except BaseException:  # failures and Ctrl-C alike
        _remove_if_empty(target, made)
        raise


def _model_load(model: ResolvedModel, *, device: str) -> ModelLoad | None:
    """The checkpoint's model: a checked header's is loaded in the background during extraction
    (its config and weights are checked there, the rest was checked up front); a loaded
    checkpoint's is built now, so that weights that do not fit are refused before extraction."""
    if model.checkpoint is None:
        return None
    if isinstance(model.checkpoint, CheckpointHeader):
        return ModelLoad.start(model.checkpoint.path, device=device)
    return ModelLoad.ready(model.checkpoint, Predictor(model.checkpoint, device=device))


def _telling(progress: Callable[[str], None] | None, loading: ModelLoad | None) -> Callable[[str], None]:
    """progress, checking between stages whether the model's load has failed: a refused
    checkpoint stops the run at the next stage instead of after the extraction."""
    def tell(stage: str) -> None:
        if loading is not None:
            loading.raise_if_failed()
        if progress is not None:
            progress(stage)
    return tell


def _analyze(
    src: Path, *, out: Path, model: ResolvedModel, config: Any, loading: ModelLoad | None, device: str,
    started: float, render_video: bool, progress: Callable[[str], None] | None,
    cache_dir: str | os.PathLike | bool | None, window_s: float,
) -> "Report":
    """`analyze` after its checks: extract, segment, predict, then write the outputs."""
    from extractors.pipeline import extract  # lazy: the pipeline loads PyAV (FFmpeg)

    tell = _telling(progress, loading)
    setup = time.perf_counter() - started  # checks, checkpoint header, extractor imports
    extraction = extract(src, config=config, cache_dir=cache_dir, progress=tell)
    timings = {"setup": setup}
    timings.update({k: float(v) for k, v in extraction.timings.items() if k != "total"})
    timings["extract_total"] = float(extraction.timings.get("total", 0.0))

    tell("segment")
    t = time.perf_counter()
    utterances, rows, samples = _segment(extraction, window_s=window_s)
    timings["segmentation"] = time.perf_counter() - t

    if model.checkpoint is not None:
        tell("model")
    t = time.perf_counter()  # "model" includes any wait for the model's load
    predictor = None
    if loading is not None:
        checkpoint, predictor = loading.result()
        model = replace(model, checkpoint=checkpoint)
    answers = _predict(model, samples, extraction=extraction, device=device, predictor=predictor)
    timings["model"] = time.perf_counter() - t if model.checkpoint is not None else 0.0

    video_name = output_name(src) if (render_video and extraction.media.has_video) else None
    report = _build_report(
        src, out=out, extraction=extraction, config=config, model=model, model_info=answers.info, device=device,
        render_video=render_video, video_name=video_name, timings=timings,
        utterances=_utterance_reports(extraction, utterances, rows=rows, answers=answers),
        overall=overall_prediction(utterances, answers.predictions,
                                   model.checkpoint.label_spec if model.checkpoint else None),
    )
    _write_outputs(src, out=out, extraction=extraction, report=report, texts=[u.text for u in utterances],
                   video_name=video_name, timings=timings, tell=tell)
    tell("report")
    timings["total"] = time.perf_counter() - started
    report.timings_s = {k: round(max(0.0, v), 4) for k, v in timings.items()}
    report.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    report.write(out / REPORT_NAME)  # last: its presence marks the folder complete
    return report


def _segment(extraction: Any, *, window_s: float) -> tuple[list[Any], dict[str, list[np.ndarray]], list[dict]]:
    """(utterances, each modality's rows per utterance, the model's input per utterance)."""
    seqs = extraction.sequences()
    utterances = make_utterances(segments=extraction.segments, duration_s=extraction.media.duration_s,
                                 window_s=window_s, vision=seqs["vision"])
    rows = {m: slice_rows(seqs[m], utterances) for m in MODALITIES}
    return utterances, rows, utterance_samples(seqs, utterances, rows=rows)


@dataclass
class ModelAnswers:
    """The model's answers, one entry per utterance (None where it made none); info: None without a model."""

    predictions: list[Prediction | None]
    weights: list[dict[str, float] | None]  # MFSA's psi per modality
    absent: list[dict[str, str]]  # modality -> why the model was fed without it
    alone: list[dict[str, Prediction] | None]  # each used modality fed alone (two or more used)
    info: ModelInfo | None


def _predict(model: ResolvedModel, samples: list[dict], *, extraction: Any, device: str,
             predictor: Any | None) -> ModelAnswers:
    """Without a model: no predictions, and what each modality carries by the rule a model is fed by."""
    none = [None] * len(samples)
    if model.checkpoint is None:
        spec = extraction.feature_spec()
        return ModelAnswers(none, none, [absent_modalities(x, spec, speech=x.get("speech")) for x in samples], none, None)
    results, alone, used_device = predict_utterances(model.checkpoint, samples, device=device, predictor=predictor)
    # nothing to read (no words, no voice, no face): the model would answer from its biases
    fed = [r if len(r.absent) < len(MODALITIES) else None for r in results]
    info = ModelInfo(name=model.checkpoint.model_name, task=model.checkpoint.label_spec.task,
                     label_spec=model.checkpoint.label_spec.to_dict(), device=used_device,
                     has_modality_weights=any(r.modality_weights is not None for r in results))
    return ModelAnswers(predictions=[r and r.prediction for r in fed], weights=[r and r.modality_weights for r in fed],
                        absent=[r.absent for r in results], alone=alone, info=info)


def _utterance_reports(extraction: Any, utterances: list[Any], *, rows: dict[str, list[np.ndarray]],
                       answers: ModelAnswers) -> list[UtteranceReport]:
    has_model, absent = answers.info is not None, answers.absent
    return [
        UtteranceReport(
            index=u.index,
            start=round(u.start, 3),
            end=round(u.end, 3),
            text=u.text,
            source=u.source,
            rows={m: int(rows[m][i].size) for m in MODALITIES},
            prediction=answers.predictions[i],
            modality_weights=answers.weights[i],
            signals=utterance_signals(extraction, {m: rows[m][i] for m in MODALITIES}),
            modalities={m: ModalityUse(used=(m not in absent[i]) if has_model else None, reason=absent[i].get(m))
                        for m in MODALITIES},
            by_modality=answers.alone[i],
        )
        for i, u in enumerate(utterances)
    ]


def _input_info(src: Path, media: Any) -> InputInfo:
    return InputInfo(
        path=str(src),
        name=src.name,
        sha256=media.sha256,
        size_bytes=int(media.size_bytes),
        duration_s=float(media.duration_s),
        has_video=bool(media.has_video),
        has_audio=bool(media.has_audio),
        width=media.width,
        height=media.height,
        fps=media.fps,
        rotation_deg=int(media.rotation),
    )


def _build_report(src: Path, *, out: Path, extraction: Any, config: Any, model: ResolvedModel, model_info: Any,
                  device: str, render_video: bool, video_name: str | None, timings: dict[str, float],
                  utterances: list[UtteranceReport], overall: Any) -> "Report":
    ckpt_info = checkpoint_info(model) if model.checkpoint is not None else None
    media = extraction.media
    return Report(
        input=_input_info(src, media),
        provenance=Provenance(
            extraction_config=config.to_dict(),
            extractors={m: {k: s[k] for k in ("id", "version", "config", "dim", "rate")} for m, s in extraction.feature_spec().items()},
            checkpoint=ckpt_info,
        ),
        model=model_info,
        notice=model_notice(model),
        summary=modality_summaries(extraction),
        utterances=utterances,
        overall=overall,
        timings_s=timings,
        outputs={"report": REPORT_NAME, "annotated_video": video_name, "timeline": TIMELINE_NAME, "features": FEATURES_NAME},
        run={
            "no_model": model.checkpoint is None,
            "render_video": bool(render_video),
            "device": model_info.device if model_info else str(resolve_device(device)),
            "key": run_key(
                sha256=media.sha256, config=config.to_dict(),
                checkpoint_sha256=ckpt_info.sha256 if ckpt_info else None, render_video=bool(render_video),
            ),
        },
        out_dir=out,
    )


def _write_outputs(src: Path, *, out: Path, extraction: Any, report: "Report", texts: list[str],
                   video_name: str | None, timings: dict[str, float], tell: Callable[[str], None]) -> None:
    """features.npz, timeline.png and the annotated video (report.json comes last, in _analyze)."""
    tell("features")
    t = time.perf_counter()
    extraction.save(out / FEATURES_NAME)
    timings["features"] = time.perf_counter() - t

    from mfsa_pipe.analysis import render  # lazy: OpenCV

    data = render.overlay_data(extraction=extraction, report=report)
    tell("timeline")
    # The plot (matplotlib's import and drawing: ~1.5 s cold, Python-bound) is made in a thread
    # while this one renders the video (mostly native: decoding, OpenCV, x264's own threads).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfsa-timeline") as pool:
        plot = pool.submit(_timed, render.render_timeline_png, data=data, path=out / TIMELINE_NAME, title=src.name,
                           texts=texts)
        timings["render"] = 0.0
        if video_name is not None:
            tell("render")
            t = time.perf_counter()
            annotator = render.Annotator(data, width=extraction.media.width, height=extraction.media.height)
            render.render_video(src=src, dst=out / video_name, annotator=annotator)
            timings["render"] = time.perf_counter() - t
        timings["timeline"] = plot.result()


def _timed(function: Callable[..., Any], **kwargs: Any) -> float:
    """Seconds that function(**kwargs) took."""
    t = time.perf_counter()
    function(**kwargs)
    return time.perf_counter() - t


def model_notice(model: ResolvedModel) -> str | None:
    if model.checkpoint is not None:
        return None
    if model.reason == "no-default":
        return "No model checkpoint was given and this installation ships no default model. " + NO_MODEL_NOTICE
    return NO_MODEL_NOTICE


def checkpoint_info(model: ResolvedModel) -> CheckpointInfo:
    ckpt = model.checkpoint
    path = model.path or (Path(ckpt.path) if getattr(ckpt, "path", None) else None)
    training = dict(getattr(ckpt, "training", {}) or {})
    return CheckpointInfo(
        path=str(path) if path else "",
        sha256=file_sha256(path) if path and path.is_file() else "0" * 64,
        model_name=ckpt.model_name,
        label_spec=ckpt.label_spec.to_dict(),
        trained_on=training or None,
        metrics=dict(getattr(ckpt, "metrics", {}) or {}) or None,
        model_config=dict(getattr(ckpt, "model_config", {}) or {}) or None,
        calibration=dict(getattr(ckpt, "calibration", {}) or {}) or None,
    )


# ---- model ----------------------------------------------------------------------------------

def predict_utterances(checkpoint: Any, samples: list[dict[str, np.ndarray]], *, device: str = "auto",
                       predictor: Any | None = None) -> tuple[list[Any], list[Any], str]:
    """Batched passes of the checkpoint's model over the utterances (`predictor`: that model, when
    already built): (the Predictor's UtterancePrediction per utterance, its prediction from each
    modality alone (Predictor.predict_alone), device used)."""
    if not samples:
        return [], [], str(resolve_device(device))
    import torch

    predictor = predictor if predictor is not None else Predictor(checkpoint, device=device)
    used = str(predictor.device)
    # On the CPU, one intra-op thread: these models run on small tensors, where torch's
    # OpenMP threads mostly wait on each other; on a shared 2-core machine 2 threads measured
    # 0.4-18 s per call against 0.02-0.25 s with 1 (benchmarks/bench_analyze.py).
    threads = torch.get_num_threads()
    on_cpu = not used.startswith("cuda")
    if on_cpu:
        torch.set_num_threads(1)
    try:
        results = predictor.predict(samples)
        return results, predictor.predict_alone(samples, results), used
    finally:
        if on_cpu:
            torch.set_num_threads(threads)


def _mean_probabilities(w: np.ndarray, probs: list[dict[str, float]]) -> dict[str, float]:
    return {n: float(sum(wi * p[n] for wi, p in zip(w, probs))) for n in probs[0]}


def overall_prediction(utterances: list[Utterance], predictions: list[Prediction | None], label_spec: LabelSpec | None) -> Prediction | None:
    """Duration-weighted mean over the utterances with a prediction: of the score (regression),
    of the probabilities with their argmax as label (classification, multilabel), and for a
    multihead model of each head's probabilities (label: argmax) and score (sentiment)."""
    pairs = [(max(u.duration, 1e-3), p) for u, p in zip(utterances, predictions) if p is not None]
    if not pairs or label_spec is None:
        return None
    w = np.array([d for d, _ in pairs])
    w = w / w.sum()
    preds = [p for _, p in pairs]
    if label_spec.is_regression:
        return Prediction(score=float(sum(wi * p.score for wi, p in zip(w, preds))))
    mean = _mean_probabilities(w, [p.probabilities for p in preds])
    heads = None
    if label_spec.task == "multihead":
        heads = {}
        for name in preds[0].heads:
            hp = [p.heads[name] for p in preds]
            hm = _mean_probabilities(w, [h.probabilities for h in hp])
            score = float(sum(wi * h.score for wi, h in zip(w, hp))) if hp[0].score is not None else None
            heads[name] = HeadPrediction(label=max(hm, key=hm.get), probabilities=hm, score=score)
    return Prediction(label=max(mean, key=mean.get), probabilities=mean, heads=heads)


# ---- summaries ------------------------------------------------------------------------------

def _column(seq: Any, name: str) -> np.ndarray | None:
    return seq.features[:, seq.columns.index(name)] if name in seq.columns else None


def modality_summaries(extraction: Any) -> dict[str, ModalitySummary]:
    text, audio, vision = extraction.text, extraction.audio, extraction.vision
    duration = float(extraction.media.duration_s)
    oov = text.meta.get("oov_rate")
    face = _column(vision, "face_present")
    voiced = audio.meta.get("voice_activity_fraction")
    if voiced is None and _column(audio, "voice_activity") is not None and audio.length:
        voiced = float(np.mean(_column(audio, "voice_activity") > 0.5))
    return {
        "text": ModalitySummary(
            frames=text.length, rate_hz=None, empty_reason=text.meta.get("empty_reason"),
            words=int(text.meta.get("n_words", text.length)),
            oov_rate=float(oov) if oov is not None and text.length else None,
            speech_coverage=speech_coverage(extraction.segments, duration_s=duration),
        ),
        "audio": ModalitySummary(
            frames=audio.length, rate_hz=audio.rate, empty_reason=audio.meta.get("empty_reason"),
            voiced_share=float(voiced) if voiced is not None and audio.length else None,
        ),
        "vision": ModalitySummary(
            frames=vision.length, rate_hz=vision.rate, empty_reason=vision.meta.get("empty_reason"),
            face_coverage=float(np.mean(face >= 0.5)) if face is not None and vision.length else (0.0 if extraction.media.has_video else None),
        ),
    }


def utterance_signals(extraction: Any, rows: dict[str, np.ndarray]) -> UtteranceSignals:
    """Mean facial emotion estimates (over rows with a face), face coverage, loudness, voicing."""
    vision, audio = extraction.vision, extraction.audio
    vr, ar = rows["vision"], rows["audio"]
    face_cov = emotions = loud = voicing = None
    if vr.size:
        present = _column(vision, "face_present")
        mask = present[vr] >= 0.5 if present is not None else np.ones(vr.size, bool)
        face_cov = float(mask.mean())
        emo = [i for i, c in enumerate(vision.columns) if c.startswith("emo_")]
        if emo and mask.any():
            mean = vision.features[vr[mask]][:, emo].mean(axis=0)
            emotions = {vision.columns[i].removeprefix("emo_"): float(np.clip(v, 0, 1)) for i, v in zip(emo, mean)}
    if ar.size:
        lcol = _column(audio, LOUDNESS_COLUMN)
        vcol = _column(audio, VOICING_COLUMN)
        loud = float(np.nanmean(lcol[ar])) if lcol is not None else None
        voicing = float(np.clip(np.nanmean(vcol[ar]), 0, 1)) if vcol is not None else None
    return UtteranceSignals(face_coverage=face_cov, emotions=emotions, loudness=loud, voicing=voicing)


__all__ = ["AnalyzeError", "analyze", "check_input", "prepare_out_dir", "resolve_model", "run_key"]

