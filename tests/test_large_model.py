"""Models above protobuf's 2 GB limit, tested small: the limit is lowered so a ~100 KB model crosses it.

Checks: ``serialized_size`` is exact (it replaces ``ByteSize``, which raises above 2 GB);
``save_model`` streams initializers to ``<name>.onnx.data`` without changing or copying the model,
renames both files into place and leaves nothing on failure; ``QuantResult.save`` names and cleans
up the data file; a quantized model saved that way loads back and runs in ORT with the float SQNR.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgequant.errors import ExportError
from edgequant.export.sizes import file_bytes
from edgequant.model import io
from edgequant.model.io import DATA_ALIGN, load_model, save_model, serialized_size
from edgequant.runtime import OrtRuntime
from edgequant.schemes import sqnr_db


def mlp(layers: int = 3, dim: int = 64, seed: int = 0) -> onnx.ModelProto:
    """layers x (MatMul [dim, dim] -> Add -> Relu), He-initialised; input x [N, dim], output y."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((dim, dim)) * np.sqrt(2.0 / dim)).astype(np.float32)
        inits += [nh.from_array(w, f"w{i}"), nh.from_array(np.full(dim, 0.01, np.float32), f"b{i}")]
        out = "y" if i == layers - 1 else f"r{i}"
        nodes += [
            h.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"),
            h.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"),
            h.make_node("Relu", [f"a{i}"], [out], name=f"relu{i}"),
        ]
        prev = out
    g = h.make_graph(
        nodes,
        "mlp",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", dim])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", dim])],
        inits,
    )
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def odd_model() -> onnx.ModelProto:
    """Tensors of every storage kind: int4 packed raw_data, int64 raw, float_data, strings, a subgraph."""
    m = mlp(layers=1, dim=40)
    g = m.graph
    g.initializer.append(h.make_tensor("w4", T.INT4, [7, 5], np.arange(35) % 8 - 4))
    g.initializer.append(nh.from_array(np.arange(300, dtype=np.int64), "i64"))
    g.initializer.append(h.make_tensor("fd", T.FLOAT, [3], [1.0, 2.0, 3.0]))  # float_data, not raw
    g.initializer.append(h.make_tensor("s", T.STRING, [2], [b"ab", b"c" * 300]))  # type: ignore[list-item]
    nibbles = np.append(np.arange(3001) % 16, 0).astype(np.uint8)
    packed = (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()  # 1501 bytes, low nibble first
    g.initializer.append(h.make_tensor("big_int4", T.UINT4, [3001], packed, raw=True))
    then = h.make_graph(
        [h.make_node("Identity", ["b0"], ["t"])], "then", [], [h.make_tensor_value_info("t", 1, None)]
    )
    g.node.append(h.make_node("If", ["cond"], ["z"], then_branch=then, else_branch=then, name="if"))
    g.initializer.append(nh.from_array(np.array(True), "cond"))
    g.output.append(h.make_tensor_value_info("z", T.FLOAT, None))
    m.doc_string = "d" * 200
    return m


@pytest.mark.parametrize("build", [mlp, odd_model])
def test_serialized_size_is_exact(build: object) -> None:
    model = build()  # type: ignore[operator]
    assert serialized_size(model) == len(model.SerializeToString())
    assert file_bytes(model) == len(model.SerializeToString())


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_save_above_limit_streams_external_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = odd_model()
    before = model.SerializeToString()
    monkeypatch.setattr(io, "PROTO_LIMIT", 10_000)  # the model is ~60 KB: "above 2 GB" here
    path = save_model(model, tmp_path / "m.onnx")
    assert _files(tmp_path) == ["m.onnx", "m.onnx.data"]  # no temporary file left
    assert model.SerializeToString() == before  # the caller's model is unchanged
    header = onnx.load(str(path), load_external_data=False)
    external = {
        t.name: {e.key: e.value for e in t.external_data} for t in header.graph.initializer if t.external_data
    }
    assert set(external) == {"w0", "i64", "big_int4"}  # >= 1024 bytes of raw_data; the rest stays inline
    assert {e["location"] for e in external.values()} == {"m.onnx.data"}  # the final name, not the tmp one
    assert all(int(e["offset"]) % DATA_ALIGN == 0 for e in external.values())
    assert (tmp_path / "m.onnx").stat().st_size < 3_000
    loaded = load_model(path)
    assert loaded.SerializeToString() == before  # byte-identical round trip


def test_ort_runs_the_external_data_model_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = mlp()
    monkeypatch.setattr(io, "PROTO_LIMIT", 10_000)
    path = save_model(model, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx.data").stat().st_size >= 3 * 64 * 64 * 4
    onnx.checker.check_model(str(path))  # by path: also checks the external data is where it says
    x = {"x": np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)}
    rt = OrtRuntime()
    by_path = rt.run(path, x)["y"]
    np.testing.assert_array_equal(by_path, rt.run(model, x)["y"])


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(io, "PROTO_LIMIT", 10_000)

    def disk_full(message: object, path: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io, "_write_proto", disk_full)  # fails after the data file was written
    with pytest.raises(ExportError) as exc:
        save_model(mlp(), tmp_path / "m.onnx")
    assert "No space left on device" in exc.value.detail
    assert _files(tmp_path) == []


def test_header_above_limit_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = mlp()
    big = nh.from_array(np.ones(20_000, np.float32), "c")  # a Constant attribute is not externalised
    model.graph.node.insert(0, h.make_node("Constant", [], ["c"], value=big, name="const"))
    monkeypatch.setattr(io, "PROTO_LIMIT", 60_000)
    with pytest.raises(ExportError) as exc:
        save_model(model, tmp_path / "m.onnx")
    assert "the ONNX header alone is" in exc.value.detail
    assert "move them to top-level initializers" in exc.value.hint
    assert _files(tmp_path) == []


def test_small_save_removes_a_stale_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as mp:
        mp.setattr(io, "PROTO_LIMIT", 10_000)
        save_model(mlp(), tmp_path / "m.onnx")
    assert _files(tmp_path) == ["m.onnx", "m.onnx.data"]
    save_model(mlp(layers=1, dim=8), tmp_path / "m.onnx")  # small: inline, the old weights are stale
    assert _files(tmp_path) == ["m.onnx"]
    assert len(load_model(tmp_path / "m.onnx").graph.initializer) == 2


def test_quantized_result_saves_external_data_and_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edgequant

    model = mlp(dim=128)
    x = np.random.default_rng(2).standard_normal((16, 128)).astype(np.float32)
    result = edgequant.quantize(model, x, method="dynamic")
    monkeypatch.setattr(io, "PROTO_LIMIT", 20_000)  # the int8 model is ~50 KB
    paths = result.save(tmp_path)
    files = result.report["files"]
    assert files["model_data"] == paths.model.name + ".data"
    assert (tmp_path / files["model_data"]).stat().st_size >= 3 * 128 * 128  # int8 weights
    rt = OrtRuntime()
    ref = rt.run(model, {"x": x})["y"]
    got = rt.run(paths.model, {"x": x})["y"]
    assert sqnr_db(ref, got) > 30.0  # 8-bit weights and activations, 3 layers: ~36 dB measured
    np.testing.assert_array_equal(got, rt.run(result.model, {"x": x})["y"])


def test_failed_result_save_removes_the_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgequant
    from edgequant import result as result_mod

    res = edgequant.quantize(mlp(dim=128), np.ones((4, 128), np.float32), method="dynamic")
    monkeypatch.setattr(io, "PROTO_LIMIT", 20_000)

    def fail(path: Path, text: str) -> Path:
        if str(path).endswith(".plan.json"):
            return io.write_text_atomic(path, text)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(result_mod, "write_text_atomic", fail)  # the report write fails last
    with pytest.raises(OSError):
        res.save(tmp_path)
    assert _files(tmp_path) == []


def test_runtime_session_keeps_the_callers_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above the limit the session is built from a temp copy with external data; the caller's model
    keeps its weights (onnx.save_model(save_as_external_data=True) used to clear their raw_data)."""
    model = mlp()
    before = model.SerializeToString()
    monkeypatch.setattr(io, "PROTO_LIMIT", 10_000)
    OrtRuntime().session(model).close()
    assert model.SerializeToString() == before


def test_weightless_copy_keeps_the_graph_and_shapes_infer() -> None:
    from edgequant.model.io import weightless_copy

    model = mlp(layers=2, dim=64)
    light = weightless_copy(model)
    assert serialized_size(light) < 1_500 < serialized_size(model)
    assert [n.name for n in light.graph.node] == [n.name for n in model.graph.node]
    assert [list(t.dims) for t in light.graph.initializer] == [[64, 64], [64], [64, 64], [64]]
    assert len(model.graph.initializer[0].raw_data) == 64 * 64 * 4  # the original keeps its weights
    inferred = onnx.shape_inference.infer_shapes(light, strict_mode=True)
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in inferred.graph.value_info
    }
    assert shapes["r0"] == ["N", 64]


@pytest.mark.parametrize(("durable", "fsyncs"), [(True, 2), (False, 0)])
def test_scratch_saves_skip_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, fsyncs: int
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(io.os, "fsync", lambda fd: calls.append(fd))
    monkeypatch.setattr(io, "PROTO_LIMIT", 10_000)
    save_model(mlp(), tmp_path / "m.onnx", durable=durable)
    assert len(calls) == fsyncs  # .onnx.data and .onnx
    assert _files(tmp_path) == ["m.onnx", "m.onnx.data"]


def test_opset_of_a_large_model_is_raised_on_a_weightless_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The version converter serialises the model (fails above 2 GB with "Failed to serialize proto"):
    above the limit the graph is converted without its big weights and they are put back by name."""
    from edgequant.model import repair

    model = mlp(layers=2, dim=64)
    monkeypatch.setattr(repair, "PROTO_LIMIT", 10_000)
    converted, note = repair.ensure_opset(model, 21, "int4 Q/DQ")
    assert note == f"opset raised from {repair.opset_of(model)} to 21: int4 Q/DQ."
    assert repair.opset_of(converted) == 21
    weights = {t.name: t.raw_data for t in model.graph.initializer}
    got = {t.name: t.raw_data for t in converted.graph.initializer}
    assert got == weights  # every weight back, byte for byte, none left pointing at external data
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    rt = OrtRuntime()
    name = model.graph.input[0].name
    out = model.graph.output[0].name
    np.testing.assert_allclose(rt.run(converted, {name: x})[out], rt.run(model, {name: x})[out], rtol=1e-6)
