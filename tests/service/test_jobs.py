"""Jobs through the real server: quantize end to end, many at once, cancel, failing jobs, compare."""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
from service_helpers import Server, tiny_model, tiny_npz, upload, wait_job

from edgequant.evaluate.metrics import sqnr_db
from edgequant.runtime import OrtRuntime

TINY = tiny_model().SerializeToString()


def _setup(server: Server) -> None:
    with server.client() as c:
        assert upload(c, "models", "tiny", TINY, "tiny.onnx", overwrite="true").status_code == 201
        assert upload(c, "datasets", "calib", tiny_npz(), "calib.npz", overwrite="true").status_code == 201


def test_upload_quantize_poll_download_run(server: Server) -> None:
    _setup(server)
    with server.client() as c:
        r = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib", "method": "int8-static"})
        assert r.status_code == 202 and set(r.json()) >= {"job_id"}
        job = wait_job(c, r.json()["job_id"])
        assert job["status"] == "succeeded", job["error"]
        assert job["progress"] == {"fraction": 1.0, "percent": 100.0, "stage": "done"}
        rep = job["report"]
        assert rep["artifacts"] == ["tiny_int8.json", "tiny_int8.onnx", "tiny_int8.plan.json"]
        assert rep["sizes"]["original_bytes"] > 2.5 * rep["sizes"]["quantized_bytes"]
        assert rep["sizes"]["compression_ratio"] > 2.5
        assert rep["metrics"]["output_sqnr_db"]["logits"] >= 25.0
        assert str(server.store) not in json.dumps(job) and "<store>/datasets/calib/data.npz" in json.dumps(
            job
        )
        url = f"/api/v1/jobs/{job['job_id']}/artifacts"
        blob = c.get(f"{url}/tiny_int8.onnx")
        assert blob.status_code == 200
        assert c.get(f"{url}/tiny_int8.json").json()["tag"] == "int8"
        assert c.get(f"{url}/jobs.sqlite").status_code == 404
        assert c.get(f"{url}/..%2F..%2Fjobs.sqlite").status_code == 400
    quant = onnx.load_from_string(blob.content)
    assert {n.op_type for n in quant.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    x = np.random.default_rng(7).normal(0, 1, (8, 3, 8, 8)).astype(np.float32)
    rt = OrtRuntime()
    ref = rt.run(tiny_model(), {"input": x})["logits"]
    got = rt.run(quant, {"input": x})["logits"]
    assert sqnr_db(ref, got) >= 25.0


def test_eight_jobs_at_once_all_finish(server: Server) -> None:
    _setup(server)
    methods = [
        "int8-static",
        "fp16",
        "dynamic-int8",
        "w8a16",
        "int8-static-per-tensor",
        "static",
        "fp16",
        "w4a8",
    ]
    with server.client() as c, ThreadPoolExecutor(8) as pool:
        posts = list(
            pool.map(
                lambda m: c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib", "method": m}),
                methods,
            )
        )
        assert [p.status_code for p in posts] == [202] * 8
        jobs = [wait_job(c, p.json()["job_id"], timeout=60) for p in posts]
    assert [j["status"] for j in jobs] == ["succeeded"] * 8, [j["error"] for j in jobs]
    assert len({j["job_id"] for j in jobs}) == 8
    assert [j["report"]["tag"] for j in jobs][:3] == ["int8", "fp16", "dynamic_int8"]


def test_corrupt_data_fails_the_job_not_the_server(server: Server) -> None:
    _setup(server)
    buf = io.BytesIO()
    np.savez(buf, input=np.zeros((4, 5), np.float32))  # valid npz, wrong shape for the model
    with server.client() as c:
        assert (
            upload(c, "datasets", "wrong-shape", buf.getvalue(), "w.npz", overwrite="true").status_code == 201
        )
        r = c.post("/api/v1/model/tiny/quantize", params={"dataset": "wrong-shape"})
        job = wait_job(c, r.json()["job_id"])
        assert job["status"] == "failed"
        assert job["error"]["error"] == "DataError" and "shape" in job["error"]["detail"]
        assert str(server.store) not in json.dumps(job)
        assert not (server.store / "jobs" / f"{job['job_id']}.partial").exists()
        r = c.get(f"/api/v1/jobs/{job['job_id']}/artifacts/tiny_int8.onnx")
        assert r.status_code == 409
        assert c.get("/health").json()["jobs"]["alive"] == 2


def _wait_status(c: object, job_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/api/v1/jobs/{job_id}").json()  # type: ignore[attr-defined]
        if job["status"] == status and job["progress"]["stage"] != "starting":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {status}: {job}")


def test_cancel_queued_and_running_jobs(server: Server) -> None:
    _setup(server)
    with server.client() as c:
        long_jobs = [
            c.post("/api/v1/model/tiny/compare", params={"dataset": "calib"}).json()["job_id"] for _ in "ab"
        ]
        queued = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib"}).json()["job_id"]
        for job_id in long_jobs:
            _wait_status(c, job_id, "running")
        assert c.get(f"/api/v1/jobs/{queued}").json()["status"] == "queued"
        assert c.post(f"/api/v1/jobs/{queued}/cancel").json() == {"job_id": queued, "status": "cancelled"}
        for job_id in long_jobs:
            assert c.post(f"/api/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
            job = c.get(f"/api/v1/jobs/{job_id}").json()
            assert job["status"] == "cancelled" and job["report"] is None
            assert not (server.store / "jobs" / f"{job_id}.partial").exists()
            assert not (server.store / "jobs" / job_id).exists()
        time.sleep(0.5)
        assert c.get(f"/api/v1/jobs/{queued}").json()["status"] == "cancelled"  # never dispatched
        # the killed workers were replaced: a new job still runs
        again = c.post("/api/v1/model/tiny/quantize", params={"dataset": "calib", "method": "fp16"}).json()
        assert wait_job(c, again["job_id"])["status"] == "succeeded"
        assert c.get("/health").json()["jobs"]["alive"] == 2
        assert c.post(f"/api/v1/jobs/{again['job_id']}/cancel").status_code == 409


def test_compare_job_selected_methods(server: Server) -> None:
    _setup(server)
    with server.client() as c:
        r = c.post(
            "/api/v1/model/tiny/compare", params={"dataset": "calib", "methods": "float,fp16,int8-static"}
        )
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"], timeout=60)
        assert job["status"] == "succeeded", job["error"]
        rep = job["report"]
        assert [m["method"] for m in rep["methods"]] == ["float", "fp16", "int8-static"]
        assert all(m["status"] == "ok" for m in rep["methods"])
        assert "tiny_int8.onnx" in rep["artifacts"]
        assert (
            c.post("/api/v1/model/tiny/compare", params={"dataset": "calib", "methods": "int3"}).status_code
            == 422
        )
        # one dataset: split (seeded), never evaluated in-sample; the CLI's default limits
        assert rep["settings"]["leakage_check"].startswith("one dataset split in two")
        assert rep["limits"]["max_drop"] == 1.0 and rep["limits"]["prefer"] == "latency"
        assert "filter by every limit" in rep["recommendation"]["rule"]
        assert (
            upload(c, "datasets", "evalset", tiny_npz(seed=11), "e.npz", overwrite="true").status_code == 201
        )
        r = c.post(
            "/api/v1/model/tiny/compare",
            params={"dataset": "calib", "eval_dataset": "evalset", "methods": "float,fp16", "prefer": "size"},
        )
        job = wait_job(c, r.json()["job_id"], timeout=60)
        assert job["status"] == "succeeded", job["error"]
        assert job["report"]["limits"]["prefer"] == "size"
        assert job["report"]["settings"]["leakage_check"].startswith("no overlap between")
        bad = c.post("/api/v1/model/tiny/compare", params={"dataset": "calib", "prefer": "speed"})
        assert bad.status_code in (400, 422) and "prefer 'speed'" in bad.text


def test_zip_of_images_calibrates_a_job(server: Server) -> None:
    import zipfile

    from PIL import Image

    _setup(server)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(12):
            img = io.BytesIO()
            pixels = np.random.default_rng(i).integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(img, format="PNG")
            zf.writestr(f"imgs/{i}.png", img.getvalue())
    with server.client() as c:
        r = upload(c, "datasets", "imgs", buf.getvalue(), "imgs.zip", overwrite="true")
        assert r.status_code == 201 and r.json()["images"] == 12
        body = {"preprocess": {"resize": 8, "center_crop": 8}}
        job = wait_job(
            c, c.post("/api/v1/model/tiny/quantize", params={"dataset": "imgs"}, json=body).json()["job_id"]
        )
    assert job["status"] == "succeeded", job["error"]
    assert job["report"]["calibration"]["samples"] == 6  # of 12: 6 held back for the run check
    assert job["report"]["metrics"]["output_sqnr_db"]["logits"] >= 25.0


def test_compare_job_takes_data_options_and_its_target(server: Server) -> None:
    _setup(server)
    with server.client() as c:
        # a data option that names a server file, an unknown body key, an unknown option: refused, nothing queued
        for body, msg in (
            ({"data_options": {"metadata_csv": "/etc/passwd"}}, "not accepted by the REST service"),
            ({"method": "static"}, "method"),
            ({"data_options": {"prefech": 2}}, "data option 'prefech' is not accepted"),
        ):
            r = c.post("/api/v1/model/tiny/compare", params={"dataset": "calib"}, json=body)
            assert r.status_code == 422 and msg in r.text, r.text
            assert "/etc/passwd" not in r.text
        r = c.post(
            "/api/v1/model/tiny/compare",
            params={
                "dataset": "calib",
                "methods": "float,int8-static",
                "target": "vitis-dpu",
                "max_drop": 50,
                "max_drop_rel": 0.9,
                "max_latency_ms": 1e5,
                "max_size_mb": 1e3,
                "max_energy_mj": 1e3,
                "prefer": "energy",
            },
            json={"data_options": {"prefetch": 2}},
        )
        assert r.status_code == 202, r.text
        job = wait_job(c, r.json()["job_id"], timeout=90)
    assert job["status"] == "succeeded", job["error"]
    rep = job["report"]
    assert rep["settings"]["data_options"] == {"prefetch": 2}
    assert rep["limits"] == {"max_drop": 50.0, "max_drop_rel": 0.9, "max_latency_ms": 1e5, "max_size_mb": 1e3,
                             "max_energy_mj": 1e3, "prefer": "energy"}  # fmt: skip
    assert rep["recommendation"]["method"] == "int8-static"  # the lower energy estimate, every limit met
    assert rep["settings"]["target"] == "vitis-dpu"  # the target reaches the job (it was dropped before)
    assert "peak compute bound" in rep["settings"]["latency_prediction"]
    assert [m["predicted_latency"]["kind"] for m in rep["methods"]] == ["prediction", "prediction"]
    assert rep["methods"][0]["predicted_latency"]["ms"] is None  # FP32 MACs: the DPU is int8 only
