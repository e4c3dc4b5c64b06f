"""`batch` and `build-dataset` under faults (issue 11, defects 2, 6, 7): workers die with a
killed batch, one run per output, and every file not taken is listed with the reason. The bad
input is made at run time with the ffmpeg that imageio-ffmpeg ships."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
from typer.testing import CliRunner

from mfsa_pipe import output_lock as output_lock_module
from mfsa_pipe.analysis.batch import scan_folder
from mfsa_pipe.cli import app
from mfsa_pipe.output_lock import (
    BATCH_LOCK_NAME,
    OutputBusyError,
    dataset_lock_path,
    output_lock,
    workers_lock_path,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def make_clip(path: Path, seconds: float = 6.0) -> Path:
    """A small test-pattern video with a tone."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=15", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000",
           "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path))
    return path


def make_tone(path: Path, seconds: float = 1.5) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=300:sample_rate=16000:duration={seconds}", str(path))
    return path


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mfsa_pipe.cli", *args]


def children(pid: int) -> list[int]:
    """Live descendants of `pid` (from /proc), zombies left out."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, parent in parents.items() if parent == p]
        found += kids
        frontier += kids
    return found


def spawned(pid: int) -> list[int]:
    """The multiprocessing workers among the children of `pid`."""
    found = []
    for child in children(pid):
        with open(f"/proc/{child}/cmdline", "rb") as f:
            if b"spawn_main" in f.read():
                found.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"


def wait_until(check, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.integration
@linux_only
def test_killed_batch_takes_its_workers_and_its_lock_with_it(tmp_path, cache_dir):
    root = tmp_path / "in"
    root.mkdir()
    for i in range(4):
        make_clip(root / f"clip{i}.mp4")
    out = tmp_path / "out"
    # a fresh cache: the workers must really extract while the batch is killed
    cmd = cli("batch", str(root), "--out", str(out), "--workers", "2", "--no-model", "--no-video",
              "--cache-dir", str(tmp_path / "cache"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # both workers started (they load and extract while the second run below is refused)
        started = wait_until(lambda: proc.poll() is not None or len(spawned(proc.pid)) >= 2, 240)
        assert started and proc.poll() is None, "the workers never started"
        workers = children(proc.pid)

        # a second run on the same output refuses at once, in one line
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "another `mfsa-pipe batch`" in second.stderr and f"pid {proc.pid}" in second.stderr
        assert "Traceback" not in second.stdout + second.stderr
        assert not (out / "summary.json").exists() or json.loads((out / "summary.json").read_text())["counts"]["ok"] < 4

        assert all(alive(w) for w in workers)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert wait_until(lambda: not any(alive(w) for w in workers), 5), \
            f"workers outlived the killed batch: {[w for w in workers if alive(w)]}"
    finally:
        if proc.poll() is None:
            proc.kill()
    # the dead run's lock does not block a rerun (here one that finds nothing to do)
    rerun = subprocess.run(cli("batch", str(root), "--out", str(out), "--pattern", "*.none", "--no-model"),
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert (out / BATCH_LOCK_NAME).is_file()


def test_a_rerun_waits_for_leftover_workers(tmp_path, monkeypatch):
    """A process holding the workers' shared lock (a worker that outlived its batch) keeps a new
    run out; once it is gone the new run goes ahead."""
    lock = tmp_path / BATCH_LOCK_NAME
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from mfsa_pipe.output_lock import hold_shared; hold_shared(sys.argv[1]); "
        "print('held', flush=True); time.sleep(60)"), str(workers_lock_path(lock))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(output_lock_module, "LEFTOVER_WAIT_S", 0.5)
        with pytest.raises(OutputBusyError, match="worker processes of an earlier `mfsa-pipe batch`"):
            with output_lock(lock, what="batch", option="--out"):
                pass
    finally:
        holder.kill()
        holder.wait(10)
    with output_lock(lock, what="batch", option="--out"):
        assert lock.read_text() == str(os.getpid())


def test_build_dataset_refuses_an_output_in_use(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("text,label\na happy day,pos\na sad day,neg\n")
    out = tmp_path / "ds.h5"
    args = ["build-dataset", str(labels), "--media-root", str(tmp_path), "--out", str(out)]
    with output_lock(dataset_lock_path(out), what="build-dataset", option="--out"):
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "another `mfsa-pipe build-dataset`" in result.output and "Traceback" not in result.output
    assert not out.exists() and not Path(str(out) + ".report.json").exists()


@pytest.fixture
def messy_tree(tmp_path):
    """Media and things batch must not take: hidden, dangling and looping links, a folder link."""
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    make_tone(root / "sub" / "tone.wav")
    (root / "notes.txt").write_text("not media")
    (root / ".hidden.mp4").write_bytes(b"x")
    (root / ".cache" / "old.mp4").write_bytes(b"x")
    (root / "gone.mp4").symlink_to(root / "missing.mp4")
    (root / "loop.mp4").symlink_to(root / "loop.mp4")
    (root / "elsewhere").symlink_to(root / "sub", target_is_directory=True)
    return root


def test_scan_lists_what_it_does_not_take_and_takes_audio(messy_tree):
    found, ignored = scan_folder(messy_tree)
    assert [p.relative_to(messy_tree).as_posix() for p in found] == ["sub/tone.wav"]
    assert {i.path: i.reason for i in ignored} == {
        ".cache": "hidden folder",
        ".hidden.mp4": "hidden file",
        "elsewhere": "link to a folder (not followed)",
        "gone.mp4": "broken link (its target is missing)",
        "loop.mp4": "link loop (the link points to itself)",
        "notes.txt": "not a video or audio file (by its extension)",
    }
    # --pattern decides: audio is left out when the pattern asks for mp4 only
    found, ignored = scan_folder(messy_tree, pattern="*.mp4")
    assert found == []
    assert {i.path: i.reason for i in ignored}["sub/tone.wav"] == "does not match --pattern *.mp4"


@pytest.mark.integration
def test_batch_reports_skips_in_terminal_and_summary(messy_tree, tmp_path, cache_dir):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(messy_tree), "--out", str(out), "--no-model", "--no-video",
                                      "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [v["path"] for v in summary["videos"]] == ["sub/tone.wav"] and summary["counts"]["ok"] == 1
    assert (out / "sub" / "tone" / "report.json").is_file()
    assert {i["path"]: i["reason"] for i in summary["ignored"]}["loop.mp4"] == "link loop (the link points to itself)"
    assert len(summary["ignored"]) == 6
    text = " ".join(result.output.split())
    for line in ("not taken (broken link (its target is missing)): 1: gone.mp4",
                 "not taken (link loop (the link points to itself)): 1: loop.mp4",
                 "not taken (hidden file): 1: .hidden.mp4", "not taken (hidden folder): 1: .cache",
                 "not taken (not a video or audio file (by its extension)): 1: notes.txt"):
        assert line in text, result.output
