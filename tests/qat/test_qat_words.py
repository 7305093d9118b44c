"""QATModule / PTQModule refusals name their keyword arguments (``act_bits=8``), as ``edgequant.quantize``
does, not the CLI's flags (session 12's note: ``QATModule(act_bits=4)`` answered "Fix: use --act-bits 8");
``edgequant qat`` keeps its flags."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.errors import RecipeError, UnsupportedError
from edgequant.torch import PTQModule, QATModule

FLAG = re.compile(r"(?<![\w-])--?[a-z]")
X = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
MODEL_CODE = """
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
"""


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def test_qat_module_refusals_name_keyword_arguments() -> None:
    with pytest.raises(UnsupportedError) as exc:
        QATModule(_net(), X, act_bits=4)
    text = str(exc.value)
    assert text.startswith("4-bit activations on target 'cpu'") and not FLAG.search(text), text
    assert "Fix: use act_bits=8 (or 16), or weight_bits=4" in text and "exclude=['/0/Conv']" in text, text
    assert "(target='akida1', Keras .h5 models)" in text, text
    with pytest.raises(RecipeError) as exc:
        PTQModule(_net(), X, act_bits=3)
    assert str(exc.value) == "activation bits 3 is impossible; allowed: 4, 8, 16. Fix: use act_bits=8 or 16."
    qat = QATModule(_net(), X)
    with pytest.raises(RecipeError) as exc:
        qat.export(X, Path("unused.onnx"), format="ti-npu-int")
    text = str(exc.value)
    assert text.startswith("format='ti-npu-int' is TI's NPU integer form") and not FLAG.search(text), text
    assert "add target='ti-npu' (and method='static'), or drop format=" in text, text


def test_qat_command_keeps_its_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wordsnet.py").write_text(MODEL_CODE)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(1)
    for name in ("train", "eval"):
        x = rng.normal(size=(32, 1, 8, 8)).astype(np.float32)
        np.savez(tmp_path / f"{name}.npz", input=x, labels=rng.integers(0, 3, 32).astype(np.int64))
    args = ["qat", "--factory", "wordsnet:build", "--train-data", str(tmp_path / "train.npz"), "--eval-data",
            str(tmp_path / "eval.npz"), "--input-shape", "1x1x8x8", "-o", str(tmp_path / "o"), "--act-bits", "4"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "4-bit activations on target 'cpu'" in text, res.output
    assert "Fix: use --act-bits 8 (or 16), or --weight-bits 4" in text and "--target akida1" in text, text
    assert not (tmp_path / "o").exists()
