"""The model zoo: shapes, masks, losses, configs and checkpoints, on tiny configs (CPU, seconds)."""

import functools
import io
import json

import pytest
import torch

from models import MODELS, LFLSTMConfig, MFSA, MFSAConfig, MulTConfig, build_model, config_from_dict, separation_loss
from models.layers import grad_reverse, masked_mean, masked_softmax
from models.lstm_baselines import resample
from mfsa_pipe.training.settings import PRESET_TRAINING, TrainSettings

from helpers import batch, check_forward_backward, labels_for, run, tiny

SWITCHES = ["use_sep_loss", "use_adv_loss", "use_specific", "use_agnostic", "use_psa", "use_prediction_chain",
            "use_wal", "use_hca", "use_mixed_mru", "use_coarse_mru", "use_fine_mru"]


# ------------------------------------------------------------------------------ shapes, tasks


@pytest.mark.parametrize("task", ["regression", "classification", "multilabel"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_every_task_shapes_and_finite(name, task):
    torch.manual_seed(0)
    model = build_model(name, tiny(name, task=task, num_classes=3, num_labels=4))
    out = check_forward_backward(model, batch())
    assert set(out.losses) >= {"task"}


@pytest.mark.parametrize("switch", SWITCHES)
def test_mfsa_every_ablation_switch(switch):
    torch.manual_seed(0)
    cfg = tiny("mfsa", **{switch: False})
    out = check_forward_backward(MFSA(cfg), batch())
    # use_specific / use_agnostic only leave a representation out of fusion (Table 4): both
    # branches and their losses stay (drop_*_branch removes them: tests/test_mfsa_fidelity.py)
    assert "h_s" in out.extras and "h_a" in out.extras
    assert ("sep" in out.losses) == cfg.use_sep_loss
    assert ("spe" in out.losses) == ("agn" in out.losses) == cfg.use_adv_loss
    assert ("psi" in out.extras) == (cfg.use_psa and cfg.use_wal)
    assert ("psa_attention" in out.extras) == cfg.use_psa
    assert ("mru_attention" in out.extras) == cfg.use_hca


def test_mfsa_without_chain_has_no_conv_and_depthwise_option_is_cheaper():
    assert MFSA(tiny("mfsa", use_prediction_chain=False)).chain_convs() == []
    full, depthwise = MFSA(tiny("mfsa")), MFSA(tiny("mfsa", chain_groups=2))
    assert len(full.chain_convs()) == 3 * (full.config.psa_layers - 1)  # no chain into the first layer
    assert all(c.groups == 2 for c in depthwise.chain_convs())
    assert sum(c.weight.numel() for c in depthwise.chain_convs()) < sum(c.weight.numel() for c in full.chain_convs())
    check_forward_backward(depthwise, batch())
    check_forward_backward(MFSA(tiny("mfsa", positional="learned", max_len=16)), batch())


def test_mfsa_extras_and_loss_total():
    torch.manual_seed(0)
    cfg = tiny("mfsa", psa_layers=3)
    model = MFSA(cfg).eval()
    inputs = batch(((5, 7, 9), (3, 0, 4)))  # sample 1 has no audio
    out = run(model, inputs, labels_for(cfg, 2))
    x = out.extras
    assert x["h_s"].shape == x["h_a"].shape == (2, 3, cfg.d_h)
    psi = x["psi"]
    assert psi.shape == (2, 3) and torch.allclose(psi.sum(1), torch.ones(2)) and psi[1, 1] == 0
    psa = x["psa_attention"]
    assert psa["vision"].shape == (2, cfg.num_heads, 9, 9)
    assert torch.all(psa["text"][1, :, :, 3:] == 0)  # no weight on padded keys
    assert torch.allclose(psa["text"][0].sum(-1), torch.ones(cfg.num_heads, 5))
    mru = x["mru_attention"]
    assert set(mru) == {"text<-audio", "text<-vision", "audio<-text", "audio<-vision", "vision<-text", "vision<-audio"}
    assert mru["text<-vision"].shape == (2, cfg.num_heads, 5, 9)
    assert torch.all(mru["text<-audio"][1] == 0)  # sample 1 has no audio key at all
    total = out.losses["task"] + cfg.alpha * out.losses["sep"] + cfg.beta * (out.losses["agn"] + out.losses["spe"])
    assert torch.allclose(out.loss, total)  # eq. 16


def test_mfsa_checkpoint_psa_gives_the_same_step():
    """checkpoint_psa recomputes the PSA layers in backward: same loss and gradients, dropout included."""
    inputs = batch(((5, 7, 9), (3, 0, 4), (2, 7, 1)))
    results = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = MFSA(tiny("mfsa", psa_layers=3, checkpoint_psa=flag)).train()
        torch.manual_seed(1)
        out = run(model, inputs, labels_for(model.config, 3))
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], msg=name)


@pytest.mark.parametrize("predictive", [False, True], ids=["first-layer", "chained"])
@pytest.mark.parametrize("case", ["full", "padded", "empty-sample"])
def test_predictive_attention_matches_the_composed_ops(predictive, case):
    """The hand-written backward of the PSA attention (models/predictive_attention.py) gives the
    outputs and gradients of the same maths composed from autograd ops, with padding and with a
    sample that has no real key; float64, so only rounding may differ."""
    from models.layers import mask_flags
    from models.mfsa import PSALayer
    from models.predictive_attention import PredictiveAttention

    torch.manual_seed(0)
    layer = PSALayer(MFSAConfig(d=16, num_heads=4, mu=0.3), predictive=predictive).double()
    mask = torch.ones(3, 7, dtype=torch.bool)
    if case != "full":
        mask[1, 4:] = False
    if case == "empty-sample":
        mask[2] = False
    flags = mask_flags(mask)
    leaves = [torch.randn(3, 4, 7, 4, dtype=torch.double, requires_grad=True) for _ in range(3)]
    if predictive:
        leaves.append(torch.randn(3, 4, 7, 7, dtype=torch.double, requires_grad=True))
        leaves += list(layer.chain.parameters())
    results = []
    for composed in (False, True):
        q, k, v = leaves[:3]
        predicted = layer.chain(leaves[3]) if predictive else None
        if composed:
            out, carried, attention = layer._composed(q, k, v, predicted, mask, True, flags)
        else:
            out, carried, attention = PredictiveAttention.apply(q * layer.attn.scale, k, v, predicted, mask, layer.mu,
                                                                True, flags)
        weights = torch.Generator().manual_seed(1)
        loss = ((out * torch.randn(out.shape, generator=weights, dtype=out.dtype)).sum()
                + (carried * torch.randn(carried.shape, generator=weights, dtype=out.dtype)).sum())
        results.append((out, carried, attention, torch.autograd.grad(loss, leaves)))
    (out_a, carried_a, att_a, grads_a), (out_b, carried_b, att_b, grads_b) = results
    for a, b in zip((out_a, carried_a, att_a, *grads_a), (out_b, carried_b, att_b, *grads_b)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not att_a.requires_grad  # the returned map is for analysis only
    if case != "full":
        assert torch.all(att_a[1, :, :, 4:] == 0)
    if case == "empty-sample":
        assert torch.all(att_a[2] == 0) and torch.all(carried_a[2] == 0)
    if case != "full":  # the next layer's conv sees zeros on padded rows and columns
        assert torch.all(carried_a[1, :, 4:, :] == 0) and torch.all(carried_a[1, :, :, 4:] == 0)


def test_explicit_attention_matches_the_fused_kernel(monkeypatch):
    """MultiHeadAttention takes the explicit maps on CPU for small heads (prefer_explicit): same
    outputs and gradients as the fused kernel, padding and a sample without keys included."""
    from models import layers

    torch.manual_seed(0)
    attention = layers.MultiHeadAttention(16, 4)
    query, source = torch.randn(3, 6, 16), torch.randn(3, 9, 16)
    key_mask = torch.ones(3, 9, dtype=torch.bool)
    key_mask[1, 5:] = False
    key_mask[2] = False
    assert layers.prefer_explicit(torch.zeros(3, 4, 6, 4), 9)
    results = []
    for explicit in (True, False):
        monkeypatch.setattr(layers, "prefer_explicit", lambda q, keys: explicit)
        q, s = query.clone().requires_grad_(), source.clone().requires_grad_()
        out, weights = attention(q, s, key_mask)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out).cos())
        results.append((out.detach(), q.grad, s.grad, [p.grad.clone() for p in attention.parameters()]))
        attention.zero_grad()
        assert weights is None
    (out_a, gq_a, gs_a, gp_a), (out_b, gq_b, gs_b, gp_b) = results
    for a, b in zip((out_a, gq_a, gs_a, *gp_a), (out_b, gq_b, gs_b, *gp_b)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.all(out_a[2] == attention.out_proj.bias)  # no key: zero heads, only the bias remains


def test_psa_layer_takes_the_composed_ops_under_dropout_and_the_function_otherwise(monkeypatch):
    from models import predictive_attention
    from models.mfsa import PSALayer

    calls = []
    original = predictive_attention.PredictiveAttention.apply
    monkeypatch.setattr(predictive_attention.PredictiveAttention, "apply",
                        staticmethod(lambda *a: calls.append(1) or original(*a)))
    z, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    for attn_dropout, expected in ((0.0, 1), (0.5, 0)):
        calls.clear()
        layer = PSALayer(MFSAConfig(d=16, num_heads=4, attn_dropout=attn_dropout), predictive=False).train()
        out, attention, carried = layer(z, mask, pass_on=True)
        assert len(calls) == expected and carried.shape == (2, 4, 5, 5) and out.shape == z.shape


def test_lstm_fast_path_without_padding_matches_packing():
    from models.layers import run_lstm
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(4, 3, batch_first=True, bidirectional=True)
    x = torch.randn(2, 6, 4)
    full = torch.ones(2, 6, dtype=torch.bool)
    out, hidden = run_lstm(lstm, x, full)
    ragged = full.clone()
    ragged[1, 5] = False  # forces the packed path; sample 0 is still full length
    out_p, hidden_p = run_lstm(lstm, x, ragged)
    torch.testing.assert_close(out[0], out_p[0])
    torch.testing.assert_close(hidden[0], hidden_p[0])
    assert out.shape == (2, 6, 6) and hidden.shape == (2, 2, 3)


# ------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("name", sorted(MODELS))
def test_padding_does_not_change_a_sample(name):
    torch.manual_seed(0)
    model = build_model(name, tiny(name, conv_kernels=(3, 3, 3)) if name in ("mfsa", "mult") else tiny(name)).eval()
    padded = batch(((3, 4, 5), (8, 9, 11), (6, 12, 7)))
    alone = {k: v[:1, : {"text": 3, "audio": 4, "vision": 5}[k.split("_")[0]]] for k, v in padded.items()}
    with torch.no_grad():
        a, b = run(model, alone), run(model, padded)
    torch.testing.assert_close(a.prediction, b.prediction[:1], atol=1e-5, rtol=1e-5)
    for key in ("h_s", "h_a", "psi"):
        if key in a.extras:
            torch.testing.assert_close(a.extras[key], b.extras[key][:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_empty_modality_gives_finite_outputs_and_gradients(name):
    torch.manual_seed(0)
    model = build_model(name, tiny(name))
    inputs = batch(((5, 0, 0), (3, 4, 0), (0, 2, 0)))  # vision T = 0 batch-wide; some samples lack text/audio
    assert inputs["vision"].shape[1] == 0
    check_forward_backward(model, inputs)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(run(model, batch(((0, 0, 0), (0, 0, 0)))).prediction).all()


def test_masked_helpers_on_fully_masked_rows():
    logits = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    probs = masked_softmax(logits, mask)
    assert torch.allclose(probs[0].sum(), torch.tensor(1.0)) and torch.all(probs[0, 2:] == 0)
    assert torch.all(probs[1] == 0)
    probs.sum().backward()
    assert torch.isfinite(logits.grad).all()
    x = torch.arange(8.0).view(1, 4, 2).repeat(2, 1, 1)
    torch.testing.assert_close(masked_mean(x, mask), torch.tensor([[1.0, 2.0], [0.0, 0.0]]))


def test_resample_interpolates_real_rows_only():
    x = torch.tensor([[0.0, 10.0, 20.0, 999.0], [5.0, 999.0, 999.0, 999.0]]).unsqueeze(-1)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    out = resample(x, mask, 5).squeeze(-1)
    torch.testing.assert_close(out[0], torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0]))
    torch.testing.assert_close(out[1], torch.full((5,), 5.0))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_runs_under_autocast(name):
    torch.manual_seed(0)
    model = build_model(name, tiny(name))
    inputs = batch(((5, 0, 9), (3, 7, 0), (1, 2, 9)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, inputs, labels_for(model.config, 3))
    assert torch.isfinite(out.prediction.float()).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ------------------------------------------------------------------------------------ losses


def test_gradient_reversal_flips_the_gradient():
    x = torch.randn(3, 4, requires_grad=True)
    weights = torch.randn(3, 4)
    (grad_reverse(x, 0.5) * weights).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * weights)
    assert torch.equal(grad_reverse(x), x)


def test_separation_loss_zero_iff_orthogonal():
    # DSN form: zero iff H_s^T H_a = sum_i s_i a_i^T = 0; pairs of samples with equal s and
    # opposite a cancel exactly (and keep that under row normalisation)
    batch_form = functools.partial(separation_loss, form="batch")
    u, v = torch.randn(3, 3, 8), torch.randn(3, 3, 8)
    h_s = torch.cat([u, u])
    h_a = torch.cat([v, -v])
    assert batch_form(h_s, h_a).item() == pytest.approx(0.0, abs=1e-6)
    assert batch_form(h_s[:, 0], h_a[:, 0]).item() == pytest.approx(0.0, abs=1e-6)  # (B, d_h) form
    shared = torch.randn(6, 3, 8)
    value = batch_form(h_s + shared, h_a + shared)
    assert value > 1e-3
    assert batch_form(shared, shared) <= 3.0 + 1e-5  # at most 1 per modality
    torch.testing.assert_close(batch_form(10 * (h_s + shared), h_a + shared), value)  # scale-free
    # samples absent from a modality do not count
    present = torch.ones(7, 3, dtype=torch.bool)
    present[6] = False
    polluted_s, polluted_a = torch.cat([h_s, shared[:1]]), torch.cat([h_a, shared[:1]])
    assert batch_form(polluted_s, polluted_a, present).item() == pytest.approx(0.0, abs=1e-6)
    assert batch_form(polluted_s, polluted_a) > 1e-3


def test_tiny_mfsa_overfits_one_batch():
    torch.manual_seed(0)
    cfg = tiny("mfsa", dropout=0.0, attn_dropout=0.0, embed_dropout=0.0, out_dropout=0.0)
    model = MFSA(cfg)
    inputs = batch(((5, 7, 9), (3, 7, 4), (1, 2, 9), (4, 6, 8), (6, 3, 2), (2, 5, 7)), seed=1)
    labels = torch.tensor([-2.0, 1.5, 0.3, -0.7, 2.4, -1.1])
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(80):
        out = run(model, inputs, labels)
        optim.zero_grad()
        out.loss.backward()
        optim.step()
        first = first if first is not None else out.losses["task"].item()
    model.eval()
    with torch.no_grad():
        final = run(model, inputs, labels).losses["task"].item()
    assert final < first / 10, (first, final)


# ----------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("overrides, message", [
    (dict(mu=1.5), "mu"),
    (dict(mu=-0.1), "mu"),
    (dict(num_heads=3), "must divide d"),
    (dict(d=0), "d must be a positive int"),
    (dict(task="ranking"), "task must be one of"),
    (dict(dims=(300, 74)), "dims"),
    (dict(use_specific=False, use_agnostic=False), "use_specific and use_agnostic"),
    (dict(use_mixed_mru=False, use_coarse_mru=False, use_fine_mru=False), "every MRU"),
    (dict(chain_groups=3), "chain_groups"),
    (dict(conv_kernels=(2, 3, 3)), "conv_kernels"),
    (dict(dropout=1.0), "dropout"),
    (dict(fusion_heads=5), "fusion_heads"),
    (dict(num_classes=1), "num_classes"),
    (dict(use_psa="yes"), "use_psa must be a bool"),
])
def test_mfsa_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        MFSAConfig(**overrides)


def test_all_mrus_off_is_fine_without_hca_and_other_configs_validate():
    MFSAConfig(use_hca=False, use_mixed_mru=False, use_coarse_mru=False, use_fine_mru=False)
    with pytest.raises(ValueError, match="must divide d"):
        MulTConfig(d=30, num_heads=4)
    with pytest.raises(ValueError, match="hidden"):
        LFLSTMConfig(hidden=0)
    with pytest.raises(ValueError, match="unknown MFSAConfig field"):
        MFSAConfig.from_dict({"d": 40, "depth": 3})
    with pytest.raises(ValueError, match="unknown model 'bert'.*mfsa"):
        build_model("bert")
    with pytest.raises(ValueError, match="unknown MFSA preset"):
        MFSAConfig.preset("cmu")


def test_presets_carry_section_4_2():
    expected = {  # batch, epochs, lr, heads, mu, alpha, beta
        "mosi": (64, 100, 1e-3, 8, 0.25, 1e-2, 3e-2),
        "mosei": (64, 100, 3e-3, 10, 0.15, 3e-2, 5e-2),
        "iemocap": (32, 60, 1e-3, 8, 0.2, 1e-2, 2e-2),
    }
    for name, values in expected.items():
        cfg = MFSAConfig.preset(name)
        train = TrainSettings.resolve(model_name="mfsa", preset=name)  # the training half of the preset
        assert (train.batch_size, train.epochs, train.lr, cfg.num_heads, cfg.mu, cfg.alpha, cfg.beta) == values
        assert (cfg.d, cfg.d_h, cfg.psa_layers, cfg.hca_layers) == (40, 128, 5, 2)
    assert MFSAConfig.preset("iemocap").task == "multilabel" and MFSAConfig.preset("iemocap").num_labels == 4
    assert MFSAConfig.preset("mosi").dims == (300, 5, 20)
    assert MFSAConfig.preset("mosi", mu=0.5, dims=(50, 74, 35)).mu == 0.5


def test_training_values_are_settings_and_old_configs_with_them_still_load():
    """batch size, epochs and lr left the model configs for the training settings: each model's
    defaults are those its config class carried, and a config saved with them (an older
    checkpoint's) loads, ignoring them, into the same model."""
    was = {"mfsa": (64, 100), "mult": (24, 40), "ef_lstm": (24, 40), "lf_lstm": (24, 40), "raven": (24, 40),
           "mctn": (32, 40), "pmr": (24, 40), "mica": (24, 40)}
    assert set(was) == set(MODELS)
    for name, (batch_size, epochs) in was.items():
        settings = TrainSettings.resolve(model_name=name)
        assert (settings.batch_size, settings.epochs, settings.lr) == (batch_size, epochs, 1e-3)
        assert not {"batch_size", "epochs", "lr"} & set(MODELS[name][0]().to_dict())
        assert set(PRESET_TRAINING.get(name, {})) == set(MODELS[name][0].PRESETS)  # each preset has both halves
    torch.manual_seed(0)
    model = MFSA(tiny("mfsa")).eval()
    old = {**model.config.to_dict(), "batch_size": 64, "epochs": 100, "lr": 3e-3}
    loaded = build_model("mfsa", old).eval()
    assert loaded.config == model.config
    loaded.load_state_dict(model.state_dict())
    inputs = batch()
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).prediction, model(**inputs).prediction)
    with pytest.raises(TypeError):
        MFSAConfig(epochs=10)  # no longer a model setting


def test_mult_presets_and_memory_depth_follow_the_reference():
    # the reference builds its self-attention transformers with max(nlevels, 3) blocks
    assert MulTConfig().mem_layers == 5
    assert MulTConfig(layers=2).mem_layers == 3 and MulTConfig(layers=2, mem_layers=1).mem_layers == 1
    assert MulTConfig.from_dict(MulTConfig(layers=4).to_dict()).mem_layers == 4
    expected = {  # Table 5: batch, lr, d, blocks, heads, kernels (text, audio, vision), embed/attn/out dropout, epochs
        "mosi": (128, 1e-3, 40, 4, 10, (1, 3, 3), 0.2, 0.2, 0.1, 100),
        "mosei": (16, 1e-3, 40, 4, 8, (1, 3, 3), 0.3, 0.1, 0.1, 20),
        "iemocap": (32, 2e-3, 40, 4, 10, (3, 5, 3), 0.3, 0.25, 0.1, 30),
    }
    for name, values in expected.items():
        cfg = MulTConfig.preset(name)
        train = TrainSettings.resolve(model_name="mult", preset=name)
        assert (train.batch_size, train.lr, cfg.d, cfg.layers, cfg.num_heads, cfg.conv_kernels, cfg.embed_dropout,
                cfg.attn_dropout, cfg.out_dropout, train.epochs) == values
        assert cfg.mem_layers == 4
    assert MulTConfig.preset("iemocap").task == "multilabel"
    assert MulTConfig.preset("mosi", d=20).d == 20
    with pytest.raises(ValueError, match="unknown MulT preset"):
        MulTConfig.preset("cmu")
    with pytest.raises(ValueError, match="mem_layers"):
        MulTConfig(mem_layers=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_config_and_weights_round_trip(name):
    torch.manual_seed(0)
    cfg = tiny(name, task="multilabel")
    model = build_model(name, cfg).eval()
    buffer = io.BytesIO()
    torch.save({"name": name, "config": json.loads(json.dumps(cfg.to_dict())), "state_dict": model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)  # no arbitrary unpickling
    restored_cfg = config_from_dict(saved["name"], saved["config"])
    assert restored_cfg == cfg
    restored = build_model(saved["name"], restored_cfg).eval()
    restored.load_state_dict(saved["state_dict"])
    inputs = batch()
    with torch.no_grad():
        assert torch.equal(run(model, inputs).prediction, run(restored, inputs).prediction)


def test_the_cli_lists_every_registered_model():
    from mfsa_pipe.commands.train import MODEL_NAMES

    assert sorted(MODEL_NAMES) == sorted(MODELS)
