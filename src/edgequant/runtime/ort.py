"""ONNX Runtime, behind the Runtime protocol.  The only module that imports onnxruntime.

Providers are explicit (CPU unless told otherwise) and there is no silent fallback: a provider
that is asked for and missing is an error.  Models above protobuf's 2 GB limit are handed to ORT
as a file with external data, written into a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort

from edgequant.errors import InferenceError, first_line


class Runtime(Protocol):
    def run(
        self, model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray], fetch: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]: ...


def ort_version() -> str:
    return str(ort.__version__)


def available_providers() -> list[str]:
    """The execution providers of the installed onnxruntime build."""
    return list(ort.get_available_providers())


class OrtSession:
    """One InferenceSession; ``run`` returns a name -> array dict."""

    def __init__(
        self, session: ort.InferenceSession, tmpdir: tempfile.TemporaryDirectory[str] | None
    ) -> None:
        self._session = session
        self._tmpdir = tmpdir
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    @property
    def inputs(self) -> list[Any]:
        return list(self._session.get_inputs())

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def run(self, feeds: dict[str, np.ndarray], fetch: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(fetch) if fetch is not None else self.output_names
        try:
            outs = self._session.run(names, feeds)
        except Exception as exc:  # ORT raises its own exception types; normalise them
            raise InferenceError(
                f"ONNX Runtime failed to run the model: {first_line(exc, 400)}",
                "check the input shapes and dtypes against 'edgequant inspect MODEL'.",
            ) from exc
        return dict(zip(names, outs, strict=True))

    def close(self) -> None:
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None


class OrtRuntime:
    """Creates sessions with explicit providers, thread counts and optimisation level."""

    def __init__(
        self,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
        optimize: bool = True,
        allow_spinning: bool = True,
        provider_options: Sequence[dict[str, str]] | None = None,
    ) -> None:
        available = ort.get_available_providers()
        missing = [p for p in providers if p not in available]
        if missing:
            raise InferenceError(
                f"execution provider(s) {missing} are not available in this onnxruntime build "
                f"(available: {available}).",
                "install the matching onnxruntime package, or use CPUExecutionProvider.",
            )
        self.providers = list(providers)
        self.provider_options = list(provider_options) if provider_options is not None else None
        self.intra_op_threads = intra_op_threads
        self.optimize = optimize
        # idle ORT threads spin by default; during calibration that takes the CPU from data loading
        self.allow_spinning = allow_spinning

    def _provider_kwargs(self) -> dict[str, Any]:
        return {"providers": self.providers, "provider_options": self.provider_options}

    def session(self, model: onnx.ModelProto | Path | str, what: str = "the model") -> OrtSession:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if self.intra_op_threads:
            opts.intra_op_num_threads = self.intra_op_threads
        if not self.allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not self.optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        tmp: tempfile.TemporaryDirectory[str] | None = None
        try:
            if isinstance(model, onnx.ModelProto):
                from edgequant.model.io import PROTO_LIMIT, save_model, serialized_size

                if serialized_size(model) > PROTO_LIMIT:  # ByteSize() itself raises above 2 GB
                    tmp = tempfile.TemporaryDirectory(prefix="edgequant-")
                    path = Path(tmp.name) / "model.onnx"
                    save_model(model, path, durable=False)  # leaves the caller's weights in place
                    sess = ort.InferenceSession(
                        str(path), opts, providers=self.providers, provider_options=self.provider_options
                    )
                else:
                    sess = ort.InferenceSession(
                        model.SerializeToString(),
                        opts,
                        providers=self.providers,
                        provider_options=self.provider_options,
                    )
            else:
                sess = ort.InferenceSession(
                    str(model), opts, providers=self.providers, provider_options=self.provider_options
                )
        except Exception as exc:
            if tmp is not None:
                tmp.cleanup()
            first = first_line(exc, 500)
            raise InferenceError(
                f"ONNX Runtime cannot load {what}: {first}",
                "run 'edgequant inspect MODEL'; re-export the model with a supported opset and operators.",
            ) from exc
        return OrtSession(sess, tmp)

    def run(
        self, model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray], fetch: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        s = self.session(model)
        try:
            return s.run(feeds, fetch)
        finally:
            s.close()
