"""sweep on a local Ray instance: the same rows and files as the local executor, resume, and retry."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray_helpers

from edgequant.executors import LocalExecutor
from edgequant.executors.ray import RayExecutor
from edgequant.sweep import run_sweep

METHODS = "float,dynamic-int8,fp16,int8-static"
SETTINGS: dict[str, Any] = {"latency_runs": 2, "measure_memory": False}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    folder = tmp_path_factory.mktemp("sweep-in")
    model, calib, ev = ray_helpers.write_inputs(folder)
    broken = folder / "broken.onnx"
    broken.write_bytes(b"this is not an ONNX model")
    return model, broken, calib, ev


@pytest.fixture(scope="module")
def local_run(inputs: tuple[Path, Path, Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    model, broken, calib, ev = inputs
    out = tmp_path_factory.mktemp("local")
    return run_sweep(
        [model, broken],
        calib,
        ev,
        outdir=out,
        methods=METHODS,
        bits=[8, 4],
        executor=LocalExecutor(),
        **SETTINGS,
    )


def _files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and (p.suffix == ".onnx" or p.name.endswith(".plan.json"))
    }


def test_sweep_on_ray_equals_local(
    inputs: tuple[Path, Path, Path, Path], local_run: Any, ray_executor: RayExecutor, tmp_path: Path
) -> None:
    model, broken, calib, ev = inputs
    res = run_sweep(
        [model, broken],
        calib,
        ev,
        outdir=tmp_path,
        methods=METHODS,
        bits=[8, 4],
        executor=ray_executor,
        **SETTINGS,
    )
    # float, fp16 once; dynamic-int8 and int8-static at 8 and 4 bits; for two models
    assert len(res.rows) == 2 * 6 and res.ran == 12 and res.cached == 0
    assert [ray_helpers.untimed(r) for r in res.rows] == [ray_helpers.untimed(r) for r in local_run.rows]
    # the same plans (scales, zero points) and the same QDQ models, byte for byte
    mine, theirs = _files(tmp_path), _files(local_run.outdir)
    assert sorted(mine) == sorted(theirs) and len(mine) >= 8
    assert all(mine[k] == theirs[k] for k in mine)
    # the broken model's cells are failed rows with the load error; the other model's all ran
    bad = [r for r in res.rows if r["model"] == "broken"]
    assert len(bad) == 6 and all(r["status"] == "failed" and r["error_type"] == "ModelError" for r in bad)
    tiny = [r for r in res.rows if r["model"] == "tiny"]
    # ORT has no 4-bit dynamic kernels: that cell fails with its reason, the sweep goes on
    failed = [(r["method"], r["bits"]) for r in tiny if r["status"] != "ok"]
    assert failed == [("dynamic-int8", 4)]
    assert "weight_bits=4" in next(r["error"] for r in tiny if r["status"] != "ok")
    good = [r for r in tiny if r["status"] == "ok"]
    assert len(good) == 5
    # the score is the quantized file's top-1 % in our own ORT session
    data = np.load(ev)
    for r in good:
        path = tmp_path / r["folder"] / r["model_file"]
        assert r["score"] == pytest.approx(ray_helpers.top1(path, data["x"], data["labels"]), abs=1e-9)
    assert sum(1 for r in good if r["pareto"]) >= 1
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert report["cells"] == 12 and report["settings"]["executor"].startswith("ray (local; 2 logical CPUs")
    csv_lines = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(csv_lines) == 13 and csv_lines[0].startswith("model,method,target,bits,status")
    assert "<svg" in (tmp_path / "sweep.html").read_text()


def test_resume_skips_finished_cells(inputs: tuple[Path, Path, Path, Path], tmp_path: Path) -> None:
    model, _, calib, ev = inputs
    kw: dict[str, Any] = {
        "outdir": tmp_path,
        "methods": "float,int8-static",
        "executor": LocalExecutor(),
        **SETTINGS,
    }
    first = run_sweep([model], calib, ev, bits=[8], **kw)
    assert (first.ran, first.cached) == (2, 0)
    again = run_sweep([model], calib, ev, bits=[8], **kw)
    assert (again.ran, again.cached) == (0, 2)
    assert [ray_helpers.untimed(r) for r in again.rows] == [ray_helpers.untimed(r) for r in first.rows]
    more = run_sweep([model], calib, ev, bits=[8, 4], **kw)  # one new cell: int8-static at 4 bits
    assert (more.ran, more.cached) == (1, 2) and [r["bits"] for r in more.rows] == [None, 8, 4]
    other_calib = tmp_path / "calib2.npz"
    x = np.load(calib)["x"].copy()
    x[0, 0, 0, 0] += 1.0  # one value changed: the data's hash, so every calibrated cell, changes
    np.savez(other_calib, x=x)
    changed = run_sweep([model], other_calib, ev, bits=[8], **kw)
    assert (changed.ran, changed.cached) == (2, 0)


def _die_once(fn: Callable[..., Any], marker: str) -> Callable[..., Any]:
    def task(*args: Any) -> Any:
        if not os.path.exists(marker):
            with open(marker, "w") as fh:
                fh.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-task, once
        return fn(*args)

    return task


class _KillingExecutor:
    """The Ray executor, with the first task to start killing its own worker process."""

    name, in_process = "ray", False

    def __init__(self, inner: RayExecutor, marker: Path) -> None:
        self.inner, self.marker = inner, str(marker)

    def put(self, value: Any) -> Any:
        return self.inner.put(value)

    def map(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], on_result: Any = None
    ) -> list[Any]:
        return self.inner.map(_die_once(fn, self.marker), args, on_result)

    def describe(self) -> str:
        return self.inner.describe()

    def close(self) -> None:
        return None


def test_killed_worker_is_retried_and_the_sweep_completes(
    inputs: tuple[Path, Path, Path, Path], local_run: Any, ray_executor: RayExecutor, tmp_path: Path
) -> None:
    model, broken, calib, ev = inputs
    marker = tmp_path / "killed-once"
    res = run_sweep(
        [model, broken], calib, ev, outdir=tmp_path / "out", methods=METHODS, bits=[8, 4],
        executor=_KillingExecutor(ray_executor, marker), **SETTINGS,
    )  # fmt: skip
    assert marker.exists()  # a worker did die
    assert int(marker.read_text()) != os.getpid()
    assert [ray_helpers.untimed(r) for r in res.rows] == [ray_helpers.untimed(r) for r in local_run.rows]
