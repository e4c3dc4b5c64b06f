"""Cost of MFSA (mosi preset) against MulT at CMU-MOSI unaligned shapes.

    python benchmarks/bench_models.py [--device cpu|cuda] [--amp] [--reps 5] [--warmup 3] [--batch 16] [--checkpoint-psa]
                                      [--models mfsa,mult,mult-mosi] [--glibc-malloc]

MulT is measured twice: `mult` with the reference code's defaults (d 30, 5 heads, 5 + 5 blocks)
and `mult-mosi` with the MulT paper's published CMU-MOSI settings (Table 5: d 40, 10 heads,
4 + 4 blocks, attention dropout 0.2), the counterpart of MFSA's mosi preset. On CPU each model
runs as `train` does: a first step with glibc's default malloc, then
mfsa_pipe.cpu_memory.keep_freed_memory_if_room() (applied when the peak so far x 1.5 fits in
memory; the printed line says whether it was); --glibc-malloc keeps glibc's default throughout.

Prints per model: parameter count, forward time (eval, no grad) and training-step time
(forward + loss + backward, train mode), medians over --reps after --warmup calls (the first steps
also grow the process's heap: steady state is what a training run sees); peak memory of
the training step (CUDA: max_memory_allocated; CPU: growth of the process's peak RSS over the
model's runs, each
model measured in its own subprocess so one model's peak does not hide the other's); for MFSA
the share of the step spent in the prediction chain's Conv2d (forward + backward, timed with
module hooks in a separate pass) and, with --ablate-chain, the step without the chain at all.
Inputs: text 50 x 300, audio 375 x 5, vision 500 x 20, every row real (the worst case).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from mfsa_pipe.cpu_memory import keep_freed_memory_if_room  # noqa: E402
from models import MFSAConfig, MulTConfig, build_model  # noqa: E402

SHAPES = {"text": (50, 300), "audio": (375, 5), "vision": (500, 20)}
DIMS = tuple(d for _, d in SHAPES.values())


def make_config(name: str, args) -> object:
    if name.startswith("mfsa"):
        overrides = dict(dims=DIMS, chain_groups=args.chain_groups, checkpoint_psa=args.checkpoint_psa)
        if name == "mfsa-nochain":
            overrides["use_prediction_chain"] = False
        return MFSAConfig.preset("mosi", **overrides)
    if name == "mult-mosi":
        return MulTConfig.preset("mosi", dims=DIMS)
    return MulTConfig(dims=DIMS)


def make_inputs(batch: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    inputs = {}
    for name, (t, d) in SHAPES.items():
        inputs[name] = torch.randn(batch, t, d, generator=g).to(device)
        inputs[f"{name}_mask"] = torch.ones(batch, t, dtype=torch.bool, device=device)
    labels = (torch.rand(batch, generator=g) * 6 - 3).to(device)
    return inputs, labels


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def call(model, inputs, labels=None):
    return model(inputs["text"], inputs["audio"], inputs["vision"], text_mask=inputs["text_mask"],
                 audio_mask=inputs["audio_mask"], vision_mask=inputs["vision_mask"], labels=labels)


def timed(fn, reps: int, device, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def chain_time(model, step, device) -> float:
    """Seconds spent inside the chain convs (forward and backward) during one step."""
    spent, starts, handles = [0.0], {}, []

    def begin(key):
        def hook(*_):
            sync(device)
            starts[key] = time.perf_counter()
        return hook

    def end(key):
        def hook(*_):
            sync(device)
            spent[0] += time.perf_counter() - starts.pop(key)
        return hook

    for i, conv in enumerate(model.chain_convs()):
        handles += [conv.register_forward_pre_hook(begin(("f", i))), conv.register_forward_hook(end(("f", i))),
                    conv.register_full_backward_pre_hook(begin(("b", i))), conv.register_full_backward_hook(end(("b", i)))]
    try:
        step()
    finally:
        for h in handles:
            h.remove()
    return spent[0]


def measure(name: str, args) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(name.split("-")[0], make_config(name, args)).to(device)
    inputs, labels = make_inputs(args.batch, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16) \
        if args.amp else nullcontext()
    result = {"model": name, "params": sum(p.numel() for p in model.parameters())}

    def forward():
        with torch.no_grad(), autocast:
            call(model, inputs)

    def step():
        with autocast:
            out = call(model, inputs, labels)
        out.loss.backward()
        model.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    model.train()
    step()  # as in `train`: the first step runs with glibc's default, then the allocator is chosen
    if device.type == "cpu" and not args.glibc_malloc:
        result["keep_freed_memory"] = keep_freed_memory_if_room()
    model.eval()
    result["forward_s"] = timed(forward, args.reps, device, args.warmup)
    model.train()
    result["step_s"] = timed(step, args.reps, device, args.warmup)
    if device.type == "cuda":
        result["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result["peak_mem_mb"], result["process_peak_rss_mb"] = (peak - rss_before) / 1024, peak / 1024
    if hasattr(model, "chain_convs") and model.chain_convs():
        result["chain_conv_s"] = chain_time(model, step, device)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", action="store_true", help="autocast (bfloat16 on CPU, float16 on CUDA)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before the timed ones")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--chain-groups", type=int, default=1, help="MFSA prediction-chain conv groups (8 = depthwise)")
    parser.add_argument("--checkpoint-psa", action="store_true",
                        help="MFSA with checkpoint_psa=True (PSA maps recomputed in backward: less memory, more time)")
    parser.add_argument("--ablate-chain", action="store_true", help="also time MFSA without the prediction chain")
    parser.add_argument("--glibc-malloc", action="store_true",
                        help="leave glibc's malloc settings alone (no keep_freed_memory) on CPU")
    parser.add_argument("--models", default="mfsa,mult,mult-mosi")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.only:
        print(json.dumps(measure(args.only, args)))
        return

    names = args.models.split(",") + (["mfsa-nochain"] if args.ablate_chain else [])
    argv, passthrough = sys.argv[1:], []
    for i, a in enumerate(argv):  # drop "--models X" and "--models=X"
        if not a.startswith("--models") and not (i and argv[i - 1] == "--models"):
            passthrough.append(a)
    print(f"device={args.device} amp={args.amp} batch={args.batch} reps={args.reps} threads={args.threads or torch.get_num_threads()} "
          f"chain_groups={args.chain_groups} checkpoint_psa={args.checkpoint_psa} glibc_malloc={args.glibc_malloc}; shapes " + ", ".join(f"{k} {t}x{d}" for k, (t, d) in SHAPES.items()))
    results = {}
    for name in names:
        out = subprocess.run([sys.executable, __file__, *passthrough, "--only", name], check=True,
                             capture_output=True, text=True, env=os.environ).stdout
        results[name] = r = json.loads(out.strip().splitlines()[-1])
        line = (f"{name:13s} params {r['params']:>9,d}  forward {r['forward_s'] * 1e3:8.1f} ms  "
                f"train step {r['step_s'] * 1e3:8.1f} ms  peak mem {r['peak_mem_mb']:8.1f} MiB")
        if "process_peak_rss_mb" in r:
            line += f" (process peak RSS {r['process_peak_rss_mb'] / 1024:.1f} GiB)"
        if "keep_freed_memory" in r:
            line += f"  keep_freed_memory {'on' if r['keep_freed_memory'] else 'off (no room)'}"
        if "chain_conv_s" in r:
            line += f"  chain conv {r['chain_conv_s'] * 1e3:.1f} ms ({100 * r['chain_conv_s'] / r['step_s']:.1f}% of step)"
        print(line, flush=True)
    for mult, what in (("mult", "MulT, reference defaults"), ("mult-mosi", "MulT, its MOSI settings")):
        if "mfsa" in results and mult in results:
            ratio = results["mfsa"]["step_s"] / results[mult]["step_s"]
            print(f"MFSA / {what}: train step {ratio:.2f}x (goal <= 1.3x)")
    if "mfsa-nochain" in results:
        share = 1 - results["mfsa-nochain"]["step_s"] / results["mfsa"]["step_s"]
        print(f"whole prediction chain (conv + GELU + mixing + second softmax): {100 * share:.1f}% of MFSA's step")


if __name__ == "__main__":
    main()
