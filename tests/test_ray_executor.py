"""`--executor ray` (issue 12) on a local Ray instance with 2 CPUs: the same outputs as the local
executor, failure isolation, a lost worker retried then recorded, the path check, and the
one-line error without Ray."""

import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mfsa_pipe.analysis.batch import run_batch
from mfsa_pipe.cli import app
from mfsa_pipe.executors import ExecutorConfig, ExecutorError, TaskLostError, open_executor, probe_paths

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "media"
RUN_METADATA = ("created", "timings_s")  # what may differ between two runs of one video (features.npz: timings)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # the executor joins an instance that is already up instead of starting its own: one per module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "in"
    (root / "a").mkdir(parents=True)
    shutil.copy(DATA / "grid_id2_vcd_swwp2s.mpg", root / "a" / "grid.mpg")
    (root / "broken.mp4").write_bytes(os.urandom(4096))
    return root


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".") and p.name != "summary.json"}


def _without_run_metadata(report: bytes) -> dict:
    data = json.loads(report)
    for key in RUN_METADATA:
        data.pop(key)
    return data


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if k != "timings"}
    return [_without_timings(v) for v in value] if isinstance(value, list) else value


def _same_features(a: Path, b: Path) -> bool:
    """Every array equal, and the header too once the stage timings (run metadata) are out."""
    with np.load(a) as x, np.load(b) as y:
        if sorted(x.files) != sorted(y.files):
            return False
        arrays = all(np.array_equal(x[k], y[k]) for k in x.files if k != "header")
        return arrays and _without_timings(json.loads(str(x["header"]))) == _without_timings(json.loads(str(y["header"])))


@pytest.mark.integration
def test_ray_gives_the_local_outputs_and_isolates_a_failure(ray_cluster, tree, tmp_path, cache_dir):
    local = run_batch(tree, out_dir=tmp_path / "local", render_video=False, cache_dir=cache_dir)
    # no cache for Ray: its workers extract, and must still give the same bytes
    ray_run = run_batch(tree, out_dir=tmp_path / "ray", render_video=False, cache_dir=False,
                        executor=ExecutorConfig(kind="ray", workers=2))
    assert local.exit_code == ray_run.exit_code == 1
    assert {r.path: r.status for r in ray_run.rows} == {"a/grid.mpg": "ok", "broken.mp4": "failed"}
    a, b = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(a) == sorted(b) and "a/grid/features.npz" in b and "a/grid/timeline.png" in b
    for name in a:
        if name.endswith("report.json"):
            assert _without_run_metadata(a[name]) == _without_run_metadata(b[name]), name
        elif name.endswith("features.npz"):
            assert _same_features(tmp_path / "local" / name, tmp_path / "ray" / name)
        else:
            assert a[name] == b[name], name  # summary.csv too: same rows, same error message
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["counts"] == {"ok": 1, "failed": 1, "skipped": 0}

    # a rerun on Ray skips what is finished and redoes only the failure
    again = run_batch(tree, out_dir=tmp_path / "ray", render_video=False, cache_dir=False,
                      executor=ExecutorConfig(kind="ray", workers=2))
    assert {r.path: r.status for r in again.rows} == {"a/grid.mpg": "skipped", "broken.mp4": "failed"}


@pytest.mark.integration
def test_a_lost_worker_is_retried_then_recorded(ray_cluster, tmp_path):
    attempts = tmp_path / "attempts"

    def work(name: str) -> str:
        if name == "crash":  # the worker process dies mid-task, as on a lost node
            with open(attempts, "a") as f:
                f.write("x")
            os.kill(os.getpid(), signal.SIGKILL)
        return name.upper()

    config = ExecutorConfig(kind="ray", max_retries=1)
    with open_executor(config) as executor:
        results = {i: (result, error) for i, result, error in executor.map(work, [("a",), ("crash",), ("b",)])}
    assert results[0] == ("A", None) and results[2] == ("B", None)
    assert results[1][0] is None and isinstance(results[1][1], TaskLostError)
    assert "lost 2 times" in str(results[1][1])
    assert attempts.read_text() == "xx"  # the first try and one retry


@pytest.mark.integration
def test_paths_are_checked_on_every_node(ray_cluster, tmp_path):
    with open_executor(ExecutorConfig(kind="ray")) as executor:
        executor.check_paths(shared=[tmp_path], readable=[tmp_path])  # one node, its own folder: fine
        with pytest.raises(ExecutorError, match="not found on this node"):
            executor.check_paths(shared=[tmp_path], readable=[tmp_path / "missing"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mfsa-pipe-shared-check")]
    # a folder of the same name that is not the driver's (no token there): named as not shared
    assert "not on a shared filesystem" in probe_paths([str(tmp_path)], [], ".no-such-token")


@pytest.mark.integration
def test_no_node_fits_the_declared_resources(ray_cluster):
    with pytest.raises(ExecutorError, match="no Ray node has 1 CPU and 1 GPU"):
        with open_executor(ExecutorConfig(kind="ray", gpus_per_task=1)):
            pass


def test_without_ray_a_one_line_error(tree, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as when not installed
    for args in (["batch", str(tree), "--out", str(tmp_path / "o"), "--executor", "ray", "--no-model"],
                 ["batch", str(tree), "--out", str(tmp_path / "o"), "--executor", "dask"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and result.output.startswith("error: ")
    result = CliRunner().invoke(app, ["batch", str(tree), "--out", str(tmp_path / "o"), "--executor", "ray"])
    assert 'pip install "mfsa-pipe[ray]"' in result.output
    assert not (tmp_path / "o").exists()  # refused before anything was made


def _samples(path: Path) -> dict[str, tuple]:
    from mfsa_pipe.datasets.h5 import read_h5

    bundle = read_h5(path)
    out = {}
    for split in bundle.splits.values():
        for i in range(len(split)):
            s = split.read(i)
            out[s.id] = (s.text.tolist(), s.audio.tolist(), s.vision.tolist(), s.label)
    return out


@pytest.mark.integration
def test_build_dataset_on_ray_matches_local(ray_cluster, tmp_path):
    from mfsa_pipe.datasets.build import build_dataset

    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(DATA / "grid_id2_vcd_swwp2s.mpg", media / "b.mpg")
    shutil.copy(DATA / "grid_id2_vcd_swwp2s.mpg", media / "c.mpg")
    labels = tmp_path / "labels.csv"  # audio only: the acoustic features, no speech model (fast)
    labels.write_text("path,label,modalities,split\nb.mpg,pos,audio,train\nc.mpg,neg,audio,train\nmissing.mp4,neg,audio,test\n")
    local = build_dataset(labels, media_root=media, out=tmp_path / "local.h5", cache_dir=False)
    on_ray = build_dataset(labels, media_root=media, out=tmp_path / "ray.h5", cache_dir=False,
                           executor=ExecutorConfig(kind="ray", workers=2))
    assert (local.added, local.failed) == (on_ray.added, on_ray.failed) == (2, 1)
    a, b = _samples(tmp_path / "local.h5"), _samples(tmp_path / "ray.h5")
    assert sorted(a) == ["b.mpg", "c.mpg"] and a == b
    assert len(a["b.mpg"][1]) > 10  # real acoustic rows


def _ray_processes(*, workers_only: bool = False) -> set[int]:
    """Pids of Ray's task workers (`ray::_call`, `ray::IDLE`) and, unless `workers_only`, its own
    processes (gcs_server, raylet, the agents), from /proc; zombies left out."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text()
            except OSError:
                continue
            if state[state.rindex(")") + 2] == "Z":
                continue
            name = cmd.split(b"\0")[0]
            task_worker = name.startswith(b"ray::") and not name.endswith(b"Agent")  # ray::_call, ray::IDLE
            if task_worker or (not workers_only and (b"ray/core/src/ray" in cmd or name.startswith(b"ray::"))):
                found.add(int(entry.name))
    return found


def _wait_gone(pids_now, before: set[int], timeout: float) -> set[int]:
    import time

    end = time.time() + timeout
    while pids_now() - before and time.time() < end:
        time.sleep(0.5)
    return pids_now() - before


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_resume_after_the_driver_is_killed(tmp_path, cache_dir):
    """kill -9 of `batch --executor ray` (its own local instance) after the first report: the
    instance and its workers go with it, and the same command finishes the rest."""
    import subprocess
    import time

    pytest.importorskip("ray")
    root = tmp_path / "in"
    root.mkdir()
    for i in range(3):
        shutil.copy(DATA / "grid_id2_vcd_swwp2s.mpg", root / f"clip{i}.mpg")
    out = tmp_path / "out"
    before = _ray_processes()
    cmd = [sys.executable, "-m", "mfsa_pipe.cli", "batch", str(root), "--out", str(out), "--no-model", "--no-video",
           "--executor", "ray", "--workers", "1", "--cache-dir", str(cache_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 600
        while not list(out.glob("clip*/report.json")) and time.time() < end and proc.poll() is None:
            time.sleep(0.2)
        assert list(out.glob("clip*/report.json")) and proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the task workers stop at once (no leftover writes into --out); the instance soon after
    # (its processes notice the driver's death by polling: slower on a loaded machine)
    assert not _wait_gone(lambda: _ray_processes(workers_only=True), before, 30), "Ray workers outlived the driver"
    assert not _wait_gone(_ray_processes, before, 180), "the local Ray instance outlived the killed driver"
    done_before = {p.parent.name for p in out.glob("clip*/report.json")}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    status = {v["path"]: v["status"] for v in summary["videos"]}
    assert {status[f"{n}.mpg"] for n in done_before} == {"skipped"} and set(status.values()) <= {"ok", "skipped"}
    assert len(status) == 3
