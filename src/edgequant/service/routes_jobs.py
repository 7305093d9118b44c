"""Submitting, polling, cancelling jobs, and downloading their artifacts.

``POST /model/{name}/quantize?target=&method=&dataset=`` takes an optional JSON body, the typed
``Recipe`` schema (``schemas.RecipeBody``; unknown keys: 422).  ``method`` is a preset name
(``int8-static``, ``w4a8``, ... see ``PRESETS``) whose keys the body's keys refine, as CLI flags refine
``--method PRESET`` (a body key is never overwritten), or a plain recipe method (``static``, ``dynamic``,
``fp16``, ``weight-only``); a body ``method`` that differs from the query's is refused (422).
What a request may ask of the server (no paths, bounded counts) is checked by ``limits``.  An unknown
query parameter is refused (422, ``refuse_unknown``, as for compare), a recipe key there included.

Compatibility with the old edge-models service: ``name`` may carry ``.onnx``; ``?wait=true``
(bounded by ``wait_timeout`` and the server's ``max_wait_s``) answers 200 with ``LegacyResult``
once the job finished, or 202 as usual when it did not in time.  Sizes there are measured from the
stored files.

``POST /model/{name}/compare`` is in ``routes_compare``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import re
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import FileResponse, JSONResponse

from edgequant.data.declared import refuse_array_preprocess
from edgequant.errors import DataError, EdgeQuantError, RecipeError
from edgequant.recipe import METHODS, PRESETS, Recipe, from_dict, to_dict
from edgequant.recipe.applies import normalized_keys, refuse_ignored
from edgequant.recipe.flags import rest_error
from edgequant.recipe.presets import low_bit_passes, own_tag, without_disabled
from edgequant.recipe.rules import check_pass_data
from edgequant.recipe.schema import FLAG_KEYS
from edgequant.service.config import (
    BadRequest,
    Conflict,
    NotFound,
    ServiceConfig,
    TooManyRequests,
    resolve_target,
)
from edgequant.service.limits import check_request
from edgequant.service.routes_files import dataset_exists, model_exists
from edgequant.service.schemas import (
    Accepted,
    Cancelled,
    Job,
    LegacyResult,
    RecipeBody,
    recipe_mapping,
)
from edgequant.service.store import FINISHED, JobStore, public_job

router = APIRouter()
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
ARTIFACT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
QUANTIZE_QUERY = ("target", "method", "dataset", "wait", "wait_timeout")  # POST /model/{name}/quantize
_MEDIA = {".onnx": "application/octet-stream", ".json": "application/json", ".html": "text/html"}
# an HTML report is shown as a sandboxed document: no script runs, no cookie is readable from it
REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _config(request: Request) -> ServiceConfig:
    config: ServiceConfig = request.app.state.config
    return config


def job_id_checked(job_id: str) -> str:
    if not JOB_ID_RE.fullmatch(job_id):
        raise BadRequest(
            f"invalid job id {job_id[:80]!r}; job ids are 32 lowercase hex digits.",
            "use the id POST returned.",
        )
    return job_id


def job_row(store: JobStore, job_id: str) -> dict[str, Any]:
    row = store.get(job_id_checked(job_id))
    if row is None:
        raise NotFound(f"job '{job_id}' does not exist.", "check the id returned when the job was submitted.")
    return row


def canonical_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the CLI flags' spellings of recipe keys (``data_option``, ``target_sqnr``,
    ``symmetric``: ``recipe.schema.FLAG_KEYS``, accepted as in YAML recipes) renamed to the field names,
    so every check below (``limits.check_request``) sees one key.  RecipeError when both are set."""
    out = dict(data)
    for flag, field in FLAG_KEYS.items():
        if flag in out:
            if field in out:
                raise RecipeError(
                    f"the body sets both '{flag}' and '{field}', two spellings of one setting.",
                    f"keep one of them ('{flag}' is the CLI flag's name).",
                )
            out[field] = out.pop(flag)
    return out


def build_recipe(
    data: dict[str, Any],
    method: str | None,
    target: object,
    config: ServiceConfig | None = None,
    has_dataset: bool = True,
) -> dict[str, Any]:
    """The validated recipe mapping of a quantize request (see module doc for precedence).  A refusal
    names a field as the body spelled it (``symmetric``, not ``act_symmetric``)."""
    sent = {FLAG_KEYS[k]: k for k in data if k in FLAG_KEYS}
    try:
        return _build_recipe(data, method, target, config, has_dataset)
    except EdgeQuantError as exc:
        words = rest_error(exc.to_dict(), sent)
        exc.detail, exc.hint = words["detail"], words["hint"]
        raise


def _build_recipe(
    data: dict[str, Any],
    method: str | None,
    target: object,
    config: ServiceConfig | None,
    has_dataset: bool,
) -> dict[str, Any]:
    data = canonical_keys(data)
    given = normalized_keys(data)  # the client's keys: an option the method does not read is refused
    if method:
        if method in PRESETS:  # the body refines the preset, as CLI flags do (presets.preset)
            body = {k: v for k, v in data.items() if v is not None}  # null: unset, the preset's value
            data = without_disabled({**PRESETS[method], **body}, body)
        elif method in METHODS:
            if data.get("method") not in (None, method):
                raise RecipeError(
                    f"the query says method={method} and the body says method={data['method']}.",
                    "keep one of them.",
                )
            data["method"] = method
        else:
            raise RecipeError(
                f"unknown method '{method[:64]}'; allowed: presets {', '.join(PRESETS)} or methods "
                f"{', '.join(METHODS)}.",
                "use e.g. method=int8-static.",
            )
    data["target"] = resolve_target(target if target is not None else data.get("target"))
    if config is not None:
        check_request(data, config, has_dataset=has_dataset)
    recipe = from_dict(data)
    if method in PRESETS and "algorithms" not in given:  # as preset()
        recipe = low_bit_passes(method, recipe)
    if method in PRESETS and "tag" not in given:  # a preset's tag names the preset's settings only
        recipe = own_tag(method, recipe)
    refuse_ignored(recipe, given)
    preflight(recipe, has_dataset, method if method in PRESETS and "algorithms" not in given else None)
    if recipe.tag is None:  # the file names are fixed now, from the recipe as asked (the worker resolves
        recipe = recipe.replace(
            tag=recipe.default_tag
        )  # regex excludes to node names, which would change it)
    return to_dict(recipe)


def preflight(recipe: Recipe, has_dataset: bool, preset: str | None) -> None:
    """The refusals a quantize job would fail with that need no model, raised at submission (422) with
    the job's own reason: the target's rules (``targets.adapt``: weight_bits 1 on ti-npu), Akida's 8-bit
    route, and a pass that learns from real data (adaround, also the one ``accurate`` adds at 4 bits)
    without a dataset (``rules.check_pass_data``, a DataError in the library, a 422 here)."""
    from edgequant import toolchains
    from edgequant.targets.adapt import adapt

    adapt(recipe)
    if recipe.target == "akida":
        toolchains.check_recipe(recipe.target, recipe.weight_bits, recipe.act_bits)
    try:
        check_pass_data(recipe, has_dataset, preset)
    except DataError as exc:
        raise RecipeError(exc.detail, exc.hint) from None


def refuse_unmatched_excludes(root: Path, model: str, exclude: list[str]) -> None:
    """The planner's refusal (422, in REST words) of a plain ``exclude`` entry that matches no node
    name or op type of the stored ONNX model and cannot after the pipeline's rewrites
    (``surely_unmatched``), at submission instead of in the job.  TorchScript uploads and ``re:``
    patterns are matched in the job, as before."""
    from edgequant.recipe.exclude import no_match_error
    from edgequant.service.worker import model_file

    if not exclude or (path := model_file(root, model)).suffix != ".onnx":
        return
    import onnx

    nodes = [(n.name, n.op_type) for n in onnx.load(str(path), load_external_data=False).graph.node]
    for entry in exclude:
        if surely_unmatched(entry, nodes):
            raise no_match_error(entry, nodes)


def refuse_ort_4bit(root: Path, model: str, recipe: dict[str, Any]) -> None:
    """The planner's refusal of static 4-bit activations ONNX Runtime cannot run on ``cpu``, at submission
    (422, nothing queued) for an ONNX upload (``planning.ort_4bit.refuse_file``)."""
    from edgequant.planning.ort_4bit import refuse_file
    from edgequant.service.worker import model_file

    if (path := model_file(root, model)).suffix == ".onnx":
        refuse_file(path, from_dict(recipe))


def surely_unmatched(entry: str, nodes: list[tuple[str, str]]) -> bool:
    """Whether a plain exclude ``entry`` matches nothing in ``nodes`` (a stored model, before the
    pipeline's rewrites) and cannot come to: it is no node name or op type there, no ONNX operator
    (an Einsum becomes MatMul, a split Conv gains Slice and Add), and no stored node's name starts it
    (rewritten nodes are named ``<node>_...``).  ``re:`` entries are matched in the job (time bound)."""
    import onnx

    if not entry or entry.startswith("re:") or onnx.defs.has(entry):
        return False
    return not any(entry in (name, op) or (name and entry.startswith(name)) for name, op in nodes)


def resolve_model_name(store: JobStore, name: str) -> str:
    """The stored model ``name`` refers to: itself, or without a trailing ``.onnx`` (old clients).
    When both ``X.onnx`` and ``X`` are stored, ``X.onnx`` is ambiguous: Conflict (409) naming both."""
    bare = name[:-5] if name.endswith(".onnx") and len(name) > 5 else None
    try:
        model_exists(store.root, name)
    except (NotFound, BadRequest):
        if bare is None:
            raise
        model_exists(store.root, bare)
        return bare
    if bare is not None and (store.root / "models" / bare / "record.json").is_file():
        raise Conflict(
            f"'{name}' names two stored models: '{name}' and '{bare}' (old clients add '.onnx' to a name).",
            f"delete or re-upload one of them under another name (DELETE /api/v1/models/{bare}).",
        )
    return name


def _queue(request: Request, kind: str, model: str, dataset: str | None, recipe: dict[str, Any]) -> str:
    store, config = _store(request), _config(request)
    with request.app.state.commit_lock:
        queued = store.count_status("queued")
        if queued >= config.max_queued:
            raise TooManyRequests(
                f"{queued} jobs are already queued, this server's limit.", "retry when some have finished."
            )
        job_id = store.create(kind, model, dataset, recipe)
    request.app.state.manager.wakeup()
    return job_id


def _accepted(job_id: str) -> JSONResponse:
    body = Accepted(job_id=job_id, status="queued", url=f"/api/v1/jobs/{job_id}")
    return JSONResponse(body.model_dump(), status_code=202)


def legacy_result(store: JobStore, row: dict[str, Any]) -> LegacyResult:
    """The old service's answer for a finished quantize job; sizes from the files on disk."""
    job = public_job(row)
    original = sum(p.stat().st_size for p in store.model_dir(row["model"]).glob(f"{row['model']}.*")
                   if p.suffix in (".onnx", ".pt"))  # fmt: skip
    quantized_url, quantized = None, None
    if row["status"] == "succeeded":
        name = (job["report"] or {}).get("files", {}).get("model")
        if name:
            quantized = (store.job_dir(row["id"]) / name).stat().st_size
            quantized_url = f"/api/v1/jobs/{row['id']}/artifacts/{name}"
    mb = 1024 * 1024
    return LegacyResult(
        status=row["status"],
        job_id=row["id"],
        model_name=row["model"],
        quantized_model_path=quantized_url,
        original_size_mb=round(original / mb, 4),
        quantized_size_mb=None if quantized is None else round(quantized / mb, 4),
        compression_ratio=None if not quantized else round(original / quantized, 3),
        error=job["error"],
    )


def refuse_unknown(keys: list[str], known: tuple[str, ...], command: str) -> None:
    """RecipeError (422) naming the first query parameter ``command`` does not take, the known ones and
    the closest (``eval_datset`` -> ``eval_dataset``; a recipe key sent to quantize: the body): a
    misspelt option must not be silently dropped."""
    for key in (k for k in keys if k not in known):
        close = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "remove it."
        if command == "quantize" and key in {f.name for f in dataclasses.fields(Recipe)}:
            hint = f"send {key} in the JSON body (a recipe key), not in the query."
        raise RecipeError(
            f"unknown query parameter '{key[:64]}' for {command}; known: {', '.join(known)}.", hint
        )


@router.post(
    "/model/{model_name}/quantize",
    status_code=202,
    summary="Quantize a model (a job)",
    responses={
        200: {"model": LegacyResult, "description": "wait=true and the job finished in time"},
        202: {"model": Accepted},
    },
    response_model=None,
)
async def submit_quantize(
    request: Request,
    model_name: str,
    target: str | None = None,
    method: str | None = None,
    dataset: str | None = None,
    wait: bool = False,
    wait_timeout: float = 300.0,
    body: Annotated[RecipeBody | None, Body(description="recipe keys, see edgequant.recipe.Recipe")] = None,  # type: ignore[valid-type]
) -> JSONResponse:
    refuse_unknown(list(request.query_params), QUANTIZE_QUERY, "quantize")
    store, config = _store(request), _config(request)
    name = resolve_model_name(store, model_name)
    if dataset is not None:
        dataset_exists(store.root, dataset)
    recipe = build_recipe(recipe_mapping(body), method, target, config, has_dataset=dataset is not None)
    if dataset is not None and (store.dataset_dir(dataset) / "data.npz").is_file():  # arrays: fed as they are
        refuse_array_preprocess(from_dict(recipe).preprocess, f"dataset '{dataset}' (npz)")
    refuse_unmatched_excludes(store.root, name, recipe.get("exclude") or [])
    refuse_ort_4bit(store.root, name, recipe)
    job_id = _queue(request, "quantize", name, dataset, recipe)
    if not wait:
        return _accepted(job_id)
    deadline = time.monotonic() + max(0.0, min(wait_timeout, config.max_wait_s))
    while time.monotonic() < deadline:
        row = store.get(job_id)
        if row is not None and row["status"] in FINISHED:
            return JSONResponse(legacy_result(store, row).model_dump(), status_code=200)
        await asyncio.sleep(0.1)
    return _accepted(job_id)


@router.get("/jobs/{job_id}/artifacts/{file}", summary="Download a file of a finished job")
def download(request: Request, job_id: str, file: str) -> FileResponse:
    store = _store(request)
    row = job_row(store, job_id)
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
    suffix = Path(file).suffix
    headers = {"Content-Security-Policy": REPORT_CSP, "X-Content-Type-Options": "nosniff"}
    if suffix == ".html":
        return FileResponse(folder / file, media_type="text/html", headers=headers)
    return FileResponse(
        folder / file,
        media_type=_MEDIA.get(suffix, "application/octet-stream"),
        filename=file,
        headers=headers,
    )


@router.post("/jobs/{job_id}/cancel", response_model=Cancelled, summary="Cancel a queued or running job")
def cancel(request: Request, job_id: str) -> dict[str, Any]:
    store = _store(request)
    row = job_row(store, job_id)
    if row["status"] in FINISHED:
        raise Conflict(f"job {job_id} already {row['status']}; nothing to cancel.", "")
    status = request.app.state.manager.cancel(job_id)
    return {"job_id": job_id, "status": status}


@router.get("/jobs/{job_id}", response_model=Job, summary="Status, progress and report of a job")
def get_job(request: Request, job_id: str) -> dict[str, Any]:
    return public_job(job_row(_store(request), job_id))


__all__ = [
    "QUANTIZE_QUERY",
    "build_recipe",
    "job_row",
    "legacy_result",
    "refuse_unknown",
    "resolve_model_name",
    "router",
]
