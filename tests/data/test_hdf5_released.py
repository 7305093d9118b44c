"""quantize releases its calibration file when it returns, without waiting for the garbage collector.

A recipe field with a union type kept the RecipeError of each type it tried; their tracebacks held the
parsing frame and every caller's frame (f_back), so the pipeline's data source, and the HDF5 file it holds
open, lived in a reference cycle until a collection.  Rewriting the file afterwards then failed in HDF5
("unable to truncate a file which is already open"), depending on when the collector last ran.
"""

from __future__ import annotations

import gc
from pathlib import Path

import h5py
import numpy as np
import onnx

import edgequant
from tests.tinymodels import conv_net, images


def test_calibration_hdf5_is_closed_when_quantize_returns(tmp_path: Path) -> None:
    model, data = tmp_path / "m.onnx", tmp_path / "calib.h5"
    onnx.save(conv_net(0), model)
    with h5py.File(data, "w") as f:
        f["x"] = images(48)
    gc.collect()
    gc.disable()  # what a cycle would keep alive stays alive: no collection may free it by chance
    try:
        res = edgequant.quantize(model, str(data), method="static", calib_samples=16)
        with h5py.File(data, "w") as f:  # raised OSError while the source lived on in a cycle
            f["x"] = np.zeros((1, 3, 16, 16), np.float32)
    finally:
        gc.enable()
    assert res.report["calibration"]["samples"] == 16
