"""QuantResult: the quantized model, its plan, and the run's report; ``save`` writes them atomically."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgequant.export.kernels import integer_weight_names
from edgequant.export.sizes import file_bytes, float_weight_names, packed_bytes, unpacked_weights
from edgequant.model.io import external_data_path, save_model, write_text_atomic
from edgequant.names import confined
from edgequant.outputs import check_writable, output_paths
from edgequant.plan import QuantPlan
from edgequant.recipe import Recipe, to_dict
from edgequant.recipe.flags import api_refusals
from edgequant.runtime import ort_version

__version__ = "0.1.0"


@dataclass(frozen=True)
class SavedPaths:
    model: Path
    report: Path
    plan: Path


@dataclass
class QuantResult:
    model: onnx.ModelProto
    float_model: onnx.ModelProto
    plan: QuantPlan
    recipe: Recipe
    name: str
    tag: str
    report: dict[str, Any] = field(default_factory=dict)
    save_float: bool = False  # the float model was exported here (from PyTorch): write it beside
    artifacts: dict[str, bytes] = field(default_factory=dict)  # suffix -> bytes, e.g. ".tvm.so" (toolchains)
    input_bytes: int | None = None  # the user's model as given (file + external data); None: float_model
    source: Path | None = None  # the user's model file, when given as a path: ``save`` never writes over it

    @property
    def stem(self) -> str:
        return f"{self.name}_{self.tag}"

    @api_refusals  # refusals name outdir= and overwrite=True; the CLI checks its -o before the work
    def save(self, outdir: str | Path, *, overwrite: bool = True) -> SavedPaths:
        """Write ``<name>_<tag>.onnx``, ``<name>_<tag>.json`` (report) and ``.plan.json`` into ``outdir``;
        an ``outdir`` ending in ``.onnx`` is the model file itself (sidecars ``<stem>.json``, ``.plan.json``).

        Above protobuf's 2 GB limit the weights go to ``<model>.onnx.data`` beside the model; the report's
        ``files`` names it (``model_data``).  With ``overwrite=False`` an existing file is an ExportError
        before anything is written.  An output that is the input model (``source``) is an ExportError
        even with ``overwrite``.  On failure nothing written here is left.
        """
        paths = output_paths(outdir, self.name, self.tag)
        extra_files = [paths.folder / f"{paths.model.stem}{suffix}" for suffix in self.artifacts]
        check_writable(
            paths.folder,
            paths.files(self.save_float) + extra_files,
            overwrite=overwrite,
            inputs=[self.source] if self.source is not None else [],
        )
        out = paths.folder.resolve()  # 'bo/../x' makes no 'bo' (outputs.check_writable)
        out.mkdir(parents=True, exist_ok=True)
        model_path = confined(out, paths.model.name)  # every path checked before anything is written
        report_path = confined(out, paths.report.name)
        plan_path = confined(out, paths.plan.name)
        float_path = confined(out, paths.float_model.name)
        write_text_atomic(plan_path, self.plan.to_json())
        extra: list[Path] = []
        try:
            if self.save_float:
                save_model(self.float_model, float_path)
            save_model(self.model, model_path)
            self.report["files"] = {
                "model": model_path.name,
                "report": report_path.name,
                "plan": plan_path.name,
            }
            for (
                suffix,
                blob,
            ) in self.artifacts.items():  # a vendor toolchain's build (TVM library, Akida .fbz)
                extra.append(write_text_atomic(out / f"{model_path.stem}{suffix}", blob))
                if suffix in (
                    ".pth",
                    ".pt",
                ):  # the PyTorch model of a PyTorch input (torch.quantized_outputs)
                    self.report["files"]["torch_model"] = extra[-1].name
                    self.report.setdefault("torch", {})["file"] = extra[-1].name
                else:
                    self.report["files"].setdefault("toolchain_artifacts", []).append(extra[-1].name)
            saved = [("model", model_path)] + ([("float_model", float_path)] if self.save_float else [])
            for key, path in saved:
                self.report["files"][key] = path.name
                data = external_data_path(path)  # above 2 GB the weights sit in <model>.onnx.data
                if data is not None:
                    self.report["files"][f"{key}_data"] = data.name
            write_text_atomic(report_path, json.dumps(self.report, indent=1, default=_json_default))
        except Exception:
            for p in (model_path, plan_path, *extra, *([float_path] if self.save_float else [])):
                data = external_data_path(p) if p.suffix == ".onnx" else None
                for leftover in (p, data):
                    if leftover is not None:
                        leftover.unlink(missing_ok=True)
            raise
        return SavedPaths(model_path, report_path, plan_path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def versions() -> dict[str, str]:
    return {
        "edgequant": __version__,
        "python": platform.python_version(),
        "onnx": onnx.__version__,
        "onnxruntime": ort_version(),
        "numpy": np.__version__,
    }


def build_report(
    result: QuantResult,
    *,
    seconds: dict[str, float],
    calibration: dict[str, Any] | None,
    notes: list[str],
    warnings: list[str],
    cpu: str,
    check: dict[str, Any],
) -> dict[str, Any]:
    plan = result.plan
    expanded, qb = file_bytes(result.float_model), file_bytes(result.model)
    # ratios against what the user gave, not against the repaired copy (fp16 weights behind Casts are
    # expanded to float32 there, so its size would flatter the result)
    fb = result.input_bytes if result.input_bytes is not None else expanded
    pb = packed_bytes(result.model, plan)
    if qb > fb:
        warnings = [
            *warnings,
            f"the quantized file ({qb / 2**20:.3f} MiB) is larger than the input model ({fb / 2**20:.3f} MiB); "
            "check the report's skipped nodes (weights left float, or a shared weight stored twice).",
        ]
    weights = plan.weights()
    kernels = check.pop("kernels", None)  # what ONNX Runtime runs for each planned node (export.kernels)
    return {
        "edgequant_version": __version__,
        "method": plan.method,
        "tag": result.tag,
        "recipe": to_dict(result.recipe),
        "sizes": {
            "float_bytes": fb,
            "float_repaired_bytes": expanded,
            "quantized_bytes": qb,
            "packed_bytes": pb,
            "compression_ratio": round(fb / max(pb, 1), 3),
            "file_ratio": round(fb / max(qb, 1), 3),
            # e.g. 1/2-bit weights in int8 containers: the packed size assumes a packing the file lacks
            "packed_theoretical": bool(unpacked_weights(result.model, plan)),
        },
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "nodes": {
            **_kernel_nodes(plan, kernels),
            "skipped": [
                {"node": d.node, "op_type": d.op_type, "reason": d.reason, "graph": d.graph}
                for d in plan.skipped_nodes
            ],
        },
        "integer_weights": len(integer_weight_names(result.model)),  # counted in the written file
        "planned_weights": len(weights),
        "float_weights": float_weight_names(result.model),
        "calibration": calibration,
        "check": check,
        "notes": notes + plan.notes,
        "warnings": warnings,
        "versions": versions(),
        "seed": result.recipe.seed,
        "cpu": cpu,
    }


def _kernel_nodes(plan: QuantPlan, kernels: dict[str, list[dict[str, Any]]] | None) -> dict[str, Any]:
    """The report's node lists: ``quantized`` holds only the nodes that run an integer kernel; nodes
    that only move integer data (Reshape, Flatten, MaxPool ... between kernels), only store integers,
    were folded away, run float16, or run in float despite the plan are listed apart
    (``export.kernels``).  Without a census (no check ran) every planned node is listed
    under ``planned`` and ``quantized`` is not claimed."""
    planned = [{"node": d.node, "op_type": d.op_type} for d in plan.quantized_nodes]
    if kernels is None:
        return {"quantized": [], "planned": planned, "kernels_measured": False}
    return {
        "quantized": kernels["integer"],
        "moves_integer": kernels["moves"],
        "storage_only": kernels["storage_only"],
        "folded": kernels["folded"],
        "float16": kernels["float16"],
        "planned_float": kernels["float"],
        "planned": planned,
        "kernels_measured": True,
    }
