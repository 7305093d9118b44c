"""TensorFlow import: tensorflow/tf2onnx are a heavy optional extra, so only the missing-extra path runs here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from edgequant.errors import DependencyError
from edgequant.model.tf_import import export_tf, require_tf

MESSAGE = (
    "Importing a TensorFlow model needs the Python package '{}', which is not installed. "
    "Fix: pip install 'edgequant[tf]'"
)


def test_missing_tensorflow_is_dependency_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    with pytest.raises(DependencyError) as info:
        export_tf(tmp_path / "saved", tmp_path / "m.onnx", example_inputs=np.zeros((1, 3), np.float32))
    assert str(info.value) == MESSAGE.format("tensorflow")
    assert info.value.to_dict()["hint"] == "pip install 'edgequant[tf]'"
    assert list(tmp_path.iterdir()) == []


def test_missing_tf2onnx_is_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # pretend tensorflow imports
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    monkeypatch.setitem(sys.modules, "tf2onnx.convert", None)
    with pytest.raises(DependencyError) as info:
        require_tf()
    assert str(info.value) == MESSAGE.format("tf2onnx")
