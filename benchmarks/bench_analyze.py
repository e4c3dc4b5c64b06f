"""Wall time and peak memory of `analyze` (rendering included) per bundled clip, by stage.

    python benchmarks/bench_analyze.py [--repeat 2] [--checkpoint CKPT] [--json out.json] [clips ...]
    python benchmarks/bench_analyze.py --durations 1,10,60    # long videos: s/s and peak RSS by stage
    python benchmarks/bench_analyze.py --cold CLIP [CLIP ...]  # the cold CLI command vs warm analyze

Each clip runs in its own process, so that its peak memory (resident set size, native libraries
included) is its own: a warm-up analyze loads every model, then `--repeat` timed runs without
the extraction cache; the median per stage is reported as seconds per second of media.

`--durations` builds N-minute 640x360 videos from the bundled clips (single_face.mp4's picture
and jfk.flac's speech, looped to one minute, then that minute repeated by stream copy) and runs
one cold `analyze` per video in a fresh process, sampling its resident memory per stage: peak
RSS that does not grow with N is the point. `--cold` times the `mfsa-pipe analyze` command in
a fresh process `--repeat` times (imports, model loading, first plot: what a user waits for;
wall and user + sys CPU seconds, median) beside the warm figure. Every line carries the load average, as timings on a shared machine are inflated.

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
import threading
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


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


class StageMemory:
    """Peak resident memory per analyze stage, sampled every `every` seconds in a thread, and
    CPU seconds per stage (all threads: on a loaded machine a steadier figure than wall time)."""

    def __init__(self, every: float = 0.2) -> None:
        self.stage, self.peaks, self.cpu, self._stop = "setup", {}, {}, threading.Event()
        self._cpu_at = time.process_time()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def __call__(self, stage: str) -> None:  # analyze's progress callback
        self._sample()
        now = time.process_time()
        self.cpu[self.stage] = round(self.cpu.get(self.stage, 0.0) + now - self._cpu_at, 2)
        self.stage, self._cpu_at = stage, now

    def _sample(self) -> None:
        self.peaks[self.stage] = max(self.peaks.get(self.stage, 0.0), current_rss_mb())

    def _run(self, every: float) -> None:
        while not self._stop.wait(every):
            self._sample()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return {k: round(v) for k, v in self.peaks.items()}


def make_long_video(minutes: int, folder: Path) -> Path:
    """An N-minute 640x360 H.264/AAC video from the bundled clips: single_face.mp4's picture with
    the speech of all four clips one after another (23 s) looped to a minute, that minute
    repeated by stream copy. Not one clip's speech looped: Whisper re-decodes windows whose text
    repeats (its temperature fallback), which would make the speech stage ~6x dearer than speech."""
    import imageio_ffmpeg

    ffmpeg, media = imageio_ffmpeg.get_ffmpeg_exe(), ROOT / "examples" / "media"
    unit, video = folder / "unit_1min.mp4", folder / f"long_{minutes}min.mp4"
    if not unit.exists():
        sources = ["jfk.flac", "grid_id2_vcd_swwp2s.mpg", "single_face.mp4", "face_noface.mov"]
        speech = folder / "speech.wav"
        inputs = [arg for name in sources for arg in ("-i", str(media / name))]
        chain = "".join(f"[{i}:a]aresample=16000,aformat=channel_layouts=mono[a{i}];" for i in range(len(sources)))
        chain += "".join(f"[a{i}]" for i in range(len(sources))) + f"concat=n={len(sources)}:v=0:a=1[a]"
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", *inputs, "-filter_complex", chain, "-map", "[a]", str(speech)],
                       check=True)
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-stream_loop", "-1", "-i", str(media / "single_face.mp4"),
                        "-stream_loop", "-1", "-i", str(speech), "-map", "0:v", "-map", "1:a", "-t", "60",
                        "-vf", "scale=640:360,fps=24", "-c:v", "libx264", "-preset", "veryfast", "-crf", "28",
                        "-c:a", "aac", "-ac", "1", str(unit)], check=True)
    if not video.exists():
        listing = folder / f"list_{minutes}.txt"
        listing.write_text("".join(f"file '{unit.name}'\n" for _ in range(minutes)))
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing),
                        "-c", "copy", str(video)], check=True)
    return video


def run_long(video: Path, *, checkpoint: Path | None) -> dict:
    """One cold analyze in this (fresh) process: wall time, stage timings, peak RSS per stage."""
    started, load_before = time.perf_counter(), load()
    memory = StageMemory()
    from mfsa_pipe.analysis.video import analyze

    with tempfile.TemporaryDirectory() as tmp:
        report = analyze(video, checkpoint=checkpoint, no_model=checkpoint is None, out_dir=Path(tmp),
                         cache_dir=False, progress=memory)
    wall = time.perf_counter() - started
    stages = memory.stop()
    duration = report.input.duration_s
    return {
        "duration_s": duration, "wall_s": wall, "seconds_per_second": wall / duration,
        "cpu_per_second": time.process_time() / duration,
        "timings_s": {k: round(v, 1) for k, v in report.timings_s.items()},
        "cpu_by_stage_s": memory.cpu, "peak_rss_mb": peak_rss_mb(), "peak_rss_by_stage_mb": stages, "load_before": load_before, "load_after": load(),
    }


def durations_table(minutes: list[int], *, checkpoint: Path | None, folder: Path) -> dict:
    print("one cold analyze per video (fresh process, rendering included), 640x360 24 fps, nice -n 5 advised")
    results = {}
    for n in minutes:
        video = make_long_video(n, folder)
        cmd = [sys.executable, __file__, "--long", str(video)] + (["--checkpoint", str(checkpoint)] if checkpoint else ["--no-model"])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{n} min: failed\n{proc.stderr[-2000:]}")
            continue
        r = results[f"{n}min"] = json.loads(proc.stdout.strip().splitlines()[-1])
        t = r["timings_s"]
        print(f"{n:3d} min: {r['seconds_per_second']:.3f} s/s wall ({r['cpu_per_second']:.3f} CPU s/s), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB; speech {t.get('speech', 0):.0f} s, acoustic {t.get('acoustic', 0):.0f} s, "
              f"facial {t.get('facial', 0):.0f} s, render {t.get('render', 0):.0f} s; load {r['load_before']} -> {r['load_after']}")
        print(f"         peak RSS by stage (MB): {r['peak_rss_by_stage_mb']}")
        print(f"         CPU seconds by stage: {r['cpu_by_stage_s']}")
    return results


def cold_vs_warm(clip: Path, *, checkpoint: Path | None, repeat: int) -> dict:
    """The `analyze` command in a fresh process (what a user runs per file), `repeat` times, and
    the warm figure. CPU seconds (user + sys of the command) are the steadier figure when shared."""
    cmd = [sys.executable, "-m", "mfsa_pipe.cli", "analyze", str(clip), "--no-cache"]
    cmd += ["--checkpoint", str(checkpoint)] if checkpoint else ["--no-model"]
    colds = []
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            load_before, before = load(), resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([*cmd, "--out", str(Path(tmp) / "cold")], check=True, capture_output=True, cwd=ROOT)
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
            colds.append({"wall_s": wall, "user_s": user, "sys_s": system, "load": [load_before, load()]})
            print(f"  cold run {i + 1}: {wall:.1f} s wall, CPU {user:.1f} user + {system:.1f} sys (load {load_before} -> {load()})")
    warm_cmd = [sys.executable, __file__, "--one", str(clip), "--repeat", str(repeat)]
    warm_cmd += ["--checkpoint", str(checkpoint)] if checkpoint else ["--no-model"]
    warm = json.loads(subprocess.run(warm_cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    duration = warm["duration_s"]
    cold = statistics.median(c["wall_s"] for c in colds)
    cold_cpu = statistics.median(c["user_s"] + c["sys_s"] for c in colds)
    print(f"{clip.name} ({duration:.1f} s): cold command (median of {repeat}) {cold:.1f} s = {cold / duration:.3f} s/s, "
          f"{cold_cpu:.1f} CPU s = {cold_cpu / duration:.3f} CPU s/s; warm analyze "
          f"{warm['seconds_per_second']['total']:.3f} s/s, {warm['seconds_per_second']['cpu']:.3f} CPU s/s (load {load()})")
    return {"clip": clip.name, "duration_s": duration, "cold_runs": colds, "cold_s": cold, "cold_per_s": cold / duration,
            "cold_cpu_s": cold_cpu, "cold_cpu_per_s": cold_cpu / duration, "warm_per_s": warm["seconds_per_second"]["total"],
            "warm_cpu_per_s": warm["seconds_per_second"]["cpu"], "load_warm": load()}


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
    from mfsa_pipe.analysis.video import analyze

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
    parser.add_argument("--durations", help="comma-separated minutes, e.g. 1,10,60: long-video table")
    parser.add_argument("--media-dir", type=Path, help="where --durations keeps its videos (default: a temporary folder)")
    parser.add_argument("--cold", type=Path, nargs="+", help="time the cold `analyze` command on these clips beside the warm figure")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)  # child process: one clip, JSON on stdout
    parser.add_argument("--long", type=Path, help=argparse.SUPPRESS)  # child process: one cold long video
    args = parser.parse_args()

    if args.one or args.long:
        ckpt = None if args.no_model else args.checkpoint
        result = run_long(args.long, checkpoint=ckpt) if args.long else run_one(args.one, checkpoint=ckpt, repeat=args.repeat)
        print(json.dumps(result))
        return
    if args.durations or args.cold:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = args.checkpoint
            if ckpt is None and not args.no_model:
                from mfsa_pipe.default_model import default_checkpoint_path

                ckpt = default_checkpoint_path() or timing_checkpoint(Path(tmp) / "untrained_timing_only.ckpt")
            results = {}
            if args.cold:
                results["cold"] = [cold_vs_warm(clip, checkpoint=ckpt, repeat=args.repeat) for clip in args.cold]
            if args.durations:
                folder = args.media_dir or Path(tmp)
                folder.mkdir(parents=True, exist_ok=True)
                minutes = [int(m) for m in args.durations.split(",")]
                results["durations"] = durations_table(minutes, checkpoint=ckpt, folder=folder)
            print(f"cpu cores visible: {os.cpu_count()}, load average now: {load()}")
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
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
