"""Run a sweep: prepare each model once, run the uncached cells on an executor, write the report.

Each model is prepared on this machine as ``compare`` prepares it (inputs checked, evaluation data
loaded, float outputs computed: ``evaluate.compare.prepare_job``); its cells run
``evaluate.method_run.method_task`` (quantize, score, time, size) on the executor, each in a
temporary folder whose files come back as bytes into ``outdir/<model>/<cell folder>/``.  A cell
whose method raises ``EdgeQuantError`` is a failed row with its error; a model that cannot be
prepared (unreadable, no calibration for a static method ...) makes all its cells failed rows with
that error.  Either way the sweep goes on.  Finished cells are cached as they finish (``cache``).

Before any work, ``outdir`` is checked (``outputs.check_writable``): a report file or a cell folder
this run would write that exists is refused without ``overwrite``, unless ``outdir`` is an earlier
sweep's (it has ``.sweep-cache/``): that one is resumed and its report rewritten, by design.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgequant.errors import EdgeQuantError, RecipeError
from edgequant.evaluate.compare import Prepared, prepare_job, resolve_methods
from edgequant.evaluate.method_run import TIMED, method_task, ship_job
from edgequant.model.io import write_text_atomic
from edgequant.names import confined
from edgequant.outputs import check_writable
from edgequant.recipe import preset, to_dict
from edgequant.report.render import jsonable
from edgequant.sweep.cache import CACHE_DIR, Cache, cell_key, content_hash
from edgequant.sweep.cells import Cell, expand
from edgequant.sweep.pareto import pareto_front

if TYPE_CHECKING:
    from edgequant.executors import Executor

Progress = Callable[[int, int, str], None]  # (cells done, cells in all, last cell's label)
ALLOWED_BITS = (2, 4, 8)
REPORT_FILES = ("sweep.json", "sweep.csv", "sweep.html")


@dataclass
class SweepResult:
    """The rows (one per cell, in cell order), the counts and the report files written."""

    rows: list[dict[str, Any]]
    settings: dict[str, Any]
    cached: int
    ran: int
    outdir: Path
    files: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r["status"] != "ok")

    def to_dict(self) -> dict[str, Any]:
        from edgequant.result import versions

        return {
            "kind": "sweep",
            "settings": self.settings,
            "cells": len(self.rows),
            "cached": self.cached,
            "ran": self.ran,
            "failed": self.failed,
            "rows": self.rows,
            "pareto_rule": "per model: score up, median latency down, file bytes down (no other cell at "
            "least as good in all three and better in one)",
            "timed_fields": list(TIMED),
            "versions": versions(),
            "files": self.files,
        }


def _names(models: Sequence[str | Path]) -> list[str]:
    """A folder name per model: its file stem, with ``-2``, ``-3`` ... when two stems are equal."""
    out: list[str] = []
    for m in models:
        stem = Path(m).stem or "model"
        name, k = stem, 2
        while name in out:
            name, k = f"{stem}-{k}", k + 1
        out.append(name)
    return out


def _recipe(cell: Cell) -> dict[str, Any]:
    if cell.method == "float":
        return {"method": "float"}
    try:
        return to_dict(preset(cell.method, target=cell.target or "cpu", **cell.overrides()))
    except EdgeQuantError as exc:  # the cell fails with this error when it runs
        return {"method": cell.method, "invalid": str(exc)}


def run_sweep(
    models: Sequence[str | Path],
    calibration: str | Path | None,
    eval_data: str | Path,
    *,
    outdir: str | Path,
    methods: str | Sequence[str] = "all",
    targets: Sequence[str] = ("cpu",),
    bits: Sequence[int] = (8,),
    task: str = "classification",
    executor: Executor | None = None,
    shared: Path | None = None,
    progress: Progress | None = None,
    latency_runs: int = 30,
    threads: int = 1,
    batch_size: int = 1,
    measure_memory: bool = False,
    max_eval_samples: int | None = None,
    allow_synthetic: bool = False,
    data_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> SweepResult:
    """Run every cell of models x methods x targets x bits (module docstring); write
    ``sweep.json``/``.csv``/``.html`` into ``outdir``.  ``executor`` None: ``executors.current()``.
    ``shared``: a folder every Ray node mounts; inputs under it travel as paths, others as bytes.
    RecipeError for an unknown method or target or a bit width outside 2, 4, 8; ExportError for an
    ``outdir`` that holds files this run would write and is not an earlier sweep's, without
    ``overwrite`` (module docstring), or that cannot be written (nothing written either way)."""
    from edgequant.executors import current
    from edgequant.targets import get as get_target

    names = resolve_methods(methods)
    for t in targets:
        get_target(t)
    bad = [b for b in bits if b not in ALLOWED_BITS]
    if bad or not bits or not targets:
        raise RecipeError(
            f"bits {list(bits)} / targets {list(targets)}: each bit width must be one of {ALLOWED_BITS}, and "
            "both lists non-empty.",
            "pass e.g. --bits 8,4 --targets cpu",
        )
    ex = executor or current()
    out = Path(outdir)
    model_names = _names(models)
    cells = expand(len(models), names, list(targets), list(bits))
    cache_dir = out / CACHE_DIR
    resumed = cache_dir.is_dir() and not cache_dir.is_symlink()  # an earlier sweep's folder: resumed
    planned = [out / f for f in REPORT_FILES] + [out / model_names[c.model] / c.folder for c in cells]
    check_writable(
        out, planned, overwrite=overwrite or resumed, inputs=[Path(m) for m in models], option="-o",
        example="sw/", clash_fix="pass --overwrite to replace them, or choose another -o (a folder that an "
        "earlier sweep wrote, with its .sweep-cache/, is resumed without it).",
    )  # fmt: skip
    settings = {
        "task": task, "latency_runs": latency_runs, "threads": threads, "batch_size": batch_size,
        "measure_memory": measure_memory, "max_eval_samples": max_eval_samples, "allow_synthetic": allow_synthetic,
        "data_options": dict(data_options) if data_options else None,
    }  # fmt: skip
    calib_hash = content_hash(calibration)
    eval_hash = content_hash(eval_data)
    out.mkdir(parents=True, exist_ok=True)
    cache = Cache(out)
    rows: list[dict[str, Any] | None] = [None] * len(cells)
    keys: list[str] = []
    prepared: dict[int, Prepared | EdgeQuantError] = {}
    hashes = [content_hash(m) for m in models]
    for i, cell in enumerate(cells):
        key = cell_key(hashes[cell.model], calib_hash, eval_hash, _recipe(cell), settings)
        keys.append(key)
        hit = cache.get(key)
        if hit is not None:
            rows[i] = {**hit, "cached": True}
    todo = [i for i, r in enumerate(rows) if r is None]
    for m in sorted({cells[i].model for i in todo}):
        try:
            prepared[m] = prepare_job(
                models[m], calibration, eval_data, names, task=task, latency_runs=latency_runs,
                threads=threads, batch_size=batch_size, measure_memory=measure_memory,
                max_eval_samples=max_eval_samples, allow_synthetic=allow_synthetic, data_options=data_options,
            )  # fmt: skip
        except EdgeQuantError as exc:
            prepared[m] = exc
    jobs = {
        m: ex.put(p.job if ex.in_process else ship_job(p.job, shared))
        for m, p in prepared.items()
        if isinstance(p, Prepared)
    }
    done = [len(cells) - len(todo)]
    if progress:
        progress(done[0], len(cells), f"{done[0]} cached")

    def finish(i: int, row: dict[str, Any], files: Mapping[str, bytes]) -> None:
        cell = cells[i]
        folder = confined(out, model_names[cell.model]) / cell.folder
        for fname, data in files.items():
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(confined(folder, fname), data)
        full = {
            "model": model_names[cell.model], "model_path": str(models[cell.model]), "method": cell.method,
            "target": cell.target, "bits": cell.bits, "folder": f"{model_names[cell.model]}/{cell.folder}",
            **{k: v for k, v in row.items() if k not in ("method", "limit_failures", "meets_limits")},
        }  # fmt: skip
        full = jsonable(full)  # as the cache and the report hold it (inf -> "inf"), so a resumed row is equal
        cache.put(keys[i], full)
        rows[i] = {**full, "cached": False}
        done[0] += 1
        if progress:
            progress(done[0], len(cells), cell.label(model_names[cell.model]))

    run: list[int] = []
    for i in todo:
        p = prepared[cells[i].model]
        if isinstance(p, EdgeQuantError):
            failed = {"status": "failed", "error": str(p), "error_type": type(p).__name__}
            finish(i, failed, {})
        else:
            run.append(i)
    args = [
        (
            jobs[cells[i].model],
            cells[i].method,
            {"target": cells[i].target or "cpu", "overrides": cells[i].overrides()},
        )
        for i in run
    ]
    ex.map(method_task, args, on_result=lambda k, got: finish(run[k], got["row"], got["files"]))
    final = [r for r in rows if r is not None]
    for name in model_names:
        idx = [k for k, r in enumerate(final) if r["model"] == name]
        front = set(pareto_front([final[k] for k in idx]))
        for j, k in enumerate(idx):
            final[k]["pareto"] = j in front
    result = SweepResult(
        rows=final,
        settings={
            **settings,
            "executor": ex.describe(),
            "methods": names,
            "targets": list(targets),
            "bits": list(bits),
        },
        cached=sum(1 for r in final if r.get("cached")),
        ran=len(todo),
        outdir=out,
    )
    from edgequant.sweep.report import write_sweep_report

    result.files = {k: p.name for k, p in write_sweep_report(out, result.to_dict()).items()}
    return result
