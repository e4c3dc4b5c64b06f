"""The paper's baselines that need word-aligned input: RAVEN, MCTN, and the CTC alignment module
(models/ctc.py) behind `ctc=true` on EF-LSTM, RAVEN and MCTN. The zoo's properties (shapes per
task, padding invariance, empty modalities, training, checkpoints, autocast) plus their own."""

import io
import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from models import MCTNConfig, RAVENConfig, EFLSTMConfig, build_model, config_from_dict
from models.ctc import CTCAligner, group_mean, span_groups

from helpers import DIMS, batch, check_forward_backward, labels_for, run

TINY = {
    "raven": RAVENConfig(dims=DIMS, nonverbal_hidden=4, hidden=8, ctc_positions=12),
    "mctn": MCTNConfig(dims=DIMS, hidden=6, hidden2=6, reg_hidden=6, ctc_positions=12),
    "ef_lstm": EFLSTMConfig(dims=DIMS, d=6, hidden=8, ctc_positions=12),
}
# (model, ctc): RAVEN and MCTN with both alignments, EF-LSTM with CTC (its default path is tested in test_models)
SYSTEMS = [("raven", False), ("raven", True), ("mctn", False), ("mctn", True), ("ef_lstm", True)]
IDS = [f"{name}{'-ctc' if ctc else ''}" for name, ctc in SYSTEMS]


def tiny(name, ctc, **overrides):
    return build_model(name, TINY[name].__class__(**{**TINY[name].to_dict(), "ctc": ctc, **overrides}))


# ------------------------------------------------------------------------------ shapes, tasks


@pytest.mark.parametrize("task", ["regression", "classification", "multilabel"])
@pytest.mark.parametrize("name, ctc", SYSTEMS, ids=IDS)
def test_shapes_losses_and_gradients_per_task(name, ctc, task):
    torch.manual_seed(0)
    model = tiny(name, ctc, task=task, num_classes=3, num_labels=4)
    out = check_forward_backward(model, batch())
    assert ("ctc" in out.losses) == ctc
    if name == "mctn":
        assert {"translation_audio", "translation_vision", "cycle"} <= set(out.losses)
    if ctc:  # the CTC modules learn from the total loss
        assert all(p.grad is not None for p in model.aligner.parameters() if p.requires_grad)


@pytest.mark.parametrize("name, ctc", SYSTEMS, ids=IDS)
def test_multihead_logits_side_by_side_and_unlabelled_heads(name, ctc):
    torch.manual_seed(0)
    model = tiny(name, ctc, task="multihead", head_sizes=(3, 2))
    labels = torch.tensor([[0, -1], [2, 1], [-1, -1]])
    out = run(model, batch(), labels)
    assert out.prediction.shape == (3, 5) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("name, ctc", SYSTEMS, ids=IDS)
def test_padding_does_not_change_a_sample(name, ctc):
    torch.manual_seed(0)
    model = tiny(name, ctc).eval()
    padded = batch(((3, 7, 5), (8, 9, 11), (6, 12, 7)))
    alone = {k: v[:1, : {"text": 3, "audio": 7, "vision": 5}[k.split("_")[0]]] for k, v in padded.items()}
    labels = torch.tensor([0.5, -1.0, 2.0])
    with torch.no_grad():
        a, b = run(model, alone, labels[:1]), run(model, padded, labels)
    torch.testing.assert_close(a.prediction, b.prediction[:1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.extras["h"], b.extras["h"][:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, ctc", SYSTEMS, ids=IDS)
def test_empty_modality_gives_finite_outputs_and_gradients(name, ctc):
    torch.manual_seed(0)
    model = tiny(name, ctc)
    inputs = batch(((5, 0, 0), (3, 4, 0), (0, 2, 0)))  # vision T = 0 batch-wide; some samples lack text/audio
    assert inputs["vision"].shape[1] == 0
    check_forward_backward(model, inputs)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(run(model, batch(((0, 0, 0), (0, 0, 0))), torch.zeros(2)).prediction).all()


@pytest.mark.parametrize("name, ctc", SYSTEMS, ids=IDS)
def test_runs_under_autocast(name, ctc):
    torch.manual_seed(0)
    model = tiny(name, ctc)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, batch(((5, 0, 9), (3, 7, 0), (1, 2, 9))), labels_for(model.config, 3))
    assert torch.isfinite(out.prediction.float()).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------- alignment


def test_equal_spans_pass_aligned_input_unchanged_and_cut_unaligned_input():
    x = torch.arange(1.0, 8.0).view(1, 7, 1)
    seven = torch.ones(1, 7, dtype=torch.bool)
    groups, mask = span_groups(x, seven, seven)  # as many frames as words: one frame per word
    assert groups.shape == (1, 7, 1, 1) and mask.all()
    torch.testing.assert_close(groups.view(-1), x.view(-1))
    text = torch.tensor([[True, True, True, False]])
    groups, mask = span_groups(x, seven, text)  # 7 frames over 3 words: [0, 2), [2, 4), [4, 7)
    assert mask.tolist() == [[[True, True, False], [True, True, False], [True, True, True], [False] * 3]]
    rows, present = group_mean(groups, mask)
    torch.testing.assert_close(rows.view(-1), torch.tensor([1.5, 3.5, 6.0, 0.0]))
    assert present.tolist() == [[True, True, True, False]]
    few = torch.tensor([[True, True, False, False, False, False, False]])
    rows, _ = group_mean(*span_groups(x, few, torch.ones(1, 4, dtype=torch.bool)))  # 2 frames, 4 words
    torch.testing.assert_close(rows.view(-1), torch.tensor([1.0, 1.0, 2.0, 2.0]))


def test_ctc_aligner_is_the_reference_maths_on_a_full_sample():
    """Text as long as ctc_positions and no padding: the reference CTCModule's computation
    (LSTM -> softmax over blank + positions; aligned = P(position | frame)^T x; CTC loss of the
    position sequence 1..L, mean reduction) written out here."""
    torch.manual_seed(0)
    aligner = CTCAligner(4, positions=5)
    x = torch.randn(2, 9, 4)
    frames, text = torch.ones(2, 9, dtype=torch.bool), torch.ones(2, 5, dtype=torch.bool)
    aligned, loss = aligner(x, frames, text)
    logits, _ = aligner.lstm(x)
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(aligned, torch.bmm(probs[:, :, 1:].transpose(1, 2), x))
    targets = torch.arange(1, 6).repeat(2, 1)
    expected = F.ctc_loss(logits.log_softmax(-1).transpose(0, 1), targets, torch.full((2,), 9), torch.full((2,), 5))
    torch.testing.assert_close(loss, expected)


def test_ctc_aligner_masks_padding_short_text_and_words_past_its_positions():
    torch.manual_seed(0)
    aligner = CTCAligner(4, positions=3)
    x = torch.randn(3, 6, 4)
    frames = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [False] * 6])
    text = torch.tensor([[True] * 5, [True] * 2 + [False] * 3, [True] * 5])
    aligned, loss = aligner(x, frames, text)
    assert aligned.shape == (3, 5, 4) and torch.isfinite(loss)
    assert torch.all(aligned[0, 3:] == 0)  # words after the 3rd position get no aligned row
    assert torch.all(aligned[1, 2:] == 0)  # text padding
    assert torch.all(aligned[2] == 0)  # no frame at all
    alone, _ = aligner(x[1:2, :4], frames[1:2, :4], text[1:2, :2])
    torch.testing.assert_close(alone, aligned[1:2, :2])
    # frames too few for the words (2 < 3): infeasible for CTC, that sample counts zero
    _, short = aligner(x[:1, :2], frames[:1, :2], text[:1, :3])
    assert short.item() == 0.0


def test_raven_shift_is_bounded_by_the_word_norm():
    torch.manual_seed(0)
    model = tiny("raven", False, beta=2.0)
    words = torch.randn(2, 5, DIMS[0])
    nonverbal = [torch.randn(2, 5, 4) * 50 for _ in range(2)]
    shifted, _ = model._shift(words, nonverbal)
    assert torch.all((shifted - words).norm(dim=-1) <= words.norm(dim=-1) / 2.0 + 1e-5)
    zero = torch.zeros(1, 2, DIMS[0], requires_grad=True)  # no NaN at a zero word or zero shift
    shifted, _ = model._shift(zero, [torch.zeros(1, 2, 4)] * 2)
    shifted.sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_raven_one_frame_words_take_one_lstm_step():
    from models.raven import one_step

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 3, batch_first=True)
    x = torch.randn(5, 4)
    _, (hidden, _) = lstm(x.unsqueeze(1))
    torch.testing.assert_close(one_step(lstm, x), hidden[0])


@pytest.mark.parametrize("ctc", [False, True])
def test_mctn_predicts_from_text_alone(ctc):
    """At inference MCTN reads only the source modality; audio and vision are translation targets."""
    torch.manual_seed(0)
    model = tiny("mctn", ctc).eval()
    inputs = batch()
    other = {**inputs, "audio": torch.randn_like(inputs["audio"]), "vision": inputs["vision"][:, :0],
             "vision_mask": inputs["vision_mask"][:, :0]}
    with torch.no_grad():
        torch.testing.assert_close(run(model, inputs).prediction, run(model, other).prediction)
        with_labels = run(model, inputs, torch.zeros(3))
    assert with_labels.losses["translation_audio"] > 0 and with_labels.losses["cycle"] > 0


# ------------------------------------------------------------------------ training, configs


@pytest.mark.parametrize("name, ctc", SYSTEMS, ids=IDS)
def test_a_few_steps_reduce_the_loss(name, ctc):
    torch.manual_seed(0)
    model = tiny(name, ctc, dropout=0.0)
    inputs = batch(((5, 7, 9), (3, 7, 4), (4, 2, 9), (4, 6, 8), (6, 9, 2), (2, 5, 7)), seed=1)
    labels = torch.tensor([-2.0, 1.5, 0.3, -0.7, 2.4, -1.1])
    optim = torch.optim.Adam(model.parameters(), lr=2e-2)
    task, total = [], []
    for _ in range(20):
        out = run(model, inputs, labels)
        optim.zero_grad()
        out.loss.backward()
        optim.step()
        task.append(out.losses["task"].item())
        total.append(out.loss.item())
    assert task[-1] < 0.6 * task[0], task
    assert total[-1] < total[0], total  # the auxiliary terms (CTC, translations) do not grow it


@pytest.mark.parametrize("name, ctc", SYSTEMS, ids=IDS)
def test_config_and_weights_round_trip(name, ctc):
    torch.manual_seed(0)
    model = tiny(name, ctc, task="multilabel").eval()
    cfg = model.config
    buffer = io.BytesIO()
    torch.save({"name": name, "config": json.loads(json.dumps(cfg.to_dict())), "state_dict": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    restored_cfg = config_from_dict(saved["name"], saved["config"])
    assert restored_cfg == cfg and restored_cfg.ctc == ctc
    restored = build_model(name, restored_cfg).eval()
    restored.load_state_dict(saved["state_dict"])
    with torch.no_grad():
        assert torch.equal(run(model, batch()).prediction, run(restored, batch()).prediction)


def test_ef_lstm_without_ctc_keeps_its_weights_and_old_configs_load():
    old = EFLSTMConfig(dims=DIMS).to_dict()
    for key in ("ctc", "ctc_positions", "ctc_weight"):
        old.pop(key)  # a checkpoint written before the option existed
    assert config_from_dict("ef_lstm", old).ctc is False
    keys = set(build_model("ef_lstm", EFLSTMConfig(dims=DIMS)).state_dict())
    assert not any(k.startswith("aligner") for k in keys)
    assert {k for k in build_model("ef_lstm", EFLSTMConfig(dims=DIMS, ctc=True)).state_dict()} > keys


@pytest.mark.parametrize("cls, overrides, message", [
    (RAVENConfig, dict(ctc="yes"), "ctc must be a bool"),
    (MCTNConfig, dict(ctc_positions=0), "ctc_positions"),
    (EFLSTMConfig, dict(ctc_weight=-1.0), "ctc_weight"),
    (RAVENConfig, dict(beta=0), "beta"),
    (MCTNConfig, dict(cycle_weight=-0.1), "cycle_weight"),
    (MCTNConfig, dict(hidden2=0), "hidden2"),
])
def test_config_validation(cls, overrides, message):
    with pytest.raises(ValueError, match=message):
        cls(**overrides)


# ------------------------------------------------------------------------------------ the CLI


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from mfsa_pipe.training.synthetic import write_synthetic

    path = tmp_path_factory.mktemp("syn") / "syn.pkl"
    write_synthetic(path, seed=0, n_train=32, n_valid=16, n_test=16, text_len=6, audio_len=12, vision_len=14,
                    text_dim=8)
    return path


@pytest.mark.parametrize("name, sets", [
    ("raven", ["hidden=8", "nonverbal_hidden=4"]),
    ("mctn", ["hidden=6", "hidden2=6", "reg_hidden=6", "ctc=true", "ctc_positions=8"]),
])
def test_cli_trains_and_evaluates(synthetic, tmp_path, name, sets):
    from mfsa_pipe.checkpoint import load_checkpoint
    from mfsa_pipe.cli import app

    out = tmp_path / name
    args = ["train", "--model", name, "--dataset", str(synthetic), "--out", str(out), "--epochs", "1", "--quiet"]
    for item in sets:
        args += ["--set", item]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(out / "model.ckpt")
    assert ckpt.model_name == name and ckpt.model_config["ctc"] == ("ctc=true" in sets)
    res = CliRunner().invoke(app, ["evaluate", str(out / "model.ckpt"), "--dataset", str(synthetic), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["metrics"]["mae"]["mean"] >= 0
