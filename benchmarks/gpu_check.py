"""CUDA / AMP correctness check for every model (run on a machine with a GPU).

For each model of the registry, at MOSI unaligned shapes with padded, variable lengths:
- fp32 outputs on CUDA equal those on CPU (same weights, eval mode) within a tolerance;
- fp32 gradients of the loss (eval mode: no dropout) on CUDA match those on CPU (relative norm
  of the difference; on CPU MFSA's PSA layers and small-head attention run their written-out
  backward, on CUDA the composed autograd ops, so this also checks one against the other);
- under autocast (bf16 and fp16) a training step gives finite predictions, losses and gradients,
  and the bf16 prediction stays close to fp32.
Prints one line per check and exits non-zero when any check fails.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import sys

import torch

from models.mfsa import MFSAConfig
from models.registry import MODELS, build_model, config_from_dict

SHAPES = {"text": (50, 300), "audio": (375, 5), "vision": (500, 20)}


def make_batch(batch: int, *, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    inputs, masks = [], []
    for name, (length, dim) in SHAPES.items():
        lengths = torch.randint(length // 4, length + 1, (batch,), generator=g)
        lengths[0] = length
        if name == "vision":
            lengths[1] = 0  # a sample without a face
        mask = torch.arange(length)[None, :] < lengths[:, None]
        inputs.append(torch.randn(batch, length, dim, generator=g) * mask[..., None])
        masks.append(mask)
    return inputs, masks


def config_for(name: str):
    if name == "mfsa":
        return MFSAConfig.preset("mosi")
    config_class = MODELS[name][0]
    return config_class(dims=(300, 5, 20), task="regression")


def run(model, inputs, masks, labels=None):
    text, audio, vision = inputs
    return model(text, audio, vision, text_mask=masks[0], audio_mask=masks[1], vision_mask=masks[2], labels=labels)


def gradient_gap(model, inputs, masks, labels) -> float:
    """Largest relative difference between a parameter's CPU and CUDA gradient (model on CUDA, eval)."""
    grads = []
    for device in ("cpu", "cuda"):
        model.to(device).zero_grad(set_to_none=True)
        run(model, [x.to(device) for x in inputs], [m.to(device) for m in masks], labels.to(device)).loss.backward()
        grads.append({n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None})
    model.zero_grad(set_to_none=True)
    cpu, gpu = grads
    assert cpu.keys() == gpu.keys()
    return max(float((gpu[n] - cpu[n]).norm() / cpu[n].norm().clamp(min=1e-12)) for n in cpu)


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    print(f"device: {torch.cuda.get_device_name()} torch {torch.__version__}")
    failures = 0
    inputs, masks = make_batch(8)
    labels = torch.linspace(-3, 3, 8)
    for name in sorted(MODELS):
        torch.manual_seed(0)
        config = config_for(name)
        model = build_model(name, config_from_dict(name, config.to_dict())).eval()
        with torch.no_grad():
            cpu = run(model, inputs, masks).prediction
        model = model.cuda()
        gpu_inputs = [x.cuda() for x in inputs]
        gpu_masks = [m.cuda() for m in masks]
        with torch.no_grad():
            gpu = run(model, gpu_inputs, gpu_masks).prediction.float().cpu()
        diff = (cpu - gpu).abs().max().item()
        ok = diff < 1e-3
        failures += not ok
        print(f"{name:8s} fp32 cpu vs cuda: max |diff| = {diff:.2e} {'ok' if ok else 'FAIL'}")
        worst = gradient_gap(model, inputs, masks, labels)
        ok = worst < 1e-2  # cuDNN convolutions may use TF32
        failures += not ok
        print(f"{name:8s} fp32 gradients cpu vs cuda: worst |g_cuda - g_cpu| / |g_cpu| = {worst:.2e} {'ok' if ok else 'FAIL'}")
        model.train()
        for dtype in (torch.bfloat16, torch.float16):
            model.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=dtype):
                out = run(model, gpu_inputs, gpu_masks, labels.cuda())
            out.loss.float().backward()
            grads_finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
            finite = torch.isfinite(out.prediction.float()).all().item() and torch.isfinite(out.loss.float()).item()
            terms = {k: round(float(v.detach()), 4) for k, v in out.losses.items()}
            ok = finite and grads_finite
            failures += not ok
            print(f"{name:8s} {str(dtype)[6:]:8s} train step: finite={finite} grads finite={grads_finite} losses={terms} {'ok' if ok else 'FAIL'}")
        model.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            amp = run(model, gpu_inputs, gpu_masks).prediction.float().cpu()
        print(f"{name:8s} bf16 vs fp32 prediction: max |diff| = {(amp - gpu).abs().max().item():.3f} (scores in [-3, 3])")
    print("all checks passed" if not failures else f"{failures} checks FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
