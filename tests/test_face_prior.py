"""MFSA's face prior: another model's class probabilities among the vision columns as a fixed
log-prior on the first head (models/layers.py ProbabilityPrior, MFSAConfig.face_prior_*)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import batch, run, tiny
from mfsa_pipe.checkpoint import load_checkpoint
from mfsa_pipe.training import train
from models.base import UsesInputNormalization
from models.layers import ProbabilityPrior
from models.mfsa import MFSA, MFSAConfig
from test_multihead import TINY_MFSA, make_bundle


def _normalised(raw: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    return torch.tensor((raw - mean) / std, dtype=torch.float32)


def test_prior_is_the_centred_log_of_the_mean_probabilities_over_face_rows():
    mean, std = np.array([0.2, 0.3, 0.1, 0.9, 5.0]), np.array([0.1, 0.2, 0.3, 0.2, 2.0])
    prior = ProbabilityPrior(((0,), (1,), (), (2,)), head_sizes=(4,), presence=3)
    prior.set_normalization(mean, std)
    raw = np.zeros((2, 3, 5))
    raw[0, 0] = [0.7, 0.2, 0.1, 1.0, 9.0]
    raw[0, 1] = [0.5, 0.4, 0.1, 1.0, 1.0]
    raw[0, 2] = [0.0, 0.0, 1.0, 0.0, 3.0]  # no face in this frame: left out
    raw[1, 0] = [0.2, 0.7, 0.1, 1.0, 0.0]  # a padding row
    mask = torch.tensor([[True, True, True], [False, False, False]])
    out = prior(_normalised(raw, mean, std), mask)
    p = np.array([0.6, 0.3, 0.1])  # mean over the two face rows, classes 0, 1, 3 (columns 0, 1, 2)
    log_p = np.log(p / p.sum() + 1e-4)
    expected = np.zeros(4)
    expected[[0, 1, 3]] = log_p - log_p.mean()
    assert np.allclose(out[0].numpy(), expected, atol=1e-5)
    assert out[0, 2] == 0  # a class without a column gets nothing
    assert torch.equal(out[1], torch.zeros(4))  # no real row: no prior


def test_rows_whose_probabilities_a_column_dropout_removed_do_not_count():
    mean, std = np.array([0.3, 0.3]), np.array([0.2, 0.2])
    prior = ProbabilityPrior(((0,), (1,)), head_sizes=(2,))
    prior.set_normalization(mean, std)
    z = _normalised(np.array([[[0.9, 0.1], [0.3, 0.3]]]), mean, std)
    z[0, 1] = 0.0  # what column dropout leaves (the normalised zero)
    kept = prior(z, torch.tensor([[True, True]]))
    alone = prior(z[:, :1], torch.tensor([[True]]))
    assert torch.allclose(kept, alone)
    assert torch.equal(prior(torch.zeros(1, 2, 2), torch.tensor([[True, True]])), torch.zeros(1, 2))


def test_grouped_columns_give_a_second_head_its_own_normalised_prior():
    prior = ProbabilityPrior(((0,), (1,), (2,), (1, 2), (), (0,)), head_sizes=(3, 3))
    probs = torch.tensor([[[0.6, 0.3, 0.1]]])
    out = prior(probs, torch.tensor([[True]]))[0]
    first = np.log(np.array([0.6, 0.3, 0.1]) + 1e-4)
    second = np.log(np.array([0.4, 0.6]) + 1e-4)  # (columns 1 + 2, column 0), normalised within the head
    assert np.allclose(out[:3].numpy(), first - first.mean(), atol=1e-5)
    assert np.allclose(out[[3, 5]].numpy(), second - second.mean(), atol=1e-5) and out[4] == 0


HEAD_TASKS = {"classification": (dict(num_classes=3), ((0,), (1,), (2,))),
              "multihead": (dict(head_sizes=(3, 2)), ((0,), (1,), (2,), (0, 1), (2,)))}


@pytest.mark.parametrize("task", list(HEAD_TASKS))
def test_mfsa_adds_the_weighted_prior_to_the_logits(task):
    torch.manual_seed(0)
    heads, groups = HEAD_TASKS[task]
    model = MFSA(tiny("mfsa", task=task, **heads, face_prior_weight=0.5, face_prior_columns=groups,
                      face_prior_presence=4)).eval()
    plain = MFSA(tiny("mfsa", task=task, **heads)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    inputs = batch(((5, 3, 4), (3, 2, 0)))
    inputs["vision"][0, :4, 4] = 1.0  # a face in every real row of the first sample
    with_prior, without = run(model, inputs).prediction, run(plain, inputs).prediction
    expected = 0.5 * model.face_prior(inputs["vision"], inputs["vision_mask"])
    assert expected[0].abs().sum() > 0 and torch.equal(expected[1], torch.zeros(len(groups)))  # no face: nothing
    assert torch.allclose(with_prior - without, expected, atol=1e-5)
    assert set(model.state_dict()) - set(plain.state_dict()) == {"face_prior.mean", "face_prior.std"}


def test_each_head_takes_its_own_weight():
    torch.manual_seed(0)
    heads, groups = HEAD_TASKS["multihead"]
    common = dict(task="multihead", **heads, face_prior_columns=groups, face_prior_presence=4)
    model = MFSA(tiny("mfsa", **common, face_prior_weight=(0.5, 2.0))).eval()
    one = MFSA(tiny("mfsa", **common, face_prior_weight=1.0)).eval()
    plain = MFSA(tiny("mfsa", task="multihead", **heads)).eval()
    one.load_state_dict(model.state_dict())
    plain.load_state_dict(model.state_dict(), strict=False)
    inputs = batch(((5, 3, 4),))
    inputs["vision"][0, :4, 4] = 1.0
    prior = run(one, inputs).prediction - run(plain, inputs).prediction  # weight 1 on both heads
    added = run(model, inputs).prediction - run(plain, inputs).prediction
    assert prior[0, :3].abs().sum() > 0 and prior[0, 3:].abs().sum() > 0
    assert torch.allclose(added[0, :3], 0.5 * prior[0, :3], atol=1e-5)
    assert torch.allclose(added[0, 3:], 2.0 * prior[0, 3:], atol=1e-5)
    saved = json.loads(json.dumps(model.config.to_dict()))  # a checkpoint stores the tuple as a list
    assert MFSAConfig.from_dict(saved).face_prior_weight == (0.5, 2.0)


def test_face_prior_in_training_off_leaves_training_as_without_it():
    torch.manual_seed(0)
    groups = ((0,), (1,), (2,))
    model = MFSA(tiny("mfsa", task="classification", num_classes=3, face_prior_weight=0.5, face_prior_columns=groups,
                      face_prior_in_training=False, dropout=0.0, attn_dropout=0.0, embed_dropout=0.0, out_dropout=0.0))
    plain = MFSA(tiny("mfsa", task="classification", num_classes=3, dropout=0.0, attn_dropout=0.0, embed_dropout=0.0,
                      out_dropout=0.0))
    plain.load_state_dict(model.state_dict(), strict=False)
    inputs, labels = batch(), torch.tensor([0, 1, 2])
    assert torch.allclose(run(model, inputs, labels=labels).loss, run(plain, inputs, labels=labels).loss)
    model.eval(), plain.eval()
    assert not torch.allclose(run(model, inputs).prediction, run(plain, inputs).prediction)


def test_face_prior_face_only_leaves_samples_with_words_or_voice_alone():
    torch.manual_seed(0)
    groups = ((0,), (1,), (2,))
    common = dict(task="classification", num_classes=3, face_prior_weight=0.5, face_prior_columns=groups)
    model = MFSA(tiny("mfsa", **common, face_prior_face_only=True)).eval()
    everywhere = MFSA(tiny("mfsa", **common)).eval()
    plain = MFSA(tiny("mfsa", task="classification", num_classes=3)).eval()
    everywhere.load_state_dict(model.state_dict())
    plain.load_state_dict(model.state_dict(), strict=False)
    inputs = batch(((0, 0, 4), (0, 3, 4), (2, 0, 4)))  # face alone, face + voice, face + words
    out, base, full = run(model, inputs).prediction, run(plain, inputs).prediction, run(everywhere, inputs).prediction
    assert torch.allclose(out[0], full[0]) and not torch.allclose(out[0], base[0])
    assert torch.allclose(out[1:], base[1:], atol=1e-6)


def test_face_prior_config_is_validated_and_old_configs_read_without_it():
    with pytest.raises(ValueError, match="face_prior_columns must give"):
        MFSAConfig(task="classification", num_classes=3, face_prior_weight=1.0, face_prior_columns=((0,), (1,)))
    with pytest.raises(ValueError, match="face_prior_columns must give"):
        MFSAConfig(task="classification", num_classes=2, face_prior_weight=1.0, face_prior_columns=((0,), (999,)))
    with pytest.raises(ValueError, match="face_prior_columns must give"):
        MFSAConfig(task="classification", num_classes=2, face_prior_weight=1.0, face_prior_columns=((), ()))
    with pytest.raises(ValueError, match="face_prior_presence must be a vision column"):
        MFSAConfig(task="classification", num_classes=2, face_prior_weight=1.0, face_prior_columns=((0,), (1,)),
                   face_prior_presence=999)
    with pytest.raises(ValueError, match="needs a classification or multihead task"):
        MFSAConfig(task="regression", face_prior_weight=1.0, face_prior_columns=((0,),))
    with pytest.raises(ValueError, match="face_prior_weight must be a number >= 0 or one per head"):
        MFSAConfig(face_prior_weight=-1.0)
    with pytest.raises(ValueError, match="face_prior_weight must be a number >= 0 or one per head"):
        MFSAConfig(face_prior_weight=(0.5, -1.0))
    with pytest.raises(ValueError, match="face_prior_weight gives 3 weights for 2 head\\(s\\)"):
        MFSAConfig(task="multihead", head_sizes=(2, 1), face_prior_weight=(0.5, 1.0, 1.0),
                   face_prior_columns=((0,), (1,), (0,)))
    with pytest.raises(ValueError, match="face_prior_in_training must be a bool"):
        MFSAConfig(face_prior_in_training="no")
    with pytest.raises(ValueError, match="face_prior_face_only must be a bool"):
        MFSAConfig(face_prior_face_only=1)
    saved = MFSAConfig(task="classification", num_classes=2, face_prior_weight=0.25,
                       face_prior_columns=((3,), ())).to_dict()
    saved = json.loads(json.dumps(saved))  # as a checkpoint stores it
    assert MFSAConfig.from_dict(saved).face_prior_columns == ((3,), ())
    old = MFSAConfig.from_dict({k: v for k, v in saved.items() if not k.startswith("face_prior")})
    assert old.face_prior_weight == 0.0 and MFSA(old).face_prior is None


def test_training_gives_the_prior_the_normalisation_and_the_checkpoint_keeps_it(tmp_path):
    bundle = make_bundle()  # vision: 4 columns; 0-2 read as the 3 emotion probabilities, 3 as the face flag
    groups = [[0], [1], [2], [2], [], [1]]  # sentiment: sad -> negative, happy -> positive
    r = train(model_name="mfsa", dataset=bundle, out_dir=tmp_path / "run", epochs=1, batch_size=8, seed=0,
              progress=False, column_dropout=0.5, column_groups=("vision:vision0",),
              overrides={**TINY_MFSA, "face_prior_weight": 0.25, "face_prior_columns": groups, "face_prior_presence": 3})
    ckpt = load_checkpoint(r.checkpoint)
    model = ckpt.build_model(device="cpu")
    assert isinstance(model, UsesInputNormalization)  # the declared interface the trainer looks for
    assert not isinstance(MFSA(tiny("mfsa")).extractors, UsesInputNormalization)
    norm = ckpt.normalization
    assert np.allclose(model.face_prior.mean.numpy(), norm.mean["vision"][[0, 1, 2, 3]])
    assert np.allclose(model.face_prior.std.numpy(), norm.std["vision"][[0, 1, 2, 3]])
    assert not np.allclose(model.face_prior.std.numpy(), 1.0)  # the identity would read z-scores as probabilities
    assert ckpt.model_config["face_prior_weight"] == 0.25
    assert [list(g) for g in ckpt.model_config["face_prior_columns"]] == groups
