"""Analyse a bundled clip with the Python API and print the emotion timeline.

    python examples/analyze_clip.py [VIDEO] [--out DIR]

Writes report.json, the annotated video, timeline.png and features.npz into DIR (default
out/<name>), then prints one line per utterance: time span, words, predicted emotion (or
score) and the modality weights of MFSA's weighted attention layer.
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
        if utt.prediction is None:
            guess = "no prediction"
        elif utt.prediction.label is not None:
            p = (utt.prediction.probabilities or {}).get(utt.prediction.label)
            guess = utt.prediction.label + (f" ({p:.2f})" if p is not None else "")
        else:
            guess = f"score {utt.prediction.score:+.2f}"
        weights = ", ".join(f"{m} {w:.2f}" for m, w in (utt.modality_weights or {}).items())
        print(f"{utt.start:6.2f}-{utt.end:6.2f} s  {guess:22s} {weights:40s} {utt.text!r}")
    print(f"outputs in {out}/: " + ", ".join(name for name in report.outputs.values() if name))


if __name__ == "__main__":
    main()
