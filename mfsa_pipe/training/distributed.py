"""Training under torchrun: DistributedDataParallel over processes that each train on their share
of every epoch (gloo on CPU, NCCL on CUDA, one GPU per process by LOCAL_RANK).

    torchrun --nproc_per_node N $(which mfsa-pipe) train ...                    one machine
    torchrun --nnodes M --nproc_per_node N --rdzv-backend c10d \\
             --rdzv-endpoint HOST:PORT $(which mfsa-pipe) train ...              M machines

What makes N processes one run:
- every epoch has one order of the training split (drawn as the single-process loader draws it:
  a generator seeded by (seed, epoch)); process r takes every N-th sample of it from r (the
  order padded by repetition to a multiple of N, as DistributedSampler does), so the processes see
  different samples and the same number of batches. --batch-size is per process.
- validation: each process runs its share, the predictions are gathered, and every process
  computes the metrics of the whole split; rank 0's loss and stop decision are broadcast, so the
  schedule and early stopping are decided once.
- rank 0 alone writes model.ckpt, last.ckpt, log.jsonl and result.json; last.ckpt holds every
  process's RNG state, so a resumed run continues as an uninterrupted one would.
- a batch with a non-finite loss on any process is skipped by all of them.
- with one process the run equals plain `mfsa-pipe train` with the same seed.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any, Iterator

import numpy as np

from mfsa_pipe.training.evaluation import Predictions, multihead_split_loss


class ShardSampler:
    """Process `rank`'s share of a permutation drawn from `generator` when iterated."""

    def __init__(self, n: int, *, generator: Any, rank: int, world_size: int) -> None:
        self.n, self.generator, self.rank, self.world_size = n, generator, rank, world_size
        self.last: list[int] = []  # the indices of the latest iteration

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __iter__(self) -> Iterator[int]:
        import torch

        order = torch.randperm(self.n, generator=self.generator).tolist()
        total = len(self) * self.world_size
        order += (order * math.ceil(total / max(1, self.n)))[: total - self.n]
        self.last = order[self.rank : total : self.world_size]
        return iter(self.last)


class Processes:
    """The processes of a run: one (plain training) or those torchrun started."""

    def __init__(self, *, world_size: int = 1, rank: int = 0, local_rank: int = 0, backend: str | None = None) -> None:
        self.world_size, self.rank, self.local_rank, self.backend = world_size, rank, local_rank, backend
        self.tensor_device = "cpu"  # where tensor collectives run: NCCL takes CUDA tensors only

    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: Any) -> Any:
        """A CUDA run puts each process on the GPU of its local rank."""
        import torch

        if self.active and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
            self.tensor_device = device if self.backend == "nccl" else "cpu"
        return device

    def wrap(self, model: Any, device: Any, probe: Any) -> Any:
        """The model that trains: DistributedDataParallel when distributed, else the model itself.
        `probe`: a training batch; a model that leaves parameters without a gradient on it gets
        DDP's search for unused parameters (a graph walk per step), others do not. The zoo has no
        buffers to broadcast."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=has_unused_parameters(model, probe))

    def sampler(self, n: int, generator: Any) -> ShardSampler | None:
        return ShardSampler(n, generator=generator, rank=self.rank, world_size=self.world_size) if self.active else None

    def share(self, split: Any) -> Any:
        """This process's share of an evaluation split: every N-th sample from its rank."""
        if not self.active:
            return split
        from torch.utils.data import Subset

        return Subset(split, range(self.rank, len(split), self.world_size))

    def agree(self, ok: bool) -> bool:
        """True when `ok` holds on every process."""
        if not self.active:
            return ok
        import torch
        import torch.distributed as dist

        flag = torch.tensor([1.0 if ok else 0.0], device=self.tensor_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item() > 0)

    def all_gather(self, value: Any) -> list[Any]:
        if not self.active:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every process."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def shard_report(self, sampler: Any) -> dict[str, Any]:
        """For the log: how many samples each process trained on, and how many distinct ones
        they saw together (the split's size when the shards cover it); {} for one plain process."""
        if not self.active or not hasattr(sampler, "last"):  # ShardSampler or BucketBatchSampler
            return {}
        shards = self.all_gather(sampler.last)
        return {"samples_by_rank": [len(s) for s in shards], "distinct_samples": len(set().union(*shards))}

    def mean_losses(self, losses: dict[str, float], seen: int) -> tuple[dict[str, float], int]:
        """Sample-weighted means over every process's (means, samples)."""
        if not self.active:
            return losses, seen
        parts = self.all_gather((losses, seen))
        total = sum(n for _, n in parts)
        keys = parts[0][0].keys()
        return ({k: sum(p[k] * n for p, n in parts) / total for k in keys} if total else {}), total

    def gather_predictions(self, part: Any, *, head_sizes: tuple[int, ...] = ()) -> Any:
        """The whole split's Predictions (in the split's order) from every process's `share`."""
        if not self.active:
            return part
        parts = self.all_gather(part)
        n = sum(len(p.ids) for p in parts)
        ids: list[Any] = [None] * n
        prediction = np.empty((n, *parts[0].prediction.shape[1:]), parts[0].prediction.dtype)
        truth = np.empty((n, *parts[0].truth.shape[1:]), parts[0].truth.dtype)
        present = np.empty((n, *parts[0].present.shape[1:]), bool)
        for r, p in enumerate(parts):
            ids[r::self.world_size], prediction[r::self.world_size], truth[r::self.world_size] = p.ids, p.prediction, p.truth
            present[r::self.world_size] = p.present
        losses = {k: sum(p.losses[k] * len(p.ids) for p in parts) / n for k in parts[0].losses}
        if head_sizes:
            losses["task"] = multihead_split_loss(prediction, truth, head_sizes)
        return Predictions(ids=ids, prediction=prediction, truth=truth, losses=losses, present=present)


def has_unused_parameters(model: Any, batch: Any) -> bool:
    """Whether a training step on `batch` leaves a trainable parameter without a gradient (the
    RNG states and gradients are as before afterwards)."""
    import torch

    device = next(model.parameters()).device
    batch = batch.to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model.train()
        model(**batch.inputs(), **batch.masks(), labels=batch.labels).loss.backward()
    unused = any(p.requires_grad and p.grad is None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    return unused


@contextlib.contextmanager
def processes(device: Any) -> Iterator[Processes]:
    """The run's processes: torchrun's (WORLD_SIZE, RANK and LOCAL_RANK in the environment; the
    process group is started here unless the caller started it) or this one alone."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        yield Processes()
        return
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    started = not dist.is_initialized()
    if started:
        dist.init_process_group(backend=backend)
    try:
        yield Processes(world_size=dist.get_world_size(), rank=dist.get_rank(),
                        local_rank=int(os.environ.get("LOCAL_RANK", 0)), backend=dist.get_backend())
    finally:
        if started:
            dist.destroy_process_group()
