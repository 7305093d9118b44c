"""What a job worker process runs: one quantize or compare job at a time, outside the server.

A worker is a ``spawn``-context process holding its own SQLite connection.  It receives a job id on
its pipe, runs the job, writes progress while it runs, and records the outcome:

* files go to ``jobs/<id>.partial/``; only after the run succeeded is that folder renamed to
  ``jobs/<id>/`` and the job marked succeeded (a conditional UPDATE: a job cancelled meanwhile
  stays cancelled and its folder is removed);
* an EdgeQuantError (corrupt model or data, bad recipe for this graph ...) fails the job with the
  error's ``to_dict()``; running out of memory (MemoryError, or ONNX Runtime failing to allocate
  under the worker's RLIMIT_AS) fails it with ResourceLimit; any other exception fails it as an
  internal error naming the exception type (the server's paths are replaced by ``<store>``).

Limits: each worker sets RLIMIT_AS (address space) to ``memory_mb`` before importing anything big.
Regular expressions in ``exclude`` (``re:PATTERN``) are checked at submission and matched here with
the library's one matcher (``edgequant.recipe.exclude``: the same ``re`` semantics as the CLI, a
safe subset: bounded length and repeat counts, no nested repeats, no backreferences) under a time
bound (``REGEX_BUDGET_S`` for all patterns and node names together), and replaced by the node names
they matched, so the planner never runs a pattern that could backtrack for minutes.

Progress: the pipeline's ``progress(stage, done, total)`` becomes ``0.05 + 0.85 * done / total``
(for compare jobs ``0.05 + 0.9 * ...``), written at most 5 times a second or on a stage change.
A watchdog thread exits the worker when the server process is gone, so no orphan finishes a job.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from edgequant.errors import DataError, EdgeQuantError, ModelError, RecipeError, caused_by_memory
from edgequant.recipe.flags import rest_error
from edgequant.service.config import ResourceLimit
from edgequant.service.safety import remove_tree
from edgequant.service.store import JobStore

log = logging.getLogger(__name__)
REGEX_BUDGET_S = 2.0
_ALLOC_FAILURES = ("bad_alloc", "Failed to allocate memory", "std::bad_alloc")


def model_file(root: Path, name: str) -> Path:
    for suffix in (".onnx", ".pt"):
        path = root / "models" / name / f"{name}{suffix}"
        if path.is_file():
            return path
    raise ModelError(f"model '{name}' is no longer in the store.", "upload it again and resubmit the job.")


def dataset_path(root: Path, name: str | None) -> Path | None:
    if name is None:
        return None
    for path in (root / "datasets" / name / "data.npz", root / "datasets" / name / "images"):
        if path.exists():
            return path
    raise DataError(f"dataset '{name}' is no longer in the store.", "upload it again and resubmit the job.")


def resolve_regex_excludes(model: Path, exclude: list[str]) -> list[str]:
    """``exclude`` with each ``re:PATTERN`` replaced by the node names it fully matches: the library's
    own matcher (``edgequant.recipe.exclude``: safe-subset checks, then ``re``) under a time bound."""
    if not any(p.startswith("re:") for p in exclude):
        return exclude
    import onnx

    from edgequant.recipe.exclude import match_names, no_match_detail

    patterns = [p for p in exclude if p.startswith("re:")]
    nodes = [(n.name, n.op_type) for n in onnx.load(str(model), load_external_data=False).graph.node]
    try:
        matched = match_names(patterns, nodes, budget_s=REGEX_BUDGET_S)
    except TimeoutError as exc:
        raise ResourceLimit(f"{exc}", "use plain node names or op types, or a simpler pattern.") from exc
    out: list[str] = []
    for pattern in exclude:
        if not pattern.startswith("re:"):
            out.append(pattern)
            continue
        if not matched[pattern]:
            raise RecipeError(
                f"exclude '{pattern}' matches no node name in the model{no_match_detail(pattern, nodes)}.",
                "write a pattern that matches node names of the uploaded model (the closest are listed above).",
            )
        out += [e for e in (_exact(h) for h in matched[pattern]) if e not in out]
    return out


def _exact(name: str) -> str:
    """A matched node name as an exclude entry that matches that node only: the planner reads an entry
    as a node name or an op type, and ``re:...`` as a regex, so a name that starts with ``re:`` or that
    is also an op type becomes an escaped regex (a literal: linear to match, never a pattern again)."""
    if name.startswith("re:") or name[:1].isupper():
        return "re:" + re.escape(name)
    return name


class _Progress:
    def __init__(self, store: JobStore, job_id: str, start: float, span: float) -> None:
        self.store, self.job_id, self.start, self.span = store, job_id, start, span
        self.stage = ""
        self.last = 0.0
        self.fraction = start

    def set(self, fraction: float, stage: str) -> None:
        now = time.monotonic()
        if stage != self.stage or now - self.last >= 0.2:
            self.store.set_progress(self.job_id, fraction, stage)
            self.stage, self.last = stage, now
        self.fraction = fraction

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        fraction = self.start + self.span * min(done / total, 1.0) if total else self.fraction
        self.set(fraction, stage)


def _onnx_input(root: Path, row: dict[str, Any], data: Path | None, tmp: Path) -> Path:
    """The ONNX file to quantize; a TorchScript upload is exported (and verified) first."""
    path = model_file(root, row["model"])
    if path.suffix != ".pt":
        return path
    from edgequant.model.torch_import import export_torch, load_torchscript

    if data is None or data.suffix != ".npz":
        raise DataError(
            "a TorchScript model needs an npz dataset: its arrays (in file order) are the forward() inputs "
            "used to export the model to ONNX.",
            "upload an npz whose arrays are named after, and ordered like, the model's inputs.",
        )
    import numpy as np

    with np.load(data, allow_pickle=False) as npz:
        names = list(npz.files)
        example = tuple(np.ascontiguousarray(npz[k][:1]) for k in names)
    out = tmp / f"{row['model']}.onnx"
    export_torch(load_torchscript(path), example, out, input_names=names)
    return out


def _summary(report: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    sizes = report.get("sizes", {})
    return {
        "name": files["model"].rsplit(".", 1)[0],
        "method": report.get("method"),
        "tag": report.get("tag"),
        "sizes": {
            "original_bytes": sizes.get("float_bytes"),
            "quantized_bytes": sizes.get("quantized_bytes"),
            "packed_bytes": sizes.get("packed_bytes"),
            "compression_ratio": sizes.get("compression_ratio"),
            "file_ratio": sizes.get("file_ratio"),
            "packed_theoretical": sizes.get("packed_theoretical"),
        },
        "metrics": report.get("check", {}),
        "calibration": report.get("calibration"),
        "seconds": report.get("seconds", {}),
        "warnings": report.get("warnings", []),
        "files": files,
    }


def _run_quantize(root: Path, row: dict[str, Any], out: Path, progress: _Progress) -> dict[str, Any]:
    from edgequant.pipeline import quantize
    from edgequant.runtime import OrtRuntime

    data = dataset_path(root, row["dataset"])
    progress.set(0.02, "loading")
    model = _onnx_input(root, row, data, out)
    recipe = json.loads(row["recipe"])
    recipe["exclude"] = resolve_regex_excludes(model, list(recipe.get("exclude", [])))
    result = quantize(
        model, str(data) if data else None, recipe, runtime=OrtRuntime(intra_op_threads=1), progress=progress
    )
    progress.set(0.95, "saving")
    saved = result.save(out)
    if model.parent == out:
        model.unlink()
    files = {"model": saved.model.name, "report": saved.report.name, "plan": saved.plan.name}
    return _summary(result.report, files)


def _run_compare(root: Path, row: dict[str, Any], out: Path, progress: _Progress) -> dict[str, Any]:
    from edgequant.evaluate.compare import compare

    data = dataset_path(root, row["dataset"])
    options = json.loads(row["recipe"])
    progress.set(0.02, "loading")
    model = _onnx_input(root, row, data, out)
    evaluation = dataset_path(root, options.get("eval_dataset")) or data  # one dataset: compare splits it
    result = compare(
        model,
        str(data) if data else None,
        str(evaluation) if evaluation else None,
        methods=options.get("methods", "all"),
        max_drop=options.get("max_drop"),
        max_drop_rel=options.get("max_drop_rel"),
        max_latency_ms=options.get("max_latency_ms"),
        max_size_mb=options.get("max_size_mb"),
        max_energy_mj=options.get("max_energy_mj"),
        prefer=options.get("prefer", "latency"),
        task=options.get("task", "classification"),
        target=options.get("target") or "cpu",
        targets=options.get("targets"),
        data_options=options.get("data_options"),
        outdir=out,
        progress=progress,
    )
    if model.parent == out:
        model.unlink()
    summary = result.to_dict()
    summary.pop("outdir", None)
    return summary


def _scrub(report: dict[str, Any], root: Path) -> dict[str, Any]:
    """Replace the server's store path with ``<store>`` so reports do not reveal server paths."""
    text = json.dumps(report, default=str)
    prefix = json.dumps(str(root))[1:-1]
    cleaned: dict[str, Any] = json.loads(text.replace(prefix, "<store>"))
    return cleaned


def run_job(store: JobStore, job_id: str, ray_memory_mb: int | None = None) -> None:
    """Run one claimed (status running) job to its end state; with ``ray_memory_mb``, in a Ray task
    limited to that much memory (``service.ray_jobs``)."""
    row = store.get(job_id)
    if row is None or row["status"] != "running":
        return
    partial, final = store.job_dir(job_id, partial=True), store.job_dir(job_id)
    remove_tree(partial)
    partial.mkdir(parents=True)
    span = 0.9 if row["kind"] == "compare" else 0.85
    progress = _Progress(store, job_id, 0.05, span)
    error: dict[str, Any] | None = None
    report: dict[str, Any] = {}
    try:
        if ray_memory_mb is not None:
            from edgequant.service.ray_jobs import run_on_ray

            progress.set(0.05, "running on ray")
            report = run_on_ray(store.root, row, partial, ray_memory_mb)
        elif row["kind"] == "compare":
            report = _run_compare(store.root, row, partial, progress)
        else:
            report = _run_quantize(store.root, row, partial, progress)
    except MemoryError:
        error = _out_of_memory()
    except EdgeQuantError as exc:
        error = _out_of_memory() if _is_out_of_memory(exc) else exc.to_dict()
    except Exception as exc:
        if _is_out_of_memory(exc):
            error = _out_of_memory()
        else:
            log.exception("job %s failed with an unexpected error", job_id)
            error = {
                "error": "InternalError",
                "detail": f"{type(exc).__name__}: {str(exc)[:300]}",
                "hint": "this is a bug in EdgeQuant; please report it with the model and data.",
            }
    if error is not None:
        error = rest_error(_scrub(error, store.root))  # CLI flags named as the request's JSON fields
        remove_tree(partial)
        store.transition(job_id, ("running",), "failed", error=error, stage="failed", finished=time.time())
        return
    remove_tree(final)
    os.replace(partial, final)
    report["artifacts"] = sorted(p.name for p in final.iterdir() if p.is_file())
    report = _scrub(report, store.root)
    done = store.transition(
        job_id, ("running",), "succeeded", report=report, progress=1.0, stage="done", finished=time.time()
    )
    if not done:
        remove_tree(final)


def _is_out_of_memory(exc: BaseException) -> bool:
    """A MemoryError in the exception's chain, or ONNX Runtime's allocation failure in its text."""
    return caused_by_memory(exc) or any(s in str(exc) for s in _ALLOC_FAILURES)


def _out_of_memory() -> dict[str, Any]:
    limit = os.environ.get("EDGEQUANT_WORKER_MEMORY_MB", "?")
    return ResourceLimit(
        f"the job ran out of memory (each worker may use {limit} MB of address space on this server).",
        "use fewer calibration samples, a smaller batch_size or smaller inputs; or ask for a larger "
        "--worker-memory-mb.",
    ).to_dict()


def set_memory_limit(memory_mb: int) -> None:
    """RLIMIT_AS of this process = ``memory_mb`` MiB (never above an existing hard limit)."""
    import resource

    soft = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    os.environ["EDGEQUANT_WORKER_MEMORY_MB"] = str(memory_mb)


def _watch_parent(parent_pid: int) -> None:
    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _connect_ray(address: str) -> dict[str, Any] | None:
    """Connect this worker to Ray as a driver: None, or the error dict a job fails with (Ray's reason)."""
    from edgequant.service.ray_jobs import connect

    try:
        connect(address)
    except EdgeQuantError as exc:
        log.error("cannot connect to Ray: %s", exc)
        return exc.to_dict()
    return None


def worker_main(
    conn: Connection, root: str, parent_pid: int, memory_mb: int = 8192, ray_address: str | None = None
) -> None:
    """Entry point of a worker process: run job ids from ``conn`` until it closes or sends None.
    With ``ray_address`` the worker is a Ray driver and each job runs in a Ray task, which applies
    the memory limit itself (``service.ray_jobs``); when it cannot connect, each job it is given fails
    with Ray's reason (ExecutorError) after one more attempt to connect."""
    _watch_parent(parent_pid)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(process)d %(levelname)s %(message)s")
    ray_error: dict[str, Any] | None = None
    if ray_address is not None:
        ray_error = _connect_ray(ray_address)
    else:
        set_memory_limit(memory_mb)
    store = JobStore(Path(root))
    try:
        import edgequant.pipeline  # noqa: F401  (warm up: the first job should not pay the imports)
    except Exception:
        log.exception("could not import the pipeline")
    while True:
        try:
            job_id = conn.recv()
        except (EOFError, OSError):
            return
        if job_id is None:
            return
        try:
            if ray_address is not None and ray_error is not None:
                ray_error = _connect_ray(ray_address)  # the cluster may be back
            if ray_error is not None:  # the job fails with Ray's reason, not as a dead worker
                store.transition(job_id, ("running",), "failed", error=ray_error, stage="failed",
                                 finished=time.time())  # fmt: skip
            else:
                run_job(store, job_id, memory_mb if ray_address is not None else None)
        except Exception:
            log.exception("job %s crashed the worker loop", job_id)
        try:
            conn.send(job_id)
        except (BrokenPipeError, OSError):
            return
