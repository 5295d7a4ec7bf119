#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment at $VENV and install glassformer into it.
# Without a CUDA GPU, torch and triton are pinned to the CPU builds that install from local disk;
# pyproject.toml keeps ranges for users with GPUs.
set -euo pipefail
: "${VENV:?VENV must name the virtual environment folder}"
PYTHON="${PYTHON:-python3}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.deps-installed" ]; then
    echo "glassformer: creating the virtual environment in $VENV (first run only, about 2 minutes)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q "setuptools>=64" wheel
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        "$VENV/bin/pip" install -q "$here[dev]"
    else
        "$VENV/bin/pip" install -q "torch==2.13.0" "triton==3.8.0" "$here[dev]"
    fi
    touch "$VENV/.deps-installed"
fi
# The editable install points at one checkout; re-point it when the venv is used from another clone.
if [ "$(cat "$VENV/.source" 2>/dev/null)" != "$here" ]; then
    "$VENV/bin/pip" install -q --no-deps --no-build-isolation -e "$here"
    echo "$here" > "$VENV/.source"
fi
