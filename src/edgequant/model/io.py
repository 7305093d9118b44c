"""Load and save ONNX models, with one clear error per failure and atomic writes.

Models above protobuf's 2 GB limit are stored with external data; ``load_model`` reads it from
beside the file, and ``save_model`` writes ``<file>.data`` beside the model when needed.  Both
files are written under temporary names and renamed into place, so a failure leaves nothing.
``external_data_path`` names the data file a saved model uses, if any.

Above 2 GB protobuf refuses to serialise a model or even to report its size (``ByteSize`` raises
``EncodeError``), so ``serialized_size`` adds up the sizes of the parts (each field's payload plus
its tag and length prefix: exact, not an estimate).  ``save_model`` never copies the model: it
builds a small header (every field but initializer payloads) and streams each initializer of at
least ``EXTERNAL_MIN_BYTES`` into the data file, one tensor in memory at a time, at offsets
aligned to ``DATA_ALIGN`` bytes (so a runtime may map them).  The model passed in is not changed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import onnx
from google.protobuf.message import EncodeError, Message
from onnx import external_data_helper

from edgequant.errors import ExportError, ModelError, first_line

PROTO_LIMIT = 2**31 - 1024 * 1024
EXTERNAL_MIN_BYTES = 1024
DATA_ALIGN = 4096


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read an ONNX file (and its external data).  ModelError when missing or not ONNX."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file '{p}' does not exist.", "check the path.")
    if p.is_dir():
        raise ModelError(
            f"'{p}' is a directory, not an ONNX file.",
            "pass the .onnx file; a TensorFlow SavedModel directory is read by 'edgequant quantize DIR' "
            "(pip install 'edgequant[tf]'), which writes the exported float model beside the quantized one.",
        )
    if p.stat().st_size == 0:
        raise ModelError(f"model file '{p}' is empty.", "re-export the model.")
    model = parse_onnx(p)
    if any(external_data_helper.uses_external_data(t) for t in model.graph.initializer):
        try:
            external_data_helper.load_external_data_for_model(model, str(p.parent))
        except MemoryError:
            raise
        except Exception as exc:
            raise ModelError(
                f"'{p}' refers to external data that cannot be read: {first_line(exc, 200)}.",
                "keep the .data file(s) next to the model, under the names the model records.",
            ) from exc
        for t in model.graph.initializer:  # the loader leaves data_location=DEFAULT set: as if inline
            if t.HasField("data_location") and t.data_location == onnx.TensorProto.DEFAULT:
                t.ClearField("data_location")
    return model


def parse_onnx(
    path: str | Path,
    *,
    subject: str | None = None,
    hint: str = (
        "pass an .onnx file; PyTorch: a TorchScript .pt with --input-shape, or --factory pkg.mod:fn "
        "--checkpoint FILE; Keras: a .keras/.h5 file or SavedModel directory (edgequant[tf])."
    ),
) -> onnx.ModelProto:
    """Parse an ONNX file without its external data; ModelError when it is not protobuf or holds no graph.

    ``subject`` names the file in the message (default: its quoted path); ``hint`` is the fix offered.
    """
    who = subject or f"'{path}'"
    try:
        model = onnx.load(str(path), load_external_data=False)
    except MemoryError:  # out of memory is not a damaged file: the caller reports the limit
        raise
    except Exception as exc:
        if subject is None and Path(path).suffix.lower() == ".onnx":  # named .onnx, bytes are not: damaged
            hint = (
                "the file is damaged or is not ONNX despite its name: re-export or re-download it, and "
                f"check what wrote it (`file {path}` shows what it holds)."
            )
        raise ModelError(
            f"{who} is not an ONNX model (protobuf parse failed: {first_line(exc, 200)}).", hint
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{who} parsed as protobuf but holds no ONNX graph (no nodes, no outputs).", hint)
    return model


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_replace(tmp: Path, final: Path, durable: bool = True) -> None:
    if durable:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; give the file the usual permissions
    os.replace(tmp, final)


def serialized_size(message: Message) -> int:
    """Bytes of ``message.SerializeToString()``, also above the 2 GB that protobuf itself refuses.

    Models, graphs and tensors are summed field by field (protobuf's own ``ByteSize`` serialises
    to measure, which costs seconds per GB); a tensor's ``raw_data`` counts as the ONNX spec says
    it is stored: numel x element bits / 8, rounded up, without copying the bytes out.
    """
    if not isinstance(message, _SUMMED):
        try:
            return int(message.ByteSize())
        except EncodeError:
            pass
    small = type(message)()
    total = 0
    for fd, value in _fields(message, skip="raw_data"):
        if fd.type != fd.TYPE_MESSAGE:
            _copy_field(small, fd, value)
            continue
        tag = _varint_len(fd.number << 3)
        for item in value if fd.is_repeated else [value]:
            n = serialized_size(item)
            total += tag + _varint_len(n) + n
    if isinstance(message, onnx.TensorProto) and message.HasField("raw_data"):
        n = raw_data_bytes(message)
        total += _varint_len(onnx.TensorProto.RAW_DATA_FIELD_NUMBER << 3) + _varint_len(n) + n
    return total + int(small.ByteSize())


_SUMMED = (onnx.ModelProto, onnx.GraphProto, onnx.TensorProto)
_SUB_BYTE_BITS = {
    getattr(onnx.TensorProto, k): b
    for k, b in (("INT4", 4), ("UINT4", 4), ("FLOAT4E2M1", 4), ("INT2", 2), ("UINT2", 2))
    if hasattr(onnx.TensorProto, k)
}


def raw_data_bytes(tensor: onnx.TensorProto) -> int:
    """Length of ``tensor.raw_data`` from its dims and element type (reading it would copy it)."""
    numel = 1
    for d in tensor.dims:
        numel *= int(d)
    bits = _SUB_BYTE_BITS.get(tensor.data_type)
    if bits is None:
        try:
            bits = 8 * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        except Exception:  # an element type numpy cannot hold: measure the bytes themselves
            return len(tensor.raw_data)
    return (numel * bits + 7) // 8


def _fields(message: Message, skip: str = "") -> Iterator[tuple[Any, Any]]:
    """Set fields of ``message`` as (descriptor, value), without reading the field named ``skip``."""
    for fd in message.DESCRIPTOR.fields:
        if fd.name == skip:
            continue
        if fd.is_repeated:
            value = getattr(message, fd.name)
            if len(value):
                yield fd, value
        elif message.HasField(fd.name):
            yield fd, getattr(message, fd.name)


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _copy_field(dst: Message, fd: Any, value: Any) -> None:
    if fd.is_repeated:
        getattr(dst, fd.name).extend(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(dst, fd.name).CopyFrom(value)
    else:
        setattr(dst, fd.name, value)


def save_model(model: onnx.ModelProto, path: str | Path, *, durable: bool = True) -> Path:
    """Write ``model`` atomically; external data (``<name>.data``) only above the 2 GB limit.

    The data file is renamed into place before the ``.onnx``; a ``<name>.data`` left beside
    ``path`` by an earlier save is removed when this model needs none.  ``model`` is not changed.
    ``durable=False`` skips the fsyncs: for scratch copies (an ORT session's temp dir), where
    flushing 2 GB to disk buys nothing.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp, tmp_data = Path(tmp_name), None
    data_name = final.name + ".data"
    try:
        if serialized_size(model) > PROTO_LIMIT:
            fd, data_tmp_name = tempfile.mkstemp(prefix=f".{data_name}.", suffix=".tmp", dir=final.parent)
            tmp_data = Path(data_tmp_name)
            with os.fdopen(fd, "wb") as data_fh:
                header = external_header(model, data_fh, data_name)
            _write_proto(header, tmp)
            _fsync_replace(tmp_data, final.parent / data_name, durable)
        else:
            _write_proto(model, tmp)
        _fsync_replace(tmp, final, durable)
        if tmp_data is None:  # a data file left from an earlier, larger model saved here is stale now
            (final.parent / data_name).unlink(missing_ok=True)
    except Exception as exc:
        for leftover in (tmp, tmp_data):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        if isinstance(exc, ExportError):
            raise
        raise ExportError(
            f"could not write '{final}': {exc}", "check free disk space and permissions."
        ) from exc
    return final


def external_data_path(path: str | Path) -> Path | None:
    """The ``<name>.data`` file that ``save_model`` wrote beside ``path``, or None."""
    data = Path(path).with_name(Path(path).name + ".data")
    return data if data.is_file() else None


def _write_proto(message: Message, path: Path) -> None:
    size = serialized_size(message)
    if size > PROTO_LIMIT:
        raise ExportError(
            f"the ONNX header alone is {size:,} bytes, above protobuf's 2 GB limit, even with every "
            f"initializer of >= {EXTERNAL_MIN_BYTES} bytes moved to external data.",
            "large constants are probably stored in node attributes or subgraphs; move them to "
            "top-level initializers (edgequant's repair does this for Constant nodes).",
        )
    with open(path, "wb") as fh:
        fh.write(message.SerializeToString())


def external_header(model: onnx.ModelProto, data_fh: IO[bytes] | None, data_name: str) -> onnx.ModelProto:
    """A copy of ``model`` whose top-level initializers of >= EXTERNAL_MIN_BYTES bytes of raw data are
    written to ``data_fh`` (recorded as ``data_name``); everything else is copied.  ``model`` is unchanged.

    With ``data_fh=None`` nothing is read or written: the result is ``model`` without its large
    weight payloads (dims, types and names kept), for shape inference or graph edits on a model
    too large to copy or serialise.
    """
    header = onnx.ModelProto()
    for fd, value in _fields(model, skip="graph"):
        _copy_field(header, fd, value)
    for fd, value in _fields(model.graph, skip="initializer"):
        _copy_field(header.graph, fd, value)
    offset = 0
    for t in model.graph.initializer:
        if external_data_helper.uses_external_data(t):
            raise ExportError(
                f"initializer '{t.name}' still refers to external data that was never loaded.",
                "load the model with edgequant.model.load_model (it reads the external data).",
            )
        size = raw_data_bytes(t) if t.HasField("raw_data") else 0
        if size < EXTERNAL_MIN_BYTES:
            header.graph.initializer.add().CopyFrom(t)
            continue
        offset += -offset % DATA_ALIGN
        if data_fh is not None:
            raw = t.raw_data  # one tensor's bytes in memory at a time
            data_fh.write(b"\0" * (offset - data_fh.tell()))
            data_fh.write(raw)
            size = len(raw)
            del raw
        out = header.graph.initializer.add()
        for tfd, value in _fields(t, skip="raw_data"):
            _copy_field(out, tfd, value)
        out.data_location = onnx.TensorProto.EXTERNAL
        for key, val in (("location", data_name), ("offset", str(offset)), ("length", str(size))):
            out.external_data.add(key=key, value=val)
        offset += size
    if data_fh is not None:
        data_fh.flush()
    return header


def weightless_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the payloads of its large initializers (see ``external_header``)."""
    return external_header(model, None, "<weights not copied>")


def write_text_atomic(path: str | Path, text: str | bytes) -> Path:
    """Write a text (or bytes) file atomically (temporary file in the same directory, then rename)."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8") if isinstance(text, str) else text)
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
