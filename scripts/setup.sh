#!/usr/bin/env bash
# Install mfsa-pipe and what its tests need (Ray included). PyTorch first: the CPU wheel where there is no
# NVIDIA GPU (a plain `torch` requirement would pull a multi-GB CUDA build), then the package.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        "$PY" -m pip install torch
    else
        "$PY" -m pip install torch==2.13.0
    fi
fi
# the ray extra too: the tests run `--executor ray` on a local Ray instance (2 CPUs)
"$PY" -m pip install -q -e ".[test,ray]"
