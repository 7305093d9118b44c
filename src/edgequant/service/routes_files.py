"""Models and calibration datasets: upload (streamed, validated, committed atomically), list, delete.

An upload lands in ``tmp/`` first; only after it validated is it renamed into ``models/`` or
``datasets/`` (same filesystem, so the rename is atomic), followed by its ``<name>.json`` record.
Listings read the records, so a half-written file is never listed.  A name that is taken is a 409
unless ``?overwrite=true``.
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
    for meta in sorted(folder.glob("*.json")):
        try:
            out.append(json.loads(meta.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _record(folder: Path, name: str, what: str) -> dict[str, Any]:
    meta = folder / f"{check_name(name, what)}.json"
    if not meta.is_file():
        raise NotFound(
            f"{what.split()[0]} '{name}' does not exist.", f"list them with GET /api/v1/{folder.name}."
        )
    record: dict[str, Any] = json.loads(meta.read_text(encoding="utf-8"))
    return record


def _taken(folder: Path, name: str, overwrite: bool, what: str) -> None:
    if (folder / f"{name}.json").exists() and not overwrite:
        raise Conflict(
            f"a {what} named '{name}' already exists.", "pick another name, or add ?overwrite=true."
        )


def _commit_model(
    root: Path, name: str, tmp: Path, suffix: str, record: dict[str, Any], overwrite: bool
) -> None:
    folder = root / "models"
    _taken(folder, name, overwrite, "model")
    for old in (".onnx", ".pt"):
        if old != suffix:
            (folder / f"{name}{old}").unlink(missing_ok=True)
    os.replace(tmp, folder / f"{name}{suffix}")
    write_text_atomic(folder / f"{name}.json", json.dumps(record, indent=1))


@router.post(
    "/models", status_code=201, openapi_extra=_UPLOAD_DOC, summary="Upload an ONNX or TorchScript model"
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
        with request.app.state.commit_lock:
            _commit_model(store.root, name, upload.path, info.suffix, record, overwrite)
    finally:
        upload.path.unlink(missing_ok=True)
    return JSONResponse(record, status_code=201)


@router.get("/models", summary="List models")
def list_models(request: Request) -> dict[str, Any]:
    return {"models": _records(_store(request).root / "models")}


@router.get("/models/{name:path}", summary="One model")
def get_model(request: Request, name: str) -> dict[str, Any]:
    return _record(_store(request).root / "models", name, "model name")


@router.delete("/models/{name:path}", summary="Delete a model")
def delete_model(request: Request, name: str) -> dict[str, Any]:
    store = _store(request)
    folder = store.root / "models"
    record = _record(folder, name, "model name")
    with request.app.state.commit_lock:
        active = store.count_active(name)
        if active:
            raise Conflict(
                f"model '{name}' has {active} queued or running job(s).", "cancel them or wait, then delete."
            )
        (folder / f"{name}.json").unlink(missing_ok=True)
        (folder / record["file"]).unlink(missing_ok=True)
    return {"deleted": name}


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
    if _is_npz(upload):
        return inspect_npz(upload, config.max_extract_bytes, config.max_zip_members)
    return extract_images(upload, staging, config.max_extract_bytes, config.max_zip_members)


def _commit_dataset(root: Path, name: str, src: Path, record: dict[str, Any], overwrite: bool) -> None:
    folder = root / "datasets"
    _taken(folder, name, overwrite, "dataset")
    remove_tree(folder / f"{name}.npz")
    remove_tree(folder / name)
    os.replace(src, folder / (f"{name}.npz" if record["format"] == "npz" else name))
    write_text_atomic(folder / f"{name}.json", json.dumps(record, indent=1))


@router.post(
    "/datasets", status_code=201, openapi_extra=_UPLOAD_DOC, summary="Upload calibration data (npz or zip)"
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
        with request.app.state.commit_lock:
            _commit_dataset(
                store.root, name, upload.path if details["format"] == "npz" else staging, record, overwrite
            )
    finally:
        upload.path.unlink(missing_ok=True)
        remove_tree(staging)
    return JSONResponse(record, status_code=201)


@router.get("/datasets", summary="List calibration datasets")
def list_datasets(request: Request) -> dict[str, Any]:
    return {"datasets": _records(_store(request).root / "datasets")}


@router.get("/datasets/{name:path}", summary="One dataset")
def get_dataset(request: Request, name: str) -> dict[str, Any]:
    return _record(_store(request).root / "datasets", name, "dataset name")


def dataset_exists(root: Path, name: str) -> None:
    _record(root / "datasets", name, "dataset name")


def model_exists(root: Path, name: str) -> dict[str, Any]:
    return _record(root / "models", name, "model name")


__all__ = ["dataset_exists", "model_exists", "router"]
