"""timeline.png: the prediction per utterance over time, above the extracted signals (matplotlib)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence as Seq

import numpy as np

from extractors.sequence import MODALITIES
from mfsa_pipe.analysis.render.overlay import (
    OverlayData,
    class_colour,
    prediction_colour,
    robust_max,
    score_colour,
    sentiment_colour,
    short_answer,
)
from mfsa_pipe.atomic import atomic_path

_LANE_NAMES = {"text": "words", "audio": "voice", "vision": "face"}
_MAX_TICK_TEXTS = 60  # utterance texts along the timeline's top
_BASE_FONT = "DejaVu Sans"  # matplotlib's own; Latin, Greek, Cyrillic, no CJK


def fallback_fonts(texts: Seq[str]) -> list[str]:
    """Installed font families that draw the characters of `texts` that DejaVu Sans lacks (CJK
    titles and words), best coverage first; empty when it lacks none or no font has them."""
    from matplotlib import font_manager

    fonts = font_manager.fontManager
    missing = frozenset(ch for text in texts for ch in text if ord(ch) > 0x24F) - _charmap(fonts.findfont(_BASE_FONT))
    if not missing:
        return []
    known = {f.fname for f in fonts.ttflist}
    for path in font_manager.findSystemFonts():  # fonts installed after matplotlib's cache was built
        if path not in known and path.lower().endswith((".ttf", ".otf", ".ttc")):
            try:
                fonts.addfont(path)
            except (OSError, RuntimeError, ValueError):  # an unreadable font file: not a candidate
                continue
    cover: dict[str, int] = {}
    for entry in fonts.ttflist:
        # "Last Resort" draws a placeholder box for every character: that is what we avoid
        if entry.name not in cover and entry.name != _BASE_FONT and "last resort" not in entry.name.lower():
            cover[entry.name] = len(missing & _charmap(entry.fname))
    return sorted((n for n, c in cover.items() if c > 0), key=lambda n: -cover[n])[:2]


@lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[str]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(chr(c) for c in FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def render_timeline_png(*, data: OverlayData, path: str | os.PathLike, title: str, texts: list[str] | None = None) -> Path:
    """Prediction per utterance over time (with a sentiment head its score, with by_modality each
    modality's own answer), facial emotion estimates and loudness below; the transcript as tick
    labels. Written atomically. Characters DejaVu Sans lacks (a CJK title or transcript) are drawn
    from an installed font that has them (`fallback_fonts`)."""
    from matplotlib import rc_context

    families = [_BASE_FONT, *fallback_fonts([title, *(texts or []), *(w for _, _, w in data.words)])]
    with rc_context({"font.family": families}):
        return _timeline_png(data=data, path=path, title=title, texts=texts)


def _timeline_png(*, data: OverlayData, path: str | os.PathLike, title: str, texts: list[str] | None) -> Path:
    from matplotlib.figure import Figure

    sentiment, alone = data.has_sentiment, data.has_alone
    # rows: the prediction, [the sentiment], [each modality alone], facial emotion, loudness
    ratios = [1.4] + [0.8] * sentiment + [0.7] * alone + [1.2, 0.8]
    fig = Figure(figsize=(12, 7.2 + 1.6 * sentiment + 1.4 * alone), dpi=100)
    axes = fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios})
    if data.has_model:
        _plot_prediction(axes[0], data, title=title)
        if sentiment:
            _plot_sentiment(axes[1], data)
        if alone:
            _plot_alone(axes[1 + sentiment], data)
    else:
        _plot_utterances_only(axes[0], data, title=title)
    _plot_facial(axes[-2], data)
    _plot_loudness(axes[-1], data)
    axes[-1].set_xlim(0, max(data.duration_s, 1e-3))
    starts = [s for s, _ in data.utterances]
    for ax in axes:  # utterance starts: one line collection per axis, spanning its height
        ax.vlines(starts, 0, 1, transform=ax.get_xaxis_transform(), color="0.75", linewidth=0.6, zorder=0)
    _transcript_ticks(axes[0], data, texts)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)


def _rgb(bgr: tuple[int, int, int]) -> tuple[float, float, float]:
    """matplotlib's RGB in [0, 1] from the overlay's BGR colours."""
    return bgr[2] / 255, bgr[1] / 255, bgr[0] / 255


def _plot_prediction(ax: Any, data: OverlayData, *, title: str) -> None:
    """The model's answer per utterance: scores as bars (regression), else stacked class probabilities."""
    task = data.label_spec.task
    if task == "regression":
        lo, hi = data.score_range
        scored = [((s + e) / 2, max(e - s, 1e-3), pred.score) for (s, e), pred in zip(data.utterances, data.predictions)
                  if pred and pred.score is not None]
        if scored:  # one call for all bars: per-bar calls cost ~ms each on hour-long videos
            x, width, score = zip(*scored)
            ax.bar(x, score, width=width, color=[_rgb(score_colour(v, lo, hi)) for v in score],
                   edgecolor="black", linewidth=0.5)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_ylim(lo, hi)
        ax.set_ylabel("score")
    else:
        _stacked_bars(ax, data, multilabel=task == "multilabel")
        ax.set_ylim(0, 1)
        ax.set_ylabel("emotion probability" if data.has_sentiment else "probability")
        if data.classes:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    ax.set_title(f"{title}: {data.model_name or 'model'} prediction per utterance", fontsize=10)


def _plot_utterances_only(ax: Any, data: OverlayData, *, title: str) -> None:
    ax.text(0.5, 0.5, "NO MODEL: no fused prediction was made\n(signals only; see report.json 'notice')",
            ha="center", va="center", transform=ax.transAxes, fontsize=11)
    for s, e in data.utterances:
        ax.axvspan(s, e, color="0.9", ec="0.6")
    ax.set_yticks([])
    ax.set_title(f"{title}: utterances", fontsize=10)


def _plot_facial(ax: Any, data: OverlayData) -> None:
    """The facial extractor's emotion estimates per frame; gaps where there is no face."""
    if data.emotions is not None and data.vision_times.size:
        emo = data.emotions.astype(float).copy()
        if data.face_present is not None:
            emo[data.face_present < 0.5] = np.nan  # no face: a gap, not a zero
        for i, n in enumerate(data.emotion_names):
            ax.plot(data.vision_times, emo[:, i], color=_rgb(class_colour(n, i)), label=n, linewidth=1.2)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    else:
        ax.text(0.5, 0.5, "no face", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("facial emotion\n(estimate)")


def _plot_loudness(ax: Any, data: OverlayData) -> None:
    """Loudness, with the voicing probability shaded on a second axis."""
    if data.loudness is not None and data.audio_times.size:
        ax.plot(data.audio_times, data.loudness, color="0.2", linewidth=1.0, label="loudness")
        ax.set_ylabel("loudness")
        # from 0, and at least up to 0.5 (quiet speech): a silent track reads as a flat line at 0
        ax.set_ylim(0, max(0.5, 1.1 * robust_max(data.loudness)))
        if data.voicing is not None:
            twin = ax.twinx()
            twin.fill_between(data.audio_times, 0, data.voicing, color="tab:orange", alpha=0.3, step="mid", label="voicing")
            twin.set_ylim(0, 1)
            twin.set_ylabel("voicing", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no audio", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("time (s)")


def _transcript_ticks(ax: Any, data: OverlayData, texts: list[str] | None) -> None:
    """The transcript as tick labels along the top: words when few, else utterance texts."""
    top = ax.secondary_xaxis("top")
    if data.words and len(data.words) <= 60:
        top.set_xticks([(a + b) / 2 for a, b, _ in data.words], [w for _, _, w in data.words], rotation=60, fontsize=7)
    elif texts:
        # at most _MAX_TICK_TEXTS, evenly spread: hundreds of labels overlap into a smear (and cost seconds)
        shown = np.unique(np.linspace(0, len(texts) - 1, min(len(texts), _MAX_TICK_TEXTS)).round().astype(int))
        top.set_xticks([sum(data.utterances[i]) / 2 for i in shown], [_shorten_label(texts[i]) for i in shown], rotation=30, fontsize=7)
    else:
        top.set_xticks([])


def _plot_sentiment(ax: Any, data: OverlayData) -> None:
    """Sentiment score per utterance as bars in [-1, 1], each labelled with its class."""
    shown = [(k, s, e, *data.sentiment_at(k)) for k, (s, e) in enumerate(data.utterances) if data.sentiment_at(k) is not None]
    if shown:
        _, starts, ends, labels, scores = zip(*shown)
        ax.bar([(s + e) / 2 for s, e in zip(starts, ends)], scores, width=[max(e - s, 1e-3) for s, e in zip(starts, ends)],
               color=[_rgb(sentiment_colour(label)) for label in labels], edgecolor="black", linewidth=0.5)
    for _, s, e, label, score in shown:
        # the class name next to the zero line, on the side of the bar (inside it when it is long)
        ax.text((s + e) / 2, 0.06 if score >= 0 else -0.06, f"{label} {score:+.2f}", ha="center",
                va="bottom" if score >= 0 else "top", fontsize=8, clip_on=True)
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylim(-1, 1)
    ax.set_ylabel("sentiment\n(positive - negative)")


def _plot_alone(ax: Any, data: OverlayData) -> None:
    """Each modality's own answer (the report's by_modality) per utterance: one lane per modality,
    a bar in the top class's colour, more opaque the more probable; labelled when there is room."""
    from matplotlib.collections import PolyCollection

    lanes = {m: len(MODALITIES) - 1 - i for i, m in enumerate(MODALITIES)}  # words on top
    boxes, colours, labels = [], [], []
    for k, (s, e) in enumerate(data.utterances):
        for m, pred in data.alone_at(k).items():
            p = float((pred.probabilities or {}).get(pred.label, 1.0))
            y0, y1 = lanes[m] + 0.1, lanes[m] + 0.9
            boxes.append([(s, y0), (s, y1), (e, y1), (e, y0)])
            colours.append((*_rgb(prediction_colour(pred, data)), 0.3 + 0.7 * p))
            labels.append(((s + e) / 2, lanes[m] + 0.5, short_answer(pred, with_p=True)))
    ax.add_collection(PolyCollection(boxes, facecolors=colours, edgecolors="white", linewidths=0.3))
    if len(data.utterances) <= 40:  # more labels than that overlap into a smear
        for x, y, label in labels:
            ax.text(x, y, label, ha="center", va="center", fontsize=7, clip_on=True)
    ax.set_ylim(0, len(MODALITIES))
    ax.set_yticks([lanes[m] + 0.5 for m in MODALITIES], [_LANE_NAMES.get(m, m) for m in MODALITIES], fontsize=8)
    ax.set_ylabel("each modality\nalone", fontsize=9)


def _stacked_bars(ax: Any, data: OverlayData, *, multilabel: bool) -> None:
    """Class probabilities per utterance as stacked bars: one collection of rectangles per class
    (an hour holds hundreds of utterances; a patch each costs milliseconds to draw and bound)."""
    from matplotlib.collections import PolyCollection

    x0 = np.array([s for s, _ in data.utterances], float).reshape(-1)
    x1 = x0 + np.array([max(e - s, 1e-3) for s, e in data.utterances], float).reshape(-1)
    probs = [(pred.probabilities if pred else None) or {} for pred in data.predictions]
    totals = np.array([sum(p.values()) if multilabel and p else 1.0 for p in probs])
    bottom = np.zeros(len(x0))
    for i, c in enumerate(data.classes):
        top = bottom + np.array([float(p.get(c, 0.0)) for p in probs]) / np.maximum(totals, 1e-9)
        boxes = np.stack([np.c_[x0, bottom], np.c_[x0, top], np.c_[x1, top], np.c_[x1, bottom]], axis=1)
        colour = _rgb(class_colour(c, i))
        ax.add_collection(PolyCollection(boxes, facecolors=colour, edgecolors="white", linewidths=0.3, label=c))
        bottom = top


def _shorten_label(text: str, n: int = 28) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
