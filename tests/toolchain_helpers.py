"""Toolchain tests need the toolchain's environment: CI installs it (scripts/test.sh), so there a
missing toolchain fails; locally the test skips and says how to install it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgequant.toolchains import envs


def need_toolchain(name: str) -> Path:
    info = envs.manifest(name)
    if info is None:
        message = f"the {name} toolchain is not installed; run: {envs.install_command(name)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (scripts/test.sh installs it in CI)")
        pytest.skip(message)
    return Path(info["python"])
