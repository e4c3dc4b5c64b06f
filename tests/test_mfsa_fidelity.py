"""MFSA as the paper writes it (issue 16): the per-sample separation loss of eq. 13 beside the
batch (DSN) form, Table 4's "w/o Modality-Specific / -Agnostic" rows, and saved configs from
before those options still building the model they built."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from models import MFSA, MFSAConfig, build_model, config_from_dict, separation_loss

from helpers import batch, labels_for, run, tiny


def orthogonal_to(h: torch.Tensor, *, seed: int) -> torch.Tensor:
    """A random vector per row of h (..., d) orthogonal to that row."""
    r = torch.randn(h.shape, generator=torch.Generator().manual_seed(seed))
    unit = F.normalize(h, dim=-1)
    return r - (r * unit).sum(-1, keepdim=True) * unit


def old_batch_form(h_s, h_a, present):
    """The separation loss as models/mfsa.py computed it before sep_loss_form existed."""
    weight = present.to(h_s.dtype).unsqueeze(-1)
    s, a = F.normalize(h_s, dim=-1) * weight, F.normalize(h_a, dim=-1) * weight
    cross = torch.einsum("bmi,bmj->mij", s, a)
    n = present.sum(0).clamp(min=1).to(cross.dtype)
    return (cross.pow(2).sum((1, 2)) / n.pow(2)).sum()


# ------------------------------------------------------------------------- separation loss


def test_per_sample_form_is_zero_for_per_sample_orthogonal_pairs_unlike_the_batch_form():
    h_s = torch.randn(8, 3, 16, generator=torch.Generator().manual_seed(0))
    h_a = orthogonal_to(h_s, seed=1)
    assert separation_loss(h_s, h_a).item() == pytest.approx(0.0, abs=1e-6)  # per_sample is the default
    assert separation_loss(h_s, h_a, form="batch") > 0.05  # the DSN form asks for something else


def test_per_sample_form_is_one_per_modality_for_parallel_pairs_whatever_the_batch_size_scale_and_width():
    for d_h, b in ((8, 2), (64, 32)):
        u = torch.randn(b, 3, d_h, generator=torch.Generator().manual_seed(d_h))
        half = u[: b // 2]
        # each sample twice, h^a = +5 h^s once and -5 h^s once: the paper's form penalises these
        # parallel pairs fully, the batch form not at all (+u u^T and -u u^T cancel)
        h_s, h_a = torch.cat([half, half]), torch.cat([5.0 * half, -5.0 * half])
        assert separation_loss(h_s, h_a).item() == pytest.approx(3.0, abs=1e-5)
        assert separation_loss(h_s, h_a, form="batch").item() == pytest.approx(0.0, abs=1e-5)
    mixed_s = torch.randn(6, 3, 16, generator=torch.Generator().manual_seed(2))
    mixed_a = mixed_s + torch.randn(6, 3, 16, generator=torch.Generator().manual_seed(3))
    value = separation_loss(mixed_s, mixed_a)
    assert 0.0 < value < 3.0
    torch.testing.assert_close(separation_loss(torch.cat([mixed_s] * 4), torch.cat([mixed_a] * 4)), value)
    torch.testing.assert_close(separation_loss(0.1 * mixed_s, 7.0 * mixed_a), value)


def test_per_sample_form_skips_samples_without_the_modality():
    h_s = torch.randn(5, 3, 8, generator=torch.Generator().manual_seed(4))
    h_a = orthogonal_to(h_s, seed=5)
    h_a[4] = h_s[4]  # sample 4 is parallel everywhere, but has no audio and no vision
    present = torch.ones(5, 3, dtype=torch.bool)
    present[4, 1:] = False
    # text counts sample 4 (1 of 5 samples at cos^2 = 1); audio and vision do not
    assert separation_loss(h_s, h_a, present).item() == pytest.approx(1 / 5, abs=1e-6)
    assert separation_loss(h_s, h_a, present, form="batch") > 0
    with pytest.raises(ValueError, match="form must be one of"):
        separation_loss(h_s, h_a, form="rows")


def test_batch_form_is_unchanged():
    g = torch.Generator().manual_seed(6)
    h_s, h_a = torch.randn(7, 3, 16, generator=g), torch.randn(7, 3, 16, generator=g)
    present = torch.rand(7, 3, generator=g) > 0.3
    for p in (present, torch.ones(7, 3, dtype=torch.bool)):
        torch.testing.assert_close(separation_loss(h_s, h_a, p, form="batch"), old_batch_form(h_s, h_a, p),
                                   rtol=0, atol=0)


@pytest.mark.parametrize("form", ["per_sample", "batch"])
def test_the_model_uses_the_configured_form(form):
    torch.manual_seed(0)
    cfg = tiny("mfsa", sep_loss_form=form)
    inputs = batch(((5, 7, 9), (3, 0, 4), (2, 7, 1)))  # sample 1 has no audio
    out = run(MFSA(cfg).eval(), inputs, labels_for(cfg, 3))
    present = torch.stack([inputs[f"{m}_mask"].any(1) for m in ("text", "audio", "vision")], 1)
    expected = separation_loss(out.extras["h_s"], out.extras["h_a"], present, form=form)
    torch.testing.assert_close(out.losses["sep"], expected)


# ----------------------------------------------------------------------- Table 4 switches


def parameter_shapes(model):
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


def branch_parameters(shapes, *prefixes):
    return {name for name in shapes if name.startswith(prefixes)}


SPECIFIC = ("psa.", "wal.", "specific.")
AGNOSTIC = ("hca.", "agnostic.", "importance_discriminator.")


@pytest.mark.parametrize("representation, other", [("specific", "agnostic"), ("agnostic", "specific")])
def test_without_a_representation_it_is_left_out_of_fusion_and_nothing_else(representation, other):
    torch.manual_seed(0)
    cfg = tiny("mfsa", **{f"use_{representation}": False})
    full, ablated = parameter_shapes(MFSA(tiny("mfsa"))), parameter_shapes(MFSA(cfg))
    assert set(ablated) == set(full)  # every branch, encoder and discriminator is still there
    changed = {name for name in full if full[name] != ablated[name]}
    assert changed == {"head.0.weight"} and ablated["head.0.weight"] == (cfg.d_h, 3 * cfg.d_h)

    model = MFSA(cfg).eval()
    inputs = batch()
    out = run(model, inputs, labels_for(cfg, 3))
    assert set(out.losses) == {"task", "sep", "agn", "spe"}
    # the prediction no longer reads the left-out representation; the other one it does read
    encoders = {"specific": model.specific, "agnostic": model.agnostic}
    with torch.no_grad():
        for p in encoders[representation].parameters():
            p.add_(1.0)
        again = run(model, inputs, labels_for(cfg, 3))
        torch.testing.assert_close(again.prediction, out.prediction)
        assert not torch.allclose(again.losses["sep"], out.losses["sep"])  # its branch still trains
        for p in encoders[other].parameters():
            p.add_(1.0)
        assert not torch.allclose(run(model, inputs).prediction, out.prediction)


@pytest.mark.parametrize("branch, prefixes, kept_losses", [
    ("specific", SPECIFIC, {"task", "agn"}),
    ("agnostic", AGNOSTIC, {"task", "spe"}),
])
def test_dropping_a_branch_removes_its_modules_and_losses(branch, prefixes, kept_losses):
    torch.manual_seed(0)
    cfg = tiny("mfsa", **{f"use_{branch}": False, f"drop_{branch}_branch": True})
    full, dropped = parameter_shapes(MFSA(tiny("mfsa"))), parameter_shapes(MFSA(cfg))
    assert branch_parameters(full, *prefixes) and not branch_parameters(dropped, *prefixes)
    assert set(full) - set(dropped) == branch_parameters(full, *prefixes)
    out = run(MFSA(cfg), batch(), labels_for(cfg, 3))
    assert set(out.losses) == kept_losses
    assert ("h_s" in out.extras) == (branch != "specific") and ("h_a" in out.extras) == (branch != "agnostic")


@pytest.mark.parametrize("overrides, message", [
    (dict(sep_loss_form="rows"), "sep_loss_form must be one of"),
    (dict(drop_specific_branch=True), "set use_specific to false"),
    (dict(drop_agnostic_branch=True), "set use_agnostic to false"),
    (dict(drop_agnostic_branch=1), "drop_agnostic_branch must be a bool"),
])
def test_new_fields_are_validated(overrides, message):
    with pytest.raises(ValueError, match=message):
        MFSAConfig(**overrides)


# ------------------------------------------------------------------- configs saved before


def saved_before(config: MFSAConfig) -> dict:
    """config.to_dict() as it was written before sep_loss_form and drop_*_branch existed."""
    new_fields = ("sep_loss_form", "drop_specific_branch", "drop_agnostic_branch")
    return {k: v for k, v in config.to_dict().items() if k not in new_fields}


@pytest.mark.parametrize("branch", ["specific", "agnostic", None])
def test_old_config_dicts_build_the_model_they_built(branch):
    old_switches = {f"use_{branch}": False} if branch else {}
    loaded = MFSAConfig.from_dict(saved_before(tiny("mfsa", **old_switches)))
    assert loaded.sep_loss_form == "batch"
    meant = tiny("mfsa", sep_loss_form="batch", **old_switches,
                 **({f"drop_{branch}_branch": True} if branch else {}))
    assert loaded == meant
    assert config_from_dict("mfsa", saved_before(meant)) == meant
    # the state dict of the model the old code built loads into it, strictly
    torch.manual_seed(0)
    old = MFSA(meant)
    rebuilt = build_model("mfsa", saved_before(meant))
    rebuilt.load_state_dict(old.state_dict())
    inputs = batch()
    torch.testing.assert_close(run(rebuilt.eval(), inputs, labels_for(meant, 3)).loss,
                               run(old.eval(), inputs, labels_for(meant, 3)).loss)


def test_partial_and_new_dicts_keep_todays_meaning():
    assert MFSAConfig.from_dict({"d": 16, "num_heads": 2}).sep_loss_form == "per_sample"
    partial = MFSAConfig.from_dict({"use_specific": False})
    assert not partial.drop_specific_branch  # a user's setting: the Table 4 row
    current = tiny("mfsa", use_agnostic=False)
    assert MFSAConfig.from_dict(current.to_dict()) == current
    assert dataclasses.replace(current, sep_loss_form="batch").to_dict()["sep_loss_form"] == "batch"


def test_the_shipped_default_model_is_the_recipes_batch_form_and_loads():
    import sys
    from pathlib import Path

    from mfsa_pipe.checkpoint import load_checkpoint

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "examples"))
    from default_recipe import settings as recipe

    ckpt = load_checkpoint(root / "mfsa_pipe" / "default_model" / "model.ckpt")
    # the recipe pins the batch (DSN) form and the pooled read-out; the checkpoint says so itself
    assert ckpt.model_name == "ensemble" and ckpt.model_config["members"] == recipe.ENSEMBLE["members"]
    config = ckpt.model_config["member_config"]
    assert config["sep_loss_form"] == recipe.MODEL["sep_loss_form"] == "batch"
    assert config["pooled_logits"] is recipe.MODEL["pooled_logits"] is True
    model = ckpt.build_model()  # strict state-dict load
    for member in model.members:
        assert member.config.sep_loss_form == "batch" and member.has_specific and member.has_agnostic
