"""``--device cpu|cuda[:N]`` -> ONNX Runtime execution providers, with no quiet fallback.

``cpu`` runs ``CPUExecutionProvider`` only.  ``cuda`` / ``cuda:N`` runs ``CUDAExecutionProvider``
on device N (default 0), with the CPU provider listed after it for the operators CUDA has no kernel
for (ORT's own placement; the report records the providers of the session that ran).  When the
installed onnxruntime has no CUDA provider the request is refused, naming the installed providers
and the package that brings CUDA (``onnxruntime-gpu``); it never runs on the CPU instead.
"""

from __future__ import annotations

import re

from edgequant.errors import InferenceError, RecipeError
from edgequant.runtime.ort import OrtRuntime, available_providers

_DEVICE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


def parse_device(device: str | None, gpu_number: int | None = None) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``gpu_number`` (the seed scripts' ``--gpu-number``) is an
    alias for ``cuda:N`` and must agree with ``device`` when both are given."""
    text = (device or ("cuda" if gpu_number is not None else "cpu")).strip().lower()
    m = _DEVICE.match(text)
    if m is None:
        raise RecipeError(
            f"device '{device}' is not cpu, cuda or cuda:N.", "pass --device cpu or --device cuda:0."
        )
    kind, index = m.group(1), (int(m.group(2)) if m.group(2) is not None else None)
    if kind == "cpu" and index is not None:
        raise RecipeError(f"device '{device}' is not cpu, cuda or cuda:N.", "pass --device cpu (no index).")
    if gpu_number is not None:
        if gpu_number < 0:
            raise RecipeError(f"--gpu-number {gpu_number} must be >= 0.", "pass --gpu-number 0.")
        if kind == "cpu" and device is not None:
            raise RecipeError(
                f"--gpu-number {gpu_number} contradicts --device {device}.", "pass one of them, not both."
            )
        if index is not None and index != gpu_number:
            raise RecipeError(
                f"--gpu-number {gpu_number} contradicts --device {device}.", "pass one of them, not both."
            )
        kind, index = "cuda", gpu_number
    if kind == "cuda" and index is None:
        index = 0
    return kind, index


def providers_for(device: str | None, available: list[str], gpu_number: int | None = None) -> list[str]:
    """The provider list for ``device`` given the installed ``available`` providers (see module doc).

    Raises ``RecipeError`` for a malformed device, ``InferenceError`` when CUDA is asked for and absent.
    """
    kind, _ = parse_device(device, gpu_number)
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise InferenceError(
            f"--device {device or 'cuda'} needs ONNX Runtime's CUDAExecutionProvider, which this onnxruntime "
            f"does not have (installed providers: {', '.join(available)}).",
            "pip install onnxruntime-gpu (in place of onnxruntime) on a machine with CUDA, or pass --device cpu.",
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def runtime_for(device: str | None, gpu_number: int | None = None, intra_op_threads: int = 0) -> OrtRuntime:
    """An ``OrtRuntime`` on ``device`` (refusing a missing CUDA; see ``providers_for``)."""
    providers = providers_for(device, available_providers(), gpu_number)
    _, index = parse_device(device, gpu_number)
    options = [{"device_id": str(index)}, {}] if providers[0] == "CUDAExecutionProvider" else None
    return OrtRuntime(providers=providers, intra_op_threads=intra_op_threads, provider_options=options)
