"""Load and save ONNX models, with one clear error per failure and atomic writes.

Models above protobuf's 2 GB limit are stored with external data; ``load_model`` reads it from
beside the file, and ``save_model`` writes ``<file>.data`` beside the model when needed.  Both
files are written under temporary names and renamed into place, so a failure leaves nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx
from onnx import external_data_helper

from edgequant.errors import ExportError, ModelError

PROTO_LIMIT = 2**31 - 1024 * 1024


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file (and its external data).  ModelError when missing or not ONNX."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file '{p}' does not exist.", "check the path.")
    if p.is_dir():
        raise ModelError(
            f"'{p}' is a directory, not an ONNX file.",
            "pass the .onnx file; for a TensorFlow SavedModel install edgequant[tf] and pass the directory "
            "to 'edgequant quantize' with --framework tf.",
        )
    if p.stat().st_size == 0:
        raise ModelError(f"model file '{p}' is empty.", "re-export the model.")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ModelError(
            f"'{p}' is not an ONNX model (protobuf parse failed: {str(exc).splitlines()[0][:200]}).",
            "pass an .onnx file; PyTorch models go through the Python API or 'edgequant quantize --torch'.",
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise ModelError(
            f"'{p}' parsed as protobuf but holds no ONNX graph (no nodes, no outputs).",
            "pass an .onnx model file.",
        )
    if any(external_data_helper.uses_external_data(t) for t in model.graph.initializer):
        try:
            external_data_helper.load_external_data_for_model(model, str(p.parent))
        except Exception as exc:
            raise ModelError(
                f"'{p}' refers to external data that cannot be read: {str(exc).splitlines()[0][:200]}.",
                "keep the .data file(s) next to the model, under the names the model records.",
            ) from exc
    return model


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_replace(tmp: Path, final: Path) -> None:
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; give the file the usual permissions
    os.replace(tmp, final)


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` atomically; external data (``<name>.data``) only above the 2 GB limit."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    data_name = final.name + ".data"
    tmp_data = final.parent / f".{data_name}.tmp"
    try:
        if model.ByteSize() > PROTO_LIMIT:
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            external_data_helper.convert_model_to_external_data(
                copy, all_tensors_to_one_file=True, location=tmp_data.name, size_threshold=1024
            )
            onnx.save_model(copy, str(tmp))
            for t in external_data_helper._get_all_tensors(copy):
                if external_data_helper.uses_external_data(t):
                    for entry in t.external_data:
                        if entry.key == "location":
                            entry.value = data_name
            onnx.save_model(copy, str(tmp))  # rewrite the header with the final data name
            _fsync_replace(tmp_data, final.parent / data_name)
        else:
            with open(tmp, "wb") as fh:
                fh.write(model.SerializeToString())
        _fsync_replace(tmp, final)
    except Exception as exc:
        for leftover in (tmp, tmp_data):
            leftover.unlink(missing_ok=True)
        raise ExportError(
            f"could not write '{final}': {exc}", "check free disk space and permissions."
        ) from exc
    return final


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a text file atomically (temporary file in the same directory, then rename)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, _umask_mode())
        os.replace(tmp_name, final)
    except Exception:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return final


def opset_of(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1
