"""Speaker-independent cross-validation: each fold trained (an ensemble) and measured on its
held-out speakers, over several seeds; the clips' temperatures fitted on the fold models."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from default_recipe.fitting import as_bundle, fit
from default_recipe.measures import (disagreement, fer_zero_shot, neutral_clips, pooled_logreg, subset_table,
                                     text_scores)
from default_recipe.mix import Composed
from default_recipe.progress import log
from default_recipe.settings import ENSEMBLE, FOLDS, INNER_VALID


def cross_validate(args, data: dict) -> dict[int, list[dict]]:
    """seed -> its fold rows, for the seeds cv_seeds(args)."""
    folds = FOLDS[:1] if args.quick else FOLDS
    seeds = cv_seeds(args)
    jobs = [(k, args, data, seed) for seed in seeds for k in range(len(folds))]
    if args.jobs > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("fork")) as pool:
            rows = list(pool.map(_fold, jobs))
    else:
        rows = [_fold(j) for j in jobs]
    return {seed: [r for r in rows if r["seed"] == seed] for seed in seeds}


def cv_seeds(args) -> list[int]:
    """The cross-validation's seeds: args.seed, then one per further ensemble, members apart."""
    return [args.seed + j * ENSEMBLE["members"] for j in range(max(1, args.cv_seeds))]


def fold_dir(args, k: int, seed: int) -> Path:
    """Where fold k of `seed` trains (member j in seed{j}/ inside; fold_checkpoint: what it gives)."""
    return args.work / "cv" / f"fold{k}" if seed == args.seed else args.work / "cv" / f"seed{seed}" / f"fold{k}"


def fold_checkpoint(args, k: int, seed: int) -> Path:
    """The checkpoint fit() leaves in fold_dir: the ensemble, or the one run's own."""
    return fold_dir(args, k, seed) / ("model.ckpt" if ENSEMBLE["members"] > 1 else "seed0/model.ckpt")


def cv_clip_temperatures(args, data: dict) -> dict:
    """The clips' temperatures from the cross-validation: per head, fitted on the raw logits of the
    shipped seed's fold models on their held-out speakers' clips (AV and voice; 8 speakers in all),
    for the shipped model's "other" group (its validation split holds one speaker, whose fitted
    temperature spread widely across folds). Also, leave one fold out, how calibrated the held-out
    clips are with each fold model's own temperature vs one fitted on the other folds' clips."""
    from mfsa_pipe.checkpoint import load_checkpoint
    from mfsa_pipe.training.evaluation import calibrate_predictions, calibration_heads, run_on_split
    from mfsa_pipe.training.metrics import expected_calibration_error, nll, softmax

    folds = FOLDS[:1] if args.quick else FOLDS
    paths = [fold_checkpoint(args, k, args.seed) for k in range(len(folds))]
    if not all(p.is_file() for p in paths):
        raise SystemExit(f"the clips' temperatures are fitted on the cross-validation's fold models, and "
                         f"{next(p for p in paths if not p.is_file())} is missing: run without --skip-cv")
    runs = []
    for path, test_spk in zip(paths, folds):
        ckpt = load_checkpoint(path)
        clips = [s for pool in ("av_all", "voice_all") for s in data[pool] if s.group in test_spk]
        res = run_on_split(ckpt, as_bundle(data, {"heldout": Composed(clips)}), "heldout", device="cpu", batch_size=64)
        runs.append((ckpt, res.prediction, res.truth))
    label_spec = runs[0][0].label_spec
    fit = lambda parts: calibrate_predictions(np.concatenate([p for _, p, _ in parts]),  # noqa: E731
                                              np.concatenate([t for _, _, t in parts]), label_spec)[0]["temperature"]
    out = {"temperature": fit(runs), "samples": int(sum(len(p) for _, p, _ in runs)), "folds": len(runs),
           "leave_one_fold_out": {}}
    # fold k's clips with the temperatures of the other folds' clips (all of them when there is one fold)
    others = [fit(runs[:k] + runs[k + 1:]) if len(runs) > 1 else out["temperature"] for k in range(len(runs))]
    for h, (head, a, b) in enumerate(calibration_heads(label_spec)):
        own, cv, truth = [], [], []
        for k, (ckpt, pred, t) in enumerate(runs):
            known = t[:, h] >= 0
            own.append(softmax(pred[known, a:b], ckpt.temperature(head, words_only=False)))
            cv.append(softmax(pred[known, a:b], others[k][head]))
            truth.append(t[known, h])
        y = np.concatenate(truth)
        out["leave_one_fold_out"][head] = {
            "n": int(y.size),
            **{f"{name}_{key}": value for key, probs in (("own", np.concatenate(own)), ("cv", np.concatenate(cv)))
               for name, value in (("ece", expected_calibration_error(probs, y)),
                                   ("nll", nll(np.log(np.clip(probs, 1e-12, 1)), y)),
                                   ("mean_top_p", float(probs.max(1).mean())))},
            "accuracy": float((np.concatenate(cv).argmax(1) == y).mean())}
    return out


def member_row(predictor, data: dict, test_spk: list[str], member_seed: int, draw_seed: int) -> dict:
    """An ensemble member alone on its fold (the spread of single runs): accuracies and F1 only."""
    brief = lambda scores: {k: scores[k] for k in ("n", "acc", "weighted_f1") if k in scores}  # noqa: E731
    return {"seed": member_seed,
            "subsets": {name: brief(v) for name, v in subset_table(predictor, data, test_spk, draw_seed).items()},
            "neutral_clips": neutral_clips(predictor, data, test_spk),
            "meld_dev": {head: brief(v) for head, v in text_scores(predictor, data["text"]["test"]).items()}}


def _fold(job) -> dict:
    """One fold trained with `seed`; measured with args.seed's draws (the same held-out pairs for every seed)."""
    import torch

    k, args, data, seed = job
    torch.set_num_threads(1)
    test_spk, valid_spk = FOLDS[k], [INNER_VALID[k]]
    train_spk = sorted({s.group for s in data["av_all"]} - set(test_spk) - set(valid_spk))
    t0 = time.perf_counter()
    res = fit(data, fold_dir(args, k, seed), train_spk=train_spk, valid_spk=valid_spk, seed=seed, quick=args.quick)
    from mfsa_pipe.checkpoint import load_checkpoint
    from mfsa_pipe.analysis.inference import Predictor

    predictor = Predictor(load_checkpoint(res.checkpoint), device="cpu")
    pick = lambda pool, spk: [s for s in data[pool] if s.group in spk]  # noqa: E731
    av_test, av_train, av_valid = pick("av_all", test_spk), pick("av_all", train_spk), pick("av_all", valid_spk)
    vo_test, vo_train, vo_valid = pick("voice_all", test_spk), pick("voice_all", train_spk), pick("voice_all", valid_spk)
    row = {
        "fold": k, "seed": seed, "test_speakers": test_spk, "valid_speaker": valid_spk[0], "train_speakers": train_spk,
        "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "seconds": round(time.perf_counter() - t0, 1),
        "subsets": subset_table(predictor, data, test_spk, args.seed),
        "disagreement": disagreement(predictor, data, test_spk, args.seed),
        "neutral_clips": neutral_clips(predictor, data, test_spk),
        "fer_zero_shot": fer_zero_shot(av_test, data["feature_spec"]["vision"]["columns"]),
        "logreg_av": pooled_logreg(av_train, av_valid, av_test, ("audio", "vision")),
        "logreg_voice": pooled_logreg(vo_train, vo_valid, vo_test, ("audio",)),
        "meld_dev": text_scores(predictor, data["text"]["test"]),
        "calibration": predictor.checkpoint.metrics.get("calibration"),
    }
    if len(res.members) > 1:
        row["members"] = [member_row(Predictor(load_checkpoint(path), device="cpu"), data, test_spk, member_seed,
                                     args.seed) for member_seed, path in res.members]
    s = row["subsets"]
    log(f"fold {k} (seed {seed}): face+voice {s['face + voice (AV clips)']['acc']:.3f}, voice clips "
        f"{s['voice only (audio-only clips)']['acc']:.3f}, FER {row['fer_zero_shot']['acc']:.3f}, logreg AV "
        f"{row['logreg_av']['acc']:.3f}, MELD dev emotion wF1 {row['meld_dev']['emotion']['weighted_f1']:.3f} "
        f"[{row['seconds']:.0f} s, best epoch {res.best_epoch}]")
    return row
