"""Typed request and response bodies of the REST API (they are the OpenAPI schemas at /openapi.json).

``RecipeBody`` is generated from ``edgequant.recipe.Recipe`` (every field optional, unknown keys
refused; the CLI flags' spellings ``data_option``, ``target_sqnr``, ``symmetric`` are accepted as in
YAML recipes), so the API's recipe schema cannot drift from the library's; the body is then validated
again, fully, by ``edgequant.recipe.from_dict``.  Every error answer is an ``ErrorBody``.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from edgequant.errors import RecipeError
from edgequant.recipe import Recipe
from edgequant.recipe.schema import FLAG_KEYS

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
JobKind = Literal["quantize", "compare"]


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: the error class, what was wrong, how to fix it."""

    error: str = Field(description="error class, e.g. RecipeError, NotFound, Conflict")
    detail: str = Field(description="what was received and what is allowed")
    hint: str = Field(description="how to fix it (may be empty)")


def _optional_model(cls: type, name: str) -> type[BaseModel]:
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            hint = _optional_model(hint, name + getattr(hint, "__name__", "Part"))  # type: ignore[arg-type]
        fields[f.name] = (Optional[hint], Field(default=None))  # noqa: UP045 (a runtime type object)
    if cls is Recipe:  # the CLI flags' spellings, accepted as in YAML recipes (never both: 422)
        for flag, field in FLAG_KEYS.items():
            description = f"the CLI flag's spelling of '{field}' (the same setting)."
            fields[flag] = (Optional[hints[field]], Field(default=None, description=description))  # noqa: UP045
    model: type[BaseModel] = create_model(
        name,
        __config__=ConfigDict(extra="forbid"),
        __doc__=f"Keys of edgequant.recipe.{cls.__name__}; omitted keys take the library's defaults.",
        **fields,
    )
    return model


RecipeBody = _optional_model(Recipe, "Recipe")


class CompareBody(BaseModel):
    """The optional JSON body of ``POST /model/{name}/compare``: the data options of both datasets
    (``edgequant.data.SourceOptions``; the service accepts only the non-path ones, ``limits``)."""

    model_config = ConfigDict(extra="forbid")
    data_options: dict[str, Any] | None = None


def unknown_body_key(key: str, body: type[BaseModel]) -> RecipeError:
    """The 422 error for a key ``body`` (RecipeBody, CompareBody) does not have: it names the key and
    the spelling to use (a dashed spelling of a known key, or the closest known key)."""
    known = sorted(body.model_fields)
    shown, where = key[:64], "recipe" if body is RecipeBody else "the request body"
    normalized = key.replace("-", "_")
    if normalized in known:
        return RecipeError(
            f"unknown key '{shown}' in {where}: JSON bodies spell keys with underscores.",
            f"write '{normalized}'.",
        )
    close = difflib.get_close_matches(normalized, known, n=1)
    return RecipeError(
        f"unknown key '{shown}' in {where}; allowed: {', '.join(known)}.",
        f"did you mean '{close[0]}'?" if close else "remove or rename the key.",
    )


def recipe_mapping(body: BaseModel | None) -> dict[str, Any]:
    """The keys the client set (nested too), as a plain mapping for ``edgequant.recipe.from_dict``."""
    if body is None:
        return {}
    data: dict[str, Any] = body.model_dump(exclude_unset=True)
    return data


class ModelRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    format: Literal["onnx", "torchscript"]
    file: str
    bytes: int
    uploaded: float
    uploaded_filename: str | None = None
    inputs: list[str] | None = None
    outputs: list[str] | None = None


class ModelList(BaseModel):
    models: list[ModelRecord]


class DatasetRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    format: Literal["npz", "images"]
    bytes: int
    uploaded: float
    uploaded_filename: str | None = None
    arrays: dict[str, Any] | None = None
    images: int | None = None


class DatasetList(BaseModel):
    datasets: list[DatasetRecord]


class Accepted(BaseModel):
    job_id: str
    status: JobStatus
    url: str = Field(description="poll this URL; /events beside it streams progress")


class Progress(BaseModel):
    fraction: float = Field(ge=0, le=1)
    percent: float = Field(ge=0, le=100)
    stage: str


class Sizes(BaseModel):
    original_bytes: int | None = None
    quantized_bytes: int | None = None
    packed_bytes: int | None = None
    compression_ratio: float | None = None
    file_ratio: float | None = None
    packed_theoretical: bool | None = Field(
        default=None,
        description="True: packed_bytes and compression_ratio assume a packing the file lacks "
        "(2-bit weights stored in int8 containers); the file's own ratio is file_ratio",
    )


class ReportSummary(BaseModel):
    """The short view of a finished job's report (the full report is ``report``)."""

    model_config = ConfigDict(extra="allow")
    method: str | None = None
    recommended: str | None = Field(default=None, description="compare jobs: the method recommended")
    sizes: Sizes | None = None
    metrics: dict[str, Any] | None = None
    warnings: list[str] = Field(default_factory=list)
    artifacts: list[str] = Field(default_factory=list)
    report_html: str | None = Field(default=None, description="artifact URL of the HTML report, if any")


class Job(BaseModel):
    job_id: str
    kind: JobKind
    model: str
    dataset: str | None
    status: JobStatus
    progress: Progress
    recipe: dict[str, Any]
    created: str | None
    started: str | None
    finished: str | None
    error: ErrorBody | None
    summary: ReportSummary | None
    report: dict[str, Any] | None


class JobList(BaseModel):
    jobs: list[Job]
    total: int
    limit: int
    offset: int


class Cancelled(BaseModel):
    job_id: str
    status: JobStatus


class Deleted(BaseModel):
    deleted: str


class LegacyResult(BaseModel):
    """``?wait=true`` answer, shaped like the old edge-models service's."""

    status: str
    job_id: str
    model_name: str
    quantized_model_path: str | None = Field(description="artifact URL of the quantized model")
    original_size_mb: float
    quantized_size_mb: float | None
    compression_ratio: float | None = Field(description="original file size / quantized file size")
    error: ErrorBody | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "bad request (names, malformed bodies)"),
        (401, "API key or login missing or wrong"),
        (403, "cross-site request or CSRF token missing"),
        (404, "not found"),
        (405, "method not allowed"),
        (409, "conflict (name taken, input used by an active job, job not finished)"),
        (413, "body or upload too large"),
        (421, "Host header is not this server's"),
        (422, "invalid recipe or parameters"),
        (429, "job queue full"),
        (500, "internal error (a bug)"),
        (501, "target or optional extra not available here"),
    )
}

__all__ = [
    "ERROR_RESPONSES",
    "Accepted",
    "Cancelled",
    "CompareBody",
    "DatasetList",
    "DatasetRecord",
    "Deleted",
    "ErrorBody",
    "Job",
    "JobList",
    "LegacyResult",
    "ModelList",
    "ModelRecord",
    "RecipeBody",
    "ReportSummary",
    "recipe_mapping",
]
