#!/usr/bin/env bash
# Install EdgeQuant into .venv and run the built-in demo: every method on examples/shapes_cnn.onnx.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e .
exec .venv/bin/edgequant demo "$@"
