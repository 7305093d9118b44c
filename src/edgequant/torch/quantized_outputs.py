"""The PyTorch files ``edgequant quantize`` writes beside the ONNX model for a PyTorch input.

* ``--method static`` on an ``nn.Module`` (``--factory``/``--checkpoint`` or a module in Python):
  ``<name>_<tag>.pth``, the integer model of ``edgequant.torch.artifact`` (int8/int16 weight codes
  with their per-channel or per-tensor scale and zero point, int32 bias codes or float biases, frozen
  activation quantizers).  The weight and bias codes are the ones the QDQ model holds (read from its
  DequantizeLinear initializers, so AdaRound's rounding and corrected biases are kept), the
  activation scales and zero points are the plan's.  Load it with ``edgequant.torch.load(path,
  factory)``.  Before it is kept, the integer module runs the check's samples next to the QDQ model
  in ONNX Runtime; the report's ``torch`` section records the max |Δ| and the SQNR between the two,
  and a module under ``MIN_AGREEMENT_DB`` is not written (the note says why).
* ``--method dynamic|fp16`` on a module with ``nn.LSTM``/``nn.GRU``: ``<name>_<tag>.pt``, the module
  quantized by ``torch.ao.quantization.quantize_dynamic`` (LSTM, GRU and Linear; ``torch.qint8`` for
  dynamic, ``torch.float16`` for fp16), traced with ``torch.jit.trace`` and saved with
  ``torch.jit.save``: plain PyTorch runs it with ``torch.jit.load(path)``.  Its output SQNR against
  the float PyTorch module on the check's samples sits in ``report["torch"]`` beside the ONNX model's
  (``report["check"]["output_sqnr_db"]``), per output.

A TorchScript input (static) gets the same ``.pth``: the archive is read as an fx graph by
``edgequant.torch.torchscript.to_fx`` (PyTorch's TorchScript converter, ATen conv/linear/batch-norm
calls turned back into modules); the file records the per-sample input shapes, and
``edgequant.torch.load(path, torch.jit.load(archive))`` converts the archive the same way.

Anything else (a TorchScript input with dynamic/fp16, a graph torch.fx cannot trace or bind, weight-only, a
dynamic/fp16 model without recurrent layers) writes no PyTorch file, and ``report["torch"]`` says why
(``not_written``); the CLI prints it as a note.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from edgequant.errors import EdgeQuantError
from edgequant.result import QuantResult
from edgequant.schemes import sqnr_db

MIN_AGREEMENT_DB = 30.0  # the integer module against the QDQ model in ORT (measured: 40-60 dB, 1-LSB steps)
RNN_TYPES = (nn.LSTM, nn.GRU)


def attach(result: QuantResult, module: nn.Module, calibration: Any, runtime: Any) -> None:
    """Add the PyTorch file to ``result.artifacts`` and the ``torch`` section to its report."""
    from edgequant.check import check_batches

    method = result.recipe.method
    section: dict[str, Any] = {"method": method}
    result.report["torch"] = section
    script = isinstance(module, torch.jit.ScriptModule)
    if script and method != "static":
        section["not_written"] = (
            f"method {method}: the input is a TorchScript archive, whose layers torch.ao cannot swap; pass "
            "--factory/--checkpoint for the torch.ao model (static writes the integer .pth from TorchScript)."
        )
        return
    if method not in ("static", "dynamic", "fp16"):
        section["not_written"] = f"method {method}: PyTorch files are written for static, dynamic and fp16."
        return
    if method != "static" and not any(isinstance(m, RNN_TYPES) for m in module.modules()):
        section["not_written"] = (
            f"method {method}: the torch.ao model is written for LSTM/GRU models (the RNN users' path); this "
            "model has no nn.LSTM or nn.GRU."
        )
        return
    batches, kind, _note, description = check_batches(
        result.float_model, calibration, result.recipe, calibrated=method == "static"
    )
    section["data"], section["samples_kind"] = description, kind
    try:
        if script:  # the archive as an fx graph of Conv/Linear/BN modules (edgequant.torch.torchscript)
            from edgequant.torch.torchscript import to_fx

            names = _inputs(result.float_model)
            examples = tuple(torch.from_numpy(np.ascontiguousarray(batches[0][n])) for n in names)
            module = to_fx(module, examples)  # type: ignore[arg-type]
            section["torchscript"] = {"input_shapes": [list(t.shape[1:]) for t in examples]}
        if method == "static":
            _integer(result, module, batches, runtime, section)
        else:
            _dynamic(result, module, batches, section)
    except EdgeQuantError as exc:
        result.artifacts.pop(".pth", None)
        result.artifacts.pop(".pt", None)
        section["not_written"] = str(exc)


def _inputs(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _torch_outputs(module: nn.Module, batch: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
    with torch.no_grad():
        y = module(*[torch.from_numpy(np.ascontiguousarray(batch[n])) for n in names])
    if isinstance(y, torch.Tensor):
        y = (y,)
    flat: list[torch.Tensor] = []
    for t in y:
        flat.extend([t] if isinstance(t, torch.Tensor) else list(t))
    return [t.detach().float().numpy() for t in flat]


def _dq_values(qdq: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The float value of every DequantizeLinear whose operands are initializers, by its output name."""
    inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    out: dict[str, np.ndarray] = {}
    for n in qdq.graph.node:
        if n.op_type != "DequantizeLinear" or any(i not in inits for i in n.input if i):
            continue
        q = inits[n.input[0]].astype(np.float64)
        s = inits[n.input[1]].astype(np.float64)
        z = inits[n.input[2]].astype(np.float64) if len(n.input) > 2 and n.input[2] else np.zeros_like(s)
        if s.ndim == 1 and s.size > 1:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            view = [1] * q.ndim
            view[axis] = -1
            s, z = s.reshape(view), z.reshape(view)
        out[n.output[0]] = ((q - z) * s).astype(np.float32)
    return out


def _qdq_weights(float_model: onnx.ModelProto, qdq: onnx.ModelProto) -> onnx.ModelProto:
    """A model holding only initializers: each Conv/Gemm/MatMul weight and bias (GRU/LSTM/RNN W and R) as
    the QDQ model has it (dequantized codes, or the float tensor it keeps), under the float model's names."""
    dq = _dq_values(qdq)
    q_inits = {t.name: numpy_helper.to_array(t) for t in qdq.graph.initializer}
    q_nodes = {n.name: n for n in qdq.graph.node}
    tensors = []
    for node in float_model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul", "GRU", "LSTM", "RNN") or node.name not in q_nodes:
            continue
        qn = q_nodes[node.name]
        for slot in (1, 2):  # weight and bias; a recurrent op's W and R
            if slot >= len(node.input) or not node.input[slot]:
                continue
            src = qn.input[slot]
            value = dq.get(src, q_inits.get(src))
            if value is not None:
                tensors.append(numpy_helper.from_array(np.asarray(value, np.float32), node.input[slot]))
    return helper.make_model(helper.make_graph([], "weights", [], [], initializer=tensors))


def _integer(
    result: QuantResult,
    module: nn.Module,
    batches: list[dict[str, np.ndarray]],
    runtime: Any,
    section: dict[str, Any],
) -> None:
    from edgequant.torch import artifact
    from edgequant.torch.graph import bind, fuse_layers, trace

    names = _inputs(result.float_model)
    gm = fuse_layers(trace(copy.deepcopy(module).eval()))
    examples = tuple(torch.from_numpy(np.ascontiguousarray(batches[0][n])) for n in names)
    binding = bind(gm, examples, result.float_model, result.plan)
    layers, acts = artifact.int_parts(
        gm, binding, _qdq_weights(result.float_model, result.model), result.plan
    )
    floats = artifact.float_state(gm, layers)  # before build_int_module swaps gm's layers in place
    int_module = artifact.build_int_module(gm, layers, acts)
    worst_db, worst_diff = float("inf"), 0.0
    outs = [o.name for o in result.model.graph.output]
    for b in batches:
        ref = runtime.run(result.model, {n: b[n] for n in names}, outs)
        got = _torch_outputs(int_module, b, names)
        for name, g in zip(outs, got, strict=False):
            worst_db = min(worst_db, sqnr_db(ref[name], g))
            worst_diff = max(worst_diff, float(np.max(np.abs(ref[name].astype(np.float64) - g))))
    section["sqnr_db_vs_onnx"] = round(worst_db, 2) if np.isfinite(worst_db) else None
    section["max_abs_diff_vs_onnx"] = worst_diff
    if worst_db < MIN_AGREEMENT_DB:
        section["not_written"] = (
            f"the integer PyTorch module differs from the QDQ model by {worst_db:.1f} dB SQNR (< "
            f"{MIN_AGREEMENT_DB:g} dB), so it is not written."
        )
        return
    buf = io.BytesIO()
    content: dict[str, Any] = {"format": artifact.FORMAT, "layers": layers, "acts": acts, "float": floats}
    if "torchscript" in section:  # load(path, torch.jit.load(archive)) converts the archive the same way
        content["torchscript"] = section["torchscript"]
    torch.save(content, buf)
    result.artifacts[".pth"] = buf.getvalue()
    how = "torch.jit.load(archive)" if "torchscript" in section else "factory"
    section["kind"] = f"integer weights + quantization parameters (load: edgequant.torch.load(path, {how}))"


def _dynamic(
    result: QuantResult, module: nn.Module, batches: list[dict[str, np.ndarray]], section: dict[str, Any]
) -> None:
    dtype = torch.qint8 if result.recipe.method == "dynamic" else torch.float16
    names = _inputs(result.float_model)
    float_module = copy.deepcopy(module).eval()
    with warnings.catch_warnings():  # torch.ao's deprecation notices; the module is what is asked for
        warnings.simplefilter("ignore")
        qmodule = torch.ao.quantization.quantize_dynamic(
            float_module, {nn.LSTM, nn.GRU, nn.Linear}, dtype=dtype, inplace=False
        )
        example = tuple(torch.from_numpy(np.ascontiguousarray(batches[0][n])) for n in names)
        traced = torch.jit.trace(qmodule, example, check_trace=False)
    outs = [o.name for o in result.float_model.graph.output]
    per: dict[str, list[float]] = {}
    for b in batches:
        ref = _torch_outputs(float_module, b, names)
        got = _torch_outputs(traced, b, names)
        for name, r, g in zip(outs, ref, got, strict=False):
            per.setdefault(name, []).append(sqnr_db(r, g))
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit.save's deprecation notice: plain torch.jit.load reads it
        warnings.simplefilter("ignore")
        torch.jit.save(traced, buf)
    result.artifacts[".pt"] = buf.getvalue()
    section["kind"] = (
        f"torch.ao dynamic quantization ({'qint8' if dtype == torch.qint8 else 'float16'}: LSTM, GRU, Linear), "
        "TorchScript (load: torch.jit.load(path))"
    )
    section["output_sqnr_db"] = {k: round(float(np.mean(v)), 2) for k, v in per.items()}
    section["onnx_output_sqnr_db"] = dict(result.report.get("check", {}).get("output_sqnr_db", {}))
