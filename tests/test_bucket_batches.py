"""Length-bucketed training batches (mfsa_pipe/training/batching.py) and MFSA's pooled read-out
(`pooled_logits`), the two additions the default model's recipe uses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import batch, run, tiny
from mfsa_pipe.checkpoint import load_checkpoint
from mfsa_pipe.training import train
from mfsa_pipe.training.batching import BucketBatchSampler
from models.layers import PresentStandardizer
from models.mfsa import MFSA, MFSAConfig, pooled_statistics

TINY_MFSA = dict(d=8, d_h=16, num_heads=2, psa_layers=1, hca_layers=1, fusion_heads=2, fusion_ffn=16, wal_hidden=8)


def _lengths(n=500, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, 120, (n, 3))
    rows[rng.random(n) < 0.5, 1:] = 0  # half are text-only, as the default recipe's sentences
    return rows


def _epoch(lengths, *, seed, batch_size=16, window=4, rank=0, world=1):
    sampler = BucketBatchSampler(lengths, batch_size=batch_size, generator=torch.Generator().manual_seed(seed),
                                 window=window, rank=rank, world_size=world)
    return list(sampler), sampler


def test_every_sample_once_per_epoch_in_a_seeded_order():
    lengths = _lengths()
    batches, sampler = _epoch(lengths, seed=3)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert len(batches) == len(sampler) == int(np.ceil(len(lengths) / 16))
    assert _epoch(lengths, seed=3)[0] == batches  # same (seed, epoch) generator: same epoch
    assert _epoch(lengths, seed=4)[0] != batches


def test_batches_group_modality_patterns_and_lengths():
    lengths = _lengths()
    batches, _ = _epoch(lengths, seed=0)
    padded = lambda bs: sum(len(b) * lengths[b].max(0).sum() for b in bs)  # noqa: E731  rows after padding
    mixed = [b for b in batches if len({tuple(lengths[i] > 0) for i in b}) > 1]
    assert len(mixed) <= int(np.ceil(len(lengths) / (4 * 16)))  # one straddles the pattern change per window
    rng = np.random.default_rng(0)
    plain = np.array_split(rng.permutation(len(lengths)), len(batches))
    assert padded(batches) < 0.75 * padded([list(b) for b in plain])


def test_processes_share_one_list_of_batches():
    lengths = _lengths(n=203)
    shares = [_epoch(lengths, seed=1, rank=r, world=2) for r in range(2)]
    assert len(shares[0][0]) == len(shares[1][0]) == len(shares[0][1])
    seen = set(shares[0][1].last) | set(shares[1][1].last)
    assert seen == set(range(len(lengths)))


def test_training_with_buckets_is_recorded_and_resumes(tmp_path):
    from mfsa_pipe.training.synthetic import write_synthetic
    from mfsa_pipe.training import TrainingError

    data = write_synthetic(tmp_path / "syn.pkl", seed=0, n_train=40, n_valid=8, n_test=8, text_len=6, audio_len=8,
                           vision_len=8, text_dim=8)
    common = dict(model_name="mfsa", dataset=data, out_dir=tmp_path / "run", overrides={**TINY_MFSA, "pooled_logits": True},
                  batch_size=8, progress=False, device="cpu", bucket_batches=True)
    train(**common, epochs=1)
    r = train(**common, epochs=2)  # resumes the first epoch
    ckpt = load_checkpoint(r.checkpoint)
    assert ckpt.training["bucket_batches"] is True and "length-bucketed" in ckpt.training["protocol_description"]
    assert ckpt.model_config["pooled_logits"] is True
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    with pytest.raises(TrainingError, match="bucket_batches"):  # the batches are part of what a resume must keep
        train(**{**common, "bucket_batches": False}, epochs=3)


def test_cli_flag_reaches_the_run(tmp_path):
    from typer.testing import CliRunner

    from mfsa_pipe.cli import app
    from mfsa_pipe.training.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "syn.pkl", seed=0, n_train=16, n_valid=8, n_test=8, text_len=6, audio_len=8,
                           vision_len=8, text_dim=8)
    result = CliRunner().invoke(app, ["train", "--model", "lf_lstm", "--dataset", str(data), "--out", str(tmp_path / "r"),
                                      "--epochs", "1", "--set", "hidden=8", "--quiet", "--bucket-batches"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "r" / "model.ckpt").training["bucket_batches"] is True


def test_pooled_statistics_are_the_masked_mean_and_std():
    x = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    stats = pooled_statistics(x, mask)
    real = x[0, :3].numpy()
    assert np.allclose(stats[0, :3].numpy(), real.mean(0), atol=1e-6)
    assert np.allclose(stats[0, 3:].numpy(), real.std(0), atol=1e-3)
    assert torch.equal(stats[1], torch.zeros(6))  # no real row: nothing


def test_pooled_statistics_with_extremes_add_the_masked_max_and_min():
    x = torch.randn(2, 5, 3)
    x[0, 3:] = 100.0  # padding rows must not win the max
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    stats = pooled_statistics(x, mask, extremes=True)
    real = x[0, :3].numpy()
    assert stats.shape == (2, 12)
    assert torch.equal(stats[:, :6], pooled_statistics(x, mask))
    assert np.allclose(stats[0, 6:9].numpy(), real.max(0)) and np.allclose(stats[0, 9:].numpy(), real.min(0))
    assert torch.equal(stats[1], torch.zeros(12))  # no real row: zeros, not infinities


def test_pooled_extremes_per_modality_train_and_leave_an_absent_modality_out():
    torch.manual_seed(0)
    model = MFSA(tiny("mfsa", task="classification", num_classes=3, pooled_logits=True,
                      pooled_extremes=(True, False, False)))
    assert model.pooled[0][1].in_features == 4 * model.config.dims[0]
    assert model.pooled[1][1].in_features == 2 * model.config.dims[1]
    inputs = batch(((5, 0, 9), (3, 0, 4)))
    out = run(model, inputs, labels=torch.tensor([0, 2]))
    out.loss.backward()
    assert torch.isfinite(model.pooled[0][1].weight.grad).all() and model.pooled[0][1].weight.grad.abs().sum() > 0
    model.eval()
    base = run(model, inputs).prediction
    with torch.no_grad():
        model.pooled[1][1].bias.fill_(5.0)
    assert torch.allclose(run(model, inputs).prediction, base)


def test_pooled_logits_leave_an_absent_modality_out_exactly():
    torch.manual_seed(0)
    model = MFSA(tiny("mfsa", task="classification", num_classes=3, pooled_logits=True)).eval()
    inputs = batch(((5, 0, 9), (3, 0, 4)))
    base = run(model, inputs).prediction
    with torch.no_grad():  # the audio read-out's weights and bias cannot reach a sample without audio
        model.pooled[1][1].weight.fill_(5.0)
        model.pooled[1][1].bias.fill_(5.0)
    assert torch.allclose(run(model, inputs).prediction, base)
    with torch.no_grad():
        model.pooled[0][1].bias.fill_(5.0)  # the text read-out does
    assert not torch.allclose(run(model, inputs).prediction, base)


def test_pooled_logits_config_is_validated_and_old_configs_read_without_it():
    with pytest.raises(ValueError, match="pooled_logits must be a bool"):
        MFSAConfig(pooled_logits="yes")
    with pytest.raises(ValueError, match="pooled_extremes must be three bools"):
        MFSAConfig(pooled_logits=True, pooled_extremes=(True,))
    with pytest.raises(ValueError, match="pooled_extremes needs pooled_logits"):
        MFSAConfig(pooled_extremes=(True, False, False))
    assert MFSAConfig.from_dict(MFSAConfig(pooled_logits=True, pooled_extremes=(True, False, False)).to_dict()
                                ).pooled_extremes == (True, False, False)
    saved = MFSAConfig().to_dict()
    saved.pop("pooled_logits")
    saved.pop("pooled_extremes")
    assert MFSAConfig.from_dict(saved).pooled_logits is False


def test_present_standardizer_uses_present_rows_only_and_its_running_statistics_in_eval():
    torch.manual_seed(0)
    scaler = PresentStandardizer(2, momentum=1.0)
    x = torch.tensor([[1.0, 10.0], [3.0, 30.0], [0.0, 0.0]])  # the third sample lacks the modality
    present = torch.tensor([True, True, False])
    out = scaler(x, present)
    assert torch.allclose(out[:2], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]), atol=1e-3)
    assert torch.equal(out[2], torch.zeros(2))  # absent stays exactly zero
    assert torch.allclose(scaler.running_mean, torch.tensor([2.0, 20.0]))
    assert torch.allclose(scaler.running_var, torch.tensor([2.0, 200.0]))  # unbiased, as BatchNorm keeps it
    scaler.eval()
    again = scaler(torch.tensor([[2.0, 20.0], [4.0, 20.0]]), torch.tensor([True, True]))
    assert torch.allclose(again, torch.tensor([[0.0, 0.0], [2.0 / 2.0 ** 0.5, 0.0]]), atol=1e-3)
    assert torch.allclose(scaler.running_mean, torch.tensor([2.0, 20.0]))  # eval does not update


def test_pooled_standardize_keeps_an_absent_modality_out_and_round_trips_in_the_config():
    torch.manual_seed(0)
    model = MFSA(tiny("mfsa", task="classification", num_classes=3, pooled_logits=True, pooled_standardize=True,
                      pooled_dropout=0.0))
    assert model.config.pooled_standardize == (True, True, True)  # one bool: every modality
    assert all(isinstance(m, PresentStandardizer) for m in model.pooled_scalers) and model.pooled[0][0].p == 0.0
    inputs = batch(((5, 0, 9), (3, 0, 4), (4, 0, 6)))
    run(model, inputs, labels=torch.tensor([0, 2, 1])).loss.backward()
    assert torch.equal(model.pooled_scalers[1].running_mean, torch.zeros_like(model.pooled_scalers[1].running_mean))
    assert not torch.equal(model.pooled_scalers[0].running_mean, torch.zeros_like(model.pooled_scalers[0].running_mean))
    model.eval()
    base = run(model, inputs).prediction
    with torch.no_grad():
        model.pooled[1][1].bias.fill_(5.0)
    assert torch.allclose(run(model, inputs).prediction, base)
    with pytest.raises(ValueError, match="pooled_standardize must be three bools"):
        MFSAConfig(pooled_logits=True, pooled_standardize="yes")
    only_clips = MFSA(tiny("mfsa", task="classification", num_classes=3, pooled_logits=True,
                           pooled_standardize=(False, True, True)))
    assert isinstance(only_clips.pooled_scalers[0], torch.nn.Identity)
    assert set(only_clips.state_dict()) - set(model.state_dict()) == set()  # no new keys for an unscaled modality
    with pytest.raises(ValueError, match="pooled_standardize needs pooled_logits"):
        MFSAConfig(pooled_standardize=True)
    with pytest.raises(ValueError, match="pooled_dropout"):
        MFSAConfig(pooled_logits=True, pooled_dropout=1.5)
    saved = MFSAConfig(pooled_logits=True, pooled_standardize=True, pooled_dropout=0.1).to_dict()
    assert MFSAConfig.from_dict(saved).pooled_standardize == (True,) * 3 and MFSAConfig.from_dict(saved).pooled_dropout == 0.1
    for key in ("pooled_standardize", "pooled_dropout"):
        saved.pop(key)
    old = MFSAConfig.from_dict(saved)
    assert old.pooled_standardize == (False,) * 3 and old.pooled_dropout is None
    assert old.pooled_aux_modalities == (True,) * 3


def test_pooled_aux_weight_adds_the_read_out_s_own_task_loss():
    torch.manual_seed(0)
    inputs, labels = batch(((5, 0, 9), (3, 0, 4), (4, 2, 3))), torch.tensor([0, 2, 1])
    model = MFSA(tiny("mfsa", task="classification", num_classes=3, pooled_logits=True, pooled_aux_weight=0.5)).eval()
    out = run(model, inputs, labels=labels)
    plain = MFSA(tiny("mfsa", task="classification", num_classes=3, pooled_logits=True)).eval()
    plain.load_state_dict(model.state_dict())
    base = run(plain, inputs, labels=labels)
    assert "pooled" not in base.losses and torch.allclose(out.prediction, base.prediction)
    assert torch.allclose(out.loss, base.loss + 0.5 * out.losses["pooled"])
    with torch.no_grad():  # the auxiliary loss is the read-out's alone: the attention head cannot move it
        model.head[-1].bias.add_(3.0)
    assert torch.allclose(run(model, inputs, labels=labels).losses["pooled"], out.losses["pooled"])
    with pytest.raises(ValueError, match="pooled_aux_weight needs pooled_logits"):
        MFSAConfig(pooled_aux_weight=1.0)
    with pytest.raises(ValueError, match="pooled_aux_weight must be >= 0"):
        MFSAConfig(pooled_logits=True, pooled_aux_weight=-1.0)


def test_pooled_aux_modalities_choose_the_read_outs_and_the_samples_of_the_auxiliary_loss():
    torch.manual_seed(0)
    inputs, labels = batch(((5, 0, 9), (3, 0, 4), (4, 2, 0))), torch.tensor([0, 2, 1])
    model = MFSA(tiny("mfsa", task="classification", num_classes=3, pooled_logits=True, pooled_aux_weight=1.0,
                      pooled_aux_modalities=(False, True, True))).eval()
    out = run(model, inputs, labels=labels)
    with torch.no_grad():  # the words' read-out is not in it
        model.pooled[0][1].bias.add_(3.0)
    assert torch.allclose(run(model, inputs, labels=labels).losses["pooled"], out.losses["pooled"])
    with torch.no_grad():  # the face's is
        model.pooled[2][1].bias.add_(torch.tensor([3.0, 0.0, 0.0]))
    assert not torch.allclose(run(model, inputs, labels=labels).losses["pooled"], out.losses["pooled"])
    words_only = batch(((5, 0, 0), (3, 0, 0)))
    loss = run(model, words_only, labels=torch.tensor([0, 1])).losses["pooled"]
    assert loss.item() == 0.0  # no sample has audio or vision: nothing to learn from
    with pytest.raises(ValueError, match="needs at least one of pooled_aux_modalities"):
        MFSAConfig(pooled_logits=True, pooled_aux_weight=1.0, pooled_aux_modalities=(False, False, False))
    with pytest.raises(ValueError, match="pooled_aux_modalities must be three bools"):
        MFSAConfig(pooled_logits=True, pooled_aux_modalities=(True,))


@pytest.mark.parametrize("task", ["classification", "multihead"])
def test_pooled_aux_exclusive_leaves_out_samples_with_another_modality(task):
    torch.manual_seed(0)
    lengths = ((0, 4, 6), (5, 3, 4), (0, 2, 0))  # the second has words: its label may be the sentence's
    inputs = batch(lengths)
    labels = torch.tensor([0, 2, 1]) if task == "classification" else torch.tensor([[0, 1], [2, 0], [1, -1]])
    heads = dict(num_classes=3) if task == "classification" else dict(head_sizes=(3, 2))
    config = dict(task=task, **heads, pooled_logits=True, pooled_aux_weight=1.0,
                  pooled_aux_modalities=(False, True, True))
    model = MFSA(tiny("mfsa", **config, pooled_aux_exclusive=True)).eval()
    plain = MFSA(tiny("mfsa", **config)).eval()
    plain.load_state_dict(model.state_dict())
    clips_only = batch(lengths[::2])  # same rows: the samples without words alone
    for key in ("audio", "vision", "audio_mask", "vision_mask"):
        clips_only[key] = inputs[key][::2]
    expected = run(plain, clips_only, labels=labels[::2]).losses["pooled"]
    assert torch.allclose(run(model, inputs, labels=labels).losses["pooled"], expected)
    assert not torch.allclose(run(plain, inputs, labels=labels).losses["pooled"], expected)
    assert MFSAConfig.from_dict({k: v for k, v in model.config.to_dict().items()
                                 if k != "pooled_aux_exclusive"}).pooled_aux_exclusive is False
    with pytest.raises(ValueError, match="pooled_aux_exclusive must be a bool"):
        MFSAConfig(pooled_logits=True, pooled_aux_exclusive="yes")
