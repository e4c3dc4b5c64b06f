"""Training writes model.ckpt / log.jsonl, resumes, is deterministic per seed; evaluate and the
CLI; the Predictor; and the asynchronous-fusion claim (MFSA vs single-modality models)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mfsa_pipe.checkpoint import load_checkpoint
from mfsa_pipe.cli import app
from mfsa_pipe.training.evaluation import evaluate
from mfsa_pipe.analysis.inference import Predictor
from mfsa_pipe.training.synthetic import write_synthetic
from mfsa_pipe.training import TrainingError, train

from helpers import OWN_SPEC, own_sequences, write_mult

TINY_LSTM = {"hidden": 8}
TINY_MFSA = dict(d=8, d_h=16, num_heads=2, psa_layers=1, hca_layers=1, fusion_heads=2, fusion_ffn=16, wal_hidden=8)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn") / "syn.pkl"
    write_synthetic(path, seed=0, n_train=96, n_valid=32, n_test=32, text_len=8, audio_len=20, vision_len=24, text_dim=8)
    return path


def _log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_train_writes_outputs_and_resumes(small, tmp_path):
    out = tmp_path / "run"
    r1 = train(model_name="lf_lstm", dataset=small, out_dir=out, overrides=TINY_LSTM, epochs=2, batch_size=16,
               seed=1, progress=False)
    assert (out / "model.ckpt").exists() and (out / "last.ckpt").exists() and (out / "result.json").exists()
    rows = _log(out)
    assert [r["epoch"] for r in rows] == [1, 2] and {"train_loss", "valid_loss", "valid", "lr"} <= set(rows[0])
    assert "mae" in rows[0]["valid"]
    ckpt = load_checkpoint(out / "model.ckpt")
    assert ckpt.training["seed"] == 1 and ckpt.training["dataset"]["sha256"]
    assert ckpt.metrics["valid"]["mae"] == pytest.approx(r1.valid_metrics["mae"])
    assert "test" in ckpt.metrics and ckpt.label_spec.task == "regression"
    # the same command with more epochs continues after epoch 2 ...
    r2 = train(model_name="lf_lstm", dataset=small, out_dir=out, overrides=TINY_LSTM, epochs=4, batch_size=16,
               seed=1, progress=False)
    assert r2.resumed_from == 2 and [r["epoch"] for r in _log(out)] == [1, 2, 3, 4]
    # ... and equals a run that was never interrupted
    full = train(model_name="lf_lstm", dataset=small, out_dir=tmp_path / "full", overrides=TINY_LSTM, epochs=4,
                 batch_size=16, seed=1, progress=False)
    assert [r["valid_loss"] for r in full.history] == pytest.approx([r["valid_loss"] for r in _log(out)], abs=1e-6)
    # a finished run is not redone; other settings in the same folder are refused
    r3 = train(model_name="lf_lstm", dataset=small, out_dir=out, overrides=TINY_LSTM, epochs=4, batch_size=16,
               seed=1, progress=False)
    assert r3.resumed_from == 4 and r3.epochs_run == 4
    with pytest.raises(TrainingError, match="other settings"):
        train(model_name="lf_lstm", dataset=small, out_dir=out, overrides=TINY_LSTM, epochs=4, batch_size=16,
              seed=2, progress=False)


def test_resume_after_interrupt_mid_epoch(small, tmp_path, monkeypatch):
    """An epoch whose state was never saved (the process died) is redone; its log line is dropped."""
    out = tmp_path / "run"
    train(model_name="lf_lstm", dataset=small, out_dir=out, overrides=TINY_LSTM, epochs=1, batch_size=16, seed=0,
          progress=False)
    with open(out / "log.jsonl", "a") as f:  # what a kill between the log write and last.ckpt leaves
        f.write(json.dumps({"epoch": 2, "valid_loss": 123.0}) + "\n" + '{"epoch": 3, "valid')
    r = train(model_name="lf_lstm", dataset=small, out_dir=out, overrides=TINY_LSTM, epochs=2, batch_size=16, seed=0,
              progress=False)
    rows = _log(out)
    assert [row["epoch"] for row in rows] == [1, 2] and rows[1]["valid_loss"] != 123.0 and r.resumed_from == 1


def test_deterministic_per_seed(small, tmp_path):
    kw = dict(model_name="mfsa", dataset=small, overrides=TINY_MFSA, epochs=2, batch_size=16, progress=False)
    a = train(out_dir=tmp_path / "a", seed=5, **kw)
    b = train(out_dir=tmp_path / "b", seed=5, **kw)
    c = train(out_dir=tmp_path / "c", seed=6, **kw)
    assert [r["valid_loss"] for r in a.history] == [r["valid_loss"] for r in b.history]
    assert a.test_metrics == b.test_metrics
    assert [r["valid_loss"] for r in a.history] != [r["valid_loss"] for r in c.history]
    # evaluate: one checkpoint reproduces the training run's test metrics; several aggregate
    res = evaluate([tmp_path / "a" / "model.ckpt"], dataset=small)
    assert res["metrics"]["mae"]["mean"] == pytest.approx(a.test_metrics["mae"], rel=1e-5)
    res = evaluate([tmp_path / "a" / "model.ckpt", tmp_path / "c" / "model.ckpt"], dataset=small, split="valid")
    vals = [a.valid_metrics["mae"], c.valid_metrics["mae"]]
    assert res["metrics"]["mae"]["mean"] == pytest.approx(np.mean(vals), rel=1e-5)
    assert res["metrics"]["mae"]["std"] == pytest.approx(np.std(vals), rel=1e-4, abs=1e-7)
    # the Predictor: raw features in, clipped score and MFSA's modality weights out
    pred = Predictor(tmp_path / "a" / "model.ckpt", device="cpu")
    out = pred.predict([
        {"text": np.ones((3, 8)), "audio": np.zeros((0, 5)), "vision": np.ones((4, 20))},
        {"text": np.ones((1, 8))},  # missing modalities are empty
    ])
    assert len(out) == 2 and -3 <= out[0].prediction.score <= 3 and out[0].raw_score is not None
    assert set(out[0].modality_weights) == {"text", "audio", "vision"}
    assert out[1].lengths == {"text": 1, "audio": 0, "vision": 0}
    with pytest.raises(ValueError, match=r"audio must be \(T, 5\)"):
        pred.predict([{"audio": np.ones((3, 4))}])


def test_augmentation_options_recorded_deterministic_and_off_by_default(small, tmp_path):
    """augment_crop / augment_noise / modality_dropout: off by default, recorded, deterministic per
    seed (also across a resume), and they change only the training samples."""
    from mfsa_pipe.datasets.base import NormStats, PreparedSplit
    from mfsa_pipe.training.evaluation import as_bundle
    from mfsa_pipe.training import AugmentedSplit

    kw = dict(model_name="lf_lstm", dataset=small, overrides=TINY_LSTM, batch_size=16, seed=3, progress=False)
    aug = dict(augment_crop=0.3, augment_noise=0.2, modality_dropout=0.5)
    plain = train(out_dir=tmp_path / "plain", epochs=2, **kw)
    assert load_checkpoint(tmp_path / "plain" / "model.ckpt").training["augment"] == {
        "crop": 0.0, "noise": 0.0, "modality_dropout": 0.0}
    a = train(out_dir=tmp_path / "a", epochs=2, **kw, **aug)
    ckpt = load_checkpoint(tmp_path / "a" / "model.ckpt")
    assert ckpt.training["augment"] == {"crop": 0.3, "noise": 0.2, "modality_dropout": 0.5}
    assert [r["train_loss"] for r in a.history] != [r["train_loss"] for r in plain.history]
    # interrupted after epoch 1 and resumed == never interrupted
    train(out_dir=tmp_path / "b", epochs=1, **kw, **aug)
    b = train(out_dir=tmp_path / "b", epochs=2, **kw, **aug)
    assert b.resumed_from == 1
    assert [r["valid_loss"] for r in _log(tmp_path / "b")] == pytest.approx([r["valid_loss"] for r in a.history], abs=1e-6)
    with pytest.raises(TrainingError, match="other settings"):  # a resume must not silently change them
        train(out_dir=tmp_path / "b", epochs=3, **kw)
    with pytest.raises(TrainingError, match="augment_crop"):
        train(out_dir=tmp_path / "bad", epochs=1, augment_crop=1.0, **kw)
    # the samples: crop keeps a window, noise perturbs, dropout empties one or two modalities, never all
    split = as_bundle(small).splits["train"]
    dims = {m: split[0].features(m).shape[1] for m in ("text", "audio", "vision")}
    prepared = PreparedSplit(split, norm=NormStats.identity(dims))
    s0 = prepared[0]
    crop = AugmentedSplit(prepared, seed=0, crop=0.5)
    lengths = [crop[0].audio.shape[0] for crop.epoch in range(8)]
    assert all(s0.audio.shape[0] // 2 <= n <= s0.audio.shape[0] for n in lengths) and len(set(lengths)) > 1
    crop.epoch = 1
    assert np.array_equal(crop[0].audio, crop[0].audio)  # same (seed, epoch, index): same sample
    noisy = AugmentedSplit(prepared, seed=0, noise=0.5)[0]
    assert noisy.audio.shape == s0.audio.shape and 0.3 < float(np.std(noisy.audio - s0.audio)) < 0.7
    drop = AugmentedSplit(prepared, seed=0, modality_dropout=1.0)
    for i in range(10):
        s = drop[i]
        lost = [m for m in ("text", "audio", "vision") if s.features(m).shape[0] == 0]
        assert 1 <= len(lost) <= 2
    kept = [sum(drop[i].features(m).shape[0] > 0 for m in ("text", "audio", "vision")) for i in range(40)]
    assert set(kept) == {1, 2}  # a uniformly random non-empty proper subset of the three
    whole = AugmentedSplit([dataclasses.replace(s0, meta={**s0.meta, "whole": True})] * 10, seed=0, modality_dropout=1.0)
    assert all(whole[i].features(m).shape[0] > 0 for i in range(10) for m in ("text", "audio", "vision"))
    # the CLI passes them on
    res = CliRunner().invoke(app, ["train", "--model", "lf_lstm", "--dataset", str(small), "--out", str(tmp_path / "cli"),
                                   "--epochs", "1", "--set", "hidden=8", "--quiet", "--augment-noise", "0.1",
                                   "--modality-dropout", "0.2", "--weight-decay", "0.001"])
    assert res.exit_code == 0, res.output
    training = load_checkpoint(tmp_path / "cli" / "model.ckpt").training
    assert training["augment"]["noise"] == 0.1 and training["augment"]["modality_dropout"] == 0.2
    assert training["weight_decay"] == 0.001


def test_column_dropout_drops_one_named_group_and_is_recorded(small, tmp_path):
    """column_dropout / column_groups: groups found by column-name prefix (a prefix that matches
    nothing is refused by name); a dropped group is zero (the training mean) on every row while
    the other columns and modalities stay as they were; recorded in the checkpoint; validated."""
    from mfsa_pipe.datasets.base import NormStats, PreparedSplit
    from mfsa_pipe.training import AugmentedSplit
    from mfsa_pipe.training.data import column_group_indices
    from mfsa_pipe.training.evaluation import as_bundle

    bundle = as_bundle(small)
    dv = bundle.dims[2]
    spec = {m: dict(v) for m, v in bundle.feature_spec.items()}
    spec["vision"]["columns"] = ["emo_a", "emo_b"] + [f"au{i:02d}_est" for i in range(dv - 2)]
    named = dataclasses.replace(bundle, feature_spec=spec)
    groups = column_group_indices(named, ("vision:emo_", "vision:au"))
    assert [(m, idx.tolist()) for m, idx in groups] == [("vision", [0, 1]), ("vision", list(range(2, dv)))]
    with pytest.raises(TrainingError, match="no vision column of this dataset starts with 'pose'"):
        column_group_indices(named, ("vision:pose",))

    dims = dict(zip(("text", "audio", "vision"), named.dims))
    prepared = PreparedSplit(named.splits["train"], norm=NormStats.identity(dims))
    aug = AugmentedSplit(prepared, seed=0, column_dropout=1.0, column_groups=groups)
    lost = []
    for i in range(20):
        s, raw = aug[i], prepared[i]
        zero = [k for k, (_, idx) in enumerate(groups) if np.all(s.vision[:, idx] == 0)]
        assert len(zero) == 1 and np.all(raw.vision != 0)
        kept = groups[1 - zero[0]][1]
        assert np.array_equal(s.vision[:, kept], raw.vision[:, kept])
        assert np.array_equal(s.audio, raw.audio) and np.array_equal(s.text, raw.text)
        lost.append(zero[0])
    assert set(lost) == {0, 1}
    assert all(np.array_equal(AugmentedSplit(prepared, seed=0, column_dropout=0.0, column_groups=groups)[i].vision,
                              prepared[i].vision) for i in range(5))

    kw = dict(model_name="lf_lstm", dataset=named, overrides=TINY_LSTM, epochs=1, batch_size=16, seed=0, progress=False)
    train(out_dir=tmp_path / "run", column_dropout=0.5, column_groups=("vision:au",), **kw)
    assert load_checkpoint(tmp_path / "run" / "model.ckpt").training["augment"]["column_dropout"] == {
        "p": 0.5, "groups": ["vision:au"]}
    with pytest.raises(TrainingError, match="column_dropout needs column_groups"):
        train(out_dir=tmp_path / "bad1", column_dropout=0.5, **kw)
    with pytest.raises(TrainingError, match="'modality:prefix'"):
        train(out_dir=tmp_path / "bad2", column_dropout=0.5, column_groups=("face:au",), **kw)
    with pytest.raises(TrainingError, match=r"column_dropout must be in \[0, 1\]"):
        train(out_dir=tmp_path / "bad3", column_dropout=1.5, column_groups=("vision:au",), **kw)
    res = CliRunner().invoke(app, ["train", "--model", "lf_lstm", "--dataset", str(small), "--out", str(tmp_path / "cli"),
                                   "--epochs", "1", "--set", "hidden=8", "--quiet", "--column-dropout", "0.5",
                                   "--column-group", "vision:au"])
    assert res.exit_code == 2 and "no vision column of this dataset starts with 'au'" in res.output, res.output


def test_resume_tolerates_a_config_field_added_later_at_its_default(small, tmp_path):
    """A run saved before a model-config field existed still resumes when that field is at its
    default (the old behaviour); at another value it is a different run."""
    kw = dict(model_name="mfsa", dataset=small, overrides=TINY_MFSA, batch_size=16, seed=0, progress=False)
    out = tmp_path / "run"
    train(out_dir=out, epochs=1, **kw)
    state = torch.load(out / "last.ckpt", map_location="cpu", weights_only=True)
    settings = json.loads(state["settings"])
    settings["model_config"].pop("use_wal")  # as if saved before the field existed (default True)
    state["settings"] = json.dumps(settings)
    torch.save(state, out / "last.ckpt")
    assert train(out_dir=out, epochs=2, **kw).resumed_from == 1
    state["settings"] = json.dumps(settings)
    torch.save(state, out / "last.ckpt")
    with pytest.raises(TrainingError, match="model_config"):
        train(out_dir=out, epochs=2, **{**kw, "overrides": {**TINY_MFSA, "use_wal": False}})


def test_cli_train_evaluate_json_and_errors(small, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["train", "--model", "lf_lstm", "--dataset", str(small), "--out", str(out), "--epochs", "1",
                              "--seed", "3", "--device", "cpu", "--batch-size", "32", "--set", "hidden=8", "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["evaluate", str(out / "model.ckpt"), str(out / "model.ckpt"), "--dataset", str(small),
                              "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # stdout holds the JSON object only
    assert data["split"] == "test" and data["samples"] == 32 and len(data["per_checkpoint"]) == 2
    assert data["metrics"]["acc2"]["std"] == 0.0
    table = runner.invoke(app, ["evaluate", str(out / "model.ckpt"), "--dataset", str(small)])
    assert table.exit_code == 0 and "acc7" in table.stdout and "mae" in table.stdout
    # bad input: exit 2 and a message, no traceback
    for args in (
        ["evaluate", str(tmp_path / "nope.ckpt"), "--dataset", str(small)],
        ["evaluate", str(out / "model.ckpt"), "--dataset", str(tmp_path / "missing.pkl")],
        ["train", "--model", "nosuch", "--dataset", str(small), "--out", str(tmp_path / "x")],
        ["train", "--model", "lf_lstm", "--dataset", str(small), "--out", str(tmp_path / "y"), "--set", "hidden"],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert "error:" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["make-synthetic", str(tmp_path / "s.pkl"), "--n-train", "4", "--n-valid", "2",
                              "--n-test", "2", "--text-len", "6", "--audio-len", "8", "--vision-len", "8"])
    assert res.exit_code == 0 and (tmp_path / "s.pkl").exists()


def test_spec_mismatch_refused_by_evaluate(small, tmp_path):
    train(model_name="lf_lstm", dataset=small, out_dir=tmp_path / "r", overrides=TINY_LSTM, epochs=1, batch_size=32,
          progress=False)
    other = tmp_path / "other.pkl"
    write_synthetic(other, n_train=4, n_valid=2, n_test=2, text_len=6, audio_len=8, vision_len=8, text_dim=12)
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "r" / "model.ckpt"), "--dataset", str(other), "--json"])
    assert res.exit_code == 2
    assert "text.dim: checkpoint expects 8, found 12" in res.output


def test_own_format_classification_streamed_with_workers(tmp_path):
    """The path `build-dataset` -> train -> evaluate -> Predictor, on the HDF5 format, read by
    DataLoader worker processes (each opens the file itself)."""
    from mfsa_pipe.datasets.h5 import DatasetWriter

    path = tmp_path / "own.h5"
    rng = np.random.default_rng(0)
    with DatasetWriter(path, feature_spec=OWN_SPEC, label_spec={"task": "classification", "classes": ["neg", "pos"]},
                       extraction_config={}) as w:
        for i in range(48):
            split = "train" if i < 32 else "valid" if i < 40 else "test"
            w.add(f"clip{i}", sequences=own_sequences(tuple(int(v) for v in rng.integers(0, 6, 3)), value=float(i % 2)),
                  label=i % 2, split=split, group=f"spk{i % 4}")
    r = train(model_name="lf_lstm", dataset=path, out_dir=tmp_path / "run", overrides=TINY_LSTM, epochs=2,
              batch_size=8, progress=False, num_workers=2)
    assert {"acc", "macro_f1", "weighted_f1"} <= set(r.valid_metrics) and "confusion" in r.test_metrics
    res = evaluate([r.checkpoint], dataset=path)
    assert res["confusion"]["classes"] == ["neg", "pos"] and np.sum(res["confusion"]["matrix"]) == 8
    out = Predictor(r.checkpoint, device="cpu").predict([{"text": np.ones((2, 3)), "audio": np.ones((1, 2))}])
    p = out[0].prediction
    assert p.label in ("neg", "pos") and sum(p.probabilities.values()) == pytest.approx(1.0)
    assert load_checkpoint(r.checkpoint).feature_spec == OWN_SPEC  # the extractors' spec travels


def test_multilabel_iemocap_format(tmp_path):
    path = tmp_path / "iemocap_data_noalign.pkl"
    write_mult(path, iemocap=True)
    r = train(model_name="lf_lstm", dataset=path, out_dir=tmp_path / "run", overrides=TINY_LSTM, epochs=1,
              batch_size=4, progress=False)
    assert {"Neutral_acc", "Angry_f1", "mean_acc"} <= set(r.test_metrics)
    out = Predictor(r.checkpoint, device="cpu").predict([{"text": np.ones((2, 4))}])
    p = out[0].prediction
    assert set(p.probabilities) == {"Neutral", "Happy", "Sad", "Angry"} and p.label in p.probabilities
    assert out[0].labels == [n for n, v in p.probabilities.items() if v >= 0.5]


def test_presets_of_both_papers_take_the_data_fields(small):
    """--preset picks MFSA's section 4.2 or MulT's Table 5 values; the data still decides dims and
    task, and --set overrides the preset."""
    from mfsa_pipe.datasets import open_dataset
    from mfsa_pipe.training import TrainSettings, build_config

    bundle = open_dataset(small)
    mult = build_config("mult", bundle, preset="mosi", overrides={"layers": 2})
    assert (mult.d, mult.num_heads, mult.attn_dropout) == (40, 10, 0.2)
    assert TrainSettings.resolve(model_name="mult", preset="mosi").batch_size == 128  # the preset's training half
    assert mult.layers == 2 and mult.mem_layers == 3 and mult.dims == tuple(bundle.dims)
    mfsa = build_config("mfsa", bundle, preset="mosei", overrides={})
    assert (mfsa.num_heads, mfsa.mu) == (10, 0.15) and mfsa.dims == tuple(bundle.dims)
    assert TrainSettings.resolve(model_name="mfsa", preset="mosei").lr == 3e-3
    with pytest.raises(TrainingError, match="has no presets"):
        build_config("ef_lstm", bundle, preset="mosi", overrides={})


def test_cpu_training_and_evaluation_ask_for_the_allocator_setting(small, tmp_path, monkeypatch):
    """The training loop and run_model (validation, evaluate) call keep_freed_memory_if_room on CPU
    after their batches; the function itself decides once (tests/test_cpu_memory.py)."""
    import mfsa_pipe.training.evaluation
    import mfsa_pipe.training.loop

    calls = []
    monkeypatch.setattr(mfsa_pipe.training.loop, "keep_freed_memory_if_room", lambda: calls.append("train"))
    monkeypatch.setattr(mfsa_pipe.training.evaluation, "keep_freed_memory_if_room", lambda: calls.append("eval"))
    train(model_name="lf_lstm", dataset=small, out_dir=tmp_path / "run", overrides=TINY_LSTM, epochs=1, batch_size=32,
          seed=0, progress=False, device="cpu")
    assert calls.count("train") == 3 and "eval" in calls  # 96 training samples in batches of 32


def test_evaluate_default_names_the_shipped_checkpoint(tmp_path):
    """`evaluate default` scores mfsa_pipe/default_model/model.ckpt (the one analyze uses) on a
    dataset written with its feature and label specs."""
    from extractors.sequence import Sequence
    from mfsa_pipe.datasets.h5 import DatasetWriter
    from mfsa_pipe.default_model import default_checkpoint_path

    shipped = default_checkpoint_path()
    assert shipped is not None
    ckpt = load_checkpoint(shipped)
    path = tmp_path / "default_like.h5"
    rng = np.random.default_rng(0)
    with DatasetWriter(path, feature_spec=ckpt.feature_spec, label_spec=ckpt.label_spec, extraction_config={}) as w:
        for i in range(6):
            seqs = {}
            for m, t in (("text", 2), ("audio", 10), ("vision", 12)):
                spec = ckpt.feature_spec[m]
                seqs[m] = Sequence(features=rng.random((t, spec["dim"])) + 0.5,
                                   times=np.stack([np.arange(t) * 0.1, np.arange(t) * 0.1 + 0.1], 1),
                                   columns=spec["columns"], rate=spec["rate"], source={"id": spec["id"], "version": spec["version"]},
                                   tokens=[f"w{k}" for k in range(t)] if m == "text" else None)
            w.add(f"clip{i}", sequences=seqs, label=np.array([i % 7, i % 3 if i < 5 else -1]), split="test")
    res = CliRunner().invoke(app, ["evaluate", "default", "--dataset", str(path), "--split", "test", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["checkpoints"] == [str(shipped)] and data["samples"] == 6
    # the shipped model has two heads: each head's metrics under its name, as a single head's
    for head, labelled in (("emotion", 6), ("sentiment", 5)):
        assert {"acc", "weighted_f1", "macro_f1", "ece"} <= set(data["metrics"][head])
        assert np.sum(data["confusion"][head]["matrix"]) == labelled
    # a name that is neither `default` nor a file is still a plain missing file
    res = CliRunner().invoke(app, ["evaluate", "defaults", "--dataset", str(path)])
    assert res.exit_code == 2 and "no such checkpoint" in res.output


def test_preset_trains_the_papers_fixed_epoch_protocol(small, tmp_path):
    """An MFSA --preset brings section 4.2's protocol: Adam for a fixed number of epochs (no early
    stopping, no LR schedule, no clipping, features as given), the last epoch kept; recorded."""
    from mfsa_pipe.training import EarlyStopping, TrainSettings, TrainState
    from mfsa_pipe.training.settings import TRAINING_KEYS

    paper = TrainSettings.resolve(model_name="mfsa", preset="mosei")
    assert (paper.protocol, paper.epochs, paper.batch_size, paper.lr) == ("paper", 100, 64, 3e-3)
    assert (paper.patience, paper.scheduler, paper.clip_grad, paper.selection, paper.normalize) == (
        None, "none", 0.0, "last", False)
    assert "a fixed 100 epochs" in paper.describe() and "no gradient clipping" in paper.describe()
    recipe = TrainSettings.resolve(model_name="mfsa")  # no preset: our recipe, as before
    assert (recipe.protocol, recipe.patience, recipe.scheduler, recipe.clip_grad, recipe.selection) == (
        "recipe", 10, "plateau", 0.8, "best")
    assert TrainSettings.resolve(model_name="mult", preset="mosi").protocol == "recipe"
    # the counters: a rising validation loss stops the recipe, never the paper's protocol
    rising = [1.0, 1.1, 1.2, 1.3]
    for settings, stops_at, kept in ((TrainSettings(patience=2), 3, 1), (paper, None, 4)):
        state, stopper = TrainState(norm=None), EarlyStopping(patience=settings.patience, selection=settings.selection)
        for epoch, loss in enumerate(rising, 1):
            stopper.update(state, epoch=epoch, loss=loss, metrics={"loss": loss})
            if state.stopped_early:
                break
        assert (epoch if state.stopped_early else None, state.best_epoch) == (stops_at, kept)
    # a run: the CLI with --preset mosi trains exactly --epochs epochs at a constant lr
    out = tmp_path / "paper"
    sets = [a for k, v in {**TINY_MFSA, "num_heads": 2}.items() for a in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, ["train", "--model", "mfsa", "--preset", "mosi", "--dataset", str(small), "--out",
                                   str(out), "--epochs", "3", "--batch-size", "32", "--quiet", *sets])
    assert res.exit_code == 0, res.output
    rows = _log(out)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and {r["lr"] for r in rows} == {1e-3}
    assert {r["protocol"] for r in rows} == {"paper"}
    ckpt = load_checkpoint(out / "model.ckpt")
    assert ckpt.metrics["epoch"] == 3 and ckpt.training["protocol"] == "paper"
    assert (ckpt.training["scheduler"], ckpt.training["clip_grad"], ckpt.training["patience"]) == ("none", 0.0, None)
    assert ckpt.training["early_stopping"] == "none (fixed epochs)" and ckpt.training["normalize"] is False
    assert all(np.all(ckpt.normalization.std[m] == 1) for m in ckpt.normalization.std)
    assert not set(TRAINING_KEYS) & set(ckpt.model_config)  # the run's settings, not the model's
    assert json.loads((out / "result.json").read_text())["protocol"] == "paper"
