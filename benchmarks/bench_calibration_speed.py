"""Calibration only, both tools, in one process: ONNX Runtime's calibrator vs edgequant.observe.collect.

``bench_quantize.py`` times each tool's whole quantize call (model load, graph repair, QDQ rewrite and,
for EdgeQuant, a verification run in ORT).  This script times only the step that turns calibration
data into activation ranges, on the same in-memory arrays, batch 10, for both tools:

* ORT (what ``quantize_static`` does between loading the model and quantizing it): ``create_calibrator``
  (writes the augmented model, opens the session) with ``op_types_to_calibrate`` = every op type of
  ``QLinearOpsRegistry`` and ``QDQRegistry`` (what ``quantize_static`` passes when ``op_types_to_quantize``
  is not given), ``calibrator.collect_data(reader)``, ``calibrator.compute_data()``.  Entropy keeps ORT's
  defaults (128 bins); percentile gets ``{"percentile": 99.99}`` (= ``extra_options={"CalibPercentile":
  99.99}``).  The model handed to it is prepared as ``quantize_static`` prepares it (shape inference,
  opset update), untimed.
* EdgeQuant (what ``edgequant.pipeline.quantize`` times as ``seconds["calibration"]``): ``open_source``
  over the arrays and ``observe.collect(model, source, plan.activations(), ...)`` with the arguments
  ``pipeline._calibrate`` passes; model load, ``prepare``, ``planner.resolve`` (recipe
  ``preset("int8-static", calib_method=..., calib_samples=N, batch_size=10, percentile=99.99)``) are
  untimed.

Each cell: one warm-up run, then ``--repeats`` timed runs (default 3), median reported; the two tools
alternate run by run so a load spike on the shared machine hits both.  "tensors" is how many tensors
each tool calibrates (ORT: entries of its TensorsData; ours: activations in the plan).

    .venv/bin/python benchmarks/bench_calibration_speed.py
    .venv/bin/python benchmarks/bench_calibration_speed.py --models shapes --samples 100 --profile
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import cProfile
import io
import math
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models

_ROOT = Path(__file__).resolve().parents[1]
BATCH = 10
PERCENTILE = 99.99
METHODS = ("entropy", "percentile", "minmax")
Feeds = dict[str, np.ndarray]


class Case:
    """One model, prepared once for both tools (untimed); ``ort()`` and ``ours()`` time calibration."""

    def __init__(self, name: str, tmp: Path) -> None:
        from onnxruntime.quantization.qdq_quantizer import QDQQuantizer  # noqa: F401  (registries)
        from onnxruntime.quantization.quant_utils import QuantType, load_model_with_shape_infer
        from onnxruntime.quantization.quantize import update_opset_version
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        import edgequant
        from edgequant import planner
        from edgequant.model import load_model, prepare
        from edgequant.runtime import OrtRuntime, detect

        self.bench = models.load(name)
        self.tmp = tmp
        path = self.bench.path
        # ORT: as quantize_static prepares its input (QUInt8 activations, QInt8 weights).
        self.ort_op_types = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))
        ort_model = load_model_with_shape_infer(Path(path))
        updated = update_opset_version(ort_model, QuantType.QInt8, QuantType.QUInt8)
        self.ort_path = tmp / f"{name}_ort_input.onnx"
        if updated is not ort_model:  # quantize_static then calibrates a saved copy of the updated model
            onnx.save_model(updated, str(self.ort_path), save_as_external_data=True)
        else:
            self.ort_path = Path(path)
        # EdgeQuant: as pipeline.quantize prepares its model and plan.
        self.runtime = OrtRuntime(allow_spinning=False)
        self.float_model, notes = prepare(load_model(path))
        self.cpu = detect()
        self.planner, self.eq_version = planner, edgequant.__version__
        self._notes = notes

    def plan(self, method: str, n: int) -> tuple[Any, Any, onnx.ModelProto]:
        from edgequant import pipeline
        from edgequant.recipe import preset

        recipe = preset(
            "int8-static", calib_method=method, calib_samples=n, batch_size=BATCH, percentile=PERCENTILE
        )
        plan = self.planner.resolve(self.float_model, recipe, self.cpu)
        model, plan = pipeline._raise_opset(self.float_model, plan, list(self._notes))
        return recipe, plan, model

    def _calibrator(self, method: str, work: str) -> Any:
        from onnxruntime.quantization import CalibrationMethod
        from onnxruntime.quantization.calibrate import create_calibrator

        calib = {
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[method]
        return create_calibrator(
            self.ort_path,
            self.ort_op_types,
            augmented_model_path=str(Path(work) / "augmented_model.onnx"),
            calibrate_method=calib,
            extra_options={"percentile": PERCENTILE} if method == "percentile" else {},
        )

    def ort_held_bytes(self, method: str, data: Feeds) -> int:
        """What ORT's calibrator keeps until compute_data: its session's outputs for one batch x batches."""
        with tempfile.TemporaryDirectory(prefix="ort.quant.", dir=self.tmp) as work:
            calibrator = self._calibrator(method, work)
            outs = calibrator.infer_session.run(None, {k: v[:BATCH] for k, v in data.items()})
            per_batch = sum(int(np.asarray(o).nbytes) for o in outs)
            del calibrator, outs
        n = len(next(iter(data.values())))
        return per_batch * -(-n // BATCH)

    def ort(self, method: str, data: Feeds) -> tuple[float, int]:
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):  # type: ignore[misc]
            def __init__(self) -> None:
                self.n = len(next(iter(data.values())))
                self.i = 0

            def get_next(self) -> Feeds | None:
                if self.i >= self.n:
                    return None
                batch = {k: v[self.i : self.i + BATCH] for k, v in data.items()}
                self.i += BATCH
                return batch

            def rewind(self) -> None:
                self.i = 0

        with (
            tempfile.TemporaryDirectory(prefix="ort.quant.", dir=self.tmp) as work,
            contextlib.redirect_stdout(io.StringIO()),  # its calibrators print progress
        ):
            t0 = time.perf_counter()
            calibrator = self._calibrator(method, work)
            calibrator.collect_data(Reader())
            ranges = calibrator.compute_data()
            seconds = time.perf_counter() - t0
            count = len(ranges.data)
            del calibrator, ranges
        return seconds, count

    def ours(self, method: str, data: Feeds, prepared: tuple[Any, Any, onnx.ModelProto]) -> tuple[float, int]:
        from edgequant import pipeline
        from edgequant.model.patterns import bounded_outputs
        from edgequant.observe import collect

        recipe, plan, model = prepared
        plan = copy.deepcopy(plan)
        t0 = time.perf_counter()
        source = pipeline._source(data, model, recipe)
        act = next(plan.tensors[n].spec for n in plan.activations())
        res = collect(  # the call of pipeline._calibrate, argument for argument
            model,
            source,
            plan.activations(),
            method=recipe.calib_method,
            percentile=recipe.percentile,
            qbits=act.bits,
            symmetric=act.symmetric,
            runtime=self.runtime,
            max_samples=recipe.calib_samples,
            progress=None,
            full_range=bounded_outputs(model) if recipe.calib_method != "minmax" else (),
        )
        seconds = time.perf_counter() - t0
        if res.samples != recipe.calib_samples:
            raise SystemExit(f"edgequant saw {res.samples} samples, expected {recipe.calib_samples}")
        return seconds, len(res.ranges)


def measure(case: Case, method: str, n: int, data: Feeds, repeats: int, ort_max_bytes: int) -> dict[str, Any]:
    prepared = case.plan(method, n)
    ort_t: list[float] = []
    our_t: list[float] = []
    ort_count = our_count = 0
    held = case.ort_held_bytes(method, data)
    ort_skip = (
        f"not run: ORT would hold {held / 2**30:.1f} GiB of outputs until compute_data (> --ort-max-gib)"
        if held > ort_max_bytes
        else ""
    )
    for i in range(repeats + 1):  # i == 0: warm-up
        if not ort_skip:
            s, ort_count = case.ort(method, data)
            if i:
                ort_t.append(s)
        s, our_count = case.ours(method, data, prepared)
        if i:
            our_t.append(s)
    ort_s, our_s = (statistics.median(ort_t) if ort_t else math.nan), statistics.median(our_t)
    return {
        "model": case.bench.name,
        "method": method,
        "samples": n,
        "ort_s": ort_s,
        "ours_s": our_s,
        "ratio": ort_s / our_s,
        "ort_held_bytes": held,
        "ort_skip": ort_skip,
        "ort_runs": ort_t,
        "our_runs": our_t,
        "ort_tensors": ort_count,
        "our_tensors": our_count,
    }


def profile_ours(case: Case, method: str, n: int, data: Feeds, top: int = 25) -> str:
    prepared = case.plan(method, n)
    case.ours(method, data, prepared)  # warm
    prof = cProfile.Profile()
    prof.enable()
    seconds, _ = case.ours(method, data, prepared)
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return f"wall {seconds:.3f} s under cProfile\n" + out.getvalue()


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3g}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | method | samples | ORT s | EdgeQuant s | ratio ORT/ours | tensors ORT | tensors ours "
        "| ORT held MiB | ORT runs s | ours runs s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['method']} | {r['samples']} | {_fmt(r['ort_s'])} | {_fmt(r['ours_s'])} "
            f"| {_fmt(r['ratio'])} | {r['ort_tensors'] or '-'} | {r['our_tensors']} "
            f"| {r['ort_held_bytes'] / 2**20:.0f} | {', '.join(_fmt(t) for t in r['ort_runs']) or r['ort_skip']} "
            f"| {', '.join(_fmt(t) for t in r['our_runs'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["shapes", "ocr_cls"], choices=models.NAMES)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--samples", nargs="+", type=int, default=[100, 1000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ort-max-gib", type=float, default=2.0, help="skip ORT where it would hold more")
    ap.add_argument("--profile", action="store_true", help="cProfile our calibration for rows under 3x")
    ap.add_argument("--out", type=Path, default=_ROOT / "benchmarks/results/bench_calibration_speed.md")
    args = ap.parse_args(argv)
    if any(n % BATCH for n in args.samples):
        raise SystemExit(f"--samples must be multiples of {BATCH} (ORT's histogram calibrators need it)")
    import onnxruntime

    rows: list[dict[str, Any]] = []
    profiles: list[str] = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-calib-speed-") as tmp:
        for name in args.models:
            case = Case(name, Path(tmp))
            for n in args.samples:
                data = case.bench.make_calib(n, 0)
                for method in args.methods:
                    row = measure(case, method, n, data, args.repeats, int(args.ort_max_gib * 2**30))
                    rows.append(row)
                    print(table([row]).splitlines()[-1], flush=True)
                    if args.profile and not row["ratio"] >= 3.0:
                        profiles.append(
                            f"### {name} {method} {n} samples (ratio {row['ratio']:.2f})\n\n```\n"
                            + profile_ours(case, method, n, data)
                            + "```"
                        )
    total = time.perf_counter() - t_start
    cmd = "benchmarks/bench_calibration_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    head = (
        f"# Calibration only: EdgeQuant {case.eq_version} vs onnxruntime.quantization {onnxruntime.__version__}"
        f"\n\n`{cmd.strip()}` on {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; batch {BATCH}; median of {args.repeats} runs after 1 warm-up, the "
        f"tools alternating; percentile {PERCENTILE}; total {total:.0f} s.\n\n"
        "ORT s = create_calibrator + collect_data + compute_data (quantize_static's op types); EdgeQuant s = "
        "open_source + observe.collect as pipeline._calibrate calls it. Model load/repair/plan/export "
        "untimed for both.\n\n"
    )
    text = head + table(rows) + "\n"
    if profiles:
        text += "\n## Where our time goes (rows under 3x)\n\n" + "\n\n".join(profiles) + "\n"
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    part = args.out.with_name(args.out.name + ".tmp")
    part.write_text(text)
    os.replace(part, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
