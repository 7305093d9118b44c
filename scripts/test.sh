#!/usr/bin/env bash
# Install EdgeQuant with its test extra into .venv, install the vendor toolchains its tests drive
# (each in its own environment, see `edgequant toolchain`), and run the whole test suite
# (pytest; ruff lint + format check and mypy run inside it, see tests/test_architecture.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/edgequant toolchain install tvm
# BrainChip's akida package is under a proprietary EULA: installed only when you accept it (CI does)
if [ "${EDGEQUANT_ACCEPT_AKIDA_LICENSE:-}" = "yes" ]; then
  .venv/bin/edgequant toolchain install akida --accept-license
fi
exec .venv/bin/python -m pytest "$@"
