"""The MFSA paper's comparison tables on one dataset: every registered system trained over the
given seeds, test metrics as mean ± std beside the paper's figures.

    python benchmarks/paper_tables.py --dataset data/mosi_data_noalign.pkl --device cuda
    python benchmarks/paper_tables.py --dataset data/mosi_data_noalign.pkl --ablations --systems mfsa
    python benchmarks/paper_tables.py --dataset synth.pkl --seeds 0 1 --epochs 4 --set d=16 --set num_heads=2

Table 1 (CMU-MOSI) or 2 (CMU-MOSEI): Acc7, Acc2, F1, MAE, Corr, for regression data; Table 3
(IEMOCAP): accuracy and F1 per emotion, for the 4 x 2-way multilabel data. Which one: `--paper`,
else the dataset's name (mosei / iemocap / otherwise mosi). `--ablations`: Table 4 as well (MFSA
with one switch of MFSAConfig off per row; the paper ran it on MOSI). Each system trains with
`mfsa_pipe.training.train` (early stopping on the valid split, the best epoch scored on test):
its published preset when it has one for the table's dataset (`--preset`), `ctc=true` for the
systems the paper trains with CTC (EF-LSTM, RAVEN, MCTN) where the config has that field, then
`--set [SYSTEM.]key=value` (without SYSTEM: every system whose config has the field).

Resumable: OUT/results.jsonl holds one row per finished (run, seed); a rerun skips them, and a
run cut off mid-training continues from its last epoch (train's resume). OUT/results.csv is
rewritten after every run; OUT/table.md holds the printed tables.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the paper's Tables 1-3 (percentages; MAE, Corr raw; None = not reported), by registry name
PAPER_ORDER = ("ef_lstm", "lf_lstm", "raven", "mctn", "mult", "pmr", "mica", "mfsa")
PAPER = {
    "mosi": {"ef_lstm": (31.0, 73.6, 74.5, 1.078, 0.542), "lf_lstm": (33.7, 77.6, 77.8, 0.988, 0.624),
             "raven": (31.7, 72.7, 73.1, 1.076, 0.544), "mctn": (32.7, 75.9, 76.4, 0.991, 0.613),
             "mult": (39.1, 81.1, 81.0, 0.889, 0.686), "pmr": (40.6, 82.4, 82.1, None, None),
             "mica": (40.8, 82.6, 82.7, None, None), "mfsa": (41.4, 83.3, 83.7, 0.856, 0.722)},
    "mosei": {"ef_lstm": (46.3, 76.1, 75.9, 0.680, 0.585), "lf_lstm": (48.8, 77.5, 78.2, 0.624, 0.656),
              "raven": (45.5, 75.4, 75.7, 0.664, 0.599), "mctn": (48.2, 79.3, 79.7, 0.631, 0.645),
              "mult": (50.7, 81.6, 81.6, 0.591, 0.694), "pmr": (51.8, 83.1, 82.8, None, None),
              "mica": (52.4, 83.7, 83.3, None, None), "mfsa": (53.2, 83.8, 83.6, 0.574, 0.724)},
    # Happy, Sad, Angry, Neutral: Acc, F1 each
    "iemocap": {"ef_lstm": (76.2, 75.7, 70.2, 70.5, 72.7, 67.1, 58.1, 57.4),
                "lf_lstm": (72.5, 71.8, 72.9, 70.4, 68.6, 67.9, 59.6, 56.2),
                "raven": (77.0, 76.8, 67.6, 65.6, 65.0, 64.1, 62.0, 59.5),
                "mctn": (80.5, 77.5, 72.0, 71.7, 64.9, 65.6, 49.4, 49.3),
                "mult": (84.8, 81.9, 77.7, 74.1, 73.9, 70.2, 62.5, 59.7),
                "pmr": (86.4, 83.3, 78.5, 75.3, 75.0, 71.3, 63.7, 60.9),
                "mica": (86.8, 83.9, 79.3, 75.2, 75.7, 72.4, 63.7, 61.6),
                "mfsa": (87.2, 84.3, 80.7, 76.8, 76.5, 73.2, 64.4, 62.5)},
}
TITLES = {"mosi": "Table 1: CMU-MOSI", "mosei": "Table 2: CMU-MOSEI", "iemocap": "Table 3: IEMOCAP"}
SENTIMENT_COLUMNS = [("Acc7", "acc7", True), ("Acc2", "acc2", True), ("F1", "f1", True), ("MAE", "mae", False),
                     ("Corr", "corr", False)]
EMOTIONS = ("Happy", "Sad", "Angry", "Neutral")
EMOTION_COLUMNS = [(f"{e} {m}", f"{e}_{m.lower()}", True) for e in EMOTIONS for m in ("Acc", "F1")]
# Table 4 (CMU-MOSI): run label, MFSAConfig switches off, the paper's row
ABLATIONS = [
    ("mfsa", {}, (41.4, 83.3, 83.7, 0.856, 0.722)),
    ("mfsa w/o L_sep", {"use_sep_loss": False}, (40.9, 82.6, 83.5, 0.864, 0.718)),
    ("mfsa w/o L_agn + L_spe", {"use_adv_loss": False}, (39.2, 82.4, 82.7, 0.871, 0.711)),
    ("mfsa w/o modality-specific", {"use_specific": False}, (38.6, 81.2, 81.5, 0.898, 0.708)),
    ("mfsa w/o modality-agnostic", {"use_agnostic": False}, (39.2, 81.8, 82.4, 0.881, 0.712)),
    ("mfsa w/o PSA", {"use_psa": False}, (37.9, 80.7, 81.3, 0.917, 0.698)),
    ("mfsa w/o prediction chain", {"use_prediction_chain": False}, (40.3, 82.5, 83.0, 0.864, 0.718)),
    ("mfsa w/o WAL", {"use_wal": False}, (40.5, 82.7, 83.2, 0.858, 0.720)),
    ("mfsa w/o HCA", {"use_hca": False}, (38.4, 81.3, 81.8, 0.890, 0.711)),
    ("mfsa w/o MRU (mixed)", {"use_mixed_mru": False}, (40.5, 82.8, 83.2, 0.859, 0.717)),
    ("mfsa w/o MRU (coarse)", {"use_coarse_mru": False}, (41.0, 83.1, 83.4, 0.857, 0.720)),
    ("mfsa w/o MRU (fine)", {"use_fine_mru": False}, (40.2, 82.7, 83.2, 0.862, 0.715)),
]
CTC_SYSTEMS = ("ef_lstm", "raven", "mctn")  # trained with a CTC alignment module in the paper


class UsageError(ValueError):
    """A bad command line or an OUT folder of other settings: one line, exit 2."""


@dataclasses.dataclass
class Run:
    label: str  # the row name; the registry name for a system's main run
    system: str
    preset: str | None
    overrides: dict[str, Any]

    def settings(self, epochs: int | None) -> dict[str, Any]:
        return {"system": self.system, "preset": self.preset, "overrides": self.overrides, "epochs": epochs}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True, help="a dataset path (any format `train` reads)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113, 1114, 1115])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--systems", nargs="+", help="registry names (default: every registered system)")
    ap.add_argument("--ablations", action="store_true", help="also Table 4: MFSA with one part off per row")
    ap.add_argument("--epochs", type=int, help="epochs per run (default: each config's own)")
    ap.add_argument("--patience", type=int, default=10, help="early stopping patience (epochs)")
    ap.add_argument("--paper", choices=sorted(PAPER), help="which paper table (default: from the dataset name)")
    ap.add_argument("--preset", default="auto",
                    help="preset for the systems that have it; auto: the table's dataset; none: the configs' defaults")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="[SYSTEM.]KEY=VALUE")
    ap.add_argument("--out", type=Path, help="results folder (default: paper_tables_<dataset name>)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared CPU: spinning threads cost more)")
    return ap.parse_args(argv)


def paper_table(task: str, name: str, choice: str | None) -> str:
    if task == "multilabel":
        return "iemocap"
    if task != "regression":
        raise UsageError(f"the paper's tables need sentiment regression (MOSI/MOSEI) or IEMOCAP's multilabel data, "
                         f"not {task!r}")
    if choice == "iemocap":
        raise UsageError("--paper iemocap needs IEMOCAP's multilabel data; this dataset is regression")
    return choice or ("mosei" if "mosei" in name.lower() else "mosi")


def system_overrides(system: str, sets: list[str]) -> dict[str, Any]:
    """ctc for the paper's CTC systems, then --set entries that name this system or none."""
    from mfsa_pipe.training import parse_overrides
    from models.registry import MODELS

    fields = {f.name for f in dataclasses.fields(MODELS[system][0])}
    out: dict[str, Any] = {"ctc": True} if system in CTC_SYSTEMS and "ctc" in fields else {}
    for key, value in parse_overrides(sets).items():
        target, _, field = key.rpartition(".")
        if target and target not in MODELS:
            raise UsageError(f"--set {key}: unknown system {target!r}")
        if target == system or (not target and field in fields):
            out[field] = value
    return out


def plan(args: argparse.Namespace, table: str, dataset_name: str) -> list[Run]:
    from models.registry import MODELS

    systems = args.systems or [s for s in PAPER_ORDER if s in MODELS] + sorted(set(MODELS) - set(PAPER_ORDER))
    unknown = [s for s in systems if s not in MODELS]
    if unknown:
        raise UsageError(f"unknown system(s) {', '.join(unknown)}; registered: {', '.join(sorted(MODELS))}")
    preset = {"auto": table if table in dataset_name.lower() else None, "none": None}.get(args.preset, args.preset)

    def run(label, system, extra):
        has = preset if preset in MODELS[system][0].PRESETS else None
        return Run(label, system, has, {**system_overrides(system, args.sets), **extra})

    runs = [run(s, s, {}) for s in systems]
    if args.ablations:
        runs += [run(label, "mfsa", switches) for label, switches, _ in ABLATIONS if label not in systems]
    return runs


def finished_rows(path: Path) -> dict[tuple[str, int], dict[str, Any]]:
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["run"], r["seed"]): r for r in rows}


def train_one(run: Run, seed: int, args: argparse.Namespace, out: Path, metric_keys: list[str]) -> dict[str, Any]:
    from mfsa_pipe.training import train

    slug = "".join(c if c.isalnum() else "_" for c in run.label)
    res = train(model_name=run.system, dataset=args.dataset, out_dir=out / "runs" / f"{slug}-{seed}",
                preset=run.preset, overrides=run.overrides, epochs=args.epochs, seed=seed, device=args.device,
                patience=args.patience, resume=True, progress=False)
    metrics = res.test_metrics or {}
    return {"run": run.label, "seed": seed, "settings": run.settings(args.epochs), "best_epoch": res.best_epoch,
            "epochs_run": res.epochs_run, "seconds_per_epoch": round(res.seconds_per_epoch, 2),
            **{k: metrics.get(k) for k in metric_keys}}


def write_csv(path: Path, rows: list[dict[str, Any]], metric_keys: list[str]) -> None:
    columns = ["run", "system", "seed", "preset", "epochs", "best_epoch", "epochs_run", "seconds_per_epoch",
               *metric_keys]
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for r in rows:
            s = r["settings"]
            writer.writerow({**{k: r.get(k) for k in columns}, "system": s["system"], "preset": s["preset"],
                             "epochs": s["epochs"]})
    tmp.replace(path)


def cell(values: list[float], paper: float | None, pct: bool) -> str:
    scale, digits = (100.0, 1) if pct else (1.0, 3)
    vals = [scale * v for v in values if v is not None and np.isfinite(v)]
    ours = f"{np.mean(vals):.{digits}f} ± {np.std(vals):.{digits}f}" if vals else "n/a"
    return f"{ours} [{'-' if paper is None else f'{paper:.{digits}f}'}]"


def table_lines(title: str, labels: list[str], rows, columns, paper: dict[str, tuple], seeds: list[int]) -> list[str]:
    """A markdown table: ours mean ± std over the seeds (population std), [the paper's figure]."""
    head = [f"{title} - ours: mean ± std over seeds {' '.join(map(str, seeds))} [paper]", "",
            "| system | " + " | ".join(name for name, _, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    body = []
    for label in labels:
        runs = [rows[(label, s)] for s in seeds if (label, s) in rows]
        ref = paper.get(label) or (None,) * len(columns)
        cells = [cell([r.get(key) for r in runs], ref[i], pct) for i, (_, key, pct) in enumerate(columns)]
        body.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + body + [""]


def check_resumable(runs: list[Run], done: dict, epochs: int | None, out: Path) -> None:
    wanted = {r.label: r.settings(epochs) for r in runs}
    for (label, seed), row in done.items():
        if label in wanted and json.loads(json.dumps(wanted[label])) != row["settings"]:
            raise UsageError(f"{out} holds a finished {label!r} run (seed {seed}) with other settings "
                             f"({row['settings']}); give another --out")


def sweep(args: argparse.Namespace, runs: list[Run], out: Path, metric_keys: list[str]) -> dict:
    """Train every (run, seed) not yet in OUT/results.jsonl; -> all finished rows by (run, seed)."""
    log = out / "results.jsonl"
    done = finished_rows(log)
    check_resumable(runs, done, args.epochs, out)
    for run in runs:
        for seed in args.seeds:
            if (run.label, seed) in done:
                continue
            row = train_one(run, seed, args, out, metric_keys)
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[(run.label, seed)] = row
            write_csv(out / "results.csv", list(done.values()), metric_keys)
            print(json.dumps({k: v for k, v in row.items() if k != "settings"}), flush=True)
    write_csv(out / "results.csv", list(done.values()), metric_keys)
    return done


def main(argv=None) -> int:
    args = parse_args(argv)
    from mfsa_pipe.training.evaluation import as_bundle
    from mfsa_pipe.training import TrainingError

    try:
        if args.threads is not None:
            if args.threads < 1:
                raise UsageError(f"--threads must be >= 1, got {args.threads}")
            import torch
            torch.set_num_threads(args.threads)
        if args.epochs is not None and args.epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {args.epochs}")
        try:
            bundle = as_bundle(args.dataset)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the dataset {args.dataset}: {exc}") from None
        name = f"{bundle.source.get('name', '')} {Path(args.dataset).name}"
        table = paper_table(bundle.task, name, args.paper)
        columns = EMOTION_COLUMNS if table == "iemocap" else SENTIMENT_COLUMNS
        out = args.out or Path(f"paper_tables_{Path(args.dataset).stem}")
        out.mkdir(parents=True, exist_ok=True)
        runs = plan(args, table, name)
        rows = sweep(args, runs, out, [key for _, key, _ in columns])
    except (UsageError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    lines = table_lines(TITLES[table], [r.label for r in runs if r.label == r.system], rows, columns, PAPER[table],
                        args.seeds)
    if args.ablations:
        paper = {label: ref for label, _, ref in ABLATIONS} if table == "mosi" else {}
        lines += table_lines("Table 4: MFSA ablations (the paper's on CMU-MOSI)", [label for label, _, _ in ABLATIONS],
                             rows, columns, paper, args.seeds)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
