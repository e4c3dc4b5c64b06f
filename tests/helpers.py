"""What several test files build: tiny model-zoo configs and batches, small datasets in the
benchmark and own formats, label tables. Test files import from here, never from each other."""

from __future__ import annotations

import csv
import dataclasses
import pickle
from pathlib import Path

import numpy as np
import torch

from extractors.sequence import Sequence
from models import EFLSTMConfig, LFLSTMConfig, MCTNConfig, MFSAConfig, MulTConfig, RAVENConfig
from models.mica import MICAConfig
from models.pmr import PMRConfig

MEDIA_DIR = Path(__file__).resolve().parent.parent / "examples" / "media"  # the bundled clips
PLUMBING_CLASSES = ["negative", "neutral", "positive"]

# ------------------------------------------------------------------------------ model zoo (tiny, CPU)

DIMS = (6, 4, 5)
TINY = {
    "mfsa": MFSAConfig(dims=DIMS, d=8, d_h=16, num_heads=2, psa_layers=2, hca_layers=2, wal_hidden=8,
                       fusion_heads=2, fusion_ffn=16, ffn_mult=2),
    "mult": MulTConfig(dims=DIMS, d=6, num_heads=2, layers=2, mem_layers=1),
    "ef_lstm": EFLSTMConfig(dims=DIMS, d=6, hidden=8, resample_length=7),
    "lf_lstm": LFLSTMConfig(dims=DIMS, hidden=8),
    "raven": RAVENConfig(dims=DIMS, nonverbal_hidden=4, hidden=8),
    "mctn": MCTNConfig(dims=DIMS, hidden=6, hidden2=6, reg_hidden=6),
    "pmr": PMRConfig(dims=DIMS, d=6, num_heads=2, layers=2, mem_layers=1),
    "mica": MICAConfig(dims=DIMS, d=6, num_heads=2, layers=2, mem_layers=1),
}


def tiny(name, **overrides):
    return dataclasses.replace(TINY[name], **overrides)


def batch(lengths=((5, 7, 9), (3, 7, 4), (1, 2, 9)), *, seed=0):
    """Inputs padded to the longest row per modality, with prefix masks."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for m, name in enumerate(("text", "audio", "vision")):
        lens = [row[m] for row in lengths]
        t = max(lens)
        x = torch.randn(len(lengths), t, DIMS[m], generator=g)
        mask = torch.arange(t)[None, :] < torch.tensor(lens)[:, None]
        out[name], out[f"{name}_mask"] = x * mask[..., None], mask
    return out


def labels_for(cfg, b):
    if cfg.task == "regression":
        return torch.linspace(-2, 2, b)
    if cfg.task == "classification":
        return torch.arange(b) % cfg.num_classes
    return (torch.arange(b * cfg.num_labels).view(b, cfg.num_labels) % 2)


def expected_shape(cfg, b):
    return {"regression": (b,), "classification": (b, cfg.num_classes), "multilabel": (b, cfg.num_labels, 2)}[cfg.task]


def run(model, inputs, labels=None):
    return model(inputs["text"], inputs["audio"], inputs["vision"], text_mask=inputs["text_mask"],
                 audio_mask=inputs["audio_mask"], vision_mask=inputs["vision_mask"], labels=labels)


def check_forward_backward(model, inputs):
    cfg = model.config
    b = inputs["text"].shape[0]
    out = run(model, inputs, labels_for(cfg, b))
    assert out.prediction.shape == expected_shape(cfg, b)
    assert torch.isfinite(out.prediction).all()
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.losses.values())
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return out


# ------------------------------------------------------------------------------ datasets

def padded(n, t, d, lengths, rng, *, dtype=np.float32):
    x = np.zeros((n, t, d), dtype)
    for i, ln in enumerate(lengths):
        x[i, :ln] = rng.standard_normal((ln, d)) + 0.1
    return x


def write_mult(path, *, iemocap=False, n=5):
    rng = np.random.default_rng(0)
    data = {}
    for split in ("train", "valid", "test"):
        audio = padded(n, 7, 3, [7, 4, 2, 0, 5][:n], rng)
        audio[0, 1, 2] = -np.inf  # COVAREP's -inf, as in MulT's pickles
        if iemocap:
            labels = np.zeros((n, 4, 2), np.float32)
            onoff = rng.integers(0, 2, (n, 4))
            labels[np.arange(n)[:, None], np.arange(4)[None], onoff] = 1
        else:
            labels = np.linspace(-3, 3, n).astype(np.float32).reshape(n, 1, 1)
        data[split] = {
            "text": padded(n, 6, 4, [6, 3, 1, 2, 4][:n], rng),
            "audio": audio,
            "vision": padded(n, 8, 2, [8, 8, 5, 3, 0][:n], rng),
            "labels": labels,
            "id": np.array([[f"vid{i % 2}", f"{i}.0", f"{i + 1}.0"] for i in range(n)]),
        }
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return data


# the own HDF5 format: a feature spec and sequences that match it
OWN_SPEC = {
    m: {"id": f"test/{m}", "version": "1", "config": {"k": 1}, "dim": d, "rate": r, "columns": [f"{m}{i}" for i in range(d)]}
    for m, d, r in (("text", 3, None), ("audio", 2, 12.5), ("vision", 4, 15.0))
}


def own_sequence(modality, t, value=1.0):
    d = OWN_SPEC[modality]["dim"]
    times = np.stack([np.arange(t) * 0.1, np.arange(t) * 0.1 + 0.1], 1)
    return Sequence(
        features=np.full((t, d), value, np.float32), times=times, columns=OWN_SPEC[modality]["columns"],
        rate=OWN_SPEC[modality]["rate"], source={"id": OWN_SPEC[modality]["id"], "version": "1"},
        tokens=[f"w{i}" for i in range(t)] if modality == "text" else None,
    )


def own_sequences(t=(3, 5, 0), value=1.0):
    return {m: own_sequence(m, n, value) for m, n in zip(("text", "audio", "vision"), t)}


# ------------------------------------------------------------------------------ label tables

def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0])
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in columns})
    return path


# ------------------------------------------------------------------------------ checkpoints

def train_plumbing_checkpoint(root: Path) -> Path:
    """A tiny MFSA trained 2 epochs on random sequences with the real extractors' feature spec.
    For the plumbing only: it has learnt nothing and must never be shipped or shown as a model."""
    from extractors.config import ExtractionConfig
    from extractors.pipeline import feature_spec
    from mfsa_pipe.datasets.h5 import DatasetWriter
    from mfsa_pipe.training import train

    config = ExtractionConfig()
    spec = feature_spec(config)
    rng = np.random.default_rng(0)
    dataset = root / "synthetic_plumbing_only.h5"
    splits = ["train"] * 12 + ["valid"] * 4 + ["test"] * 4
    with DatasetWriter(dataset, feature_spec=spec, label_spec={"task": "classification", "classes": PLUMBING_CLASSES},
                       extraction_config=config.to_dict(), provenance={"note": "synthetic, plumbing tests only"}) as writer:
        for i, split in enumerate(splits):
            sequences = {}
            for m, rows in (("text", 5), ("audio", 20), ("vision", 24)):
                s = spec[m]
                n = int(rng.integers(0, rows + 1))  # some samples have an empty modality
                times = np.stack([np.arange(n) * 0.1, np.arange(n) * 0.1 + 0.1], axis=1)
                sequences[m] = Sequence(
                    features=rng.standard_normal((n, s["dim"])).astype(np.float32), times=times, columns=s["columns"],
                    rate=s["rate"], source={k: s[k] for k in ("id", "version", "config")},
                    tokens=[f"w{j}" for j in range(n)] if m == "text" else None,
                )
            writer.add(f"synthetic-{i}", sequences=sequences, label=PLUMBING_CLASSES[i % 3], split=split, group=f"g{i % 4}")
    small = {"d": 8, "d_h": 16, "num_heads": 2, "psa_layers": 1, "hca_layers": 1, "fusion_heads": 2, "fusion_ffn": 16, "wal_hidden": 8}
    result = train(model_name="mfsa", dataset=dataset, out_dir=root / "run", overrides=small, epochs=2,
                   batch_size=8, progress=False, device="cpu")
    return Path(result.checkpoint)
