"""Rebuild the default model that `analyze` ships with: English words, voice and face, two heads.

    python examples/train_default_model.py            # from the repository root, ../shared beside it

One seeded command (seed 0); every stage is resumable and writes under runs/default/ (git-ignored):

1. data: label CSVs from ../shared/emo, then `build_dataset` with the default extractors
   (`EXTRACTION`: none changed; recorded in the checkpoint, so `analyze` extracts the same):
   - text: MELD train + GoEmotions train (training), GoEmotions dev (validation), MELD dev
     (held out: reported; one choice looked at it, `MIX["meld_balance"]`, and kept the recipe as it
     was; MELD's test split is the benchmark, not here);
   - voice: the 1,344 Javanese audio-only clips (audio only: the words are Javanese);
   - face + voice: the 192 Javanese audio-visual clips (audio + vision);
   - CREMA-D: 6 English clips (all three modalities) + 18 audio files, an out-of-domain check.
2. Speaker-independent cross-validation on the Javanese speakers: 4 folds, each holding out one
   woman and one man (audio and audio-visual clips alike: the audio set's take 01 is the AV
   clip's sound), one more speaker for validation, the other five for training, always with all
   the English text. On the held-out speakers: every modality subset, the zero-shot FER model and
   the pooled-feature logistic regressions (references). Run with `--cv-seeds` seeds (3): the
   card's tables are the shipped seed's, the other seeds show how far a rerun moves the figures.
3. The shipped model: the same recipe on 7 speakers (jv09 validates and calibrates), then
   temperature calibration, the subset table on MELD dev, CREMA-D, and
   mfsa_pipe/default_model/{model.ckpt, metrics.json, MODEL_CARD.md}.

No training sample has all three modalities. The recipe: modality dropout over subsets, and
"paired" samples that put a Javanese clip's voice (and face) beside an English sentence of the
same emotion, so that fusion with all three present is trained (and measured on held-out pairs).

`--quick` runs a short smoke version (2 epochs, small text subset, one fold) under runs/ only.
The stages live in examples/default_recipe/ (one module each); why each setting is what it is:
docs/default_model_recipe.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from default_recipe.cross_validation import cross_validate, cv_clip_temperatures  # noqa: E402
from default_recipe.metrics import collect_metrics, write_metrics  # noqa: E402
from default_recipe.progress import log  # noqa: E402
from default_recipe.settings import CV_SEEDS, SEED  # noqa: E402
from default_recipe.shipped import final_model  # noqa: E402
from default_recipe.sources import build_all, load_all  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--emo", type=Path, default=ROOT.parent / "shared" / "emo")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "default")
    p.add_argument("--cache", type=Path, default=None, help="feature cache (default WORK/cache)")
    p.add_argument("--model-dir", type=Path, default=ROOT / "mfsa_pipe" / "default_model")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--jobs", type=int, default=2, help="CV folds trained in parallel (one thread each)")
    p.add_argument("--cv-seeds", type=int, default=CV_SEEDS,
                   help="seeds of the cross-validation (the card's tables are --seed's; the others give the spread)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, small text subset, one fold, under WORK")
    p.add_argument("--build-only", action="store_true", help="stop after building the datasets")
    p.add_argument("--skip-cv", action="store_true", help="reuse WORK/cv.json from an earlier run")
    p.add_argument("--timing-note", default="", help="measured wall time of the whole rebuild, quoted in the card")
    args = p.parse_args(argv)
    args.cache = args.cache or args.work / "cache"
    if args.quick:
        args.work = args.work / "quick"
    return args


def cross_validation(args, data: dict) -> tuple[list[dict], list[dict]]:
    """(the shipped seed's fold rows, the other seeds' as [{seed, folds}]); --skip-cv reads them back."""
    cv_path, replicates_path = args.work / "cv.json", args.work / "cv_seeds.json"
    if args.skip_cv and cv_path.is_file():
        replicates = json.loads(replicates_path.read_text()) if replicates_path.is_file() else []
        return json.loads(cv_path.read_text()), replicates
    by_seed = cross_validate(args, data)
    cv = by_seed[args.seed]
    replicates = [{"seed": seed, "folds": rows} for seed, rows in by_seed.items() if seed != args.seed]
    cv_path.write_text(json.dumps(cv, indent=1))
    replicates_path.write_text(json.dumps(replicates, indent=1))
    return cv, replicates


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    built = build_all(args)
    if args.build_only:
        return
    data = load_all(args.work)
    cv, replicates = cross_validation(args, data)
    clip_temperatures = cv_clip_temperatures(args, data)
    log(f"clips' temperatures from the cross-validation: {clip_temperatures['temperature']}")
    final = final_model(args, data, clip_temperatures)
    metrics = collect_metrics(data, seed=args.seed, built=built, cv=cv, replicates=replicates,
                              clip_temperatures=clip_temperatures, final=final,
                              seconds=time.perf_counter() - t0, timing_note=args.timing_note)
    target = args.model_dir if not args.quick else args.work
    write_metrics(metrics, target)
    log(f"wrote {target} ({metrics['total_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
