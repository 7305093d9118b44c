"""Errors raised by EdgeQuant.

Every error says what was received, what is allowed, where, and how to fix it.  The CLI prints
``str(error)`` on one line and exits with code 2; the REST service returns it as a 4xx JSON body
``{"error": <class name>, "detail": error.detail, "hint": error.hint}``.

::

    EdgeQuantError
    ├── RecipeError         a setting is unknown, mistyped or impossible (bits, method, keys)
    ├── ModelError          the model file is missing, not ONNX, cannot be loaded or repaired
    ├── DataError           calibration / evaluation data is missing, corrupt or mismatched
    ├── UnsupportedError    a valid request this runtime or graph cannot honour (e.g. 2-bit activations)
    │   └── TargetNotMetError   a target (--target-sqnr) was not reached; ``result`` is the best model reached
    ├── InferenceError      ONNX Runtime failed to create a session or run the model
    ├── ExportError         the quantized graph could not be written or does not load
    ├── TargetError         a hardware target is unknown or its toolchain is missing
    ├── DependencyError     an optional extra (torch, tf, serve, data, ray) is not installed
    └── ExecutorError       the Ray cluster cannot be reached, or a task was lost after its retries
"""

from __future__ import annotations

from typing import Any


class EdgeQuantError(Exception):
    """Base class. ``detail`` states the problem, ``hint`` the fix."""

    def __init__(self, detail: str, hint: str = "") -> None:
        self.detail = detail
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        message = " ".join(self.detail.split())
        if self.hint:
            message += f" Fix: {' '.join(self.hint.split())}"
        return message

    def to_dict(self) -> dict[str, str]:
        return {"error": type(self).__name__, "detail": self.detail, "hint": self.hint}


class RecipeError(EdgeQuantError):
    """A setting is unknown, mistyped, or impossible."""


class ModelError(EdgeQuantError):
    """The model file is missing, not ONNX, or cannot be loaded or repaired."""


class DataError(EdgeQuantError):
    """Calibration or evaluation data is missing, corrupt, or does not match the model."""


class UnsupportedError(EdgeQuantError):
    """A valid request that this runtime or this graph cannot honour."""


class InferenceError(EdgeQuantError):
    """ONNX Runtime failed to create a session for, or to run, a model."""


class ExportError(EdgeQuantError):
    """The quantized model could not be built, written, or loaded back."""


class TargetError(EdgeQuantError):
    """A hardware target is unknown, or its vendor toolchain is not installed."""


class DependencyError(EdgeQuantError):
    """An optional extra is not installed."""

    @classmethod
    def missing(cls, module: str, extra: str, purpose: str) -> DependencyError:
        return cls(
            f"{purpose} needs the Python package '{module}', which is not installed.",
            f"pip install 'edgequant[{extra}]'",
        )


class ExecutorError(EdgeQuantError):
    """The Ray cluster cannot be reached, or a task was lost after all its retries."""


class TargetNotMetError(UnsupportedError):
    """A quality target was not reached.  ``result`` (a ``QuantResult``) is the best model reached:
    the CLI writes it and exits 1; the API caller may save it too."""

    def __init__(self, detail: str, hint: str = "", result: Any = None) -> None:
        super().__init__(detail, hint)
        self.result = result


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of ``str(exc)`` cut to ``limit`` characters, or the exception's class
    name when its message is empty (``MemoryError()``, ``KeyError()``): safe on any exception."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__


def caused_by_memory(exc: BaseException) -> bool:
    """True when ``exc`` is a MemoryError or was raised while handling one (its ``__cause__`` /
    ``__context__`` chain holds a MemoryError): a run that ran out of memory, whatever wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def memory_limit_text() -> str:
    """This process's address-space limit as text: ``"limit 683 MiB of address space (RLIMIT_AS,
    ulimit -v)"``, or ``"limit: the machine's memory; ..."`` when none is set."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):  # not POSIX
        return "limit: the machine's memory"
    if soft == resource.RLIM_INFINITY:
        return "limit: the machine's memory; no address-space limit is set"
    return f"limit {soft // (1024 * 1024)} MiB of address space (RLIMIT_AS, ulimit -v)"


def out_of_memory_error() -> EdgeQuantError:
    """The CLI's one-line error for a run that ran out of memory (exit 2)."""
    return EdgeQuantError(
        f"out of memory ({memory_limit_text()}).",
        "use fewer calibration samples (--calib-samples), a smaller --batch-size or smaller inputs, "
        "or raise the limit (ulimit -v) or run on a machine with more memory.",
    )
