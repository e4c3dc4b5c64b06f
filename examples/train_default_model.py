"""Rebuild the default model that `analyze` ships with, from the real Javanese acted-emotion clips.

    python examples/train_default_model.py            # from the repository root, ../shared beside it

One seeded command, four stages (each resumable; outputs under runs/javanese/, git-ignored):

1. build-dataset on ../shared/emo/javanese_av/labels.csv with the default extractors (the same
   configuration as `analyze`) -> runs/javanese/javanese.h5 (+ .report.json/.csv).
2. Speaker-independent cross-validation: 4 outer folds, each holding out 2 speakers (one woman,
   one man); inside each fold one more training speaker is the inner validation speaker (early
   stopping and the choice among the candidate MFSA configurations); the model trains on the
   remaining 5 speakers. Never a random clip split. On the same held-out speakers: the zero-shot
   face-only baseline (the FER 7-emotion probabilities of the facial extractor, averaged over
   the clip's face frames, argmax over the 6 shared labels) and, for reference, a logistic
   regression on clip-pooled audio+vision features.
3. The shipped model: the configuration chosen on the inner validation speakers, trained on all
   8 speakers for a fixed number of epochs (the median best epoch of the CV folds), seed 0.
4. Out-of-domain check on the 6 CREMA-D clips (English, another actor), then
   mfsa_pipe/default_model/{model.ckpt, metrics.json, MODEL_CARD.md}.

`--quick` runs a short smoke version (one candidate, few epochs) that writes under runs/ only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ["neutral", "sad", "happy", "surprise", "fear", "angry"]  # the corpus' own order (file codes 01-06)
# outer folds: two held-out speakers each, one woman (jv01-jv04) and one man (jv06-jv09)
FOLDS = [["jv01", "jv06"], ["jv02", "jv07"], ["jv03", "jv08"], ["jv04", "jv09"]]
# inner validation speaker of each fold: one speaker of the next pair, alternating women and men
INNER_VALID = ["jv02", "jv08", "jv04", "jv06"]

SMALL = dict(d=16, d_h=32, num_heads=2, psa_layers=1, hca_layers=1, wal_hidden=16, fusion_heads=2, fusion_ffn=64,
             dropout=0.3, attn_dropout=0.1, embed_dropout=0.2, out_dropout=0.3, batch_size=16, lr=1e-3)
CANDIDATES = {
    # name: (MFSA config overrides, modalities)
    "d16-av": (SMALL, ["audio", "vision"]),
    "d16-tav": (SMALL, ["text", "audio", "vision"]),
    "d32-av": ({**SMALL, "d": 32, "d_h": 64, "num_heads": 4, "psa_layers": 2, "wal_hidden": 32, "fusion_heads": 4,
                "fusion_ffn": 128}, ["audio", "vision"]),
    "d16-av-lr3e-3": ({**SMALL, "lr": 3e-3}, ["audio", "vision"]),
    "d16-av-lr3e-4": ({**SMALL, "lr": 3e-4}, ["audio", "vision"]),
    "d16-av-wd1e-3": (SMALL, ["audio", "vision"]),
    "d16-av-noaux": ({**SMALL, "use_sep_loss": False, "use_adv_loss": False}, ["audio", "vision"]),
    "d8-av": ({**SMALL, "d": 8, "d_h": 16, "wal_hidden": 8, "fusion_ffn": 32}, ["audio", "vision"]),
    "d16-av-lr3e-4-wd1e-3": ({**SMALL, "lr": 3e-4}, ["audio", "vision"]),
    "d16-av-lr3e-4-wd1e-2": ({**SMALL, "lr": 3e-4}, ["audio", "vision"]),
    "d32-av-wd1e-3": ({**SMALL, "d": 32, "d_h": 64, "num_heads": 4, "psa_layers": 2, "wal_hidden": 32,
                       "fusion_heads": 4, "fusion_ffn": 128}, ["audio", "vision"]),
    "d16-av-bs32-wd1e-3": ({**SMALL, "batch_size": 32}, ["audio", "vision"]),
}
TRAIN_KW = {  # trainer settings beyond the model config
    "d16-av-wd1e-3": {"weight_decay": 1e-3},
    "d16-av-lr3e-4-wd1e-3": {"weight_decay": 1e-3},
    "d16-av-lr3e-4-wd1e-2": {"weight_decay": 1e-2},
    "d32-av-wd1e-3": {"weight_decay": 1e-3},
    "d16-av-bs32-wd1e-3": {"weight_decay": 1e-3},
}
# Tried and not kept (train(augment_crop=, augment_noise=, modality_dropout=), seed 0, same folds, test acc
# mean ± std over the 4 folds): d16-av-wd1e-3 + crop 0.3 / noise 0.1 / modality dropout 0.2: 45.3 ± 7.4
# (seeds 0-2: 44.1 ± 1.1 vs 45.1 ± 0.9 without); + noise 0.1 only: 44.3 ± 6.8; + crop 0.3 only: 43.8 ± 3.3;
# d16-av-bs32-wd1e-3 + the three: 42.7 ± 8.9; d32-av-wd1e-3 + the three: 43.7 ± 10.3; d16-av-lr3e-4-wd1e-2 +
# the three: 41.7 ± 3.9; d16-av wd 1e-2 + crop 0.5 / noise 0.3 / dropout 0.3: 39.1 ± 6.3. With all 8 in the pool
# the nested figure was 45.3 ± 5.2 (vs 44.3 ± 6.0): 2 clips of 192, within the seed-to-seed spread.
MAX_EPOCHS = 50
PATIENCE = 10
SEED = 0
FER_TO_CLASS = {"neutral": "emo_neutral", "sad": "emo_sad", "happy": "emo_happy", "surprise": "emo_surprise",
                "fear": "emo_fear", "angry": "emo_angry"}
CREDIT = ("github.com/2black0/video-emotion-recognition-javanese (dataset-resize/), MIT licence, "
          "(c) 2022 Ardy Seto")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data


def build(args) -> dict:
    from mfsa_pipe.build_dataset import build_dataset

    t0 = time.perf_counter()
    report = build_dataset(args.data / "labels.csv", media_root=args.data, out=args.work / "javanese.h5",
                           cache_dir=args.cache, classes=CLASSES,
                           progress=lambda d, n, m: (d % 24 == 0 or d == n) and log(f"build {d}/{n} {m}"))
    log(f"dataset: {report.added} added, {report.already_present} present, {report.failed} failed "
        f"({time.perf_counter() - t0:.0f} s)")
    if report.failed:
        raise SystemExit(f"{report.failed} clips failed; see {report.report_json}")
    extract_s = [r["seconds"] for r in report.records if r["status"] == "added" and r["seconds"] is not None]
    return {"clips": report.total, "failed": report.failed, "build_seconds": report.seconds,
            "extraction_seconds_this_run": round(float(sum(extract_s)), 1)}


def load_samples(path: Path):
    from mfsa_pipe.datasets import open_dataset

    bundle = open_dataset(path)
    samples = [s for split in bundle.splits.values() for s in (split[i] for i in range(len(split)))]
    samples.sort(key=lambda s: s.id)
    return bundle, samples


def fold_bundle(bundle, samples, train_spk, valid_spk, test_spk):
    from mfsa_pipe.datasets.base import DatasetBundle

    pick = lambda spk: [s for s in samples if s.group in spk]  # noqa: E731
    return DatasetBundle(
        splits={"train": pick(train_spk), "valid": pick(valid_spk), "test": pick(test_spk)},
        feature_spec=bundle.feature_spec, label_spec=bundle.label_spec,
        source={**bundle.source, "path": str(bundle.source.get("path"))},
    )


# ----------------------------------------------------------------------------- baselines


def fer_zero_shot(sample_vision: np.ndarray, columns: list[str]) -> tuple[int, np.ndarray, bool]:
    """Mean FER probabilities over the face frames; argmax over the 6 shared labels."""
    face = sample_vision[:, columns.index("face_present")] > 0.5
    idx = [columns.index(FER_TO_CLASS[c]) for c in CLASSES]
    if not face.any():
        return CLASSES.index("neutral"), np.full(len(CLASSES), np.nan), False
    probs = sample_vision[face][:, idx].mean(axis=0)
    return int(np.argmax(probs)), probs, True


def pooled(sample) -> np.ndarray:
    parts = []
    for x in (sample.audio, sample.vision):
        if x.shape[0]:
            parts += [x.mean(0), x.std(0)]
        else:
            parts += [np.zeros(x.shape[1]), np.zeros(x.shape[1])]
    return np.concatenate(parts)


def logreg_fold(train, valid, test):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    xtr, ytr = np.stack([pooled(s) for s in train]), np.array([s.label for s in train])
    xva, yva = np.stack([pooled(s) for s in valid]), np.array([s.label for s in valid])
    xte = np.stack([pooled(s) for s in test])
    scaler = StandardScaler().fit(xtr)
    best = None
    for c in (0.01, 0.1, 1.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(xtr), ytr)
        acc = float(np.mean(clf.predict(scaler.transform(xva)) == yva))
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    return best[2].predict(scaler.transform(xte)), {"C": best[1], "valid_acc": best[0]}


# ----------------------------------------------------------------------------- MFSA


def train_run(bundle, out_dir: Path, name: str, *, epochs: int, patience: int, seed: int):
    from mfsa_pipe.training import train

    overrides, modalities = CANDIDATES[name]
    overrides = dict(overrides)
    batch_size, lr = overrides.pop("batch_size"), overrides.pop("lr")
    return train(model_name="mfsa", dataset=bundle, out_dir=out_dir, overrides=overrides, epochs=epochs,
                 batch_size=batch_size, lr=lr, seed=seed, device="cpu", patience=patience, progress=False,
                 modalities=modalities, **TRAIN_KW.get(name, {}))


def summarize(per_fold: list[dict]) -> dict:
    out = {}
    for key in ("acc", "macro_f1", "weighted_f1"):
        vals = [f[key] for f in per_fold]
        out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "values": [round(v, 4) for v in vals]}
    out["confusion"] = np.sum([np.asarray(f["confusion"]) for f in per_fold], axis=0).tolist()
    return out


def metrics_from_pred(pred, truth) -> dict:
    from mfsa_pipe.metrics import classification_metrics

    return classification_metrics(np.asarray(pred), np.asarray(truth), CLASSES)


def fold_split(samples, k: int):
    test_spk = FOLDS[k]
    valid_spk = [INNER_VALID[k]]
    train_spk = sorted({s.group for s in samples} - set(test_spk) - set(valid_spk))
    return train_spk, valid_spk, test_spk


def _cv_job(job):
    """One training run of the CV (runs in a worker process, one thread each)."""
    import torch

    torch.set_num_threads(1)
    k, name, seed, fb, out_dir, max_epochs = job
    t0 = time.perf_counter()
    res = train_run(fb, out_dir, name, epochs=max_epochs, patience=PATIENCE, seed=seed)
    tm = res.test_metrics
    row = {
        "valid_acc": res.valid_metrics.get("acc"), "valid_loss": res.valid_metrics.get("loss"),
        "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
        "seconds": round(time.perf_counter() - t0, 1), "seconds_per_epoch": round(res.seconds_per_epoch, 2),
        "acc": tm["acc"], "macro_f1": tm["macro_f1"], "weighted_f1": tm["weighted_f1"], "confusion": tm["confusion"],
    }
    log(f"fold {k} {name} seed {seed}: valid acc {row['valid_acc']:.3f} (epoch {res.best_epoch}/{res.epochs_run}) "
        f"test acc {tm['acc']:.3f} f1 {tm['macro_f1']:.3f}  [{row['seconds']:.0f} s]")
    return k, name, seed, row


def run_jobs(args, jobs):
    if args.jobs <= 1:
        return [_cv_job(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_cv_job, jobs))


def cross_validate(args, bundle, samples) -> dict:
    columns = bundle.feature_spec["vision"]["columns"]
    folds, bundles = [], []
    names = list(CANDIDATES) if not args.quick else ["d16-av"]
    for k in range(len(FOLDS)):
        train_spk, valid_spk, test_spk = fold_split(samples, k)
        fb = fold_bundle(bundle, samples, train_spk, valid_spk, test_spk)
        bundles.append(fb)
        test = fb.splits["test"]
        truth = [s.label for s in test]
        fold = {"fold": k, "test_speakers": test_spk, "valid_speaker": valid_spk[0], "train_speakers": train_spk,
                "n_train": len(fb.splits["train"]), "n_valid": len(fb.splits["valid"]), "n_test": len(test)}
        # zero-shot face-only baseline
        zs = [fer_zero_shot(s.vision, columns) for s in test]
        fold["fer_zero_shot"] = {**metrics_from_pred([z[0] for z in zs], truth),
                                 "clips_without_face": int(sum(not z[2] for z in zs))}
        # pooled logistic regression (reference)
        lr_pred, lr_info = logreg_fold(fb.splits["train"], fb.splits["valid"], test)
        fold["pooled_logreg"] = {**metrics_from_pred(lr_pred, truth), **lr_info}
        fold["mfsa"] = {}
        folds.append(fold)
        log(f"fold {k}: zero-shot FER acc {fold['fer_zero_shot']['acc']:.3f}, logreg {fold['pooled_logreg']['acc']:.3f}")
    jobs = [(k, name, args.seed, bundles[k], args.work / "cv" / f"fold{k}" / name, args.max_epochs)
            for name in names for k in range(len(FOLDS))]
    for k, name, seed, row in run_jobs(args, jobs):
        folds[k]["mfsa"][name] = row
    for fold in folds:
        # nested choice: the candidate with the best inner-validation accuracy (lower loss on ties)
        chosen = min(fold["mfsa"], key=lambda n: (-fold["mfsa"][n]["valid_acc"], fold["mfsa"][n]["valid_loss"]))
        fold["nested_choice"] = chosen
    cv = {
        "protocol": ("4 outer folds x 2 held-out speakers (1 woman + 1 man); inner validation speaker for early "
                     "stopping and model choice; train on the other 5 speakers (120 clips)"),
        "max_epochs": args.max_epochs, "patience": PATIENCE, "seed": args.seed,
        "folds": folds,
        "fer_zero_shot": summarize([f["fer_zero_shot"] for f in folds]),
        "pooled_logreg": summarize([f["pooled_logreg"] for f in folds]),
        "mfsa_nested": summarize([f["mfsa"][f["nested_choice"]] for f in folds]),
        "mfsa_candidates": {n: summarize([f["mfsa"][n] for f in folds]) for n in names},
    }
    # global choice for the shipped model: mean inner-validation accuracy over the folds
    mean_valid = {n: float(np.mean([f["mfsa"][n]["valid_acc"] for f in folds])) for n in names}
    chosen = max(names, key=lambda n: mean_valid[n])
    cv["inner_valid_acc"] = mean_valid
    cv["chosen"] = chosen
    cv["chosen_epochs"] = int(round(statistics.median([f["mfsa"][chosen]["best_epoch"] for f in folds])))
    cv["_bundles"] = bundles
    return cv


def extra_seeds(args, cv) -> None:
    """The chosen configuration again with other seeds: seed-to-seed spread on the same folds."""
    name = cv["chosen"]
    bundles = cv["_bundles"]
    jobs = [(k, name, seed, bundles[k], args.work / "cv" / f"fold{k}" / f"{name}-seed{seed}", args.max_epochs)
            for seed in args.extra_seeds for k in range(len(FOLDS))]
    per_seed_runs: dict[int, list] = {}
    for k, _, seed, row in run_jobs(args, jobs):
        per_seed_runs.setdefault(seed, []).append(row)
    per_seed = {args.seed: cv["mfsa_candidates"][name]}
    per_seed.update({seed: summarize(rows) for seed, rows in per_seed_runs.items()})
    accs = [v["acc"]["mean"] for v in per_seed.values()]
    cv["chosen_seeds"] = {"seeds": list(per_seed), "cv_acc_mean_per_seed": accs,
                          "mean": float(np.mean(accs)), "std": float(np.std(accs))}


def train_final(args, bundle, samples, cv) -> Path:
    """All 8 speakers, fixed epochs (median best epoch of the CV), no early stopping."""
    import torch

    from mfsa_pipe.checkpoint import load_checkpoint, save_checkpoint
    from mfsa_pipe.datasets.base import DatasetBundle

    name, epochs = cv["chosen"], cv["chosen_epochs"]
    everyone = DatasetBundle(splits={"train": samples, "valid": samples}, feature_spec=bundle.feature_spec,
                             label_spec=bundle.label_spec, source={**bundle.source, "path": str(bundle.source.get("path"))})
    out = args.work / "final" / f"{name}-e{epochs}-s{args.seed}"
    t0 = time.perf_counter()
    res = train_run(everyone, out, name, epochs=epochs, patience=epochs + 1, seed=args.seed)
    seconds = time.perf_counter() - t0
    ckpt = load_checkpoint(out / "model.ckpt")
    state = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert int(state["epoch"]) == epochs, (state["epoch"], epochs)
    ckpt.state_dict = state["model"]  # the weights after the last epoch (fixed-epoch protocol)
    ckpt.training = {**ckpt.training, "epochs": epochs, "early_stopping": "none: fixed epochs chosen by CV",
                     "data": "all 8 speakers, 192 clips", "candidate": name, "seconds": round(seconds, 1),
                     "dataset": {**ckpt.training.get("dataset", {}), "path": "runs/javanese/javanese.h5"}}
    ckpt.metrics = {
        "speaker_independent_cv": {
            "protocol": cv["protocol"],
            "mfsa_nested": {k: cv["mfsa_nested"][k] for k in ("acc", "macro_f1", "weighted_f1")},
            "chosen_config": {k: cv["mfsa_candidates"][name][k] for k in ("acc", "macro_f1", "weighted_f1")},
            "fer_zero_shot": {k: cv["fer_zero_shot"][k] for k in ("acc", "macro_f1", "weighted_f1")},
        },
        "note": "figures on speakers unseen in training; see MODEL_CARD.md",
    }
    dest = args.model_dir / "model.ckpt" if not args.quick else args.work / "shipped.ckpt"
    dest.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, dest)
    os.chmod(dest, 0o644)  # package data: readable by all (the atomic writer creates 0600 files)
    cv["final_training_seconds"] = round(seconds, 1)
    cv["final_seconds_per_epoch"] = round(res.seconds_per_epoch, 2)
    log(f"final model ({name}, {epochs} epochs, {seconds:.0f} s) -> {dest} ({dest.stat().st_size / 1e6:.2f} MB)")
    return dest


# ----------------------------------------------------------------------------- out of domain


def crema_d(args, ckpt_path: Path, columns: list[str]) -> list[dict]:
    import torch

    from extractors.pipeline import extract
    from mfsa_pipe.checkpoint import load_checkpoint
    from mfsa_pipe.datasets.base import MODALITIES, PreparedSplit, Sample
    from mfsa_pipe.evaluation import run_model

    ckpt = load_checkpoint(ckpt_path)
    model = ckpt.build_model(device="cpu")
    # labels.csv lists the original .flv files; the H.264 .mp4 re-encodes sit in mp4/ under the same name
    rows = [r for r in csv.DictReader(open(args.crema / "labels.csv")) if r["path"].startswith("flv/")]
    samples, truth = [], []
    for r in rows:
        r["path"] = "mp4/" + Path(r["path"]).stem + ".mp4"
        e = extract(args.crema / r["path"], cache_dir=args.cache)
        seqs = e.sequences()
        samples.append(Sample(id=r["path"], label=0, **{m: seqs[m].features for m in MODALITIES}))
        truth.append(r["label"])
    dims = {m: ckpt.feature_spec[m]["dim"] for m in MODALITIES}
    res = run_model(model, PreparedSplit(samples, norm=ckpt.normalization, modalities=ckpt.modalities),
                    task="classification", dims=dims, batch_size=8, device=torch.device("cpu"))
    probs = torch.softmax(torch.from_numpy(res.prediction), -1).numpy()
    out = []
    for s, t, p in zip(samples, truth, probs):
        zs = fer_zero_shot(s.vision, columns)
        out.append({
            "clip": s.id, "truth": t, "prediction": CLASSES[int(np.argmax(p))],
            "probabilities": {c: round(float(v), 3) for c, v in zip(CLASSES, p)},
            "fer_zero_shot": CLASSES[zs[0]] if zs[2] else None,
            "face_frames": int((s.vision[:, columns.index("face_present")] > 0.5).sum()), "words": int(s.text.shape[0]),
        })
        log(f"CREMA-D {s.id}: truth {t}, MFSA {out[-1]['prediction']}, FER {out[-1]['fer_zero_shot']}")
    return out


# ----------------------------------------------------------------------------- outputs


def _describe(name: str) -> str:
    """What a candidate changes relative to SMALL (model config and trainer settings)."""
    cfg = CANDIDATES[name][0]
    diff = {k: v for k, v in cfg.items() if SMALL.get(k) != v}
    diff.update(TRAIN_KW.get(name, {}))
    return ", ".join(f"{k}={v}" for k, v in diff.items()) or "base"


def pct(x: dict) -> str:
    return f"{100 * x['mean']:.1f} ± {100 * x['std']:.1f}"


def confusion_table(matrix) -> str:
    head = "| truth \\ predicted | " + " | ".join(CLASSES) + " |\n|---|" + "---|" * len(CLASSES) + "\n"
    return head + "".join(f"| **{c}** | " + " | ".join(str(v) for v in row) + " |\n" for c, row in zip(CLASSES, matrix))


def write_outputs(args, metrics: dict) -> None:
    from mfsa_pipe.atomic import write_json

    target = args.model_dir if not args.quick else args.work
    write_json(target / "metrics.json", metrics)
    os.chmod(target / "metrics.json", 0o644)
    card_template = CARD_TEMPLATE
    cv = metrics["cross_validation"]
    name = cv["chosen"]
    per_fold = "\n".join(
        f"| {f['fold']} | {', '.join(f['test_speakers'])} | {f['valid_speaker']} | "
        f"{100 * f['fer_zero_shot']['acc']:.1f} | {100 * f['pooled_logreg']['acc']:.1f} | "
        f"{f['nested_choice']} | {100 * f['mfsa'][f['nested_choice']]['acc']:.1f} | "
        f"{100 * f['mfsa'][name]['acc']:.1f} |"
        for f in cv["folds"])
    candidates = "\n".join(
        f"| {n} | {', '.join(CANDIDATES[n][1])} | {_describe(n)} | {100 * cv['inner_valid_acc'][n]:.1f} | "
        f"{pct(s['acc'])} | {pct(s['macro_f1'])} |"
        for n, s in cv["mfsa_candidates"].items())
    crema = "\n".join(
        f"| {c['clip']} | {c['truth']} | **{c['prediction']}** | "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(c["probabilities"].items(), key=lambda kv: -kv[1])[:3])
        + f" | {c['fer_zero_shot']} |" for c in metrics["crema_d"])
    seeds = cv.get("chosen_seeds")
    fill = {
        "CHOSEN": name,
        "CHOSEN_MODALITIES": ", ".join(CANDIDATES[name][1]),
        "CHOSEN_CONFIG": json.dumps({**CANDIDATES[name][0], **TRAIN_KW.get(name, {})}),
        "SMALL": json.dumps(SMALL),
        "FER_NOFACE": str(sum(f["fer_zero_shot"]["clips_without_face"] for f in cv["folds"])),
        "EPOCHS": str(cv["chosen_epochs"]),
        "NESTED_ACC": pct(cv["mfsa_nested"]["acc"]), "NESTED_F1": pct(cv["mfsa_nested"]["macro_f1"]),
        "CHOSEN_ACC": pct(cv["mfsa_candidates"][name]["acc"]), "CHOSEN_F1": pct(cv["mfsa_candidates"][name]["macro_f1"]),
        "FER_ACC": pct(cv["fer_zero_shot"]["acc"]), "FER_F1": pct(cv["fer_zero_shot"]["macro_f1"]),
        "LR_ACC": pct(cv["pooled_logreg"]["acc"]), "LR_F1": pct(cv["pooled_logreg"]["macro_f1"]),
        "PER_FOLD": per_fold, "CANDIDATES": candidates,
        "CONF_MFSA": confusion_table(cv["mfsa_nested"]["confusion"]),
        "CONF_FER": confusion_table(cv["fer_zero_shot"]["confusion"]),
        "CREMA": crema,
        "CREMA_CORRECT": str(sum(c["truth"] == c["prediction"] for c in metrics["crema_d"])),
        "FER_CREMA": str(sum(c["truth"] == c["fer_zero_shot"] for c in metrics["crema_d"])),
        "SEEDS": (f"{', '.join(str(s) for s in seeds['seeds'])}: CV accuracy {100 * seeds['mean']:.1f} ± {100 * seeds['std']:.1f} (mean ± std over seeds of the 4-fold mean)"
                  if seeds else "only seed 0 was run"),
        "SIZE_MB": f"{metrics['checkpoint']['size_bytes'] / 1e6:.2f}",
        "PARAMS": f"{metrics['checkpoint']['parameters']:,}",
        "TRAIN_S": f"{cv['final_training_seconds']:.0f}",
        "EXTRACT": metrics["timing_note"],
        "CV_TIME": metrics.get("cv_time_note") or f"{metrics['cv_seconds'] / 60:.0f} min",
    }
    for key, value in fill.items():
        card_template = card_template.replace("{{" + key + "}}", value)
    (target / "MODEL_CARD.md").write_text(card_template, encoding="utf-8")
    log(f"wrote {target / 'metrics.json'} and {target / 'MODEL_CARD.md'}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "emo" / "javanese_av")
    p.add_argument("--crema", type=Path, default=ROOT.parent / "shared" / "emo" / "crema_d")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "javanese")
    p.add_argument("--cache", type=Path, default=None, help="feature cache (default WORK/cache)")
    p.add_argument("--model-dir", type=Path, default=ROOT / "mfsa_pipe" / "default_model")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--extra-seeds", type=int, nargs="*", default=[1, 2])
    p.add_argument("--max-epochs", type=int, default=MAX_EPOCHS)
    p.add_argument("--jobs", type=int, default=2, help="CV trainings run in parallel (one thread each)")
    p.add_argument("--quick", action="store_true", help="smoke run: one candidate, 3 epochs, outputs under WORK only")
    p.add_argument("--timing-note", default="", help="measured cold extraction time, quoted in the card")
    p.add_argument("--cv-time-note", default="", help="measured CV wall time, quoted in the card")
    p.add_argument("--card-only", action="store_true", help="rewrite MODEL_CARD.md from the existing metrics.json")
    args = p.parse_args(argv)
    if args.card_only:
        metrics = json.loads((args.model_dir / "metrics.json").read_text(encoding="utf-8"))
        return write_outputs(args, metrics)
    args.cache = args.cache or args.work / "cache"
    if args.quick:
        args.max_epochs, args.extra_seeds = 3, []
    os.chdir(ROOT)
    import torch

    torch.set_num_threads(1)  # tiny models: one thread is ~10x faster than 2 on a busy 2-core CPU
    t_all = time.perf_counter()
    build_info = build(args)
    bundle, samples = load_samples(args.work / "javanese.h5")
    log(f"{len(samples)} clips, speakers {sorted({s.group for s in samples})}, classes {bundle.label_spec['classes']}")
    assert bundle.label_spec["classes"] == CLASSES
    t_cv = time.perf_counter()
    cv = cross_validate(args, bundle, samples)
    if args.extra_seeds:
        extra_seeds(args, cv)
    cv.pop("_bundles")
    cv_seconds = time.perf_counter() - t_cv
    ckpt_path = train_final(args, bundle, samples, cv)
    crema = crema_d(args, ckpt_path, bundle.feature_spec["vision"]["columns"])

    from mfsa_pipe.checkpoint import load_checkpoint

    ckpt = load_checkpoint(ckpt_path)
    n_params = int(sum(v.numel() for v in ckpt.state_dict.values()))
    metrics = {
        "model": "mfsa", "task": "classification", "classes": CLASSES,
        "data": {"name": "Javanese acted audio-visual emotion clips", "source": CREDIT, "clips": len(samples),
                 "speakers": sorted({s.group for s in samples}), "labels_csv": "../shared/emo/javanese_av/labels.csv",
                 **build_info},
        "extraction_config": bundle.source.get("extraction_config") or _extraction_config(args.work / "javanese.h5"),
        "feature_spec_ids": {m: f"{bundle.feature_spec[m]['id']} {bundle.feature_spec[m]['version']} "
                                f"({bundle.feature_spec[m]['dim']}-d, {bundle.feature_spec[m]['rate']} Hz)"
                             for m in ("text", "audio", "vision")},
        "shipped": {"candidate": cv["chosen"], "config_overrides": CANDIDATES[cv["chosen"]][0],
                    "modalities": CANDIDATES[cv["chosen"]][1], "epochs": cv["chosen_epochs"], "seed": args.seed,
                    "training_data": "all 8 speakers (192 clips)"},
        "cross_validation": cv,
        "crema_d": crema,
        "checkpoint": {"size_bytes": ckpt_path.stat().st_size, "parameters": n_params},
        "cv_seconds": round(cv_seconds, 1),
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "timing_note": args.timing_note or "see the build report",
        "cv_time_note": args.cv_time_note,
        "command": "python examples/train_default_model.py",
    }
    from mfsa_pipe.metrics import json_safe

    write_outputs(args, json_safe(metrics))


def _extraction_config(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["extraction_config"])


CARD_TEMPLATE = """# Default model card: face-and-voice emotion, 6 classes

The checkpoint `mfsa_pipe/default_model/model.ckpt` is what `mfsa-pipe analyze` and `batch` use
when no `--checkpoint` is given. Everything below was measured by
`python examples/train_default_model.py` (seed 0); figures are copied from `metrics.json`.

## What it is
- **Model**: MFSA (this package's `models/mfsa.py`), a small configuration chosen for 192 clips
  (candidate `{{CHOSEN}}`: `{{CHOSEN_CONFIG}}`), {{PARAMS}} parameters, {{SIZE_MB}} MB,
  trained for {{EPOCHS}} epochs on all 8 speakers (fixed epoch count chosen by cross-validation).
- **Task**: single-label classification over **neutral, sad, happy, surprise, fear, angry**
  (softmax probabilities per utterance). It is *not* a sentiment model: it gives no
  positive/negative score.
- **Inputs**: the package's default offline extractors, exactly as `analyze` runs them
  (`ExtractionConfig()`; the checkpoint's feature spec is checked against them). Modalities
  the model reads: **{{CHOSEN_MODALITIES}}**.

## A face-and-voice model: what that means for English videos
The training clips are Javanese, and the four sentences are the same for every emotion: the
words carry no emotion in this data, and the English speech recogniser (Whisper tiny.en)
turns Javanese speech into unrelated English words (often "Thank you for watching"-style
hallucinations). The model therefore learned emotion from **facial expression and voice**
(prosody, voice quality, loudness) only. On an English video it does not understand what is
said: sentiment carried by words ("I hate this", sarcasm, negation) is invisible to it. When
the text modality is not among the modalities above, `analyze` still extracts and reports the
transcript, but the model is fed an empty text sequence (as in training).

## Training data
- 192 clips of acted emotion, speaking face + audio, 360x270, 1.7-8 s, 8 speakers (jv01-jv04
  women, jv06-jv09 men), 6 labels x 4 sentences per speaker (balanced: 32 clips per label).
- Labels are the acted emotion from the file names, not ratings by viewers.
- Source and licence: """ + CREDIT + """ (dataset creator 2black0). The clips show identifiable
  people; they are used here for training and testing with credit to the source. The clips are
  not redistributed in this package; only the trained weights are.

## Evaluation (speakers unseen in training)
Protocol: 4 outer folds, each holding out 2 speakers (1 woman + 1 man, 48 clips); inside each
fold one more speaker is the inner validation speaker (early stopping and the choice among
candidate configurations); the model trains on the other 5 speakers (120 clips). Never a random
clip split. Mean ± std over the 4 folds (population std):

| method (same held-out speakers) | accuracy % | macro-F1 % |
|---|---|---|
| zero-shot face-only FER (facial extractor's 7-emotion probabilities averaged over the clip's face frames, argmax over the 6 shared labels) | {{FER_ACC}} | {{FER_F1}} |
| logistic regression on clip-pooled audio+vision features (reference; C chosen on the inner speaker) | {{LR_ACC}} | {{LR_F1}} |
| **MFSA, nested choice** (candidate picked per fold on its inner validation speaker) | **{{NESTED_ACC}}** | **{{NESTED_F1}}** |
| MFSA, shipped configuration `{{CHOSEN}}` in every fold | {{CHOSEN_ACC}} | {{CHOSEN_F1}} |

Chance is 16.7 %. Seeds of the shipped configuration ({{SEEDS}}). Clips in which the
face-only baseline found no face (it then answers neutral): {{FER_NOFACE}} of 192.

How to read this: MFSA, reading the face and voice sequences, clearly beats the face-only
7-emotion model used zero-shot, which almost never recognises fear or surprise here (it reads
them as neutral or sad) and often reads angry as neutral. But a plain logistic regression on the
clip-level mean and standard deviation of the same audio and vision features does better still:
with 120 training clips per fold, a sequence model of 10^5 parameters or more (the shipped one
has {{PARAMS}}) overfits within a few epochs, and early stopping on a single validation speaker is noisy (the best epochs, in
`metrics.json`, range from 1 to about 40). MFSA is shipped because `analyze` runs the fusion models of
this package on unaligned sequences and reports per-modality weights; the logistic regression
is a reference for what the features carry, not a model `analyze` can load.

Per fold (accuracy %):

| fold | test speakers | inner valid | FER zero-shot | pooled logreg | nested choice | MFSA nested | MFSA `{{CHOSEN}}` |
|---|---|---|---|---|---|---|---|
{{PER_FOLD}}

Candidates (all trained in every fold with seed 0, at most 50 epochs, early stopping after 10
epochs without a lower inner-validation loss; the choice used only inner-validation accuracy,
ties going to the candidate listed first; the shipped configuration is the best mean
inner-validation accuracy over the folds).
Base: `{{SMALL}}` (Adam, gradient clipping 0.8):

| candidate | modalities | differs from the base | mean inner-valid acc % | test acc % | test macro-F1 % |
|---|---|---|---|---|---|
{{CANDIDATES}}

Confusion matrix, MFSA (nested), summed over the 4 folds (rows: truth):

{{CONF_MFSA}}
Confusion matrix, zero-shot FER baseline, summed over the 4 folds:

{{CONF_FER}}
The shipped model is trained on all 8 speakers, so it has seen more data than any CV model;
the CV figures estimate how it does on a new speaker of the same kind of recording.

## Out-of-domain check: CREMA-D (English, another actor)
The 6 clips of CREMA-D actor 1001 in `../shared/emo/crema_d/mp4` (ODbL 1.0 / DbCL 1.0), one
per emotion; *disgust* is not among our labels, so that clip cannot be right. {{CREMA_CORRECT}} of 6
predicted as labelled:

| clip | label | MFSA prediction | top-3 probabilities | FER zero-shot |
|---|---|---|---|---|
{{CREMA}}

The zero-shot face-only FER model gets {{FER_CREMA}} of 6 on the same clips. Six clips are
anecdotes, not a measurement; still, expect the Javanese-trained model to transfer imperfectly
to another language, actor, camera and recording setup: it has seen 8 people.

## Known limits
- 8 speakers from one corpus, one language and one recording setup (frontal, indoor, 360x270);
  expect lower accuracy on other faces, cameras, lighting, languages and spontaneous
  (non-acted) emotion.
- Acted, prototypical emotions; labels are the intended emotion, not what viewers perceive.
- Each CV fold tests 48 clips of 2 speakers: one clip is 2 points of accuracy, and the spread
  between folds is large; read the figures as rough.
- Utterance-level model: `analyze` cuts a video into utterances and scores each one alone.
- A face that is absent, small or in profile leaves only the voice; a silent clip only the face.
- Out of domain it leans towards *angry*: on the bundled GRID clip (a neutral English speaker) it
  says angry 73 %, on `single_face.mp4` (neutral, then smiling; near-silent audio) angry 43 %.
  Vision-only MFSA variants did worse on unseen speakers in the same CV (26.0 ± 4.3 and
  33.3 ± 3.6 % accuracy, d16 and d32, seed 0), so the voice carries most of what the model
  learned, and audio recorded unlike the training clips moves its predictions most. The facial
  emotion estimates in the report and timeline are often the better guide on such videos.

## Reproduce
From the repository root, with `../shared` beside it: `python examples/train_default_model.py`
(seed 0; builds `runs/javanese/javanese.h5` with `build-dataset`, runs the cross-validation,
trains the shipped model and rewrites this card and `metrics.json`). CPU only; extraction:
{{EXTRACT}}; cross-validation: {{CV_TIME}}; final training {{TRAIN_S}} s, on a shared 2-core CPU.
Training runs already finished under `runs/javanese/cv/` are reused (the trainer resumes), so
adding a candidate only trains the new one.
"""


if __name__ == "__main__":
    main()
