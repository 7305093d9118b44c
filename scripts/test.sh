#!/usr/bin/env bash
# Install EdgeQuant with its test extra into .venv and run the whole test suite
# (pytest; ruff lint + format check and mypy run inside it, see tests/test_architecture.py).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
exec .venv/bin/python -m pytest "$@"
