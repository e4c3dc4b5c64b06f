"""torchrun with 1 and 2 CPU processes on the asynchronous-fusion task (the small MFSA of
bench_synthetic.py, same data, seed, epochs and lr): seconds per epoch and test metrics.

    python benchmarks/bench_distributed.py --out bench_dist            # ~15 min on 2 shared cores
    python benchmarks/bench_distributed.py --out bench_dist --quick    # a smoke run

Runs (--batch-size is per process under torchrun):
  1 proc, batch B        the single-process run (equal to plain `mfsa-pipe train`)
  2 procs, batch B       each process B per step: the global batch is 2B, half the steps
  2 procs, batch B/2     the same global batch as 1 proc: the same number of optimizer steps
Writes OUT/results.json and prints a table; the load average is printed with it (the figures are
only comparable on an otherwise idle machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_synthetic import MFSA_SMALL  # noqa: E402


def run(nproc: int, batch: int, data: Path, out: Path, args: argparse.Namespace) -> dict:
    sets = [a for k, v in MFSA_SMALL.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "mfsa_pipe.cli", "train", "--model", "mfsa", "--dataset", str(data), "--out", str(out),
           "--epochs", str(args.epochs), "--patience", str(args.epochs), "--batch-size", str(batch), "--lr", str(args.lr),
           "--seed", str(args.train_seed), "--device", "cpu", "--threads", str(args.threads), "--quiet", "--no-resume", *sets]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    result = json.loads((out / "result.json").read_text())
    test = result["test_metrics"]
    return {
        "processes": nproc, "batch_per_process": batch, "global_batch": nproc * batch,
        "seconds_per_epoch": [r["seconds"] for r in rows], "wall_s": round(wall, 1),
        "best_epoch": result["best_epoch"], "valid_mae": result["valid_metrics"]["mae"],
        "test": {k: test[k] for k in ("mae", "corr", "acc2", "f1", "acc7")},
        "load_before": round(load0, 1), "load_after": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench_dist"))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()

    from mfsa_pipe.training.synthetic import write_synthetic

    gen = dict(seed=0, n_train=1200, n_valid=300, n_test=500, text_len=20, audio_len=75, vision_len=100, text_dim=300)
    if args.quick:
        gen.update(n_train=120, n_valid=40, n_test=40, text_len=10, audio_len=30, vision_len=40, text_dim=16)
        args.epochs = 2
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "synthetic.pkl"
    write_synthetic(data, **gen)
    results = []
    for nproc, batch in ((1, args.batch_size), (2, args.batch_size), (2, args.batch_size // 2)):
        res = run(nproc, batch, data, args.out / f"p{nproc}_b{batch}", args)
        results.append(res)
        print(json.dumps(res), flush=True)
    (args.out / "results.json").write_text(json.dumps({"data": gen, "epochs": args.epochs, "lr": args.lr,
                                                       "model": MFSA_SMALL, "runs": results}, indent=2))
    print("| processes x batch | s/epoch (mean of epochs 2+) | wall s | test MAE | Corr | Acc2 | Acc7 | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        later = r["seconds_per_epoch"][1:] or r["seconds_per_epoch"]
        t = r["test"]
        print(f"| {r['processes']} x {r['batch_per_process']} | {sum(later) / len(later):.1f} | {r['wall_s']} | "
              f"{t['mae']:.3f} | {t['corr']:.3f} | {100 * t['acc2']:.1f} | {100 * t['acc7']:.1f} | "
              f"{r['load_before']}-{r['load_after']} |")


if __name__ == "__main__":
    main()
