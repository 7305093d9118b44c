"""In-process checks: missing extra, the 500 handler, the CLI command, target table, TorchScript."""

from __future__ import annotations

import importlib.util
import io
import re
import warnings
from pathlib import Path

import onnx
import pytest
from onnx import external_data_helper
from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job
from tinymodels import optional

from edgequant.errors import DependencyError, ModelError, TargetError
from edgequant.service import ServiceConfig, create_app, require_extra
from edgequant.service.config import resolve_target
from edgequant.service.safety import check_name, inspect_model


def test_missing_extra_is_a_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    with pytest.raises(DependencyError) as err:
        require_extra()
    assert err.value.to_dict() == {
        "error": "DependencyError",
        "detail": "The REST service needs the Python package 'fastapi', which is not installed.",
        "hint": "pip install 'edgequant[serve]'",
    }


def test_unexpected_exception_is_logged_json_500(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from fastapi.testclient import TestClient

    app = create_app(ServiceConfig.create(tmp_path))

    @app.get("/api/v1/boom")
    def boom() -> None:
        raise RuntimeError(f"kaboom in {tmp_path}")

    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as client:
        r = client.get("/api/v1/boom")
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error", "detail", "hint"} and body["error"] == "InternalError"
    incident = re.fullmatch(r"an unexpected RuntimeError \(incident ([0-9a-f]{8}); details are in the server log\)\.",
                            body["detail"])  # fmt: skip
    assert incident, body
    assert str(tmp_path) not in r.text and "kaboom" not in r.text  # neither the message nor the store path
    assert f"unhandled error on GET /api/v1/boom (incident {incident.group(1)})" in caplog.text


def test_targets_and_names() -> None:
    assert resolve_target(None) == resolve_target("onnx") == resolve_target("CPU") == "cpu"
    with pytest.raises(
        TargetError, match="known targets: onnx, cpu, akida, cmsis-nn, ti-npu, tvm, vitis-dpu"
    ):
        resolve_target("npu")
    assert resolve_target("TI-NPU") == "ti-npu" and resolve_target("vitis-ai") == "vitis-dpu"
    with pytest.raises(
        TargetError, match=r"converts a Keras 2 \.h5 model .* ONNX and TorchScript models only"
    ):
        resolve_target("akida1")  # its route takes .h5 files, which the service does not store
    # one target-name check for CLI, API and REST: the closest match, and no target the library lacks
    with pytest.raises(TargetError) as typo:
        resolve_target("ti-npuu")
    assert typo.value.hint.startswith("did you mean 'ti-npu'? ") and "tidl" not in str(typo.value)
    with pytest.raises(TargetError, match="unknown target 'tidl'") as tidl:
        resolve_target("tidl")
    assert "toolchain" not in str(tidl.value)
    assert check_name("resnet18_v1.2") == "resnet18_v1.2"


def test_serve_command_is_registered() -> None:
    from typer.testing import CliRunner

    from edgequant.cli import app

    out = CliRunner().invoke(app, ["serve", "--help"])
    assert out.exit_code == 0
    for flag in ("--host", "--port", "--store", "--api-key", "--max-upload-mb", "--workers"):
        assert flag in out.output


def test_torchscript_upload_and_quantize(server: Server) -> None:
    torch = optional("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(256, 10)
    )
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net.eval()), buf)
    with server.client() as c:
        r = upload(c, "models", "ts", buf.getvalue(), "ts.pt", overwrite="true")
        assert r.status_code == 201 and r.json()["format"] == "torchscript", r.text
        assert upload(c, "datasets", "calib", tiny_npz(), "c.npz", overwrite="true").status_code == 201
        job = wait_job(c, c.post("/api/v1/model/ts/quantize", params={"dataset": "calib"}).json()["job_id"])
        assert job["status"] == "succeeded", job["error"]
        assert job["report"]["metrics"]["output_sqnr_db"]
        assert min(job["report"]["metrics"]["output_sqnr_db"].values()) >= 25.0
        assert "ts_int8.onnx" in job["report"]["artifacts"]
        assert not any(a.endswith(".pt") for a in job["report"]["artifacts"])


def test_inspect_model_words_errors_for_an_upload(tmp_path: Path) -> None:
    ok = tmp_path / "ok.bin"
    ok.write_bytes(tiny_model().SerializeToString())
    info = inspect_model(ok)
    assert (info.format, info.suffix) == ("onnx", ".onnx")
    assert info.details == {"inputs": ["input"], "outputs": ["logits"], "nodes": 4, "opset": 17}

    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x08\x07this is not a model" * 10)
    with pytest.raises(ModelError) as err:
        inspect_model(junk)
    assert err.value.to_dict()["detail"].startswith(
        "the upload is not an ONNX model (protobuf parse failed: "
    )
    assert str(tmp_path) not in str(err.value)  # the server's temporary path is never echoed

    empty = tmp_path / "empty.bin"
    empty.write_bytes(onnx.ModelProto(ir_version=8).SerializeToString())
    with pytest.raises(ModelError) as err:
        inspect_model(empty)
    assert err.value.to_dict() == {
        "error": "ModelError",
        "detail": "the upload parsed as protobuf but holds no ONNX graph (no nodes, no outputs).",
        "hint": "upload an .onnx file (or a TorchScript archive where torch is installed).",
    }

    external = tiny_model()
    external_data_helper.convert_model_to_external_data(external, location="w.data", size_threshold=0)
    ext = tmp_path / "ext.bin"
    ext.write_bytes(external.SerializeToString())
    with pytest.raises(
        ModelError, match="stores weights as external data, which a single upload cannot carry"
    ):
        inspect_model(ext)
