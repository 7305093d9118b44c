"""Submitting, polling, cancelling jobs, and downloading their artifacts.

``POST /model/{name}/quantize?target=&method=&dataset=`` takes an optional JSON body with the recipe
keys of ``edgequant.recipe`` (unknown keys: 422 with the RecipeError message).  Query parameters win
over the body: ``method`` is a preset name (``int8-static``, ``w4a8``, ... see ``PRESETS``) whose
keys are applied over the body, or a plain recipe method (``static``, ``dynamic``, ``fp16``,
``weight-only``).  ``calib_data`` is refused: a client may not point the server at its own files;
data comes from an uploaded dataset (``?dataset=NAME``).

``POST /model/{name}/compare`` runs every method (``edgequant.evaluate.compare``) as one job on the
dataset (calibration and evaluation on the same uploaded data).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import FileResponse, JSONResponse

from edgequant.errors import RecipeError
from edgequant.recipe import METHODS, PRESETS, from_dict, to_dict
from edgequant.service.config import BadRequest, Conflict, NotFound, resolve_target
from edgequant.service.routes_files import dataset_exists, model_exists
from edgequant.service.store import JobStore, public_job

router = APIRouter()
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_MEDIA = {".onnx": "application/octet-stream", ".json": "application/json"}


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _job_id(job_id: str) -> str:
    if not JOB_ID_RE.fullmatch(job_id):
        raise BadRequest(
            f"invalid job id {job_id[:80]!r}; job ids are 32 lowercase hex digits.",
            "use the id POST returned.",
        )
    return job_id


def _row(store: JobStore, job_id: str) -> dict[str, Any]:
    row = store.get(_job_id(job_id))
    if row is None:
        raise NotFound(f"job '{job_id}' does not exist.", "check the id returned when the job was submitted.")
    return row


def build_recipe(body: dict[str, Any] | None, method: str | None, target: str | None) -> dict[str, Any]:
    """The validated recipe mapping of a quantize request (see module doc for precedence)."""
    data = dict(body or {})
    if "calib_data" in data or "calib-data" in data:
        raise RecipeError(
            "the recipe key 'calib_data' is not accepted by the REST service (it would name a file on the server).",
            "upload the data with POST /api/v1/datasets and pass ?dataset=NAME.",
        )
    if method:
        if method in PRESETS:
            data.update(PRESETS[method])
        elif method in METHODS:
            data["method"] = method
        else:
            raise RecipeError(
                f"unknown method '{method}'; allowed: presets {', '.join(PRESETS)} or methods {', '.join(METHODS)}.",
                "use e.g. method=int8-static.",
            )
    data["target"] = resolve_target(target if target is not None else data.get("target"))
    return to_dict(from_dict(data))


def _accepted(request: Request, job_id: str) -> JSONResponse:
    request.app.state.manager.wakeup()
    return JSONResponse(
        {"job_id": job_id, "status": "queued", "url": f"/api/v1/jobs/{job_id}"}, status_code=202
    )


@router.post("/model/{model_name:path}/quantize", status_code=202, summary="Quantize a model (a job)")
def submit_quantize(
    request: Request,
    model_name: str,
    target: str | None = None,
    method: str | None = None,
    dataset: str | None = None,
    body: Annotated[
        dict[str, Any] | None, Body(description="recipe keys, see edgequant.recipe.Recipe")
    ] = None,
) -> JSONResponse:
    store = _store(request)
    model_exists(store.root, model_name)
    if dataset is not None:
        dataset_exists(store.root, dataset)
    recipe = build_recipe(body, method, target)
    return _accepted(request, store.create("quantize", model_name, dataset, recipe))


@router.post("/model/{model_name:path}/compare", status_code=202, summary="Compare every method (one job)")
def submit_compare(
    request: Request,
    model_name: str,
    dataset: str | None = None,
    eval_dataset: str | None = None,
    methods: str = "all",
    target: str | None = None,
    max_drop: float | None = 1.0,
    max_drop_rel: float | None = None,
    max_latency_ms: float | None = None,
    max_size_mb: float | None = None,
    max_energy_mj: float | None = None,
    prefer: str = "latency",
    task: str = "classification",
) -> JSONResponse:
    from edgequant.evaluate.compare import resolve_methods
    from edgequant.evaluate.recommend import Limits
    from edgequant.evaluate.tasks import check_task

    store = _store(request)
    model_exists(store.root, model_name)
    if dataset is None:
        raise BadRequest(
            "compare needs ?dataset=NAME (used for calibration and evaluation).", "upload one first."
        )
    dataset_exists(store.root, dataset)
    if eval_dataset is not None:  # else compare splits the one dataset (seeded) and says so
        dataset_exists(store.root, eval_dataset)
    resolve_target(target)
    check_task(task)
    limits = Limits(
        max_drop, max_drop_rel, max_latency_ms, max_size_mb, max_energy_mj, prefer
    )  # CLI defaults
    options = {
        "methods": resolve_methods(methods),
        **limits.to_dict(),
        "task": task,
        "eval_dataset": eval_dataset,
    }
    return _accepted(request, store.create("compare", model_name, dataset, options))


@router.get("/jobs/{job_id}/artifacts/{file:path}", summary="Download a file of a finished job")
def download(request: Request, job_id: str, file: str) -> FileResponse:
    store = _store(request)
    row = _row(store, job_id)
    if not ARTIFACT_RE.fullmatch(file) or ".." in file:
        raise BadRequest(
            f"invalid artifact name {file[:80]!r}.", "use a name listed in the job's report.artifacts."
        )
    if row["status"] != "succeeded":
        raise Conflict(
            f"job {job_id} is {row['status']}; only succeeded jobs have artifacts.", "poll until done."
        )
    folder = store.job_dir(job_id)
    if file not in {p.name for p in folder.iterdir() if p.is_file()}:
        raise NotFound(
            f"job {job_id} has no file '{file}'.", "use a name listed in the job's report.artifacts."
        )
    path = folder / file
    return FileResponse(
        path, media_type=_MEDIA.get(Path(file).suffix, "application/octet-stream"), filename=file
    )


@router.post("/jobs/{job_id}/cancel", summary="Cancel a queued or running job")
def cancel(request: Request, job_id: str) -> dict[str, Any]:
    store = _store(request)
    row = _row(store, job_id)
    if row["status"] in ("succeeded", "failed"):
        raise Conflict(f"job {job_id} already {row['status']}; nothing to cancel.", "")
    status = request.app.state.manager.cancel(job_id)
    return {"job_id": job_id, "status": status}


@router.get("/jobs/{job_id:path}", summary="Status, progress and report of a job")
def get_job(request: Request, job_id: str) -> dict[str, Any]:
    return public_job(_row(_store(request), job_id))


__all__ = ["build_recipe", "router"]
