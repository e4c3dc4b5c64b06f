"""Multihead (emotion + sentiment, -1 = unlabelled) through training, evaluation and temperature
calibration; single-head classification checkpoints with and without calibration."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mfsa_pipe.checkpoint import load_checkpoint, save_checkpoint
from mfsa_pipe.cli import app
from mfsa_pipe.datasets.base import MODALITIES, ArraySplit, DatasetBundle, NormStats, PreparedSplit
from mfsa_pipe.training.evaluation import calibrate, evaluate, run_model
from mfsa_pipe.training import TrainingError, train

TINY_MFSA = dict(d=8, d_h=16, num_heads=2, psa_layers=1, hca_layers=1, fusion_heads=2, fusion_ffn=16, wal_hidden=8)
HEADS = [{"name": "emotion", "classes": ["neutral", "happy", "sad"]},
         {"name": "sentiment", "classes": ["negative", "neutral", "positive"]}]
DIMS = {"text": 3, "audio": 2, "vision": 4}
SPEC = {m: {"id": f"test/{m}", "version": "1", "config": {}, "dim": d, "rate": None if m == "text" else 10.0,
            "columns": [f"{m}{i}" for i in range(d)]} for m, d in DIMS.items()}


def make_bundle(task="multihead", sizes=(48, 24, 24), seed=0):
    """Features carry the emotion class (a shift of the audio/vision means); sentiment follows it
    (happy -> positive, sad -> negative) with noise. About a third of the labels are -1."""
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in zip(("train", "valid", "test"), sizes):
        emotion = rng.integers(0, 3, n)
        sentiment = np.where(rng.random(n) < 0.8, np.array([1, 2, 0])[emotion], rng.integers(0, 3, n))
        lengths = {m: rng.integers(1, 7, n) for m in MODALITIES}
        lengths["text"][:3] = 0  # some samples without words
        arrays = {m: (rng.normal(size=(n, 6, d)) + emotion[:, None, None]).astype(np.float32) for m, d in DIMS.items()}
        if task == "multihead":
            labels = np.stack([emotion, sentiment], 1).astype(np.int64)
            labels[rng.random(n) < 0.3, 0] = -1
            labels[rng.random(n) < 0.4, 1] = -1
            labels[0] = [0, -1]  # every split has both kinds of gap
            labels[1] = [-1, 2]
            labels = list(labels)
        else:
            labels = [int(v) for v in emotion]
        splits[name] = ArraySplit(ids=[f"{name}{i}" for i in range(n)], arrays=arrays, lengths=lengths, labels=labels)
    label_spec = ({"task": "multihead", "heads": HEADS} if task == "multihead"
                  else {"task": "classification", "classes": HEADS[0]["classes"]})
    return DatasetBundle(splits=splits, feature_spec=SPEC, label_spec=label_spec, source={"format": "memory", "path": None})


def test_validation_loss_is_the_split_level_multihead_loss():
    """run_model collates (H,) labels with -1s into (B, H) and reports the exact split-level task
    loss (models.base.multihead_loss over all samples), whatever the batch size."""
    from models.base import multihead_loss
    from models.registry import build_model, config_from_dict

    bundle = make_bundle()
    torch.manual_seed(0)
    model = build_model("lf_lstm", config_from_dict("lf_lstm", {"dims": [3, 2, 4], "task": "multihead",
                                                                "head_sizes": [3, 3], "hidden": 8}))
    split = PreparedSplit(bundle.splits["valid"], norm=NormStats.identity(DIMS))
    losses = []
    for bs in (5, 24):
        res = run_model(model, split, task="multihead", dims=DIMS, batch_size=bs, device=torch.device("cpu"))
        assert res.prediction.shape == (24, 6) and res.truth.shape == (24, 2) and (res.truth == -1).any()
        exact = multihead_loss(torch.from_numpy(res.prediction), torch.from_numpy(res.truth), (3, 3))
        assert res.losses["task"] == pytest.approx(float(exact), rel=1e-5)
        losses.append(res.losses["task"])
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_multihead_train_calibrate_evaluate(tmp_path, monkeypatch):
    bundle = make_bundle()
    out = tmp_path / "run"
    r = train(model_name="mfsa", dataset=bundle, out_dir=out, overrides=TINY_MFSA, epochs=2, batch_size=8, seed=0,
              progress=False, modality_dropout=0.3, calibrate=True)
    ckpt = load_checkpoint(r.checkpoint)
    assert list(ckpt.model_config["head_sizes"]) == [3, 3] and ckpt.label_spec.to_dict()["heads"] == HEADS
    # what the run used is recorded
    from mfsa_pipe.presence import DEFAULT_RULE

    assert ckpt.training["presence_rule"] == DEFAULT_RULE.to_dict()
    assert ckpt.training["modality_dropout"]["p"] == 0.3 and ckpt.training["augment"]["modality_dropout"] == 0.3
    assert ckpt.training["calibrate"] is True
    # temperatures per head, fitted on valid; NLL not worse than T = 1
    temps = ckpt.calibration["temperature"]
    assert set(temps) == {"emotion", "sentiment"} and all(0.05 <= t <= 20 for t in temps.values())
    cal = ckpt.metrics["calibration"]
    assert cal["split"] == "valid"
    for head in ("emotion", "sentiment"):
        assert cal[head]["temperature"] == pytest.approx(temps[head])
        assert {"ece_before", "ece_after"} <= set(cal[head]) and cal[head]["nll_after"] <= cal[head]["nll_before"] + 1e-9
        assert ckpt.temperature(head) == pytest.approx(temps[head])
    # validation metrics per head in the log (no confusion there), selection on the task loss
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(math.isfinite(row["valid_loss"]) for row in rows)
    assert {"acc", "weighted_f1", "macro_f1", "ece", "n"} <= set(rows[0]["valid"]["emotion"])
    assert "confusion" not in rows[0]["valid"]["emotion"] and "mean_weighted_f1" in rows[0]["valid"]
    # test metrics per head in the checkpoint, equal to what evaluate computes (temperatures applied)
    test = ckpt.metrics["test"]
    assert test["sentiment"]["n"] == sum(int(lab[1] >= 0) for lab in bundle.splits["test"].labels)
    res = evaluate([r.checkpoint], dataset=bundle)
    for head in ("emotion", "sentiment"):
        for key in ("acc", "macro_f1", "weighted_f1", "ece"):
            assert res["metrics"][head][key]["mean"] == pytest.approx(test[head][key], rel=1e-6, abs=1e-9)
        cm = res["confusion"][head]
        assert cm["classes"] == [h for h in HEADS if h["name"] == head][0]["classes"]
        assert np.sum(cm["matrix"]) == test[head]["n"] and cm["matrix"] == test[head]["confusion"]
    assert res["metrics"]["mean_weighted_f1"]["mean"] == pytest.approx(test["mean_weighted_f1"])
    assert res["metrics"]["loss"]["mean"] == pytest.approx(test["loss"], rel=1e-5)
    # without the temperatures only the ECE changes
    plain = load_checkpoint(r.checkpoint)
    plain.calibration = {}
    save_checkpoint(plain, tmp_path / "plain.ckpt")
    res2 = evaluate([tmp_path / "plain.ckpt", r.checkpoint], dataset=bundle)
    per = res2["per_checkpoint"]
    assert per[0]["emotion"]["acc"] == per[1]["emotion"]["acc"]
    assert per[0]["emotion"]["ece"] != pytest.approx(per[1]["emotion"]["ece"])
    assert res2["metrics"]["emotion"]["ece"]["std"] > 0 and res2["metrics"]["emotion"]["acc"]["std"] == 0
    assert np.sum(res2["confusion"]["emotion"]["matrix"]) == 2 * test["emotion"]["n"]  # summed over both
    # the CLI: --json puts each head's metrics under its name; the table shows them dotted
    import mfsa_pipe.training.evaluation

    monkeypatch.setattr(mfsa_pipe.training.evaluation, "open_dataset", lambda path: bundle)
    cli = CliRunner().invoke(app, ["evaluate", r.checkpoint, "--dataset", "memory.h5", "--json"])
    assert cli.exit_code == 0, cli.output
    data = json.loads(cli.stdout)
    assert set(data["metrics"]) >= {"emotion", "sentiment", "mean_weighted_f1", "loss"}
    assert set(data["metrics"]["emotion"]["acc"]) == {"mean", "std", "values"}
    assert set(data["confusion"]) == {"emotion", "sentiment"} and data["per_checkpoint"][0]["sentiment"]["n"] > 0
    table = CliRunner().invoke(app, ["evaluate", r.checkpoint, "--dataset", "memory.h5"])
    assert table.exit_code == 0 and "emotion.acc" in table.stdout and "sentiment confusion" in table.stdout


def test_single_head_calibration_and_cli_flag(tmp_path, monkeypatch):
    bundle = make_bundle("classification")
    kw = dict(model_name="lf_lstm", dataset=bundle, overrides={"hidden": 8}, epochs=2, batch_size=8, seed=0,
              progress=False)
    r = train(out_dir=tmp_path / "plain", **kw)
    ckpt = load_checkpoint(r.checkpoint)
    assert ckpt.calibration == {} and ckpt.temperature("classification") == 1.0 and "ece" in ckpt.metrics["test"]
    assert "calibration" not in ckpt.metrics and ckpt.training["calibrate"] is False
    # calibrate() on a saved checkpoint: a new Checkpoint, the input is left alone
    cal = calibrate(r.checkpoint, bundle, split="valid", device="cpu")
    t = cal.calibration["temperature"]["classification"]
    assert 0.05 <= t <= 20 and cal.temperature("classification") == t and ckpt.calibration == {}
    report = cal.metrics["calibration"]["classification"]
    assert report["samples"] == 24 and report["nll_after"] <= report["nll_before"] + 1e-9
    assert cal.metrics["test"] == ckpt.metrics["test"]  # the other metrics are kept
    save_checkpoint(cal, tmp_path / "cal.ckpt")
    res = evaluate([r.checkpoint, tmp_path / "cal.ckpt"], dataset=bundle)
    accs, eces = res["metrics"]["acc"]["values"], res["metrics"]["ece"]["values"]
    assert accs[0] == accs[1] and eces[0] != pytest.approx(eces[1])
    # the same through train(calibrate=True) and the CLI's --calibrate
    r2 = train(out_dir=tmp_path / "cal", calibrate=True, **kw)
    assert load_checkpoint(r2.checkpoint).calibration["temperature"]["classification"] == pytest.approx(t, rel=1e-6)
    import mfsa_pipe.training.evaluation

    monkeypatch.setattr(mfsa_pipe.training.evaluation, "open_dataset", lambda path: bundle)
    cli = CliRunner().invoke(app, ["train", "--model", "lf_lstm", "--dataset", "memory.h5", "--out",
                                   str(tmp_path / "cli"), "--epochs", "1", "--set", "hidden=8", "--quiet",
                                   "--calibrate", "--modality-dropout", "0.5"])
    assert cli.exit_code == 0, cli.output
    saved = load_checkpoint(tmp_path / "cli" / "model.ckpt")
    assert "classification" in saved.calibration["temperature"] and saved.training["modality_dropout"]["p"] == 0.5


def test_calibration_refused_for_regression(tmp_path):
    from mfsa_pipe.training.synthetic import write_synthetic

    path = tmp_path / "syn.pkl"
    write_synthetic(path, seed=0, n_train=16, n_valid=8, n_test=8, text_len=6, audio_len=8, vision_len=8, text_dim=8)
    with pytest.raises(TrainingError, match="temperature scaling"):
        train(model_name="lf_lstm", dataset=path, out_dir=tmp_path / "r", overrides={"hidden": 8}, epochs=1,
              progress=False, calibrate=True)
    r = train(model_name="lf_lstm", dataset=path, out_dir=tmp_path / "r", overrides={"hidden": 8}, epochs=1,
              progress=False)
    with pytest.raises(ValueError, match="classification and multihead"):
        calibrate(r.checkpoint, path)
