"""The HTTP layer against a real server: uploads, validation, traversal, size limit, errors."""

from __future__ import annotations

import io
import socket
import zipfile
from collections.abc import Iterator

import numpy as np
import pytest
from service_helpers import Server, tiny_model, tiny_npz, upload

TINY = tiny_model().SerializeToString()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _png(seed: int) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_health_and_docs(server: Server) -> None:
    with server.client() as c:
        health = c.get("/health").json()
        assert health["status"] == "ok" and health["targets"] == [
            "onnx",
            "cpu",
            "akida",
            "cmsis-nn",
            "ti-npu",
            "tvm",
            "vitis-dpu",
        ]
        assert health["jobs"]["workers"] == 2
        assert c.get("/docs").status_code == 200
        assert "/api/v1/model/{model_name}/quantize" in c.get("/openapi.json").json()["paths"]


def test_model_upload_list_get_conflict_delete(server: Server) -> None:
    with server.client() as c:
        r = upload(c, "models", "m-crud", TINY, "tiny.onnx")
        assert r.status_code == 201, r.text
        assert r.json()["inputs"] == ["input"] and r.json()["format"] == "onnx"
        assert "m-crud" in [m["name"] for m in c.get("/api/v1/models").json()["models"]]
        assert c.get("/api/v1/models/m-crud").json()["outputs"] == ["logits"]
        r = upload(c, "models", "m-crud", TINY, "tiny.onnx")
        assert r.status_code == 409 and r.json()["error"] == "Conflict"
        assert upload(c, "models", "m-crud", TINY, "tiny.onnx", overwrite="true").status_code == 201
        assert c.delete("/api/v1/models/m-crud").json() == {"deleted": "m-crud"}
        r = c.get("/api/v1/models/m-crud")
        assert r.status_code == 404 and r.json()["detail"] == "model 'm-crud' does not exist."
        assert not (server.store / "models" / "m-crud.onnx").exists()


def test_name_defaults_to_file_stem_and_bad_names_are_400(server: Server) -> None:
    with server.client() as c:
        assert upload(c, "models", "", TINY, "stem-name.onnx").json()["name"] == "stem-name"
        for bad in ("../evil", "a/b", "-dash", "x" * 65, "sp ace", "a..b"):
            r = upload(c, "models", bad, TINY, "ok.onnx")
            assert r.status_code == 400, bad
            assert r.json()["error"] == "BadRequest" and "invalid model name" in r.json()["detail"]
        r = c.post("/api/v1/models", files={"file": ("../../etc/passwd", TINY)})
        assert r.status_code == 400 and "contains a path" in r.json()["detail"]


def test_corrupt_and_foreign_model_uploads_are_rejected(server: Server) -> None:
    with server.client() as c:
        r = upload(c, "models", "junk", b"\x08\x07this is not a model" * 10, "junk.onnx")
        assert r.status_code == 400 and r.json()["error"] == "ModelError", r.text
        truncated = TINY[: len(TINY) // 2]
        assert upload(c, "models", "trunc", truncated, "t.onnx").status_code == 400
        pickle_zip = _zip({"archive/data.pkl": b"\x80\x04K\x01.", "archive/version": b"3"})
        r = upload(c, "models", "pickled", pickle_zip, "m.pt")
        assert r.status_code == 400 and "never unpickles" in r.json()["detail"]
        assert c.get("/health").status_code == 200
        assert not list((server.store / "tmp").iterdir())


def test_traversal_attempts_are_400(server: Server) -> None:
    with server.client() as c:
        for path in (
            "/api/v1/models/..%2F..%2Fetc%2Fpasswd",
            "/api/v1/models/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/api/v1/models/%252e%252e%252fetc",
            "/api/v1/models/..%5c..%5cwindows",
            "/api/v1/models/%2Fetc%2Fpasswd",
            "/api/v1/models/a%00b",
            "/api/v1/jobs/..%2F..%2Fjobs.sqlite",
            "/api/v1/jobs/0123456789abcdef0123456789abcdef/artifacts/..%2F..%2Fjobs.sqlite",
            "/api/v1/model/..%2Fx/quantize",
        ):
            r = c.post(path) if path.endswith("quantize") else c.get(path)
            assert r.status_code == 400, (path, r.status_code, r.text)
            assert set(r.json()) == {"error", "detail", "hint"}
    # a literal "../" that no client normalises away
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(
            b"GET /api/v1/models/../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        assert s.recv(4096).split(b"\r\n", 1)[0] == b"HTTP/1.1 400 Bad Request"


def test_oversize_upload_is_413_streamed_and_declared(server: Server) -> None:
    big = b"\x00" * (1024 * 1024 + 200_000)  # server limit is 1 MB
    with server.client() as c:
        r = upload(c, "models", "big", big, "big.onnx")
        assert r.status_code == 413 and r.json()["error"] == "PayloadTooLarge"

        def chunks() -> Iterator[
            bytes
        ]:  # chunked transfer: no Content-Length, the limit is hit while streaming
            body = b'--B\r\nContent-Disposition: form-data; name="file"; filename="b.onnx"\r\n\r\n'
            yield body
            for _ in range(40):
                yield b"\x01" * 65536
            yield b"\r\n--B--\r\n"

        r = c.post(
            "/api/v1/models", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=B"}
        )
        assert r.status_code == 413, r.text
        assert "1 MB" in r.json()["detail"]
        assert not list((server.store / "tmp").iterdir())
        assert c.get("/health").status_code == 200


def test_dataset_npz_and_images(server: Server) -> None:
    with server.client() as c:
        r = upload(c, "datasets", "d-npz", tiny_npz(), "c.npz")
        assert r.status_code == 201 and r.json()["arrays"]["input"] == {
            "shape": [16, 3, 8, 8],
            "dtype": "float32",
        }
        r = upload(
            c, "datasets", "d-img", _zip({"imgs/a.png": _png(0), "imgs/b.png": _png(1), "readme.txt": b"x"})
        )
        assert r.status_code == 201, r.text
        assert r.json()["images"] == 2 and r.json()["skipped_files"] == ["readme.txt"]
        assert (server.store / "datasets" / "d-img" / "images" / "imgs" / "b.png").is_file()
        names = [d["name"] for d in c.get("/api/v1/datasets").json()["datasets"]]
        assert {"d-npz", "d-img"} <= set(names)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"../evil.png": b"x"}, "unsafe path"),
        ({"/abs/evil.png": b"x"}, "unsafe path"),
        ({"C:/evil.png": b"x"}, "unsafe path"),
        ({"a\\..\\evil.png": b"x"}, "unsafe path"),
        ({"bomb.png": b"\x00" * (5 * 1024 * 1024)}, "possible zip bomb"),  # 5 MB inflated > 4 x 1 MB
        ({"broken.png": b"not a png"}, "cannot be decoded"),
        ({"notes.txt": b"x"}, "holds no images"),
    ],
)
def test_hostile_or_corrupt_zips_are_rejected(
    server: Server, members: dict[str, bytes], message: str
) -> None:
    with server.client() as c:
        r = upload(c, "datasets", "bad-zip", _zip(members), "bad.zip")
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "DataError" and message in r.json()["detail"]
    assert not (server.store / "datasets" / "bad-zip").exists()
    assert not (server.store / "evil.png").exists() and not (server.store.parent / "evil.png").exists()


def test_npz_with_objects_or_garbage_is_rejected(server: Server) -> None:
    buf = io.BytesIO()
    np.savez(buf, input=np.array([{"a": 1}], dtype=object))
    with server.client() as c:
        r = upload(c, "datasets", "pickly", buf.getvalue(), "p.npz")
        assert r.status_code == 400 and "needs pickle; refused" in r.json()["detail"]
        r = upload(c, "datasets", "garbage", b"definitely not an archive", "g.npz")
        assert r.status_code == 400 and "not a zip archive" in r.json()["detail"]


def test_quantize_request_validation(server: Server) -> None:
    with server.client() as c:
        assert upload(c, "models", "val", TINY, "val.onnx", overwrite="true").status_code == 201
        r = c.post("/api/v1/model/val/quantize", params={"target": "gpu9000"})
        assert r.status_code == 422 and r.json()["error"] == "TargetError"
        assert "known targets: onnx, cpu" in r.json()["detail"]
        r = c.post("/api/v1/model/val/quantize", params={"target": "ti-npuu"})
        assert r.status_code == 422 and r.json()["hint"].startswith("did you mean 'ti-npu'? "), r.json()
        r = c.post("/api/v1/model/val/quantize", params={"target": "tidl"})  # as in the CLI: not a target
        assert r.status_code == 422 and r.json()["detail"].startswith("unknown target 'tidl'"), r.json()
        r = c.post("/api/v1/model/val/quantize", json={"wieght_bits": 4})
        assert r.status_code == 422 and r.json()["error"] == "RecipeError"
        assert r.json()["detail"].startswith("unknown key 'wieght_bits' in recipe; allowed:")
        assert "did you mean 'weight_bits'" in r.json()["hint"]
        r = c.post("/api/v1/model/val/quantize", json={"calib_data": "/etc/passwd"})
        assert r.status_code == 422 and "not accepted by the REST service" in r.json()["detail"]
        r = c.post("/api/v1/model/val/quantize", params={"method": "int3"})
        assert r.status_code == 422 and "unknown method 'int3'" in r.json()["detail"]
        assert c.post("/api/v1/model/nope/quantize").status_code == 404
        assert c.post("/api/v1/model/val/quantize", params={"dataset": "nope"}).status_code == 404
        r = c.post(
            "/api/v1/model/val/quantize", content=b"[1, 2", headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 422 and r.json()["error"] == "ValidationError"
        r = c.get("/api/v1/jobs/not-a-job")
        assert r.status_code == 400 and "32 lowercase hex" in r.json()["detail"]
        r = c.get("/api/v1/jobs/" + "0" * 32)
        assert r.status_code == 404 and r.json()["error"] == "NotFound"
        r = c.get("/api/v1/nothing-here")
        assert r.status_code == 404 and set(r.json()) == {"error", "detail", "hint"}
