"""Models and calibration datasets: upload (streamed, validated, committed atomically), list, delete.

Each model and each dataset has its own folder (``models/<name>/``, ``datasets/<name>/``), so no
name can reach another's files, whatever suffix it carries.  An upload lands in ``tmp/`` first;
after it validated it is staged as a complete folder in ``tmp/`` (data, then ``record.json``) and
that folder is renamed into place (same filesystem, so the rename is atomic; an old folder being
replaced is renamed aside first and removed after).  Listings read the records, so a half-written
upload is never listed.  A name that is taken is a 409 unless ``?overwrite=true``; replacing or
deleting a model or dataset that a queued or running job uses is always a 409.
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from edgequant.errors import DataError
from edgequant.model.io import write_text_atomic
from edgequant.service.config import Conflict, NotFound, ServiceConfig
from edgequant.service.safety import (
    check_name,
    default_name,
    extract_images,
    inspect_model,
    inspect_npz,
    remove_tree,
)
from edgequant.service.schemas import DatasetList, DatasetRecord, Deleted, ModelList, ModelRecord
from edgequant.service.store import JobStore
from edgequant.service.upload import receive_upload

router = APIRouter()
_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string"},
                    },
                }
            }
        },
    }
}


def _config(request: Request) -> ServiceConfig:
    config: ServiceConfig = request.app.state.config
    return config


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _records(folder: Path) -> list[dict[str, Any]]:
    out = []
    for meta in sorted(folder.glob("*/record.json")):
        try:
            out.append(json.loads(meta.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _record(folder: Path, name: str, what: str) -> dict[str, Any]:
    meta = folder / check_name(name, what) / "record.json"
    if not meta.is_file():
        raise NotFound(
            f"{what.split()[0]} '{name}' does not exist.", f"list them with GET /api/v1/{folder.name}."
        )
    record: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
    return record


def _in_use(store: JobStore, name: str, what: str) -> None:
    active = store.count_active(model=name) if what == "model" else store.count_active(dataset=name)
    if active:
        raise Conflict(
            f"{what} '{name}' is used by {active} queued or running job(s).",
            "cancel them or wait, then retry.",
        )


def _commit(store: JobStore, what: str, name: str, staged: Path, overwrite: bool) -> None:
    """Move the staged folder to ``<what>s/<name>/`` (atomic rename); see the module doc."""
    final = store.root / f"{what}s" / name
    if (final / "record.json").exists() and not overwrite:
        raise Conflict(
            f"a {what} named '{name}' already exists.", "pick another name, or add ?overwrite=true."
        )
    _in_use(store, name, what)
    old = None
    if final.exists():
        old = store.root / "tmp" / f".old-{what}-{name}-{time.time_ns()}"
        os.replace(final, old)
    os.replace(staged, final)
    if old is not None:
        remove_tree(old)


@router.post(
    "/models",
    status_code=201,
    openapi_extra=_UPLOAD_DOC,
    response_model=ModelRecord,
    summary="Upload an ONNX or TorchScript model",
)
async def upload_model(request: Request, overwrite: bool = False) -> JSONResponse:
    config, store = _config(request), _store(request)
    upload = await receive_upload(request, store.root / "tmp", config.max_upload_bytes)
    try:
        name = (
            check_name(upload.fields["name"])
            if upload.fields.get("name")
            else default_name(upload.filename, "name")
        )
        info = await run_in_threadpool(inspect_model, upload.path)
        record = {
            "name": name,
            "format": info.format,
            "file": f"{name}{info.suffix}",
            "bytes": upload.size,
            "uploaded_filename": upload.filename,
            "uploaded": time.time(),
            **info.details,
        }
        staged = upload.path.with_name(upload.path.name + ".model")
        staged.mkdir()
        os.replace(upload.path, staged / f"{name}{info.suffix}")
        write_text_atomic(staged / "record.json", json.dumps(record, indent=1))
        with request.app.state.commit_lock:
            _commit(store, "model", name, staged, overwrite)
    finally:
        upload.path.unlink(missing_ok=True)
        remove_tree(upload.path.with_name(upload.path.name + ".model"))
    return JSONResponse(record, status_code=201)


@router.get("/models", response_model=ModelList, summary="List models")
def list_models(request: Request) -> dict[str, Any]:
    return {"models": _records(_store(request).root / "models")}


@router.get("/models/{name:path}", response_model=ModelRecord, summary="One model")
def get_model(request: Request, name: str) -> dict[str, Any]:
    return _record(_store(request).root / "models", name, "model name")


def _delete(request: Request, what: str, name: str) -> dict[str, Any]:
    store = _store(request)
    _record(store.root / f"{what}s", name, f"{what} name")
    with request.app.state.commit_lock:
        _in_use(store, name, what)
        gone = store.root / "tmp" / f".deleted-{what}-{name}-{time.time_ns()}"
        os.replace(store.root / f"{what}s" / name, gone)
    remove_tree(gone)
    return {"deleted": name}


@router.delete(
    "/models/{name:path}", response_model=Deleted, summary="Delete a model (409 while a job uses it)"
)
def delete_model(request: Request, name: str) -> dict[str, Any]:
    return _delete(request, "model", name)


def _is_npz(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise DataError(
            "the dataset upload is neither an npz nor a zip of images (not a zip archive).",
            "upload np.savez(...) output, or a .zip of image files.",
        ) from exc
    return bool(names) and all(n.endswith(".npy") for n in names)


def _prepare_dataset(config: ServiceConfig, upload: Path, staging: Path) -> dict[str, Any]:
    """Validate the upload into the staged folder ``staging`` (``data.npz`` or ``images/``)."""
    staging.mkdir()
    if _is_npz(upload):
        details = inspect_npz(
            upload, config.max_extract_bytes, config.max_zip_members, config.max_input_elements
        )
        os.replace(upload, staging / "data.npz")
        return details
    return extract_images(
        upload,
        staging / "images",
        config.max_extract_bytes,
        config.max_zip_members,
        config.max_dataset_pixels,
    )


@router.post(
    "/datasets",
    status_code=201,
    openapi_extra=_UPLOAD_DOC,
    response_model=DatasetRecord,
    summary="Upload calibration data (npz or zip of images)",
)
async def upload_dataset(request: Request, overwrite: bool = False) -> JSONResponse:
    config, store = _config(request), _store(request)
    upload = await receive_upload(request, store.root / "tmp", config.max_upload_bytes)
    staging = upload.path.with_name(upload.path.name + ".d")
    try:
        name = (
            check_name(upload.fields["name"], "dataset name")
            if upload.fields.get("name")
            else default_name(upload.filename, "name")
        )
        details = await run_in_threadpool(_prepare_dataset, config, upload.path, staging)
        record = {
            "name": name,
            "bytes": upload.size,
            "uploaded_filename": upload.filename,
            "uploaded": time.time(),
        }
        record.update(details)
        write_text_atomic(staging / "record.json", json.dumps(record, indent=1))
        with request.app.state.commit_lock:
            _commit(store, "dataset", name, staging, overwrite)
    finally:
        upload.path.unlink(missing_ok=True)
        remove_tree(staging)
    return JSONResponse(record, status_code=201)


@router.get("/datasets", response_model=DatasetList, summary="List calibration datasets")
def list_datasets(request: Request) -> dict[str, Any]:
    return {"datasets": _records(_store(request).root / "datasets")}


@router.get("/datasets/{name:path}", response_model=DatasetRecord, summary="One dataset")
def get_dataset(request: Request, name: str) -> dict[str, Any]:
    return _record(_store(request).root / "datasets", name, "dataset name")


@router.delete(
    "/datasets/{name:path}", response_model=Deleted, summary="Delete a dataset (409 while a job uses it)"
)
def delete_dataset(request: Request, name: str) -> dict[str, Any]:
    return _delete(request, "dataset", name)


def dataset_exists(root: Path, name: str) -> None:
    _record(root / "datasets", name, "dataset name")


def model_exists(root: Path, name: str) -> dict[str, Any]:
    return _record(root / "models", name, "model name")


__all__ = ["dataset_exists", "model_exists", "router"]
