"""Wall time and peak memory of `analyze` (rendering included) per bundled clip, by stage.

    python benchmarks/bench_analyze.py [--repeat 2] [--checkpoint CKPT] [--json out.json] [clips ...]

Each clip runs in its own process, so that its peak memory (resident set size, native libraries
included) is its own: a warm-up analyze loads every model, then `--repeat` timed runs without
the extraction cache; the median per stage is reported as seconds per second of media.

The model stage needs a checkpoint. Without `--checkpoint` (and without a shipped default
model) the benchmark builds an UNTRAINED MFSA of the paper's size (d=40, d_h=128, M=5, N=2,
6 classes) with the real extractors' feature spec: for timing only, its outputs are noise and
it is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLIPS = ["grid_id2_vcd_swwp2s.mpg", "single_face.mp4", "face_noface.mov", "jfk.flac"]
# report stage -> analyze's timing keys (extraction's own keys, then analyze's)
STAGES = {
    "decode": ("probe", "decode"),
    "speech": ("speech",),
    "vectors": ("vectors",),
    "acoustic": ("acoustic",),
    "facial": ("facial",),
    "model": ("model",),
    "rendering": ("render",),  # the annotated video: decode, draw, encode, mux
    "plot": ("timeline",),  # timeline.png (matplotlib; mostly a fixed cost per video)
    "other": ("setup", "segmentation", "features"),
    "total": ("total",),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def timing_checkpoint(path: Path) -> Path:
    """An untrained paper-size MFSA checkpoint matching the default extractors (timing only)."""
    from extractors.config import ExtractionConfig
    from extractors.pipeline import feature_spec
    from mfsa_pipe.checkpoint import Checkpoint, save_checkpoint
    from mfsa_pipe.datasets.base import NormStats
    from models.registry import build_model, config_from_dict

    spec = feature_spec(ExtractionConfig())
    dims = tuple(int(spec[m]["dim"]) for m in ("text", "audio", "vision"))
    classes = ["angry", "disgust", "fear", "happy", "neutral", "sad"]
    config = config_from_dict("mfsa", {"dims": dims, "task": "classification", "num_classes": len(classes)})
    model = build_model("mfsa", config)
    ckpt = Checkpoint(
        model_name="mfsa", model_config=config.to_dict(), label_spec={"task": "classification", "classes": classes},
        feature_spec=spec, normalization=NormStats.identity({m: d for m, d in zip(("text", "audio", "vision"), dims)}),
        state_dict=model.state_dict(), training={"note": "UNTRAINED, for benchmark timing only"},
    )
    return save_checkpoint(ckpt, path)


def run_one(clip: Path, *, checkpoint: Path | None, repeat: int) -> dict:
    from mfsa_pipe.analyze import analyze

    base = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        analyze(clip, checkpoint=checkpoint, no_model=checkpoint is None, out_dir=Path(tmp) / "warm", cache_dir=False)
        runs, cpu = [], []
        for i in range(repeat):
            start = time.process_time()
            report = analyze(clip, checkpoint=checkpoint, no_model=checkpoint is None, out_dir=Path(tmp) / f"r{i}", cache_dir=False)
            cpu.append(time.process_time() - start)
            runs.append(report.timings_s)
    duration = report.input.duration_s
    per_s = {
        stage: statistics.median(sum(r.get(k, 0.0) for k in keys) for r in runs) / duration
        for stage, keys in STAGES.items()
    }
    per_s["cpu"] = statistics.median(cpu) / duration
    return {
        "duration_s": duration,
        "video": f"{report.input.width}x{report.input.height}" if report.input.has_video else None,
        "utterances": len(report.utterances),
        "seconds_per_second": per_s,
        "total_s": statistics.median(r["total"] for r in runs),
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_imports_mb": base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path, help="model checkpoint (default: the shipped one, else an untrained timing model)")
    parser.add_argument("--no-model", action="store_true", help="time analyze without a model")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child process: one clip, JSON on stdout
    args = parser.parse_args()

    if args.one:
        ckpt = None if args.no_model else args.checkpoint
        print(json.dumps(run_one(args.one, checkpoint=ckpt, repeat=args.repeat)))
        return

    clips = args.clips or [ROOT / "examples" / "media" / name for name in CLIPS]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None and not args.no_model:
            from mfsa_pipe.default_model import default_checkpoint_path

            ckpt = default_checkpoint_path() or timing_checkpoint(Path(tmp) / "untrained_timing_only.ckpt")
        results = {}
        cols = (*STAGES, "cpu")
        print(f"analyze, seconds (wall clock) per second of media, median of {args.repeat} runs, no extraction cache;")
        print(f"model: {'none' if args.no_model else ckpt}; rendering = annotated video, plot = timeline.png; "
              "cpu = CPU seconds of all threads per second of media")
        header = f"{'clip':26s} {'dur s':>5s} {'video':>8s} " + " ".join(f"{c:>9s}" for c in cols) + f" {'peak MB':>8s}"
        print(header)
        print("-" * len(header))
        for clip in clips:
            cmd = [sys.executable, __file__, "--one", str(clip), "--repeat", str(args.repeat)]
            cmd += ["--no-model"] if args.no_model else ["--checkpoint", str(ckpt)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{clip.name}: failed\n{proc.stderr[-2000:]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[clip.name] = r
            s = r["seconds_per_second"]
            print(f"{clip.name:26s} {r['duration_s']:5.2f} {r['video'] or 'audio':>8s} "
                  + " ".join(f"{s[c]:9.3f}" for c in cols) + f" {r['peak_rss_mb']:8.0f}")
        if results:
            total = sum(r["duration_s"] for r in results.values())
            pooled = {c: sum(r["seconds_per_second"][c] * r["duration_s"] for r in results.values()) / total for c in cols}
            print(f"{'all (duration-weighted)':26s} {total:5.2f} {'':>8s} " + " ".join(f"{pooled[c]:9.3f}" for c in cols))
        print(f"cpu cores visible: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if args.json:
            args.json.write_text(json.dumps({"clips": results, "model": None if args.no_model else str(ckpt)}, indent=2))


if __name__ == "__main__":
    main()
