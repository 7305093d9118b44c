"""REST target=tvm: 501 with the install command when the toolchain is missing; with it, a job whose
TVM library is downloadable."""

from __future__ import annotations

import json
from pathlib import Path

from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job
from toolchain_helpers import need_toolchain

from edgequant.toolchains import envs


def test_rest_target_tvm(tmp_path: Path) -> None:
    empty = tmp_path / "no-toolchains"
    srv = Server(tmp_path / "store1", "--workers", "1", env={"EDGEQUANT_TOOLCHAINS": str(empty)}).start()
    try:
        with srv.client() as c:
            assert upload(c, "models", "tiny", tiny_model().SerializeToString(), "t.onnx").status_code == 201
            assert upload(c, "datasets", "calib", tiny_npz(), "c.npz").status_code == 201
            r = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib", "target": "tvm"})
            assert r.status_code == 501 and "edgequant toolchain install tvm" in json.dumps(r.json())
    finally:
        srv.stop()

    need_toolchain("tvm")
    srv = Server(
        tmp_path / "store2", "--workers", "1", env={"EDGEQUANT_TOOLCHAINS": str(envs.cache_dir())}
    ).start()
    try:
        with srv.client() as c:
            assert upload(c, "models", "tiny", tiny_model().SerializeToString(), "t.onnx").status_code == 201
            assert upload(c, "datasets", "calib", tiny_npz(), "c.npz").status_code == 201
            r = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib", "target": "tvm"})
            assert r.status_code in (200, 202), r.text
            job = wait_job(c, r.json()["job_id"], timeout=900)
            assert job["status"] == "succeeded", job
            lib = c.get(f"/api/v1/jobs/{r.json()['job_id']}/artifacts/tiny_int8_tvm.tvm.so")
            assert lib.status_code == 200 and len(lib.content) > 10_000
            assert lib.content[:4] == b"\x7fELF"  # a real shared library
            report = c.get(f"/api/v1/jobs/{r.json()['job_id']}/artifacts/tiny_int8_tvm.json").json()
            assert report["toolchain"]["toolchain"] == "tvm"
    finally:
        srv.stop()


def test_rest_target_akida1_is_refused_before_any_job(tmp_path: Path) -> None:
    # Akida 1.0 converts Keras .h5 files; the service stores ONNX/TorchScript: 422 naming the CLI route,
    # whether or not the akida toolchain is installed, and no job is queued
    srv = Server(
        tmp_path / "store", "--workers", "1", env={"EDGEQUANT_TOOLCHAINS": str(envs.cache_dir())}
    ).start()
    try:
        with srv.client() as c:
            assert upload(c, "models", "tiny", tiny_model().SerializeToString(), "t.onnx").status_code == 201
            assert upload(c, "datasets", "calib", tiny_npz(), "c.npz").status_code == 201
            r = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib", "target": "akida1"})
            assert r.status_code == 422, r.text
            body = r.json()
            assert "converts a Keras 2 .h5 model" in body["detail"]
            assert "--target akida1 --weight-bits 4 --act-bits 4" in body["hint"]
            assert "akida1" not in c.get("/health").json()["targets"]
            assert c.get("/api/v1/jobs").json()["jobs"] == []
    finally:
        srv.stop()
