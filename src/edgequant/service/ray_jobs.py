"""The service's jobs on a Ray cluster (``edgequant serve --executor ray [--ray-address ...]``).

The server keeps everything it owns: the SQLite job records, the queue, the timeout, cancellation,
the artifacts in the store, and the job API.  Its worker processes stay too, each a small Ray driver:
instead of running a job in place it reads the job's model and dataset files from the store and
sends their *bytes* through Ray's object store to one Ray task (``job_task``), which writes them
into a private temporary store, runs the same ``worker._run_quantize``/``_run_compare`` as a local
worker, and returns the report and the output files as bytes.  The worker writes those into
``jobs/<id>.partial/``, and ``worker.run_job`` finishes the job exactly as before.  Uploads are
never unpickled: they travel and land as bytes.

Limits: the timeout is the server's (the worker, a Ray driver, is killed past it, and Ray cancels
the driver's task with it).  Memory: the task sets RLIMIT_AS itself (in a worker process used for
this task only, ``max_calls=1``) to ``memory_mb`` *above the address space the Ray worker already
maps when the task starts* (its object-store mapping and threads, several GB of reservations that
a limit of ``memory_mb`` alone would not even cover).  Progress: Ray tasks report no progress to the
server, so a job shows ``running on ray`` until it finishes.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from edgequant.errors import EdgeQuantError
from edgequant.executors.ship import Shipped, materialize, ship

_address: str | None = None  # the cluster this process connected to (``connect``)
RETRIES = 2  # a Ray worker process that dies (node lost, OOM-killed by Ray) runs the job again


class RemoteJobError(EdgeQuantError):
    """An error a job raised in its Ray task; ``to_dict`` is that error's own dict (class name kept)."""

    def __init__(self, data: dict[str, str]) -> None:
        super().__init__(data.get("detail", ""), data.get("hint", ""))
        self.data = data

    def to_dict(self) -> dict[str, str]:
        return dict(self.data)


def _vm_size_bytes() -> int:
    text = Path("/proc/self/status").read_text()
    found = re.search(r"VmSize:\s+(\d+) kB", text)
    return int(found.group(1)) * 1024 if found else 0


def limit_memory_above_current(memory_mb: int) -> None:
    """RLIMIT_AS = this process's current address space + ``memory_mb`` MiB (module docstring)."""
    import resource

    soft = _vm_size_bytes() + memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    os.environ["EDGEQUANT_WORKER_MEMORY_MB"] = str(memory_mb)


def job_task(kind: str, row: dict[str, Any], inputs: dict[str, Shipped], memory_mb: int) -> dict[str, Any]:
    """Run one job in a Ray task: ``{"report", "files"}`` or ``{"error": error dict}``."""
    from edgequant.service import worker

    limit_memory_above_current(memory_mb)
    with tempfile.TemporaryDirectory(prefix="edgequant-job-") as tmp:
        root, out = Path(tmp) / "store", Path(tmp) / "out"
        out.mkdir(parents=True)
        for rel, item in inputs.items():  # models/<name>/, datasets/<name>/ as in the server's store
            folder = root / rel
            folder.mkdir(parents=True)
            materialize(item, folder)
        try:
            run = worker._run_compare if kind == "compare" else worker._run_quantize
            report = run(root, row, out, _Silent())  # type: ignore[arg-type]
        except MemoryError:
            return {"error": worker._out_of_memory()}
        except EdgeQuantError as exc:
            alloc = worker._is_out_of_memory(exc)
            return {"error": worker._out_of_memory() if alloc else worker._scrub(exc.to_dict(), root)}
        files = {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}
        return {"report": worker._scrub(report, root), "files": files}


class _Silent:
    """A progress sink: a Ray task has no line to the server's job record."""

    def set(self, fraction: float, stage: str) -> None:
        return None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        return None


def _inputs(root: Path, row: dict[str, Any]) -> dict[str, Shipped]:
    """The job's store files as bytes: its model folder's file, its dataset(s)."""
    import json

    from edgequant.service.worker import dataset_path, model_file

    out = {f"models/{row['model']}": ship(model_file(root, row["model"]))}
    names = [row.get("dataset")]
    if row["kind"] == "compare":
        names.append(json.loads(row["recipe"]).get("eval_dataset"))
    for name in names:
        path = dataset_path(root, name)
        if path is not None:
            out[f"datasets/{name}"] = ship(path)
    return out


def run_on_ray(root: Path, row: dict[str, Any], out: Path, memory_mb: int) -> dict[str, Any]:
    """Hand one job to Ray; write its files into ``out``; return its report (or raise its error)."""
    import ray

    from edgequant.executors.ray import connect_error
    from edgequant.model.io import write_text_atomic
    from edgequant.names import confined

    remote = ray.remote(num_cpus=1, max_calls=1, max_retries=RETRIES)(job_task)
    inputs = _inputs(root, row)
    try:
        got: dict[str, Any] = ray.get(remote.remote(row["kind"], row, inputs, memory_mb))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise cause if isinstance(cause, BaseException) else exc from None
    except ConnectionError as exc:  # the cluster went away during the job: Ray's reason, not a bug
        raise connect_error(_address, exc) from exc
    if "error" in got:
        raise RemoteJobError(got["error"])
    for name, data in got["files"].items():
        write_text_atomic(confined(out, name), data)
    report: dict[str, Any] = got["report"]
    return report


def connect(address: str) -> None:
    """Connect this (worker) process to the Ray cluster at ``address`` as a driver, quietly;
    ExecutorError (``executors.ray.connect_error``: the address, Ray's reason, the fix) when it cannot."""
    import ray

    from edgequant.executors.ray import init_quietly

    global _address
    _address = address
    if not ray.is_initialized():
        init_quietly(address)
