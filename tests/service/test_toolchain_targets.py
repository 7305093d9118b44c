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
            lib = c.get(f"/api/v1/jobs/{r.json()['job_id']}/artifacts/tiny_int8.tvm.so")
            assert lib.status_code == 200 and len(lib.content) > 10_000
            assert lib.content[:4] == b"\x7fELF"  # a real shared library
            report = c.get(f"/api/v1/jobs/{r.json()['job_id']}/artifacts/tiny_int8.json").json()
            assert report["toolchain"]["toolchain"] == "tvm"
    finally:
        srv.stop()
