"""Training under torchrun: two CPU processes (gloo) train one run on different samples, rank 0
writes the files, validation covers the whole split, the run resumes; one process equals plain
training."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mfsa_pipe.checkpoint import load_checkpoint
from mfsa_pipe.training.evaluation import evaluate
from mfsa_pipe.training.synthetic import write_synthetic
from mfsa_pipe.training import TrainingError, train
from mfsa_pipe.training.distributed import ShardSampler

ROOT = Path(__file__).resolve().parents[1]
TINY_LSTM = {"hidden": 8}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn") / "syn.pkl"  # 31 validation samples: uneven shares
    write_synthetic(path, seed=0, n_train=96, n_valid=31, n_test=16, text_len=8, audio_len=20, vision_len=24, text_dim=8)
    return path


def _log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _torchrun(nproc, dataset, out, *args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "mfsa_pipe.cli", "train", "--model", "lf_lstm", "--set", "hidden=8", "--dataset", str(dataset),
           "--out", str(out), "--batch-size", "16", "--seed", "4", "--device", "cpu", "--quiet", "--threads", "1", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_shards_split_one_order_and_pad_to_equal_length():
    g = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    shards = [list(ShardSampler(10, generator=g(), rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # 10 padded to 12 by repetition
    assert set().union(*shards) == set(range(10))
    assert list(ShardSampler(10, generator=g(), rank=0, world_size=1)) == torch.randperm(10, generator=g()).tolist()


def test_one_process_group_equals_plain_training(small, tmp_path, monkeypatch):
    """World size 1 goes through every distributed step (DDP, shards, gathers, broadcasts) and
    gives the plain run's numbers."""
    kw = dict(model_name="lf_lstm", dataset=small, overrides=TINY_LSTM, epochs=2, batch_size=16, seed=3,
              progress=False, device="cpu")
    plain = train(out_dir=tmp_path / "plain", **kw)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(free.getsockname()[1]))
    one = train(out_dir=tmp_path / "one", **kw)
    assert not torch.distributed.is_initialized()  # the group it started is gone
    rows = _log(tmp_path / "one")
    assert [r["samples_by_rank"] for r in rows] == [[96], [96]]
    for a, b in zip(plain.history, one.history):
        assert a["valid_loss"] == pytest.approx(b["valid_loss"], rel=1e-6)
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    assert one.test_metrics["mae"] == pytest.approx(plain.test_metrics["mae"], rel=1e-6)
    assert load_checkpoint(tmp_path / "one" / "model.ckpt").training["processes"]["world_size"] == 1


def test_two_processes_under_torchrun(small, tmp_path):
    out = tmp_path / "run"
    res = _torchrun(2, small, out, "--epochs", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("best epoch") == 1  # rank 0 alone reports
    rows = _log(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    # the two ranks trained on different halves of the 96 samples
    assert all(r["samples_by_rank"] == [48, 48] and r["distinct_samples"] == 96 for r in rows)
    ckpt = load_checkpoint(out / "model.ckpt")
    assert ckpt.training["processes"] == {"world_size": 2, "backend": "gloo", "batch_size": "per process"}
    # validation metrics are the whole split's: evaluate on the saved epoch gives them back
    best = rows[ckpt.metrics["epoch"] - 1]
    again = evaluate([out / "model.ckpt"], dataset=small, split="valid")
    assert again["samples"] == 31 and again["metrics"]["mae"]["mean"] == pytest.approx(best["valid"]["mae"], rel=1e-5)
    state = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    assert len(state["rng_ranks"]) == 2
    # the same folder with another number of processes is another run
    with pytest.raises(TrainingError, match="world_size"):
        train(model_name="lf_lstm", dataset=small, out_dir=out, overrides=TINY_LSTM, epochs=3, batch_size=16, seed=4,
              progress=False, device="cpu")


@pytest.mark.slow
def test_two_processes_resume_as_if_never_interrupted(small, tmp_path):
    """Two torchrun launches (2 epochs, then 3) end where one 3-epoch launch does."""
    for epochs in ("2", "3"):
        res = _torchrun(2, small, tmp_path / "resumed", "--epochs", epochs)
        assert res.returncode == 0, res.stderr[-3000:]
    res = _torchrun(2, small, tmp_path / "full", "--epochs", "3")
    assert res.returncode == 0, res.stderr[-3000:]
    resumed, full = _log(tmp_path / "resumed"), _log(tmp_path / "full")
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    assert [r["valid_loss"] for r in resumed] == pytest.approx([r["valid_loss"] for r in full], abs=1e-6)
    assert [r["train_loss"] for r in resumed] == pytest.approx([r["train_loss"] for r in full], abs=1e-6)
