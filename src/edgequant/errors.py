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
