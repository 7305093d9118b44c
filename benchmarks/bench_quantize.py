"""EdgeQuant vs ONNX Runtime's own quantization tool, side by side, same model / data / settings.

Per model (see benchmarks/models/): static per-channel INT8 QDQ (weights int8 symmetric per channel,
activations uint8 asymmetric) with minmax / entropy / percentile (99.99) calibration by both tools,
each run in its own subprocess (wall time, peak RSS; killed as "timeout"/"OOM" past the limits);
at 100 and 1,000 calibration samples.  ORT is run as documented (quantize_static, QuantFormat.QDQ,
QUInt8 activations, QInt8 weights) and also after its recommended quant_pre_process ("ort+pre").
Then: file size (+ EdgeQuant's packed size), SQNR of the main output vs float and the task metric on a
separate evaluation set, ORT CPU latency at 1 and 2 threads (median of >= 30 runs after warm-up, fixed
batch) vs float, the op census of the graph ORT really runs, and dynamic INT8 (both tools) vs float.

    .venv/bin/python benchmarks/bench_quantize.py            # all models, writes benchmarks/results/
    .venv/bin/python benchmarks/bench_quantize.py --quick    # example CNN only, < 3 minutes
    .venv/bin/python benchmarks/bench_quantize.py --models ocr_rec --samples 100
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models
from models.harness import file_kib, latency_ms, optimized_census, run_worker, runner, worker

CALIBS = ("minmax", "entropy", "percentile")
PERCENTILE = 99.99
RESULTS = Path(__file__).resolve().parent / "results"


def md(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "inf" if math.isinf(v) else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _spec(
    m: models.BenchModel, tool: str, calib: str, n: int, per_channel: bool, tmp: Path, mode: str = "static"
) -> dict[str, Any]:
    tag = f"{tool.replace('+', '_')}_{mode}_{calib}_{n}_{'pc' if per_channel else 'pt'}"
    return {
        "tool": tool,
        "mode": mode,
        "calib": calib,
        "samples": n,
        "per_channel": per_channel,
        "model": str(m.path),
        "data": str(tmp / f"calib{n}") if mode == "static" else None,
        "batch": m.calib_batch,
        "percentile": PERCENTILE,
        "out": str(tmp / f"{tag}.onnx"),
        "tag": tag,
    }


def _evaluate(m: models.BenchModel, path: Path, ref: dict[str, Any]) -> dict[str, Any]:
    got = m.predict(runner(path))
    return {"sqnr_db": m.output_sqnr(ref, got), **m.metrics(ref, got)}


def bench_model(name: str, args: argparse.Namespace, out: list[str]) -> dict[str, Any]:
    m = models.load(name)
    tmp = Path(tempfile.mkdtemp(prefix=f"bq_{name}_"))
    t_all = time.perf_counter()
    for n in args.samples:
        models.DataFiles.write(tmp / f"calib{n}", m.make_calib(n, 0), m.unbatched)
    ref = m.predict(runner(m.path))
    float_metrics = m.metrics(ref, ref)
    base = run_worker(_spec(m, "baseline", "-", args.samples[0], True, tmp), args.timeout, args.max_rss_mib)
    rows: list[dict[str, Any]] = []

    def run(tool: str, calib: str, n: int, pc: bool, mode: str = "static") -> dict[str, Any]:
        spec = _spec(m, tool, calib, n, pc, tmp, mode)
        res = run_worker(spec, args.timeout, args.max_rss_mib)
        res.update(tool=tool, calib=calib, samples=n, per_channel=pc, mode=mode, path=spec["out"])
        if res["status"] == "ok":
            try:
                res.update(_evaluate(m, Path(spec["out"]), ref), file_kib=file_kib(Path(spec["out"])))
            except Exception as exc:
                res.update(status="output invalid", error=f"{type(exc).__name__}: {str(exc)[:240]}")
        print(
            f"  {name} {spec['tag']}: {res['status']} {res.get('seconds', 0):.2f}s "
            f"{res['peak_mib']:.0f}MiB sqnr={res.get('sqnr_db', float('nan')):.2f} {res.get('error', '')}",
            file=sys.stderr,
            flush=True,
        )
        rows.append(res)
        return res

    for n in args.samples:
        for calib in CALIBS:
            for tool in args.tools if n == args.samples[0] else ("edgequant", "ort"):
                run(tool, calib, n, True)
    for tool in args.tools:
        run(tool, "minmax", args.samples[0], False)
    dyn = [run(tool, "-", 0, True, "dynamic") for tool in ("edgequant", "ort")]

    out.append(
        f"## {m.title}\n\nsource: `{m.source}` ({file_kib(m.path):.0f} KiB float); "
        f"calibration batch {m.calib_batch}; float metrics on the eval set: "
        + ", ".join(f"{k} {v:.4g}" for k, v in float_metrics.items() if not k.startswith("float_"))
        + (f"; {'; '.join(m.notes)}" if m.notes else "")
        + f"; baseline RSS (imports + model + one batch): {base['peak_mib']:.0f} MiB\n"
    )
    metric_keys = [k for k in float_metrics if k not in ("top1_agree", "float_cer", "float_accuracy")]
    metric_keys = [k for k in metric_keys if k not in ("step_agree", "frame_agree", "max_abs_dp")]
    metric_keys += [
        k for k in ("top1_agree", "step_agree", "frame_agree", "max_abs_dp") if k in float_metrics
    ]
    static = [r for r in rows if r["mode"] == "static" and r["samples"] == args.samples[0]]
    out.append(f"### Static INT8 QDQ, {args.samples[0]} calibration samples\n")
    out.append(
        md(
            [
                "tool",
                "calib",
                "weights",
                "status",
                "wall s",
                "peak RSS MiB",
                "file KiB",
                "packed KiB",
                "SQNR dB",
                *metric_keys,
            ],
            [
                [
                    r["tool"],
                    r["calib"],
                    "per-channel" if r["per_channel"] else "per-tensor",
                    r["status"],
                    r.get("seconds", "-"),
                    r["peak_mib"],
                    r.get("file_kib", "-"),
                    r["sizes"]["packed_bytes"] / 1024 if r.get("sizes") else "-",
                    r.get("sqnr_db", "-"),
                    *[r.get(k, "-") for k in metric_keys],
                ]
                for r in static
            ],
        )
        + "\n"
    )
    errors = [r for r in rows if r["status"] in ("error", "output invalid")]
    if errors:
        out.append(
            "Errors:\n\n"
            + "\n".join(
                f"- {r['tool']} {r['mode']} {r['calib']} {r['samples']}: `{r['error']}`" for r in errors
            )
            + "\n"
        )
    if len(args.samples) > 1:
        out.append(_scaling_table(rows, args.samples))
    lat_models = {"float": m.path}
    for r in rows:
        if r["status"] == "ok" and (
            r["mode"] == "dynamic"
            or (r["calib"] == "minmax" and r["per_channel"] and r["samples"] == args.samples[0])
        ):
            lat_models[f"{r['tool']} {'dynamic' if r['mode'] == 'dynamic' else 'static minmax'}"] = Path(
                r["path"]
            )
    feeds = m.latency_feed()
    lat = {t: latency_ms(lat_models, feeds, t, runs=args.runs) for t in (1, 2)}
    shape = ", ".join(f"{k} {list(v.shape)}" for k, v in feeds.items())
    out.append(
        f"### ORT CPU latency (median of {args.runs} runs after 10 warm-up, interleaved; feed {shape})\n"
    )
    out.append(
        md(
            ["model", "1 thread ms", "x vs float", "2 threads ms", "x vs float"],
            [
                [k, lat[1][k], lat[1]["float"] / lat[1][k], lat[2][k], lat[2]["float"] / lat[2][k]]
                for k in lat_models
            ],
        )
        + "\n"
    )
    census = {k: optimized_census(p, tmp) for k, p in lat_models.items()}
    cols = [c for c in next(iter(census.values())) if not c.startswith("_")]
    out.append("### Graph ORT runs after its optimizations (ORT_ENABLE_ALL, optimized_model_filepath)\n")
    out.append(md(["model", *cols], [[k, *[c[x] for x in cols]] for k, c in census.items()]) + "\n")
    print(f"  {name} done in {time.perf_counter() - t_all:.0f}s", file=sys.stderr, flush=True)
    return {
        "model": name,
        "rows": rows,
        "latency": lat,
        "census": census,
        "float": float_metrics,
        "dynamic": dyn,
        "conv_net": m.conv_net,
        "baseline_mib": base["peak_mib"],
    }


def _scaling_table(rows: list[dict[str, Any]], samples: list[int]) -> str:
    lo, hi = samples[0], samples[-1]
    body = []
    for calib in CALIBS:
        for tool in ("edgequant", "ort"):
            a = next(
                (
                    r
                    for r in rows
                    if r["tool"] == tool
                    and r["calib"] == calib
                    and r["samples"] == lo
                    and r["per_channel"]
                    and r["mode"] == "static"
                ),
                None,
            )
            b = next(
                (
                    r
                    for r in rows
                    if r["tool"] == tool
                    and r["calib"] == calib
                    and r["samples"] == hi
                    and r["per_channel"]
                    and r["mode"] == "static"
                ),
                None,
            )
            if a is None or b is None:
                continue

            def show(r: dict[str, Any], key: str) -> Any:
                if r["status"] == "ok":
                    return r[key]
                return f"{r['status']} (>{r[key]:.0f})" if key in r else r["status"]

            ratio = b["peak_mib"] / a["peak_mib"] if b["status"] == "ok" else "-"
            body.append(
                [
                    calib,
                    tool,
                    show(a, "seconds"),
                    show(b, "seconds"),
                    a["peak_mib"],
                    show(b, "peak_mib"),
                    ratio,
                ]
            )
    return (
        f"### Calibration cost vs sample count ({lo} -> {hi} samples; each in its own process)\n\n"
        + md(
            [
                "calib",
                "tool",
                f"wall s @{lo}",
                f"wall s @{hi}",
                f"peak RSS MiB @{lo}",
                f"peak RSS MiB @{hi}",
                "RSS ratio",
            ],
            body,
        )
        + "\n"
    )


def goals(results: list[dict[str, Any]]) -> str:
    """The issue's goals, checked against the measured numbers (no tuning: what is, is reported)."""
    lines = ["## Goals from the issue, checked\n"]
    for res in results:
        rows, name = res["rows"], res["model"]
        ok = [r for r in rows if r["status"] == "ok" and r["mode"] == "static"]

        def get(tool: str, calib: str, n: int, rows: list[dict[str, Any]] = rows) -> dict[str, Any] | None:
            return next(
                (
                    r
                    for r in rows
                    if r["tool"] == tool
                    and r["calib"] == calib
                    and r["samples"] == n
                    and r["per_channel"]
                    and r["mode"] == "static"
                ),
                None,
            )

        ns = sorted({r["samples"] for r in rows if r["mode"] == "static"})
        for calib in ("entropy", "percentile"):
            for n in ns:
                a, b = get("edgequant", calib, n), get("ort", calib, n)
                if a and b and a["status"] == "ok":
                    sp = (
                        f"{b['seconds'] / a['seconds']:.2f}x" if b["status"] == "ok" else f"ORT {b['status']}"
                    )
                    lines.append(
                        f"- {name}: {calib} calibration @{n} samples, ORT time / ours = {sp} (goal >= 3x)"
                    )
            if len(ns) > 1:
                a, b = get("edgequant", calib, ns[0]), get("edgequant", calib, ns[-1])
                if a and b and a["status"] == b["status"] == "ok":
                    lines.append(
                        f"- {name}: our {calib} peak RSS {ns[0]} -> {ns[-1]} samples: "
                        f"{b['peak_mib'] / a['peak_mib']:.2f}x (goal <= 1.2x)"
                    )
        ours = [r for r in ok if r["tool"] == "edgequant" and r["per_channel"]]
        theirs = [r for r in ok if r["tool"] != "edgequant"]
        if ours and theirs:
            bo, bt = max(ours, key=lambda r: r["sqnr_db"]), max(theirs, key=lambda r: r["sqnr_db"])
            lines.append(
                f"- {name}: best SQNR ours {bo['sqnr_db']:.2f} dB ({bo['calib']}, {bo['samples']}) vs "
                f"ORT best {bt['sqnr_db']:.2f} dB ({bt['tool']} {bt['calib']}, "
                f"{'pc' if bt['per_channel'] else 'pt'}, {bt['samples']}) (goal: ours >= ORT best)"
            )
        for t in (1, 2):
            lat = res["latency"][t]
            if "edgequant static minmax" in lat:
                o = lat["edgequant static minmax"]
                vs = ", ".join(f"{k} {lat[k] / o:.2f}x" for k in lat if k.startswith("ort static"))
                lines.append(
                    f"- {name}, {t} thread(s): ours static {lat['float'] / o:.2f}x faster than float "
                    f"(goal >= 2x on a conv net); other/ours latency: {vs or 'n/a'}"
                )
            if "edgequant dynamic" in lat:
                lines.append(
                    f"- {name}, {t} thread(s): dynamic float/ours {lat['float'] / lat['edgequant dynamic']:.2f}x"
                    + (
                        f", float/ORT {lat['float'] / lat['ort dynamic']:.2f}x"
                        if "ort dynamic" in lat
                        else ""
                    )
                    + " (ours must be >= ~1x)"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="example CNN only, edgequant + ort, fewer runs")
    p.add_argument("--models", nargs="+", default=None, choices=models.NAMES)
    p.add_argument("--samples", nargs="+", type=int, default=[100, 1000])
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per quantization run")
    p.add_argument("--max-rss-mib", type=float, default=6144.0, help="kill a run above this RSS (OOM)")
    p.add_argument("--runs", type=int, default=40, help="timed latency runs per model and thread count")
    p.add_argument("--out", type=Path, default=None, help="markdown output (default benchmarks/results/)")
    p.add_argument(
        "--latency-from",
        type=Path,
        default=None,
        help="re-time the models of an earlier run's .json (e.g. when the machine is quieter)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.latency_from:
        print(relatency(json.loads(args.latency_from.read_text()), args.runs))
        return
    names = args.models or (["shapes"] if args.quick else list(models.NAMES))
    args.tools = ("edgequant", "ort") if args.quick else ("edgequant", "ort", "ort+pre")
    if args.quick:
        args.runs, args.timeout = 30, min(args.timeout, 60.0)
    import onnxruntime

    import edgequant

    out = [
        f"# EdgeQuant {edgequant.__version__} vs onnxruntime.quantization {onnxruntime.__version__}\n",
        f"`{' '.join(sys.argv)}` on {_cpu()}; static = per-channel int8 weights, uint8 activations, QDQ; "
        f"percentile {PERCENTILE}; limits: {args.timeout:.0f} s, {args.max_rss_mib:.0f} MiB RSS per run.\n",
    ]
    results = [bench_model(n, args, out) for n in names]
    out.append(goals(results))
    text = "\n".join(out)
    print(text)
    target = args.out or RESULTS / ("bench_quantize_quick.md" if args.quick else "bench_quantize.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    (target.with_suffix(".json")).write_text(json.dumps(results, indent=1, default=str))


def relatency(results: list[dict[str, Any]], runs: int) -> str:
    """Latency tables again for the models an earlier run wrote (its temporary files must still exist)."""
    out = []
    for res in results:
        m = models.load(res["model"])
        lat_models = {"float": m.path}
        for r in res["rows"]:
            if r["status"] == "ok" and (
                r["mode"] == "dynamic" or (r["calib"] == "minmax" and r["per_channel"])
            ):
                kind = "dynamic" if r["mode"] == "dynamic" else "static minmax"
                lat_models.setdefault(f"{r['tool']} {kind}", Path(r["path"]))
        feeds = m.latency_feed()
        lat = {t: latency_ms(lat_models, feeds, t, runs=runs) for t in (1, 2)}
        out.append(f"### {m.title}: ORT CPU latency, re-run (median of {runs} runs, interleaved)\n")
        out.append(
            md(
                ["model", "1 thread ms", "x vs float", "2 threads ms", "x vs float"],
                [
                    [k, lat[1][k], lat[1]["float"] / lat[1][k], lat[2][k], lat[2]["float"] / lat[2][k]]
                    for k in lat_models
                ],
            )
            + "\n"
        )
    return "\n".join(out)


def _cpu() -> str:
    import os
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
