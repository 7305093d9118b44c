"""``POST /model/{name}/compare``: every method (``edgequant.evaluate.compare``) as one job.

It runs on ``dataset`` (calibration) and ``eval_dataset`` (evaluation; without it the one dataset is
split, seeded, and the report says so), with the CLI's default limits, ``target`` and a JSON body of
``data_options``; ``targets`` adds an ``int8-static@<target>`` row per target, as the CLI's
``--targets``.  An unknown query parameter is refused (422, with the closest known one).  A submit
while ``max_queued`` jobs wait is a 429.  A refusal names the query parameters (``methods=all``,
``max_drop``), not the CLI's flags (``compare_words``).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from edgequant.errors import EdgeQuantError
from edgequant.service.config import BadRequest, resolve_target
from edgequant.service.limits import check_request
from edgequant.service.routes_files import dataset_exists
from edgequant.service.routes_jobs import (
    _accepted,
    _config,
    _queue,
    _store,
    refuse_unknown,
    resolve_model_name,
)
from edgequant.service.schemas import Accepted, CompareBody

router = APIRouter()

# the query parameters of POST /model/{name}/compare (the CLI's flags of the same names)
QUERY = (
    "dataset",
    "eval_dataset",
    "methods",
    "target",
    "max_drop",
    "max_drop_rel",
    "max_latency_ms",
    "max_size_mb",
    "max_energy_mj",
    "prefer",
    "task",
    "targets",
)
_CLI_COMMAND = re.compile(r"(edgequant [a-z]+(?: [^\s;,']+)*)")  # quoted whole, as it is typed
_FLAG = re.compile(r"--([a-z][a-z-]*)(?: (?!(?:with|or|and|in|of|to)\b)(?=[\w.]))?")


def compare_words(text: str) -> str:
    """``text`` (a compare refusal's detail or hint) with the CLI flags of compare's query parameters
    as the parameters: ``pass --methods all`` -> ``pass methods=all``, ``a non-negative --max-drop`` ->
    ``a non-negative max_drop``.  A CLI command quoted whole is left as it is typed."""

    def swap(m: re.Match[str]) -> str:
        name = m.group(1).replace("-", "_")
        if name not in QUERY:
            return m.group(0)
        return f"{name}=" if m.group(0).endswith(" ") else name

    parts = _CLI_COMMAND.split(text)
    return "".join(p if i % 2 else _FLAG.sub(swap, p) for i, p in enumerate(parts))


@router.post(
    "/model/{model_name}/compare", status_code=202, response_model=Accepted, summary="Compare every method"
)
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
    targets: str | None = None,
    body: Annotated[
        CompareBody | None, Body(description="data_options for both datasets (non-path SourceOptions)")
    ] = None,
) -> JSONResponse:
    from edgequant import toolchains
    from edgequant.data.options import SourceOptions
    from edgequant.evaluate.compare import resolve_methods
    from edgequant.evaluate.recommend import Limits
    from edgequant.evaluate.target_rows import parse_targets
    from edgequant.evaluate.tasks import check_task

    refuse_unknown(list(request.query_params), QUERY, "compare")
    store = _store(request)
    name = resolve_model_name(store, model_name)
    if dataset is None:
        raise BadRequest(
            "compare needs ?dataset=NAME (used for calibration and evaluation).", "upload one first."
        )
    dataset_exists(store.root, dataset)
    if eval_dataset is not None:  # else compare splits the one dataset (seeded) and says so
        dataset_exists(store.root, eval_dataset)
    data_options = dict(body.data_options or {}) if body is not None else {}
    check_request({"data_options": data_options}, _config(request), has_dataset=True)
    try:
        SourceOptions.create(data_options)  # unknown names and bad values: 422 before queueing
        canonical = resolve_target(target)
        check_task(task)
        limits = Limits(max_drop, max_drop_rel, max_latency_ms, max_size_mb, max_energy_mj, prefer)
        chosen = resolve_methods(methods)
        extra = parse_targets(targets, canonical)  # as the CLI's --targets, before any work
        for t in extra:
            if t in toolchains.TARGETS:
                toolchains.require(toolchains.TARGETS[t])
    except EdgeQuantError as exc:
        exc.detail, exc.hint = compare_words(exc.detail), compare_words(exc.hint)
        raise
    options = {
        "methods": chosen,
        **limits.to_dict(),  # the CLI's defaults
        "task": task,
        "eval_dataset": eval_dataset,
        "target": canonical,
        "targets": extra or None,
        "data_options": data_options or None,
    }
    return _accepted(_queue(request, "compare", name, dataset, options))


__all__ = ["QUERY", "compare_words", "router"]
