"""Issue 13, fusion side: MulT's fidelity to its reference code, padding at either end of a
pickle, and the PMR and MICA models (tiny configs, CPU, seconds)."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mfsa_pipe.datasets.base import padded_spans, unpad_front
from mfsa_pipe.datasets.mult import read_mult
from models.layers import AttentionBlock, sinusoidal_positions
from models.mica import MICA, MICAConfig, alignment_loss
from models.mult import MulT, MulTConfig, reference_state_dict
from models.pmr import PMR, PMRConfig
from models.registry import build_model, config_from_dict

DIMS = (6, 4, 5)
TINY = {
    "pmr": PMRConfig(dims=DIMS, d=6, num_heads=2, layers=2, mem_layers=1),
    "mica": MICAConfig(dims=DIMS, d=6, num_heads=2, layers=2, mem_layers=1),
}


def make_inputs(lengths, *, seed=0, dims=DIMS):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, name in enumerate(("text", "audio", "vision")):
        lens = [row[m] for row in lengths]
        x = torch.randn(len(lengths), max(lens), dims[m], generator=g)
        mask = torch.arange(max(lens))[None, :] < torch.tensor(lens)[:, None]
        out[name], out[f"{name}_mask"] = x * mask[..., None], mask
    return out


def run(model, inputs, labels=None):
    return model(inputs["text"], inputs["audio"], inputs["vision"], text_mask=inputs["text_mask"],
                 audio_mask=inputs["audio_mask"], vision_mask=inputs["vision_mask"], labels=labels)


# ------------------------------------------------- MulT: the reference's forward maths, written out

LETTERS = "lav"


def reference_shaped_state(dims, d, layers, mem_layers, out_dim, gen):
    """Random weights under the official MULTModel's names and shapes (LayerNorms away from 1/0)."""
    def rand(*shape, scale=0.3):
        return torch.randn(*shape, generator=gen) * scale

    state = {}

    def encoder(prefix, dim, depth):
        for i in range(depth):
            p = f"{prefix}.layers.{i}"
            state[f"{p}.self_attn.in_proj_weight"] = rand(3 * dim, dim)
            state[f"{p}.self_attn.in_proj_bias"] = rand(3 * dim)
            state[f"{p}.self_attn.out_proj.weight"], state[f"{p}.self_attn.out_proj.bias"] = rand(dim, dim), rand(dim)
            state[f"{p}.fc1.weight"], state[f"{p}.fc1.bias"] = rand(4 * dim, dim), rand(4 * dim)
            state[f"{p}.fc2.weight"], state[f"{p}.fc2.bias"] = rand(dim, 4 * dim), rand(dim)
            for n in (0, 1):
                state[f"{p}.layer_norms.{n}.weight"], state[f"{p}.layer_norms.{n}.bias"] = 1 + rand(dim), rand(dim)
        state[f"{prefix}.layer_norm.weight"], state[f"{prefix}.layer_norm.bias"] = 1 + rand(dim), rand(dim)

    for m, letter in enumerate(LETTERS):
        state[f"proj_{letter}.weight"] = rand(d, dims[m], 1)
        for s in range(3):
            if s != m:
                encoder(f"trans_{letter}_with_{LETTERS[s]}", d, layers)
        encoder(f"trans_{letter}_mem", 2 * d, mem_layers)
    for name, shape in (("proj1", (6 * d, 6 * d)), ("proj2", (6 * d, 6 * d)), ("out_layer", (out_dim, 6 * d))):
        state[f"{name}.weight"], state[f"{name}.bias"] = rand(*shape, scale=0.1), rand(shape[0], scale=0.1)
    return state


def reference_table(length, dim):
    """tensor2tensor's table as the reference builds it: [sin | cos], 10000^(-i/(dim/2-1)), positions 1..T."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(1, length + 1, dtype=torch.float32)[:, None] * freq[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], 1)


def reference_encoder(st, prefix, depth, heads, x, source=None):
    dim = x.shape[-1]

    def norm(t, name):
        return F.layer_norm(t, (dim,), st[f"{name}.weight"], st[f"{name}.bias"])

    x = math.sqrt(dim) * x + reference_table(x.shape[1], dim)
    if source is not None:
        source = math.sqrt(dim) * source + reference_table(source.shape[1], dim)
    for i in range(depth):
        p = f"{prefix}.layers.{i}"
        w, b = st[f"{p}.self_attn.in_proj_weight"], st[f"{p}.self_attn.in_proj_bias"]
        h = norm(x, f"{p}.layer_norms.0")
        kv = h if source is None else norm(source, f"{p}.layer_norms.0")
        q = (h @ w[:dim].T + b[:dim]) * (dim // heads) ** -0.5
        k, v = kv @ w[dim:2 * dim].T + b[dim:2 * dim], kv @ w[2 * dim:].T + b[2 * dim:]
        split = lambda t: t.view(t.shape[0], t.shape[1], heads, dim // heads).transpose(1, 2)  # noqa: E731
        attn = torch.softmax(split(q) @ split(k).transpose(-1, -2), -1) @ split(v)
        attn = attn.transpose(1, 2).reshape(x.shape)
        x = x + attn @ st[f"{p}.self_attn.out_proj.weight"].T + st[f"{p}.self_attn.out_proj.bias"]
        hidden = F.relu(norm(x, f"{p}.layer_norms.1") @ st[f"{p}.fc1.weight"].T + st[f"{p}.fc1.bias"])
        x = x + hidden @ st[f"{p}.fc2.weight"].T + st[f"{p}.fc2.bias"]
    return norm(x, f"{prefix}.layer_norm")


def reference_forward(st, xs, *, d, heads, layers, mem_layers):
    # an input already d wide is used as it is (the reference skips its projection)
    proj = [x if x.shape[-1] == d else x @ st[f"proj_{c}.weight"][:, :, 0].T for x, c in zip(xs, LETTERS)]
    last = []
    for t, c in enumerate(LETTERS):
        crossed = [reference_encoder(st, f"trans_{c}_with_{LETTERS[s]}", layers, heads, proj[t], proj[s])
                   for s in range(3) if s != t]
        last.append(reference_encoder(st, f"trans_{c}_mem", mem_layers, heads, torch.cat(crossed, -1))[:, -1])
    last = torch.cat(last, -1)
    hidden = F.relu(last @ st["proj1.weight"].T + st["proj1.bias"]) @ st["proj2.weight"].T + st["proj2.bias"] + last
    return hidden @ st["out_layer.weight"].T + st["out_layer.bias"]


def test_mult_with_reference_weights_gives_the_reference_outputs():
    d, heads, layers, mem_layers = 6, 2, 2, 3  # text is already d wide: the identity-projection path too
    state = reference_shaped_state(DIMS, d, layers, mem_layers, 1, torch.Generator().manual_seed(0))
    cfg = MulTConfig(dims=DIMS, d=d, num_heads=heads, layers=layers, mem_layers=mem_layers)
    model = MulT(cfg).eval()
    model.load_state_dict(reference_state_dict(state, cfg))
    inputs = make_inputs(((5, 7, 9), (5, 7, 9), (5, 7, 9)), seed=3)  # the reference has no padding masks
    with torch.no_grad():
        ours = run(model, inputs).prediction
        expected = reference_forward(state, [inputs["text"], inputs["audio"], inputs["vision"]], d=d, heads=heads,
                                     layers=layers, mem_layers=mem_layers).squeeze(-1)
    assert expected.std() > 0.05  # outputs that vary, so the comparison means something
    torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-5)


def test_mult_config_saved_without_positions_keeps_the_old_table():
    cfg = MulTConfig(dims=DIMS, d=6, num_heads=2, layers=2, mem_layers=1)
    assert cfg.positions == "reference" and config_from_dict("mult", cfg.to_dict()) == cfg
    saved = {k: v for k, v in cfg.to_dict().items() if k != "positions"}  # a checkpoint from before the field
    old = config_from_dict("mult", saved)
    assert old.positions == "index"
    encoder = MulT(old).eval().cross[0][0]
    x = torch.randn(2, 7, 6)
    torch.testing.assert_close(encoder._embed(x)[0], math.sqrt(6) * x + sinusoidal_positions(7, 6))
    with pytest.raises(ValueError, match="positions"):
        MulTConfig(positions="learned")


def test_mult_attention_dropout_follows_the_source_modality():
    cfg = MulTConfig(dims=DIMS, d=6, num_heads=2, layers=1, mem_layers=1, attn_dropout=0.1, attn_dropout_a=0.2,
                     attn_dropout_v=0.3)
    model = MulT(cfg)
    sources = {0: (1, 2), 1: (0, 2), 2: (0, 1)}  # cross[t][j] attends to sources[t][j]
    rates = (0.1, 0.2, 0.3)
    for t, pair in sources.items():
        for j, s in enumerate(pair):
            assert model.cross[t][j].blocks[0].attn.dropout == rates[s]
    assert all(mem.blocks[0].attn.dropout == 0.1 for mem in model.mem)


def test_mult_keys_and_values_get_separate_dropout_masks_in_training():
    torch.manual_seed(0)
    model = MulT(MulTConfig(dims=DIMS, d=6, num_heads=2, layers=1, mem_layers=1, embed_dropout=0.5))
    seen = []
    def hook(module, args, kwargs):  # (keys, values) of each block call; keys None for self-attention
        seen.append((args[2] if len(args) > 2 else None, kwargs.get("source_value")))

    for module in model.modules():
        if isinstance(module, AttentionBlock):
            module.register_forward_pre_hook(hook, with_kwargs=True)
    inputs = make_inputs(((5, 7, 9), (3, 7, 4)))
    run(model, inputs)
    crossmodal = [(k, v) for k, v in seen if k is not None]
    assert len(crossmodal) == 6 and all(v is not None and not torch.equal(k, v) for k, v in crossmodal)
    seen.clear()
    run(model.eval(), inputs)
    assert all(v is None for k, v in seen if k is not None)  # one tensor when nothing is dropped


# ------------------------------------------------------------------------ padding at either end


def padded(rows, total, *, front):
    pad = np.zeros((total - len(rows), rows.shape[1]), np.float32)
    return np.concatenate([pad, rows] if front else [rows, pad])


@pytest.mark.parametrize("front", [False, True])
def test_padding_is_found_at_either_end(front):
    rng = np.random.default_rng(0)
    zero = np.zeros((1, 3), np.float32)
    # full; a zero row inside; a zero row first; a zero row last; empty
    samples = [rng.normal(size=(4, 3)).astype(np.float32),
               np.concatenate([rng.normal(size=(2, 3)), zero, rng.normal(size=(1, 3))]).astype(np.float32),
               np.concatenate([zero, rng.normal(size=(2, 3))]).astype(np.float32),
               np.concatenate([rng.normal(size=(2, 3)), zero]).astype(np.float32),
               np.zeros((0, 3), np.float32)]
    # a real zero row at the unpadded end survives; one at the padded end cannot be told from padding
    if front:
        samples[2] = np.concatenate([rng.normal(size=(1, 3)), samples[2][1:]]).astype(np.float32)
    else:
        samples[3] = np.concatenate([samples[3][:2], rng.normal(size=(1, 3))]).astype(np.float32)
    x = np.stack([padded(s, 6, front=front) for s in samples])
    starts, lengths = padded_spans(x)
    assert lengths.tolist() == [len(s) for s in samples]
    assert (starts > 0).any() == front
    moved, lengths2 = unpad_front(x)
    assert lengths2.tolist() == lengths.tolist()
    for i, s in enumerate(samples):
        np.testing.assert_array_equal(moved[i, : len(s)], s)
        assert not moved[i, len(s):].any()


def test_a_front_padded_mult_pickle_reads_the_same_samples_as_an_end_padded_one():
    rng = np.random.default_rng(1)
    lengths = {"text": [3, 5, 2], "audio": [4, 6, 1], "vision": [2, 2, 5]}
    dims = {"text": 4, "audio": 3, "vision": 2}
    rows = {m: [rng.normal(size=(n, dims[m])).astype(np.float32) + 0.5 for n in lengths[m]] for m in lengths}

    def split(front):
        out = {m: np.stack([padded(r, 6, front=front) for r in rows[m]]) for m in rows}
        out["labels"] = np.array([0.5, -1.0, 2.0], np.float32).reshape(3, 1, 1)
        out["id"] = np.array([["v", "0", "1"], ["v", "1", "2"], ["w", "0", "1"]])
        return out

    bundles = [read_mult("mem.pkl", {s: split(front) for s in ("train", "valid", "test")}) for front in (False, True)]
    for end, front in zip(*(b.splits["train"] for b in bundles)):
        for m in lengths:
            np.testing.assert_array_equal(end.features(m), front.features(m))
    assert [bundles[1].splits["test"][i].features("audio").shape[0] for i in range(3)] == lengths["audio"]


# --------------------------------------------------------------------------------- PMR and MICA


def tiny(name, **overrides):
    return dataclasses.replace(TINY[name], **overrides)


@pytest.mark.parametrize("name", sorted(TINY))
def test_padding_does_not_change_a_sample_with_wide_kernels(name):
    torch.manual_seed(0)
    model = build_model(name, tiny(name, conv_kernels=(3, 3, 3))).eval()
    batch = make_inputs(((3, 4, 5), (8, 9, 11), (6, 12, 7)))
    alone = {k: v[:1, : {"text": 3, "audio": 4, "vision": 5}[k.split("_")[0]]] for k, v in batch.items()}
    with torch.no_grad():
        a, b = run(model, alone), run(model, batch)
    torch.testing.assert_close(a.prediction, b.prediction[:1], atol=1e-5, rtol=1e-5)
    for key in a.extras:
        torch.testing.assert_close(a.extras[key], b.extras[key][:1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(TINY))
def test_multihead_task_and_empty_modalities(name):
    torch.manual_seed(0)
    model = build_model(name, tiny(name, task="multihead", head_sizes=(3, 2)))
    inputs = make_inputs(((5, 0, 0), (3, 4, 0), (0, 2, 0)))
    out = run(model, inputs, torch.tensor([[0, 1], [2, -1], [-1, -1]]))
    assert out.prediction.shape == (3, 5) and torch.isfinite(out.prediction).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_model_fits_one_batch(name):
    torch.manual_seed(0)
    model = build_model(name, tiny(name, embed_dropout=0.0, attn_dropout=0.0, res_dropout=0.0, relu_dropout=0.0))
    inputs, labels = make_inputs(((5, 7, 9), (3, 7, 4), (1, 2, 9), (4, 3, 2))), torch.tensor([1.5, -1.0, 0.5, -2.0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(25):
        opt.zero_grad()
        loss = run(model, inputs, labels).losses["task"]
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_pmr_hub_exchanges_with_every_modality():
    model = PMR(tiny("pmr"))
    assert len(model.send) == len(model.collect) == 2 and all(len(s) == 3 for s in model.send)
    model.eval()
    inputs = make_inputs(((5, 7, 9), (3, 7, 4)))
    with torch.no_grad():
        base = run(model, inputs)
        for m in ("text", "audio", "vision"):  # every modality reaches the hub and the prediction
            changed = dict(inputs, **{m: inputs[m] + 1.0 * inputs[f"{m}_mask"][..., None]})
            out = run(model, changed)
            assert not torch.allclose(out.extras["hub"], base.extras["hub"])
            assert not torch.allclose(out.prediction, base.prediction)
    assert base.extras["hub"].shape == (2, 6)


def test_mica_alignment_loss_is_zero_for_one_distribution_and_enters_the_total():
    q = torch.randn(2, 5, 6)
    mask = torch.ones(2, 5, dtype=torch.bool)
    self_attention = torch.eye(5).expand(2, 2, 5, 5)  # every query attends to its own row
    assert float(alignment_loss(q, mask, q.clone(), mask, self_attention)) < 1e-6
    assert float(alignment_loss(q, mask, q + 2.0, mask, self_attention)) > 1.0
    no_keys = torch.zeros(2, 5, dtype=torch.bool)
    assert float(alignment_loss(q, mask, q, no_keys, self_attention)) == 0.0
    torch.manual_seed(0)
    cfg = tiny("mica", align_weight=0.5)
    out = run(MICA(cfg), make_inputs(((5, 7, 9), (3, 7, 4))), torch.tensor([1.0, -1.0]))
    assert float(out.losses["align"].detach()) > 0
    torch.testing.assert_close(out.loss, out.losses["task"] + 0.5 * out.losses["align"])


def test_pmr_and_mica_configs_validate_and_round_trip():
    for name in TINY:
        cfg = tiny(name, task="classification", num_classes=3)
        assert config_from_dict(name, cfg.to_dict()) == cfg
        with pytest.raises(ValueError, match="num_heads"):
            tiny(name, num_heads=4)
        with pytest.raises(ValueError, match="conv_kernels"):
            tiny(name, conv_kernels=(2, 1, 1))
    with pytest.raises(ValueError, match="align_weight"):
        MICAConfig(align_weight=-1.0)


# ------------------------------------------------------------------- benchmarks/paper_tables.py


def load_paper_tables(monkeypatch):
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "paper_tables.py"
    spec = importlib.util.spec_from_file_location("paper_tables", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_tables", module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_paper_tables_runs_one_system_and_resumes(tmp_path, capsys, monkeypatch):
    from mfsa_pipe.training.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "tiny.pkl", n_train=16, n_valid=6, n_test=6, text_len=5, audio_len=6,
                           vision_len=6, text_dim=4, audio_dim=2, vision_dim=2)
    tables = load_paper_tables(monkeypatch)
    argv = ["--dataset", str(data), "--seeds", "3", "--epochs", "1", "--systems", "lf_lstm", "--set", "hidden=4",
            "--threads", "1", "--out", str(tmp_path / "out")]
    assert tables.main(argv) == 0
    printed = capsys.readouterr().out
    assert "Table 1: CMU-MOSI" in printed and "| lf_lstm |" in printed and "[33.7]" in printed  # the paper's Acc7
    rows = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("lf_lstm,lf_lstm,3,,1,1,1,")
    first = (tmp_path / "out" / "table.md").read_text()

    def no_training(**kwargs):
        raise AssertionError("a finished run was trained again")

    import mfsa_pipe.training
    monkeypatch.setattr(mfsa_pipe.training, "train", no_training)
    assert tables.main(argv) == 0  # resumes: nothing left to train, the same table
    assert (tmp_path / "out" / "table.md").read_text() == first
    assert tables.main(argv[:-4] + ["--set", "hidden=5", "--out", str(tmp_path / "out")]) == 2  # other settings
    assert "other settings" in capsys.readouterr().err
    assert tables.main(["--dataset", str(tmp_path / "missing.pkl")]) == 2
