"""Fusion benchmark on the asynchronous-fusion task (mfsa_pipe/training/synthetic.py): MFSA, MulT,
EF-LSTM, LF-LSTM, MFSA's main ablations (Table 4 switches) and MFSA restricted to one modality,
with test metrics and CPU time per epoch.

    python benchmarks/bench_synthetic.py --out bench_out            # ~10 min on 2 shared CPU cores
    python benchmarks/bench_synthetic.py --out bench_out --quick    # a smoke run (~30 s)
    python benchmarks/bench_synthetic.py --out bench_out --seeds 0,1,2 --only "MFSA,MFSA w/o HCA"

Writes bench_out/results.json and bench_out/results.md (a table). Every model trains with the
same data, seed, epochs, batch size and learning rate; the best epoch on the validation split
(lowest MAE) is scored on the test split. Models are small (d = 16) so that the whole run fits
a CPU budget; sequences are shorter than MOSI's (see --text-len etc.) for the same reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MFSA_SMALL = dict(d=16, d_h=32, num_heads=2, psa_layers=2, hca_layers=1, fusion_heads=2, fusion_ffn=64, wal_hidden=16)
RUNS: list[tuple[str, str, dict, list[str] | None]] = [
    ("MFSA", "mfsa", MFSA_SMALL, None),
    ("MulT", "mult", dict(d=16, num_heads=2, layers=2, mem_layers=1), None),
    ("EF-LSTM", "ef_lstm", dict(hidden=32, d=16), None),
    ("LF-LSTM", "lf_lstm", dict(hidden=32), None),
    ("MFSA w/o PSA", "mfsa", {**MFSA_SMALL, "use_psa": False}, None),
    ("MFSA w/o prediction chain", "mfsa", {**MFSA_SMALL, "use_prediction_chain": False}, None),
    ("MFSA w/o WAL", "mfsa", {**MFSA_SMALL, "use_wal": False}, None),
    ("MFSA w/o HCA", "mfsa", {**MFSA_SMALL, "use_hca": False}, None),
    ("MFSA w/o separation loss", "mfsa", {**MFSA_SMALL, "use_sep_loss": False}, None),
    ("MFSA batch separation loss", "mfsa", {**MFSA_SMALL, "sep_loss_form": "batch"}, None),
    ("MFSA w/o adversarial loss", "mfsa", {**MFSA_SMALL, "use_adv_loss": False}, None),
    ("MFSA text only", "mfsa", MFSA_SMALL, ["text"]),
    ("MFSA audio only", "mfsa", MFSA_SMALL, ["audio"]),
    ("MFSA vision only", "mfsa", MFSA_SMALL, ["vision"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_out"))
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated task")
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds; several give mean +- std")
    ap.add_argument("--n-train", type=int, default=1200)
    ap.add_argument("--n-valid", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--text-len", type=int, default=20)
    ap.add_argument("--audio-len", type=int, default=75)
    ap.add_argument("--vision-len", type=int, default=100)
    ap.add_argument("--text-dim", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 avoids oversubscription on shared boxes)")
    ap.add_argument("--only", default="", help="comma-separated run names to keep (exact, case-insensitive)")
    ap.add_argument("--quick", action="store_true", help="tiny data and 2 epochs: checks the script runs")
    args = ap.parse_args()

    import numpy as np
    import torch

    from mfsa_pipe.training.synthetic import generate_synthetic, write_synthetic
    from mfsa_pipe.training import train

    torch.set_num_threads(args.threads)
    if args.quick:
        args.n_train, args.n_valid, args.n_test, args.epochs = 200, 50, 50, 2
        args.text_len, args.audio_len, args.vision_len, args.text_dim = 10, 30, 40, 16
    args.out.mkdir(parents=True, exist_ok=True)
    gen = dict(seed=args.seed, n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test, text_len=args.text_len,
               audio_len=args.audio_len, vision_len=args.vision_len, text_dim=args.text_dim)
    data_path = args.out / "synthetic.pkl"
    write_synthetic(data_path, **gen)
    test = generate_synthetic(**gen)["test"]
    y = test["labels"].reshape(-1)
    f = test["factors"]
    # reference points: the best constant (= the best any single modality can do) and an oracle
    # that knows the text and vision signs but not the audio amplitude
    ref = {
        "constant 0 (best single-modality, in expectation)": float(np.mean(np.abs(y))),
        "oracle sign(text, vision) x median amplitude": float(np.mean(np.abs(y - f[:, 0] * f[:, 1] * np.median(f[:, 2])))),
    }
    keep = {s.strip().lower() for s in args.only.split(",") if s.strip()}
    runs = [r for r in RUNS if not keep or r[0].lower() in keep]
    seeds = [int(s) for s in args.seeds.split(",")]
    keys = ("mae", "corr", "acc2", "f1", "acc7")
    results, per_seed = [], []
    for label, model, overrides, modalities in runs:
        rows = []
        for seed in seeds:
            t0 = time.perf_counter()
            res = train(model_name=model, dataset=data_path,
                        out_dir=args.out / f"{label.replace(' ', '_').replace('/', '')}-{seed}",
                        overrides=overrides, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed,
                        device="cpu", patience=args.epochs, resume=False, progress=False, modalities=modalities)
            m = res.test_metrics or {}
            row = {
                "run": label, "model": model, "seed": seed, "modalities": modalities or ["text", "audio", "vision"],
                "best_epoch": res.best_epoch, "seconds_per_epoch": round(res.seconds_per_epoch, 2),
                "total_seconds": round(time.perf_counter() - t0, 1), **{k: m.get(k) for k in keys},
            }
            rows.append(row)
            per_seed.append(row)
            print(json.dumps(row), flush=True)
        agg = {"run": label, "model": model, "seeds": seeds,
               "seconds_per_epoch": round(float(np.mean([r["seconds_per_epoch"] for r in rows])), 2)}
        for k in keys:
            vals = [r[k] for r in rows if r[k] is not None]
            agg[k] = float(np.mean(vals)) if vals else None
            agg[k + "_std"] = float(np.std(vals)) if vals else None
        results.append(agg)
    meta = {"generator": gen, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "threads": args.threads, "torch": torch.__version__, "reference_mae": ref}
    (args.out / "results.json").write_text(json.dumps({"settings": meta, "results": results, "per_seed": per_seed},
                                                      indent=2))
    lines = [f"| run (seeds {args.seeds}) | MAE | Corr | Acc2 | F1 | Acc7 | CPU s/epoch |", "|---|---|---|---|---|---|---|"]

    def fmt(r, k, pct=False):
        v, sd = r[k], r[k + "_std"]
        if v is None:
            return "n/a"
        scale = 100.0 if pct else 1.0
        text = f"{scale * v:.1f}" if pct else f"{v:.3f}"
        return text + (f" ± {scale * sd:.1f}" if pct else f" ± {sd:.3f}") if len(seeds) > 1 else text

    for r in results:
        lines.append(f"| {r['run']} | {fmt(r, 'mae')} | {fmt(r, 'corr')} | {fmt(r, 'acc2', True)} | {fmt(r, 'f1', True)} "
                     f"| {fmt(r, 'acc7', True)} | {r['seconds_per_epoch']} |")
    lines += ["", "Reference test MAE: " + "; ".join(f"{k}: {v:.3f}" for k, v in ref.items())]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
