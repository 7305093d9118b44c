"""Create one isolated venv per peer quantizer and tell where its interpreter is.

    python benchmarks/peers/setup.py            # both peers (idempotent: an existing, complete venv is kept)
    python benchmarks/peers/setup.py nncf

Venvs live in ``$EDGEQUANT_PEERS_DIR`` (default ``~/.cache/edgequant/peers/<name>``), never in the
project's own environment: AMD Quark pins onnx (and needs torch for AdaRound / AdaQuant), NNCF brings its
own onnx / onnxruntime.  The pins below are the versions the results in benchmarks/results/bench_peers.*
were measured with; ``torch>=2.2,<2.14`` keeps pip on the CPU wheel the machine has (a newer torch pulls
gigabytes of CUDA wheels).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PEERS: dict[str, list[str]] = {
    "nncf": ["nncf==3.4.0", "onnx==1.23.2", "onnxruntime==1.32.0"],
    "quark": [
        "amd-quark==0.13",
        "onnxruntime==1.28.0",
        "torch>=2.2,<2.14",
    ],  # Quark 0.13 asks onnxruntime<=1.28
}
MARKER = ".edgequant-peer-ok"  # written after a successful install: a half-made venv is redone


def root() -> Path:
    return Path(os.environ.get("EDGEQUANT_PEERS_DIR", Path.home() / ".cache" / "edgequant" / "peers"))


def python(name: str) -> Path:
    """The interpreter of peer ``name``'s venv; exits 2 with the fix when it is not set up."""
    if name not in PEERS:
        raise SystemExit(f"unknown peer '{name}'; known: {', '.join(PEERS)}")
    venv = root() / name
    if not (venv / MARKER).exists():
        raise SystemExit(
            f"peer '{name}' is not installed in {venv}: run python benchmarks/peers/setup.py {name}"
        )
    return venv / "bin" / "python"


def install(name: str) -> Path:
    venv = root() / name
    if (venv / MARKER).exists():
        return venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *PEERS[name]], check=True)
    (venv / MARKER).write_text(" ".join(PEERS[name]) + "\n")
    return venv / "bin" / "python"


def main() -> None:
    names = sys.argv[1:] or list(PEERS)
    for name in names:
        if name not in PEERS:
            print(f"unknown peer '{name}'; known: {', '.join(PEERS)}", file=sys.stderr)
            raise SystemExit(2)
    for name in names:
        print(name, install(name), flush=True)


if __name__ == "__main__":
    main()
