"""A checkpoint's fields read without torch: everything `load_checkpoint` checks except the
model's config and weights, in milliseconds instead of the seconds torch takes to import.

`analyze` refuses a malformed checkpoint with this before any work, then loads the real one
(torch, weights, model) in the background while the features are extracted. A torch file is a
zip archive whose `<name>/data.pkl` pickles the payload; its tensors point at storages kept in
other records. The pickle is read with a restricted unpickler: only the few globals torch.save
writes for plain tensors are resolved, each to a harmless stand-in (a tensor becomes a
TensorInfo: shape and dtype, data unread); any other global is refused unresolved, so no code
in the file ever runs, as with torch's weights-only loading.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfsa_pipe.checkpoint import (
    UNREADABLE,
    CheckpointError,
    check_feature_spec,
    check_file,
    exception_line,
    payload_fields,
    refused_global,
)
from mfsa_pipe.datasets.base import LabelSpec

# models.registry's names (a test keeps them equal): importing it would import torch
MODEL_NAMES = ("mfsa", "mult", "ef_lstm", "lf_lstm", "raven", "mctn", "pmr", "mica")
COMBINED_NAMES = ("ensemble",)  # models.registry.COMBINED: loadable, not listed as trainable

# torch.save's storage classes for plain tensors -> dtype
_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool",
}


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the checkpoint describes it; its data is not read."""

    shape: tuple[int, ...]
    dtype: str

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass
class CheckpointHeader:
    """What `analyze` needs of a checkpoint before its model: the fields, the weights' shapes."""

    model_name: str
    model_config: dict[str, Any]
    label_spec: LabelSpec
    feature_spec: dict[str, Any]
    metrics: dict[str, Any]
    training: dict[str, Any]
    calibration: dict[str, Any]
    package_version: str
    format_version: int
    path: str
    weight_shapes: dict[str, tuple[int, ...]]
    normalization_shapes: dict[str, tuple[int, ...]]

    def check_feature_spec(self, spec: dict[str, Any], *, context: str = "") -> None:
        check_feature_spec(self.feature_spec, spec, context=context)


class _Refused(Exception):
    """A global outside the allow-list, named `module.name`."""


def _rebuild_tensor(storage: Any, offset: Any, size: Any, *_: Any) -> TensorInfo:
    """torch._utils._rebuild_tensor_v2's stand-in: (storage, offset, size, stride, ...)."""
    if not isinstance(storage, _StorageType) or not (isinstance(size, tuple) and all(isinstance(n, int) for n in size)):
        raise pickle.UnpicklingError("a tensor record that torch.save does not write")
    return TensorInfo(shape=size, dtype=storage.dtype)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    """torch._utils._rebuild_parameter's stand-in: the parameter's tensor."""
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


def _global_name(module: str, name: str) -> str:
    """A refused global as torch's weights-only unpickler names it: Python 2 names (protocol 2)
    mapped to Python 3's, builtins by their bare name."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return name if module == "builtins" else f"{module}.{name}"


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGES:
            return _StorageType(_STORAGES[name])
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise _Refused(_global_name(module, name))

    def persistent_load(self, pid: Any) -> Any:
        # torch.save's storage reference: ("storage", storage type, key, location, element count)
        if isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType):
            return pid[1]
        raise pickle.UnpicklingError("a storage reference that torch.save does not write")


def _read_pickle(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        records = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(records) != 1:
            raise pickle.UnpicklingError(f"{len(records)} data.pkl records in the archive, not one")
        return _HeaderUnpickler(io.BytesIO(archive.read(records[0]))).load()


def _unpickled(path: Path) -> Any:
    try:
        return _read_pickle(path)
    except _Refused as exc:
        raise CheckpointError(f"{path}: {UNREADABLE}: {refused_global(str(exc))}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # zipfile and pickle raise many types on damaged bytes
        raise CheckpointError(f"{path}: {UNREADABLE}: {exception_line(exc)}") from None


def read_checkpoint_header(path: str | os.PathLike) -> CheckpointHeader | None:
    """The checkpoint's checked fields without torch; raises CheckpointError with the line
    `load_checkpoint` would give. None for a pre-zip torch file (torch < 1.6), which only
    `load_checkpoint` reads. The model's config and the weights' fit to it are left to
    `load_checkpoint` (they need the model classes); only the model's name is checked here."""
    path = Path(path)
    if not check_file(path).startswith(b"PK"):
        return None
    fields = payload_fields(_unpickled(path), path, is_tensor=lambda v: isinstance(v, TensorInfo))
    name = fields["model_name"]
    if name not in MODEL_NAMES + COMBINED_NAMES:  # models.registry's words, as load_checkpoint reports them
        raise CheckpointError(f"{path}: model {name!r} with this config cannot be built: "
                              f"unknown model {name!r}; known models: {', '.join(sorted(MODEL_NAMES))}")
    norm, state = fields.pop("normalization"), fields.pop("state_dict")
    return CheckpointHeader(
        **fields,
        weight_shapes={k: v.shape for k, v in state.items()},
        normalization_shapes={m: v["mean"].shape for m, v in norm.items()},
    )
