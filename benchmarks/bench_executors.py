"""`batch --executor ray` on a local Ray instance vs `--executor local --workers 2`: wall time and
Ray's overhead per video.

    python benchmarks/bench_executors.py [--videos 24] [--workers 2] [--no-video] [--json out.json]

The input is `--videos` copies of the bundled video clips (grid, single_face, face_noface, in
turn; 2.4-6.4 s each), analysed without the extraction cache so that every video is really
extracted. Each executor runs the real command (`python -m mfsa_pipe.cli batch`) in its own
process into a fresh output folder; the wall time is the whole command, start-up included. The
Ray run starts and stops its own local instance with `--workers` CPUs (the same parallelism as the
local run). Printed:

- wall time of each command and seconds per video;
- Ray's overhead per video = (Ray wall - local wall) / videos, which includes the instance's
  start and stop, and the same without them (the instance's start/stop measured separately);
- the scheduling cost of one Ray task (a no-op task, 200 of them on the same instance size).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIPS = ["grid_id2_vcd_swwp2s.mpg", "single_face.mp4", "face_noface.mov"]


def make_inputs(folder: Path, count: int) -> float:
    """`count` copies of the bundled clips; returns their total duration in seconds."""
    from extractors.media import probe

    folder.mkdir(parents=True)
    total = 0.0
    for i in range(count):
        clip = ROOT / "examples" / "media" / CLIPS[i % len(CLIPS)]
        shutil.copy(clip, folder / f"v{i:03d}{clip.suffix}")
        total += probe(clip).duration_s
    return total


def run_batch(folder: Path, out: Path, extra: list[str], no_video: bool) -> float:
    cmd = [sys.executable, "-m", "mfsa_pipe.cli", "batch", str(folder), "--out", str(out), "--cache-dir", str(out) + ".cache"]
    cmd += (["--no-video"] if no_video else []) + extra
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = json.loads((out / "summary.json").read_text())
    if done.returncode != 0 or summary["counts"]["ok"] != len(list(folder.iterdir())):
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {summary['counts']}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return wall


def ray_costs(workers: int, tasks: int = 200) -> dict[str, float]:
    """Start/stop of a local instance, and the round trip of one no-op task on it."""
    import ray

    started = time.perf_counter()
    ray.init(address="local", num_cpus=workers, include_dashboard=False, log_to_driver=False)
    up = time.perf_counter() - started
    noop = ray.remote(lambda i: i)
    ray.get([noop.remote(i) for i in range(workers * 2)])  # workers started and warm
    started = time.perf_counter()
    ray.get([noop.remote(i) for i in range(tasks)])
    per_task = (time.perf_counter() - started) / tasks
    started = time.perf_counter()
    ray.shutdown()
    return {"start_s": up, "stop_s": time.perf_counter() - started, "noop_task_s": per_task}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-video", action="store_true", help="skip the annotated videos (rendering)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    # no extraction cache shared between the runs: each has its own, empty (`<out>.cache`)
    with tempfile.TemporaryDirectory(prefix="bench_executors_") as tmp:
        tmp = Path(tmp)
        media_s = make_inputs(tmp / "in", args.videos)
        n = args.videos
        local = run_batch(tmp / "in", tmp / "out_local", ["--workers", str(args.workers)], args.no_video)
        ray_wall = run_batch(tmp / "in", tmp / "out_ray", ["--executor", "ray", "--workers", str(args.workers)], args.no_video)
        costs = ray_costs(args.workers)
    load = os.getloadavg()
    figures = {
        "videos": n, "media_s": round(media_s, 2), "workers": args.workers, "render_video": not args.no_video,
        "local_wall_s": round(local, 2), "ray_wall_s": round(ray_wall, 2),
        "overhead_per_video_s": round((ray_wall - local) / n, 3),
        "overhead_per_video_without_start_stop_s": round((ray_wall - costs["start_s"] - costs["stop_s"] - local) / n, 3),
        "ray_start_s": round(costs["start_s"], 2), "ray_stop_s": round(costs["stop_s"], 2),
        "ray_noop_task_ms": round(costs["noop_task_s"] * 1000, 2),
        "cores": os.cpu_count(), "load_average": [round(x, 1) for x in load],
    }
    print(f"batch over {n} videos ({media_s:.1f} s of media, rendering {'on' if not args.no_video else 'off'}), "
          f"{args.workers} at a time, no extraction cache")
    print(f"{'executor':<34}{'wall s':>10}{'s/video':>10}{'s/s media':>11}")
    for name, wall in ((f"local --workers {args.workers}", local), (f"ray (local instance, {args.workers} CPUs)", ray_wall)):
        print(f"{name:<34}{wall:>10.1f}{wall / n:>10.2f}{wall / media_s:>11.3f}")
    print(f"Ray overhead per video: {figures['overhead_per_video_s']:+.3f} s "
          f"({figures['overhead_per_video_without_start_stop_s']:+.3f} s without the instance's start "
          f"{costs['start_s']:.1f} s and stop {costs['stop_s']:.1f} s)")
    print(f"one no-op Ray task (round trip, {args.workers} CPUs): {figures['ray_noop_task_ms']:.2f} ms")
    print(f"cpu cores visible: {os.cpu_count()}, load average: {', '.join(f'{x:.1f}' for x in load)}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
