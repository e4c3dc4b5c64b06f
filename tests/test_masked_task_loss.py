"""models.base.masked_task_loss: the task loss over some samples as a masked mean, equal to
indexing them out (what MFSA's pooled auxiliary loss used before, with a host sync)."""

from __future__ import annotations

import pytest
import torch

from models.base import ModelConfig, compute_task_loss, masked_task_loss, shape_prediction, task_output_size

TASKS = {"regression": dict(task="regression"), "classification": dict(task="classification", num_classes=4),
         "multilabel": dict(task="multilabel", num_labels=3), "multihead": dict(task="multihead", head_sizes=(3, 2))}


def _labels(config: ModelConfig, b: int, g: torch.Generator) -> torch.Tensor:
    if config.task == "regression":
        return torch.randn(b, 1, generator=g)
    if config.task == "classification":
        return torch.randint(0, config.num_classes, (b,), generator=g)
    if config.task == "multilabel":
        return torch.randint(0, 2, (b, config.num_labels), generator=g)
    labels = torch.stack([torch.randint(-1, n, (b,), generator=g) for n in config.head_sizes], 1)
    return labels


@pytest.mark.parametrize("task", list(TASKS))
def test_masked_task_loss_equals_the_loss_of_the_kept_samples(task):
    config = ModelConfig(**TASKS[task])
    g = torch.Generator().manual_seed(0)
    b = 9
    raw = torch.randn(b, task_output_size(config.task, config.num_classes, config.num_labels, config.head_sizes),
                      generator=g, requires_grad=True)
    prediction, labels = shape_prediction(raw, config.task, config.num_labels), _labels(config, b, g)
    keep = torch.tensor([True, False, True, True, False, True, False, True, True])
    expected = compute_task_loss(prediction[keep], labels[keep], config)
    assert torch.allclose(masked_task_loss(prediction, labels, keep, config), expected, atol=1e-6)
    everything = masked_task_loss(prediction, labels, torch.ones(b, dtype=torch.bool), config)
    assert torch.allclose(everything, compute_task_loss(prediction, labels, config), atol=1e-6)
    none = masked_task_loss(prediction, labels, torch.zeros(b, dtype=torch.bool), config)
    assert none.item() == 0.0
    none.backward()  # the graph stays connected with nothing kept
    assert raw.grad is not None and torch.equal(raw.grad, torch.zeros_like(raw))
