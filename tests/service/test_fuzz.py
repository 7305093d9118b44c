"""A short, bounded schemathesis run against the live OpenAPI of a real server on loopback: no 5xx.

Every operation of /openapi.json is exercised with generated valid and invalid requests (coverage
and fuzzing phases, fixed seed, ``MAX_EXAMPLES`` per operation, at most ``MAX_TIME_S`` seconds); the checks also hold every answer
to its declared status codes and schemas (``ErrorBody`` for errors).  The longer run whose numbers
are in the README is ``benchmarks/bench_service.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from service_helpers import Server, tiny_model, tiny_npz, upload

MAX_TIME_S = 120
MAX_EXAMPLES = 5  # per operation and phase
CHECKS = "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance"


def fuzz(url: str, out: Path, max_time: int, max_examples: int, seed: int = 1) -> dict[str, int]:
    """Run schemathesis against ``url``; {"requests", "5xx", "returncode"} read from its HAR record."""
    har = out / "fuzz.har"
    exe = Path(sys.executable).parent / "schemathesis"
    cmd = [
        str(exe), "run", f"{url}/openapi.json", "--checks", CHECKS, "--max-time", str(max_time),
        "--workers", "1", "--seed", str(seed), "--max-examples", str(max_examples), "--phases", "coverage,fuzzing", "--request-timeout", "30",
        "--report", "har", "--report-har-path", str(har), "--no-color", "--generation-database", "none",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max_time + 240, cwd=out)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses = [int(e["response"]["status"]) for e in entries]
    (out / "fuzz.log").write_text(proc.stdout + proc.stderr)
    return {"requests": len(statuses), "5xx": sum(s >= 500 for s in statuses), "returncode": proc.returncode}


def test_fuzz_the_live_openapi_without_server_errors(tmp_path: Path) -> None:
    srv = Server(tmp_path / "store", "--workers", "1").start()
    try:
        with srv.client() as c:  # some real names, so generated requests also reach existing objects
            assert upload(c, "models", "m", tiny_model().SerializeToString(), "m.onnx").status_code == 201
            assert upload(c, "datasets", "d", tiny_npz(), "d.npz").status_code == 201
        result = fuzz(srv.url, tmp_path, MAX_TIME_S, MAX_EXAMPLES)
    finally:
        srv.stop()
    log = (tmp_path / "fuzz.log").read_text()
    assert result["5xx"] == 0 and result["returncode"] == 0, log[-4000:]
    assert result["requests"] >= 100, (result, log[-2000:])
