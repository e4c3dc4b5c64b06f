"""The torch device a run asks for, checked before any work: a device this machine cannot use
is one clear error up front, not a traceback after minutes of extraction."""

from __future__ import annotations

import re
from typing import Any

from extractors.errors import UserError

DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


class DeviceError(UserError, ValueError):
    """The device is not one this program knows, or this machine cannot use it."""


def check_device(device: str) -> str:
    """`device` when this machine can use it ("auto" and "cpu" always can); raises DeviceError.
    torch is imported only for a CUDA device, so the check costs nothing in the common case."""
    if device in ("auto", "cpu"):
        return device
    match = re.fullmatch(r"cuda(?::(\d+))?", str(device))
    if match is None:
        raise DeviceError(f"device {device!r} is not one of {DEVICE_FORMS}")
    import torch

    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {device!r} asked for, but CUDA is not available on this machine "
            "(no usable GPU, or a CPU-only torch); use --device cpu or auto"
        )
    count = torch.cuda.device_count()
    if int(match.group(1) or 0) >= count:
        raise DeviceError(f"device {device!r} asked for, but this machine has {count} CUDA device(s): cuda:0 to cuda:{count - 1}")
    return device


def resolve_device(device: str = "auto") -> Any:
    """The torch.device for `device` ("auto": CUDA when available, else the CPU); raises
    DeviceError (a ValueError) when this machine cannot use it. The one resolver: a report
    records `str()` of it."""
    import torch

    if check_device(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
