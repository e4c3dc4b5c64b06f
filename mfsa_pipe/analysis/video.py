"""`analyze`: one video in, a report, an annotated video, a timeline plot and the features out.

    report = analyze("talk.mp4", out_dir="talk_analysis")          # default model if shipped
    report = analyze("talk.mp4", out_dir="out", checkpoint="model.ckpt", render_video=False)
    report = analyze("talk.mp4", out_dir="out", no_model=True)     # signals only

Order matters for resumable batches: the features, the plot and the video are written first
(each atomically); report.json is written last, so its presence means the folder is complete.
No model is never replaced by a random one: without a checkpoint the report says plainly that
no fused prediction was made (`notice`) and carries the extracted signals only.
The checks before any work are in checks.py, the choice of model in model_choice.py, the
report's summaries in summaries.py.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from extractors.sequence import MODALITIES
from mfsa_pipe.analysis.checks import (AnalyzeError, check_input, missing_ancestor, output_name, prepare_out_dir,
                                       refuse_still_image, remove_if_empty)
from mfsa_pipe.analysis.inference import Predictor
from mfsa_pipe.analysis.model_choice import ResolvedModel, checkpoint_info, model_notice, resolve_model, setup_model
from mfsa_pipe.analysis.model_load import ModelLoad
from mfsa_pipe.analysis.report import (
    REPORT_NAME,
    InputInfo,
    ModalityUse,
    ModelInfo,
    Prediction,
    Provenance,
    Report,
    UtteranceReport,
)
from mfsa_pipe.analysis.summaries import modality_summaries, overall_prediction, utterance_signals
from mfsa_pipe.checkpoint_header import CheckpointHeader
from mfsa_pipe.devices import check_device, resolve_device
from mfsa_pipe.presence import absent_modalities
from mfsa_pipe.segmentation import (
    DEFAULT_WINDOW_S,
    make_utterances,
    slice_rows,
    utterance_samples,
)

FEATURES_NAME = "features.npz"
TIMELINE_NAME = "timeline.png"


def run_key(*, sha256: str, config: dict[str, Any], checkpoint_sha256: str | None, render_video: bool) -> str:
    """What makes two runs on the same file interchangeable (batch skips a finished match)."""
    blob = json.dumps({"sha256": sha256, "config": config, "checkpoint": checkpoint_sha256, "video": render_video}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


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
    made = missing_ancestor(target)
    out = prepare_out_dir(target)
    try:
        return _analyze(
            src, out=out, model=model, config=config, loading=loading, device=device, started=started,
            render_video=render_video, progress=progress, cache_dir=cache_dir, window_s=window_s,
        )
    except BaseException:  # failures and Ctrl-C alike
        remove_if_empty(target, made)
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




__all__ = ["AnalyzeError", "analyze", "check_input", "prepare_out_dir", "resolve_model", "run_key"]

