"""The decision bias for samples with words: metrics.fit_class_bias, MFSAConfig.text_logit_bias and
training.evaluation.fit_text_logit_bias (the default model's emotion head reads words with the
training mix's class prior; the bias restores the sentences')."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import batch, run, tiny
from mfsa_pipe.checkpoint import load_checkpoint, save_checkpoint
from mfsa_pipe.datasets.base import DatasetBundle, DatasetError
from mfsa_pipe.training import train
from mfsa_pipe.training.evaluation import calibrate, evaluate, fit_text_logit_bias
from mfsa_pipe.training.metrics import fit_class_bias, weighted_f1
from models.mfsa import MFSA, MFSAConfig
from test_multihead import TINY_MFSA, make_bundle


def test_fit_class_bias_undoes_a_shifted_prior():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 3000)
    logits = rng.normal(size=(3000, 4))
    logits[np.arange(3000), labels] += 1.5
    shifted = logits + np.array([1.5, 0.0, 0.0, 0.0])  # class 0 said far too often
    bias = fit_class_bias(shifted, labels)
    assert abs(bias.sum()) < 1e-9  # centred
    assert bias[0] < bias[1:].min() - 0.8  # the shift taken back
    before, after = weighted_f1(labels, shifted.argmax(1)), weighted_f1(labels, (shifted + bias).argmax(1))
    assert after > before + 0.05 and after >= weighted_f1(labels, logits.argmax(1)) - 0.01
    assert np.array_equal(fit_class_bias(shifted[:0], labels[:0]), np.zeros(4))
    with pytest.raises(ValueError, match="logits \\(N, C\\) and labels \\(N,\\)"):
        fit_class_bias(shifted[:10], labels[:9])


def test_fit_class_bias_keeps_zero_where_nothing_gains():
    labels = np.array([0, 1, 2, 0, 1, 2])
    logits = np.eye(3)[labels] * 3.0  # already right everywhere
    assert np.array_equal(fit_class_bias(logits, labels), np.zeros(3))


@pytest.mark.parametrize("task,heads", [("classification", dict(num_classes=3)), ("multihead", dict(head_sizes=(3, 2)))])
def test_mfsa_adds_the_bias_to_samples_with_words_in_evaluation_only(task, heads):
    torch.manual_seed(0)
    bias = (0.5, -0.25, -0.25) + ((1.0, -1.0) if task == "multihead" else ())
    model = MFSA(tiny("mfsa", task=task, **heads, text_logit_bias=bias))
    plain = MFSA(tiny("mfsa", task=task, **heads))
    plain.load_state_dict(model.state_dict())  # no weight of its own: the same state dict
    assert set(model.state_dict()) == set(plain.state_dict())
    inputs = batch(((4, 3, 2), (0, 3, 2), (2, 0, 0)))  # words + voice + face, no words, words alone
    model.eval(), plain.eval()
    diff = run(model, inputs).prediction - run(plain, inputs).prediction
    assert torch.allclose(diff[[0, 2]], torch.tensor(bias).expand(2, -1), atol=1e-5)
    assert torch.allclose(diff[1], torch.zeros(len(bias)), atol=1e-6)
    model.train(), plain.train()
    torch.manual_seed(1)
    trained = run(model, inputs).prediction
    torch.manual_seed(1)
    assert torch.allclose(trained, run(plain, inputs).prediction)  # not while training


def test_text_logit_bias_is_validated_and_old_configs_read_without_it():
    with pytest.raises(ValueError, match="one finite number per output logit \\(3\\)"):
        MFSAConfig(task="classification", num_classes=3, text_logit_bias=(0.1, 0.2))
    with pytest.raises(ValueError, match="one finite number per output logit"):
        MFSAConfig(task="classification", num_classes=2, text_logit_bias=(0.1, float("nan")))
    with pytest.raises(ValueError, match="needs a classification or multihead task"):
        MFSAConfig(task="regression", text_logit_bias=(0.1,))
    saved = json.loads(json.dumps(MFSAConfig(task="classification", num_classes=2, text_logit_bias=(0.5, -0.5)).to_dict()))
    assert MFSAConfig.from_dict(saved).text_logit_bias == (0.5, -0.5)
    old = MFSAConfig.from_dict({k: v for k, v in saved.items() if k != "text_logit_bias"})
    assert old.text_logit_bias == () and MFSA(old).text_bias is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    bundle = make_bundle()
    run_ = train(model_name="mfsa", dataset=bundle, out_dir=tmp_path_factory.mktemp("run"), overrides=TINY_MFSA,
                 epochs=2, batch_size=8, seed=0, progress=False, calibrate=True)
    return bundle, load_checkpoint(run_.checkpoint)


def test_fit_text_logit_bias_fits_the_named_heads_on_samples_with_words(trained, tmp_path):
    bundle, ckpt = trained
    fitted = fit_text_logit_bias(ckpt, bundle, "train", heads=["emotion"], scale=0.5, device="cpu")
    bias = fitted.model_config["text_logit_bias"]
    assert len(bias) == 6 and bias[3:] == [0.0, 0.0, 0.0] and any(bias[:3])  # sentiment: none
    report = fitted.metrics["text_logit_bias"]
    train_split = bundle.split("train")
    with_words = sum(train_split[i].text.shape[0] > 0 for i in range(len(train_split)))
    assert report["split"] == "train" and report["scale"] == 0.5 and report["samples"] == with_words
    assert np.allclose(report["emotion"]["bias"], bias[:3])
    full = fit_text_logit_bias(ckpt, bundle, "train", heads=["emotion"], device="cpu")
    assert np.allclose(bias[:3], 0.5 * np.array(full.model_config["text_logit_bias"][:3]), atol=1e-3)  # scale shrinks
    assert full.metrics["text_logit_bias"]["emotion"]["weighted_f1_after"] >= report["emotion"]["weighted_f1_before"]
    assert ckpt.model_config.get("text_logit_bias", ()) in ((), [])  # the input checkpoint is left alone
    # the bias lives in the model config: saved, loaded, built and evaluated with it
    path = save_checkpoint(calibrate(fitted, bundle, "valid", device="cpu"), tmp_path / "biased.ckpt")
    model = load_checkpoint(path).build_model(device="cpu")
    assert torch.allclose(model.text_bias, torch.tensor(bias, dtype=torch.float32))
    assert "emotion" in evaluate([str(path)], dataset=bundle, split="test", device="cpu")["metrics"]
    # refitting starts from the unbiased model: the same bias again
    again = fit_text_logit_bias(load_checkpoint(path), bundle, "train", heads=["emotion"], scale=0.5, device="cpu")
    assert again.model_config["text_logit_bias"] == bias


def test_fit_text_logit_bias_refuses_what_it_cannot_do(trained):
    bundle, ckpt = trained
    with pytest.raises(ValueError, match="heads must name some of \\['emotion', 'sentiment'\\]"):
        fit_text_logit_bias(ckpt, bundle, "train", heads=["valence"], device="cpu")
    with pytest.raises(ValueError, match="scale must be > 0"):
        fit_text_logit_bias(ckpt, bundle, "train", heads=["emotion"], scale=0, device="cpu")
    no_words = [s for s in (bundle.split("train")[i] for i in range(len(bundle.split("train")))) if s.text.shape[0] == 0]
    empty = DatasetBundle(splits={"train": no_words}, feature_spec=bundle.feature_spec, label_spec=bundle.label_spec,
                          source={"format": "test", "path": "no words"})
    with pytest.raises(DatasetError, match="no sample with words"):
        fit_text_logit_bias(ckpt, empty, "train", heads=["emotion"], device="cpu")


def test_fit_text_bias_command_writes_a_biased_calibrated_checkpoint(trained, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import mfsa_pipe.training.evaluation
    from mfsa_pipe.cli import app

    bundle, ckpt = trained
    source = save_checkpoint(ckpt, tmp_path / "plain.ckpt")
    monkeypatch.setattr(mfsa_pipe.training.evaluation, "open_dataset", lambda path: bundle)
    out = tmp_path / "biased.ckpt"
    res = CliRunner().invoke(app, ["fit-text-bias", str(source), "--dataset", "memory.h5", "--out", str(out),
                                   "--head", "emotion", "--scale", "0.5", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # the console wraps long lines
    assert "emotion: weighted F1 on" in said and "temperatures on [valid]" in said
    written = load_checkpoint(out)
    expected = fit_text_logit_bias(ckpt, bundle, "train", heads=["emotion"], scale=0.5, device="cpu")
    assert written.model_config["text_logit_bias"] == expected.model_config["text_logit_bias"]
    assert written.metrics["calibration"]["split"] == "valid"
    bad = CliRunner().invoke(app, ["fit-text-bias", str(source), "--dataset", "memory.h5", "--out",
                                   str(tmp_path / "bad.ckpt"), "--head", "valence", "--device", "cpu"])
    assert bad.exit_code != 0 and "heads must name some of" in " ".join(bad.output.split())
    assert not (tmp_path / "bad.ckpt").exists()
