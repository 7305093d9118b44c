"""The ``files`` fixture of the CLI tests: the tiny conv net and 24 seeded calibration images on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import conv_net, images


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    """``{"model": net.onnx, "calib": calib.npz (x: 24 images), "out": an output folder not yet made}``."""
    model = tmp_path / "net.onnx"
    onnx.save_model(conv_net(), model)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=images(24))
    return {"model": model, "calib": calib, "out": tmp_path / "out"}
