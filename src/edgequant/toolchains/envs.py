"""Vendor toolchains, each in a virtual environment of its own.

A toolchain (Apache TVM, BrainChip Akida) pins versions that conflict with EdgeQuant's own (Akida's
MetaTF pins onnxruntime ~1.23 and TensorFlow 2.19), so it is never imported into EdgeQuant's process:
``edgequant toolchain install NAME`` creates ``<cache>/<NAME>/venv`` with pinned, tested versions (the
requirements below, constrained by ``pins/<NAME>.txt``: every distribution of the tested set), and
EdgeQuant drives it through a small versioned driver script run with that interpreter (files and JSON
in, files and JSON out; see :mod:`edgequant.toolchains.runner`).

The cache folder is ``$EDGEQUANT_TOOLCHAINS`` when set, else ``~/.cache/edgequant/toolchains``.  Each
environment holds a ``manifest.json`` (toolchain, pinned requirements, installed versions, Python,
seconds the install took) written last, so a half-finished install is never reported as installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.errors import RecipeError, TargetError


@dataclass(frozen=True)
class Toolchain:
    """A vendor toolchain: what ``install`` puts into its environment, and what it serves."""

    name: str
    summary: str
    requirements: tuple[str, ...]  # pinned, tested together on CPython 3.11 / x86_64
    probe: tuple[str, ...]  # distributions whose installed versions the manifest records
    license_terms: str = ""  # non-empty: ``install`` needs --accept-license after showing these


TOOLCHAINS: dict[str, Toolchain] = {
    "tvm": Toolchain(
        "tvm",
        "Apache TVM (Apache-2.0): compiles the QDQ model with Relax for the host CPU (llvm).",
        (
            "apache-tvm==0.27.0.post1",
            # 0.1.15.post2 segfaults in every JSON serialisation, MetaSchedule tuning included
            "apache-tvm-ffi==0.1.14.post1",
            "onnx>=1.16,<1.24",
            "numpy>=1.24,<3",
            "psutil>=5.9",  # MetaSchedule tuning
            "cloudpickle>=2.2",  # MetaSchedule tuning
            "xgboost-cpu>=2.1",  # MetaSchedule's default cost model, trained once a candidate is measured
        ),
        ("apache-tvm", "apache-tvm-ffi", "onnx", "numpy"),
    ),
    "akida": Toolchain(
        "akida",
        "BrainChip MetaTF: quantizeml + cnn2snn (Apache-2.0) convert to an Akida 2.0 model (.fbz); "
        "akida (proprietary EULA) runs it on the software backend.",
        ("akida==2.19.3", "cnn2snn==2.19.3", "quantizeml==1.2.5"),
        ("akida", "cnn2snn", "quantizeml", "tensorflow", "onnx", "onnxruntime"),
        license_terms=(
            "The 'akida' package is under BrainChip's proprietary end-user licence (its text ships in the "
            "package's dist-info, and at https://pypi.org/project/akida/). Key terms: personal internal "
            "use only; no redistribution; no publication of benchmark results without BrainChip's written "
            "permission. cnn2snn and quantizeml are Apache-2.0."
        ),
    ),
}


def cache_dir() -> Path:
    """Where toolchain environments live: ``$EDGEQUANT_TOOLCHAINS`` or ``~/.cache/edgequant/toolchains``."""
    env = os.environ.get("EDGEQUANT_TOOLCHAINS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgequant" / "toolchains"


def get(name: str) -> Toolchain:
    """The toolchain called ``name``; RecipeError listing the known ones otherwise."""
    if name not in TOOLCHAINS:
        raise RecipeError(
            f"unknown toolchain '{name}'; known: {', '.join(TOOLCHAINS)}.",
            f"use one of: {', '.join(TOOLCHAINS)}.",
        )
    return TOOLCHAINS[name]


def env_dir(name: str) -> Path:
    return cache_dir() / get(name).name


def manifest(name: str) -> dict[str, Any] | None:
    """The installed toolchain's manifest, or None when it is not (completely) installed."""
    path = env_dir(name) / "manifest.json"
    if not path.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if Path(data.get("python", "")).is_file() else None


def install_command(name: str) -> str:
    flag = " --accept-license" if get(name).license_terms else ""
    return f"edgequant toolchain install {name}{flag}"


def require(name: str) -> Path:
    """The interpreter of the installed toolchain ``name``.

    Raises:
        TargetError: the toolchain is not installed; the hint is the exact install command.
    """
    info = manifest(name)
    if info is None:
        raise TargetError(
            f"target '{name}' needs the {name} toolchain, which is not installed under {cache_dir()}.",
            f"run: {install_command(name)}",
        )
    return Path(info["python"])


def install(
    name: str,
    *,
    accept_license: bool = False,
    log: Any = print,
    python: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Create ``<cache>/<name>/venv`` with the pinned requirements; return the manifest.

    Args:
        name: a key of :data:`TOOLCHAINS`.
        accept_license: required for a toolchain with licence terms (Akida).
        log: called with one line per step (what is installed, how long it took).
        python: the interpreter to build the venv from (default: the one running EdgeQuant).
        force: reinstall even when the same pinned requirements are installed already.

    Raises:
        RecipeError: unknown name, or licence terms not accepted.
        TargetError: pip failed (its last lines are in the message); nothing is left behind.
    """
    chain = get(name)
    if chain.license_terms and not accept_license:
        raise RecipeError(
            f"installing the {name} toolchain means accepting its licence, and --accept-license was not "
            f"given. {chain.license_terms}",
            f"read the terms, then run: {install_command(name)}",
        )
    root = env_dir(name)
    venv = root / "venv"
    current = manifest(name)
    if current is not None and current.get("requirements") == list(chain.requirements) and not force:
        log(f"{name} is installed already in {root} ({current.get('versions')}); --force reinstalls it")
        return current
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    log(f"creating {venv}")
    try:
        _run([python or sys.executable, "-m", "venv", str(venv)])
        py = venv / "bin" / "python"
        if chain.requirements:
            log("installing " + " ".join(chain.requirements))
            _run(
                [
                    str(py),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *chain.requirements,
                ]
            )
        versions = _versions(py, chain.probe)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    info = {
        "toolchain": name,
        "python": str(py),
        "requirements": list(chain.requirements),
        "versions": versions,
        "license_accepted": bool(chain.license_terms),
        "install_seconds": round(time.perf_counter() - t0, 1),
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (root / "manifest.json").write_text(json.dumps(info, indent=1))
    log(f"installed {name} in {info['install_seconds']} s: {versions}")
    return info


def remove(name: str) -> bool:
    """Delete the toolchain's environment; False when it was not there."""
    root = env_dir(name)
    if not root.exists():
        return False
    shutil.rmtree(root)
    return True


def installed() -> dict[str, dict[str, Any] | None]:
    """Every known toolchain with its manifest (None when not installed)."""
    return {name: manifest(name) for name in TOOLCHAINS}


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(line for line in (proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise TargetError(
            f"'{' '.join(cmd[:4])} ...' failed with exit code {proc.returncode}: {tail}",
            "check the network access to PyPI and the disk space, then run the install again.",
        )


def _versions(python: Path, dists: tuple[str, ...]) -> dict[str, str]:
    code = (
        "import json, sys\nfrom importlib import metadata\nout = {}\n"
        "for d in sys.argv[1:]:\n"
        "    try: out[d] = metadata.version(d)\n"
        "    except metadata.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    proc = subprocess.run([str(python), "-c", code, *dists], capture_output=True, text=True, check=True)
    result: dict[str, str] = json.loads(proc.stdout)
    return result
