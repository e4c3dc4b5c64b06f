"""Analyse a bundled clip with the Python API and print the emotion timeline.

    python examples/analyze_clip.py [VIDEO] [--out DIR]

Writes report.json, the annotated video, timeline.png and features.npz into DIR (default
out/<name>), then prints one line per utterance: time span, the predicted emotion (or score)
and sentiment, what each modality says alone, MFSA's modality weights, and the words.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mfsa_pipe

MEDIA = Path(__file__).resolve().parent / "media"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", nargs="?", type=Path, default=MEDIA / "grid_id2_vcd_swwp2s.mpg")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path("out") / args.video.stem

    report = mfsa_pipe.analyze(args.video, out_dir=out)

    if report.model is None:
        print(report.notice)
    for utt in report.utterances:
        print(f"{utt.start:6.2f}-{utt.end:6.2f} s  {describe(utt.prediction):38s} {alone(utt):34s} "
              f"{weights(utt):34s} {utt.text!r}")
    print(f"outputs in {out}/: " + ", ".join(name for name in report.outputs.values() if name))


def describe(prediction) -> str:
    """'happy (0.84), sentiment positive +0.71', a regression score, or why there is none."""
    if prediction is None:
        return "no prediction"
    if prediction.label is None:
        return f"score {prediction.score:+.2f}"
    p = (prediction.probabilities or {}).get(prediction.label)
    sentiment = prediction.sentiment()  # (label, score) of a two-head model's sentiment head
    return (prediction.label + (f" ({p:.2f})" if p is not None else "")
            + (f", sentiment {sentiment[0]} {sentiment[1]:+.2f}" if sentiment else ""))


def alone(utt) -> str:
    """What each modality says fed alone (the report's by_modality), e.g. 'alone: T neutral A fear'."""
    each = utt.by_modality or {}
    return ("alone: " + " ".join(f"{m[0].upper()} {each[m].main()}" for m in ("text", "audio", "vision") if m in each)
            if each else "")


def weights(utt) -> str:
    return ", ".join(f"{m} {w:.2f}" for m, w in (utt.modality_weights or {}).items())


if __name__ == "__main__":
    main()
