"""Toolchain tests need the toolchain's environment: CI installs it (scripts/test.sh), so there a
missing toolchain fails; locally the test skips and says how to install it."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant.toolchains import envs


def assert_documented(toolchain: dict[str, object]) -> None:
    """Every key of a report's ``toolchain`` section has its line in docs/report.md's ``toolchain`` section."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "report.md").read_text()
    start = doc.index("## `toolchain`")
    end = doc.find("\n## ", start + 1)
    documented = set(re.findall(r"`([^`]+)`", doc[start : end if end > 0 else len(doc)]))
    missing = sorted(set(toolchain) - documented)
    assert not missing, f"docs/report.md, section toolchain, lacks {missing}"


def need_toolchain(name: str) -> Path:
    info = envs.manifest(name)
    if info is None:
        message = f"the {name} toolchain is not installed; run: {envs.install_command(name)}"
        if os.environ.get("CI"):
            pytest.fail(message + " (scripts/test.sh installs it in CI)")
        pytest.skip(message)
    return Path(info["python"])


def quantize_to(
    target: str, model: onnx.ModelProto, calib_x: np.ndarray, tmp: Path, extra: tuple[str, ...] = ()
) -> Path:
    """``edgequant quantize`` (the CLI) of ``model`` for ``target`` with calibration ``x`` (and ``extra``
    flags); the output folder."""
    from typer.testing import CliRunner

    from edgequant.cli import app

    tmp.mkdir(parents=True, exist_ok=True)
    onnx.save(model, tmp / "m.onnx")
    np.savez(tmp / "calib.npz", x=calib_x)
    out = tmp / "out"
    res = CliRunner().invoke(
        app, ["quantize", str(tmp / "m.onnx"), "--calib-data", str(tmp / "calib.npz"), "--target", target,
              "-o", str(out), *extra],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return out


def run_artifact(python: Path, script: str, artifact: Path, x: np.ndarray, tmp: Path) -> np.ndarray:
    """Run ``artifact`` on ``x`` with ``script`` (``RUN_SO`` / ``RUN_FBZ``) in a toolchain's interpreter."""
    (tmp / "run.py").write_text(script)
    np.save(tmp / "x.npy", x)
    subprocess.run([str(python), str(tmp / "run.py"), str(artifact), str(tmp / "x.npy"), str(tmp / "y.npy")],
                   check=True)  # fmt: skip
    return np.load(tmp / "y.npy")


RUN_SO = """
import sys, numpy as np, tvm
from tvm import relax
vm = relax.VirtualMachine(tvm.runtime.load_module(sys.argv[1]), tvm.cpu())
x = np.load(sys.argv[2])
out = vm["main"](tvm.runtime.tensor(x))
np.save(sys.argv[3], (out if hasattr(out, "numpy") else out[0]).numpy())
"""


RUN_FBZ = """
import sys, numpy as np, akida
m = akida.Model(sys.argv[1])
np.save(sys.argv[3], m.predict(np.load(sys.argv[2]).astype(np.uint8)).astype(np.float32))
"""


def pixel_conv_net(seed: int = 0) -> onnx.ModelProto:
    """Conv-Relu -> strided Conv-Relu -> GAP -> Flatten -> Gemm, on raw 0-255 pixels [N, 3, 16, 16]."""
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.3) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = {"w1": w(8, 3, 3, 3, scale=0.3 / 255), "b1": w(8, scale=0.1), "w2": w(16, 8, 3, 3),
             "b2": w(16, scale=0.1), "wf": w(10, 16, scale=0.2), "bf": w(10, scale=0.1)}  # fmt: skip
    nodes = [
        h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        h.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        h.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        h.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        h.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        h.make_node("Flatten", ["g"], ["f"], name="flatten"),
        h.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    g = h.make_graph(
        nodes, "pixels", [h.make_tensor_value_info("x", T.FLOAT, ["N", 3, 16, 16])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", 10])], [nh.from_array(v, k) for k, v in inits.items()],
    )  # fmt: skip
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m
