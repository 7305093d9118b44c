"""Running out of memory is one clear error naming the limit, in the CLI and in a service job; never
'a bug', never a traceback; and an exception with an empty message never breaks an error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import conv_net, images

from edgequant.errors import ModelError, caused_by_memory, first_line
from edgequant.service.store import JobStore
from edgequant.service.worker import run_job

RAISE_ON_LOAD = (
    "import sys, onnx\n"
    "def boom(*args, **kwargs):\n    raise MemoryError()\n"  # what onnx.load raises past RLIMIT_AS: no message
    "onnx.load = boom\n"
    "from edgequant.cli import main\n"
    "sys.argv = ['edgequant', *sys.argv[1:]]\n"
    "main()\n"
)


def test_first_line_of_empty_and_multiline_messages() -> None:
    assert first_line(MemoryError()) == "MemoryError"
    assert first_line(ValueError("\n\n  second line  \nthird")) == "second line"
    assert first_line(RuntimeError("x" * 50), 10) == "x" * 10
    try:
        try:
            raise MemoryError()
        except MemoryError as exc:
            raise ModelError("wrapped") from exc
    except ModelError as wrapped:
        assert caused_by_memory(wrapped) and not caused_by_memory(ModelError("plain"))


def test_cli_out_of_memory_is_one_line_exit_2_nothing_written(tmp_path: Path) -> None:
    model, calib, out = tmp_path / "net.onnx", tmp_path / "calib.npz", tmp_path / "out"
    onnx.save_model(conv_net(), model)
    np.savez(calib, x=images(8))
    args = ["quantize", str(model), "-o", str(out), "--calib-data", str(calib)]
    proc = subprocess.run(
        [sys.executable, "-c", RAISE_ON_LOAD, *args], capture_output=True, text=True, timeout=300
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: out of memory (limit"), proc.stderr
    assert "Fix: " in lines[0] and "ulimit -v" in lines[0] and "bug" not in lines[0]
    assert not out.exists()


def test_cli_names_the_address_space_limit(tmp_path: Path) -> None:
    code = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, resource.getrlimit(resource.RLIMIT_AS)[1]))\n"
        "from edgequant.errors import out_of_memory_error\n"
        "print(out_of_memory_error())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith(
        "out of memory (limit 3072 MiB of address space (RLIMIT_AS, ulimit -v))."
    ), proc


def test_service_job_out_of_memory_in_onnx_load_is_a_resource_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(tmp_path)
    (tmp_path / "models" / "big").mkdir(parents=True)
    onnx.save_model(conv_net(), tmp_path / "models" / "big" / "big.onnx")
    (tmp_path / "datasets" / "bigc").mkdir(parents=True)
    np.savez(tmp_path / "datasets" / "bigc" / "data.npz", x=images(8))
    job_id = store.create("quantize", "big", "bigc", {})
    store.transition(job_id, ("queued",), "running")

    def boom(*args: object, **kwargs: object) -> onnx.ModelProto:
        raise MemoryError()

    monkeypatch.setattr(onnx, "load", boom)
    monkeypatch.setenv("EDGEQUANT_WORKER_MEMORY_MB", "600")
    run_job(store, job_id)
    row = store.get(job_id)
    assert row is not None and row["status"] == "failed"
    error = json.loads(row["error"])
    assert error["error"] == "ResourceLimit", error
    assert "ran out of memory" in error["detail"] and "600 MB" in error["detail"]
    assert "--worker-memory-mb" in error["hint"] and "bug" not in json.dumps(error)
    assert not store.job_dir(job_id).exists() and not store.job_dir(job_id, partial=True).exists()
