"""`batch`: a folder with a corrupt file, resuming after an interrupt, --force, workers, exit codes."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import mfsa_pipe.analysis.batch as batch_module
from mfsa_pipe.analysis.batch import find_videos, output_dirs, run_batch
from mfsa_pipe.cli import app
from mfsa_pipe.analysis.report import validate_report

from helpers import MEDIA_DIR as DATA



@pytest.fixture
def tree(tmp_path, media_dir):
    """in/a/grid.mpg, in/b/c/face.mp4, in/broken.mp4 (not media), in/notes.txt (not a video)."""
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    (root / "b" / "c").mkdir(parents=True)
    shutil.copy(media_dir / "grid_id2_vcd_swwp2s.mpg", root / "a" / "grid.mpg")
    shutil.copy(media_dir / "single_face.mp4", root / "b" / "c" / "face.mp4")
    (root / "broken.mp4").write_bytes(os.urandom(4096))
    (root / "notes.txt").write_text("not a video")
    return root


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["path", "status", "duration_s", "prediction", "sentiment", "sentiment_score", "error"]
    return {r["path"]: r for r in rows}


@pytest.fixture
def count_calls(monkeypatch):
    """Count analyze() calls per input name (the jobs run in this process or forked ones)."""
    calls: list[str] = []
    real = batch_module.analyze

    def counting(path, **kwargs):
        calls.append(Path(path).name)
        return real(path, **kwargs)

    monkeypatch.setattr(batch_module, "analyze", counting)
    return calls


@pytest.mark.integration
def test_corrupt_file_is_recorded_and_the_rest_continue(tree, tmp_path, cache_dir):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(tree), "--out", str(out), "--no-model", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 1, result.output
    rows = _rows(out)
    assert set(rows) == {"a/grid.mpg", "b/c/face.mp4", "broken.mp4"}  # notes.txt is not a video
    assert rows["broken.mp4"]["status"] == "failed"
    assert "broken.mp4" in rows["broken.mp4"]["error"] and "Traceback" not in rows["broken.mp4"]["error"]
    for name in ("a/grid.mpg", "b/c/face.mp4"):
        assert rows[name]["status"] == "ok" and rows[name]["error"] == ""
        assert float(rows[name]["duration_s"]) > 2.0
        assert rows[name]["prediction"] == rows[name]["sentiment"] == rows[name]["sentiment_score"] == ""  # no model
    # one output folder per video, mirroring the input tree
    for folder, video in (("a/grid", "grid.annotated.mp4"), ("b/c/face", "face.annotated.mp4")):
        report = json.loads((out / folder / "report.json").read_text())
        validate_report(report)
        assert (out / folder / video).is_file() and (out / folder / "timeline.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"ok": 2, "failed": 1, "skipped": 0}
    assert "no fused prediction" in summary["notice"].lower()
    assert "3 videos" in result.output and "1 failed" in result.output
    assert not list(out.rglob(".*partial*"))


@pytest.mark.integration
def test_resume_redoes_only_unfinished_videos(tree, tmp_path, cache_dir, count_calls):
    (tree / "broken.mp4").unlink()
    out = tmp_path / "out"
    first = run_batch(tree, out_dir=out, no_model=True, render_video=False, cache_dir=cache_dir)
    assert first.exit_code == 0 and sorted(count_calls) == ["face.mp4", "grid.mpg"]

    # simulate an interrupt in the middle of face.mp4: its report (written last) is missing and
    # a temporary file is left behind
    (out / "b/c/face/report.json").unlink()
    (out / "b/c/face/.timeline.abc.partial.png").write_bytes(b"half")
    count_calls.clear()
    second = run_batch(tree, out_dir=out, no_model=True, render_video=False, cache_dir=cache_dir)
    assert count_calls == ["face.mp4"]
    assert {r.path: r.status for r in second.rows} == {"a/grid.mpg": "skipped", "b/c/face.mp4": "ok"}
    assert not (out / "b/c/face/.timeline.abc.partial.png").exists()
    assert _rows(out)["a/grid.mpg"]["status"] == "skipped" and float(_rows(out)["a/grid.mpg"]["duration_s"]) > 2

    # a finished report from other options (here: with video) does not count as finished
    count_calls.clear()
    run_batch(tree, out_dir=out, no_model=True, render_video=True, cache_dir=cache_dir)
    assert sorted(count_calls) == ["face.mp4", "grid.mpg"]

    # a changed input file is redone; --force redoes everything
    count_calls.clear()
    shutil.copy(DATA / "single_face.mp4", tree / "a" / "grid.mpg")
    run_batch(tree, out_dir=out, no_model=True, render_video=True, cache_dir=cache_dir)
    assert count_calls == ["grid.mpg"]
    count_calls.clear()
    run_batch(tree, out_dir=out, no_model=True, render_video=True, cache_dir=cache_dir, force=True)
    assert sorted(count_calls) == ["face.mp4", "grid.mpg"]


def test_pattern_and_output_names(tree, tmp_path):
    assert [p.name for p in find_videos(tree, pattern="*.mpg")] == ["grid.mpg"]
    assert [p.relative_to(tree).as_posix() for p in find_videos(tree)] == ["a/grid.mpg", "b/c/face.mp4", "broken.mp4"]
    # the output folder inside the input folder is not searched
    (tree / "out" / "x").mkdir(parents=True)
    shutil.copy(DATA / "single_face.mp4", tree / "out" / "x" / "old.annotated.mp4")
    assert len(find_videos(tree, exclude=tree / "out")) == 3
    # two videos with one stem in one folder get distinct folders
    (tree / "a" / "grid.mp4").write_bytes(b"x")
    dirs = output_dirs(find_videos(tree), folder=tree, out_dir=tmp_path / "o")
    names = {p.relative_to(tree).as_posix(): d.relative_to(tmp_path / "o").as_posix() for p, d in dirs.items()}
    assert names["a/grid.mpg"] == "a/grid_mpg" and names["a/grid.mp4"] == "a/grid_mp4" and names["b/c/face.mp4"] == "b/c/face"


def test_bad_folder_and_out_are_refused_cleanly(tree, tmp_path):
    runner = CliRunner()
    for args in (["batch", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                 ["batch", str(tree / "broken.mp4"), "--out", str(tmp_path / "o")],
                 ["batch", str(tree), "--out", str(tree / "notes.txt")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output and "Traceback" not in result.output


def _wait_for(path: Path, timeout: float) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.integration
@pytest.mark.slow
def test_resume_after_kill_9(tmp_path, cache_dir):
    """A real interrupt: kill -9 the batch after its first report, rerun, only the rest is done."""
    root = tmp_path / "in"
    root.mkdir()
    for i in range(3):
        shutil.copy(DATA / "grid_id2_vcd_swwp2s.mpg", root / f"clip{i}.mpg")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mfsa_pipe.cli", "batch", str(root), "--out", str(out), "--no-model", "--cache-dir", str(cache_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(out / "clip0" / "report.json", 300)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = {p.parent.name for p in out.glob("*/report.json")}
    assert "clip0" in done_before and len(done_before) < 3
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = _rows(out)
    assert {rows[f"{n}.mpg"]["status"] for n in done_before} == {"skipped"}
    assert all(r["status"] in ("ok", "skipped") for r in rows.values()) and len(rows) == 3
    assert not list(out.rglob(".*partial*"))


@pytest.mark.integration
@pytest.mark.slow
def test_workers_run_in_processes(tree, tmp_path, cache_dir):
    out = tmp_path / "out"
    result = run_batch(tree, out_dir=out, no_model=True, render_video=False, workers=2, cache_dir=cache_dir)
    assert result.exit_code == 1
    assert {r.path: r.status for r in result.rows} == {"a/grid.mpg": "ok", "b/c/face.mp4": "ok", "broken.mp4": "failed"}
    assert (out / "a/grid/report.json").is_file() and (out / "b/c/face/report.json").is_file()
