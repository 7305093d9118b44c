"""Service settings, the quantization targets the service knows, and the service's own errors.

Targets: ``onnx`` (ONNX Runtime CPU, QDQ; alias ``cpu``) and every hardware profile of
``edgequant.targets`` (``ti-npu``, ``vitis-dpu``, ...) are served.  A profile built by a vendor
toolchain (``tvm``, ``akida``) that this server has not installed is a 501 naming the install
command, never a fake success; any other name is a 422 from the library's one target-name check
(``targets.unknown_target``: the valid names and the closest match, as in the CLI).  ``akida1`` is a profile
the service does not serve (``NOT_SERVED``): its route converts a Keras 2 ``.h5`` file, and the
service stores ONNX and TorchScript models; a request for it is a 422 saying so and naming the CLI.

Errors raised by the service itself subclass EdgeQuantError and carry their HTTP status; the app
maps library errors by class (``STATUS_BY_ERROR``) and always answers ``{error, detail, hint}``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgequant.errors import (
    DataError,
    DependencyError,
    EdgeQuantError,
    ExportError,
    InferenceError,
    ModelError,
    RecipeError,
    TargetError,
    UnsupportedError,
)

API_KEY_ENV = "EDGEQUANT_API_KEY"


@dataclass(frozen=True)
class Target:
    """A target name as the REST API sees it."""

    name: str
    recipe_target: str  # value for Recipe.target
    description: str


TARGETS: dict[str, Target] = {
    "onnx": Target("onnx", "cpu", "ONNX Runtime CPU, QDQ model (the default)"),
    "cpu": Target("cpu", "cpu", "alias of 'onnx'"),
}  # hardware profiles (edgequant.targets: ti-npu, vitis-dpu, cmsis-nn, akida, ...) are served too
DEFAULT_TARGET = "onnx"
NOT_SERVED: dict[str, tuple[str, str]] = {  # profile -> (why not, the fix): 422 before any job
    "akida1": (
        "target 'akida1' converts a Keras 2 .h5 model with BrainChip's cnn2snn (Akida 1.0, 4/2-bit), and this "
        "service stores ONNX and TorchScript models only.",
        "run it with the CLI: edgequant quantize model.h5 --target akida1 --weight-bits 4 --act-bits 4; "
        "or use target=akida here (Akida 2.0, 8-bit, from ONNX).",
    ),
}


def served_targets() -> list[str]:
    from edgequant import targets

    names = list(TARGETS)
    return names + [n for n in targets.names() if n not in names and n not in NOT_SERVED]


def resolve_target(name: object) -> str:
    """The Recipe.target value for a REST ``target``; TargetError (422) or ToolchainMissing (501)."""
    if name is not None and not isinstance(name, str):
        raise TargetError(
            f"target must be a string, got {type(name).__name__}; valid targets: {', '.join(served_targets())}.",
            f'use "target": "{DEFAULT_TARGET}".',
        )
    key = (name or DEFAULT_TARGET).strip().lower()
    target = TARGETS.get(key)
    if target is not None:
        return target.recipe_target
    from edgequant import targets

    if key not in targets.aliases():  # the library's one check of a target name: closest match
        raise targets.unknown_target(
            name,
            served_targets(),
            f"GET /health lists them; target={DEFAULT_TARGET} is ONNX Runtime CPU QDQ.",
        )
    canonical = targets.canonical(key)  # a hardware profile: the plan follows its rules
    if canonical in NOT_SERVED:
        raise TargetError(*NOT_SERVED[canonical])
    _require_toolchain(canonical)
    return canonical


def _require_toolchain(target: str) -> None:
    """A target built by a vendor toolchain (tvm, akida) answers 501 with the install command when the
    toolchain is not installed on this server, before any job is queued."""
    from edgequant import toolchains

    if target in toolchains.TARGETS:
        try:
            toolchains.require(toolchains.TARGETS[target])
        except EdgeQuantError as exc:
            raise ToolchainMissing(exc.detail, exc.hint) from exc


class ServiceError(EdgeQuantError):
    """An error of the HTTP layer; ``status`` is its HTTP status code."""

    status = 400


class BadRequest(ServiceError):
    status = 400


class Unauthorized(ServiceError):
    status = 401


class NotFound(ServiceError):
    status = 404


class Conflict(ServiceError):
    status = 409


class Forbidden(ServiceError):
    status = 403


class PayloadTooLarge(ServiceError):
    status = 413


class TooManyRequests(ServiceError):
    status = 429


class ResourceLimit(EdgeQuantError):
    """A job went past a limit of this server (time, memory); the job fails with this error."""


class ToolchainMissing(ServiceError):
    status = 501


STATUS_BY_ERROR: dict[type[EdgeQuantError], int] = {
    RecipeError: 422,
    TargetError: 422,
    UnsupportedError: 422,
    ModelError: 400,
    DataError: 400,
    InferenceError: 422,
    ExportError: 422,
    DependencyError: 501,
    ResourceLimit: 422,
}


def status_of(exc: EdgeQuantError) -> int:
    if isinstance(exc, ServiceError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@dataclass(frozen=True)
class ServiceConfig:
    """How the server runs.  ``workers`` = job worker processes (uvicorn itself runs one process).

    Limits (each refused with a 4xx naming it, or a job failed with ResourceLimit):

    * ``job_timeout_s``: wall time of one job; past it the worker is killed and the job fails.
    * ``worker_memory_mb``: RLIMIT_AS (address space) of each worker process; an allocation past it
      fails and the job fails with "out of memory".  The address space includes the shared libraries
      (ONNX Runtime, torch), about 1.5-2.5 GB before any data, so keep it well above that.
    * ``max_queued``: queued jobs at most; a submit beyond it is a 429.
    * ``max_body_kb``: every request body except the two upload routes (413 above).
    * ``max_calib_samples``, ``max_batch_size``, ``max_image_side`` (resize / center crop, pixels),
      ``max_dataset_pixels`` (decoded pixels summed over an image zip), ``max_input_elements``
      (elements of one array in an uploaded npz).
    * ``retention_days``: finished jobs older than this are deleted with their files (None: kept).
    """

    store: Path
    api_key: str | None = None
    max_upload_mb: float = 200.0
    workers: int = 2
    max_extract_mb: float | None = None  # total uncompressed size of a zip; default 4x the upload limit
    max_zip_members: int = 20000
    host: str = "127.0.0.1"
    port: int = 8000
    job_timeout_s: float = 1800.0
    worker_memory_mb: int = 8192
    max_queued: int = 64
    max_body_kb: int = 256
    max_calib_samples: int = 2048
    max_batch_size: int = 64
    max_image_side: int = 2048
    max_dataset_pixels: int = 64_000_000
    max_input_elements: int = 64_000_000
    retention_days: float | None = None
    max_wait_s: float = 600.0
    executor: str = "local"  # "ray": each job runs as a Ray task (service.ray_jobs)
    ray_address: str | None = None  # with executor "ray": the cluster; None starts a local Ray instance

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise BadRequest(f"--workers must be >= 1, got {self.workers}.", "use --workers 2.")
        if self.max_upload_mb <= 0:
            raise BadRequest(f"--max-upload-mb must be > 0, got {self.max_upload_mb}.", "use e.g. 200.")
        if self.job_timeout_s <= 0 or self.max_queued < 1 or self.worker_memory_mb < 512:
            raise BadRequest(
                f"job timeout {self.job_timeout_s} s, queue limit {self.max_queued}, worker memory "
                f"{self.worker_memory_mb} MB: each must be positive (memory >= 512 MB).",
                "use e.g. --job-timeout 1800 --max-queued 64 --worker-memory-mb 8192.",
            )
        if self.executor not in ("local", "ray") or (self.ray_address is not None and self.executor != "ray"):
            raise BadRequest(
                f"--executor {self.executor} with --ray-address {self.ray_address}: the executor is local or "
                "ray, and an address needs ray.",
                "use --executor ray [--ray-address ray://HEAD:10001], or drop both.",
            )
        if self.executor == "ray":
            from edgequant.executors.ray import require_ray

            require_ray()
        if self.retention_days is not None and self.retention_days <= 0:
            raise BadRequest(f"--retention-days must be > 0, got {self.retention_days}.", "use e.g. 30.")
        if not self.api_key and self.host not in LOOPBACK_HOSTS:
            raise BadRequest(
                f"binding to {self.host} without an API key would let anyone on the network use the server.",
                "set --api-key (or EDGEQUANT_API_KEY), or bind to 127.0.0.1.",
            )

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_extract_bytes(self) -> int:
        mb = self.max_extract_mb if self.max_extract_mb is not None else 4 * self.max_upload_mb
        return int(mb * 1024 * 1024)

    @classmethod
    def create(
        cls,
        store: str | Path,
        api_key: str | None = None,
        max_upload_mb: float = 200.0,
        workers: int = 2,
        **limits: Any,
    ) -> ServiceConfig:
        """Settings with the API key taken from EDGEQUANT_API_KEY when not given; ``limits``: fields above."""
        key = api_key if api_key else os.environ.get(API_KEY_ENV) or None
        return cls(Path(store).resolve(), key, float(max_upload_mb), int(workers), **limits)
