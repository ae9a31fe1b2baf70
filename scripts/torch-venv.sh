#!/usr/bin/env bash
# Prints the path of a Python venv with PyPI's torch (2.9.1), pytest and
# numpy, making it on first use. PyPI's torch imports on a CPU-only machine
# only with its CUDA library wheels (about 4 GB), so the venv is kept out of
# the repository, where the machine keeps it: $LOWBIT_TORCH_VENV, or
# ~/.cache/lowbit/torch-venv.
set -euo pipefail
venv="${LOWBIT_TORCH_VENV:-$HOME/.cache/lowbit/torch-venv}"
if ! "$venv/bin/python" -c "import torch, pytest, numpy" 2>/dev/null; then
    echo "torch-venv: installing torch 2.9.1 into $venv (about 4 GB, once)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "torch==2.9.1" numpy pytest >&2
fi
echo "$venv"
