"""Seconds of processing per second of media, per extraction stage, on the bundled clips.

    python benchmarks/bench_extract.py [--repeat 3] [--json out.json] [clips ...]

Models are loaded by a warm-up run first (a batch pays that once), then each clip is
extracted `--repeat` times without the cache; the median per stage is reported. Peak memory
is the process's peak resident set size (native libraries included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLIPS = ["grid_id2_vcd_swwp2s.mpg", "single_face.mp4", "face_noface.mov", "jfk.flac"]
STAGES = ("decode", "speech", "vectors", "acoustic", "facial", "total")
COLUMNS = (*STAGES, "cpu")  # cpu: CPU seconds (all cores) per second of media


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    clips = args.clips or [ROOT / "examples" / "media" / name for name in CLIPS]

    from extractors.pipeline import extract

    base_rss = peak_rss_mb()
    extract(clips[0], cache_dir=False)  # warm-up: loads every model once
    results = {}
    header = f"{'clip':28s} {'dur s':>6s} " + " ".join(f"{s:>8s}" for s in COLUMNS)
    print("seconds of processing (wall clock) per second of media, median of %d runs;" % args.repeat)
    print("cpu = CPU seconds of all threads per second of media (on a busy machine wall > cpu / cores)")
    print(header)
    print("-" * len(header))
    for clip in clips:
        runs, cpu = [], []
        for _ in range(args.repeat):
            start = time.process_time()  # all threads of this process: robust to a busy machine
            runs.append(extract(clip, cache_dir=False))
            cpu.append(time.process_time() - start)
        duration = runs[0].media.duration_s
        per_s = {s: statistics.median(r.timings.get(s, 0.0) for r in runs) / duration for s in STAGES}
        per_s["cpu"] = statistics.median(cpu) / duration
        media = runs[0].media
        results[clip.name] = {
            "duration_s": duration,
            "video": f"{media.width}x{media.height}" if media.has_video else None,
            "seconds_per_second": per_s,
        }
        print(f"{clip.name:28s} {duration:6.2f} " + " ".join(f"{per_s[s]:8.3f}" for s in COLUMNS))
    total = sum(r["duration_s"] for r in results.values())
    pooled = {s: sum(r["seconds_per_second"][s] * r["duration_s"] for r in results.values()) / total for s in COLUMNS}
    print(f"{'all clips (duration-weighted)':28s} {total:6.2f} " + " ".join(f"{pooled[s]:8.3f}" for s in COLUMNS))
    peak = peak_rss_mb()
    print(f"peak memory (RSS): {peak:.0f} MB (interpreter + imports before the first run: {base_rss:.0f} MB)")
    print(f"cpu cores visible: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"clips": results, "all": pooled, "peak_rss_mb": peak}, indent=2))


if __name__ == "__main__":
    main()
