"""What a REST request may ask of a job: no server paths, bounded counts, bounded inputs.

Checked when a job is submitted, before it is queued (a refusal is a 4xx, nothing is stored):

* No recipe key or data option may name a file on the server.  ``calib_data`` is refused, and
  ``data_options`` accepts only the non-path options of ``edgequant.data.SourceOptions``
  (``SAFE_DATA_OPTIONS``, an allowlist: an option added to the library later is refused here until
  it is listed).  The refusal never opens, stats or quotes the path it was given.
* ``calib_samples`` <= ``max_calib_samples``, ``batch_size`` <= ``max_batch_size``, preprocess
  ``resize`` / ``center_crop`` <= ``max_image_side``, integer data options <= ``MAX_OPTION_INT``,
  at most ``MAX_EXCLUDE`` exclude entries of ``MAX_PATTERN`` characters each, every ``re:`` entry
  inside the exclude matcher's safe subset (``edgequant.recipe.exclude.compile_pattern``).
* A static quantization needs a dataset: without one the library would calibrate on synthetic
  data, which the service only does when the recipe says ``allow_synthetic: true``.
"""

from __future__ import annotations

from typing import Any

from edgequant.errors import RecipeError
from edgequant.recipe.exclude import check_patterns
from edgequant.service.config import ServiceConfig

SAFE_DATA_OPTIONS = frozenset(
    {
        "video_frames",
        "video_every",
        "csv_columns",
        "csv_window",
        "csv_stride",
        "csv_label_column",
        "hdf5_key",
        "hdf5_label_key",
        "metadata_split_column",
        "metadata_index_column",
        "metadata_label_column",
        "calib_type",
        "eval_type",
        "prefetch",
    }
)
PATH_KEYS = ("calib_data", "calib-data")
MAX_OPTION_INT = 100_000
MAX_EXCLUDE = 256
MAX_PATTERN = 200


def _too_big(what: str, value: Any, limit: int, hint: str) -> RecipeError:
    return RecipeError(f"{what} = {value} is above this server's limit of {limit}.", hint)


def check_request(data: dict[str, Any], config: ServiceConfig, *, has_dataset: bool) -> None:
    """Refuse (RecipeError, 422) what a REST recipe mapping may not ask for; see the module doc."""
    for key in PATH_KEYS:
        if key in data:
            raise RecipeError(
                f"the recipe key '{key}' is not accepted by the REST service (it would name a file on the server).",
                "upload the data with POST /api/v1/datasets and pass ?dataset=NAME.",
            )
    options = data.get("data_options") or {}
    if isinstance(options, dict):
        for key, value in options.items():
            if str(key).replace("-", "_") not in SAFE_DATA_OPTIONS:
                raise RecipeError(
                    f"data option '{str(key)[:64]}' is not accepted by the REST service (options that name "
                    "files on the server, like metadata_csv, are refused); allowed: "
                    f"{', '.join(sorted(SAFE_DATA_OPTIONS))}.",
                    "upload everything the job needs as a dataset.",
                )
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OPTION_INT:
                raise _too_big(f"data_options.{key}", value, MAX_OPTION_INT, "use a smaller value.")
    _check_int(data, "calib_samples", config.max_calib_samples, "use fewer calibration samples.")
    _check_int(data, "batch_size", config.max_batch_size, "use a smaller batch_size.")
    pre = data.get("preprocess")
    if isinstance(pre, dict):
        for key in ("resize", "center_crop"):
            _check_int(pre, key, config.max_image_side, "resize to fewer pixels.", f"preprocess.{key}")
    exclude = data.get("exclude")
    if isinstance(exclude, list | tuple):
        if len(exclude) > MAX_EXCLUDE:
            raise _too_big("the number of exclude entries", len(exclude), MAX_EXCLUDE, "exclude fewer nodes.")
        for item in exclude:
            if isinstance(item, str) and len(item) > MAX_PATTERN:
                raise _too_big("the length of an exclude entry", len(item), MAX_PATTERN, "shorten it.")
        check_patterns([item for item in exclude if isinstance(item, str)])
    if (
        not has_dataset
        and data.get("method", "static") == "static"
        and data.get("allow_synthetic") is not True
    ):
        raise RecipeError(
            "a static quantization needs calibration data, and this job names no dataset; the service "
            "does not calibrate on synthetic random data unless the recipe says allow_synthetic: true.",
            "upload a dataset (POST /api/v1/datasets) and pass ?dataset=NAME.",
        )


def _check_int(data: dict[str, Any], key: str, limit: int, hint: str, where: str = "") -> None:
    value = data.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value > limit:
        raise _too_big(where or key, value, limit, hint)


__all__ = ["SAFE_DATA_OPTIONS", "check_request"]
