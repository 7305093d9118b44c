"""A model above protobuf's 2 GB limit (weights as external data) through EdgeQuant and ORT's tool.

The model: ``layers`` x (MatMul with a [dim, dim] float32 weight -> Add bias -> Relu) on input
[N, dim]; 9 layers of 8192 x 8192 weigh 9 * 268 MB = 2.4 GB.  Weights are He-initialised
(normal, std sqrt(2 / dim), seed 0) and written layer by layer straight into ``model.onnx.data``
(the .onnx header records offset and length of each), so building needs one layer in memory.

Each run is its own process, started from this small parent: ``edgequant inspect``, then
``edgequant quantize`` static int8 (minmax, 16 calibration samples), dynamic int8 and weight-only
int4 (block 128), then ORT's ``quantize_dynamic`` / ``quantize_static`` with
``use_external_data_format=True``.  The parent polls ``/proc/<pid>/status`` and kills a run past
``--timeout`` s ("timeout") or ``--max-rss-gib`` resident ("OOM").  Peak RSS is the child's
``ru_maxrss`` from ``wait4`` (the parent stays small, so the high-water mark Linux carries across
fork+exec is the parent's ~100 MB, below every number shown), or the last polled ``VmHWM`` for a
killed run.  Every output is then loaded by path in ORT in a fresh process and run on 4 held-out
seeded samples; SQNR = 10 log10(sum(ref^2) / sum((ref - q)^2)) of the last output vs float.

    python benchmarks/bench_large_model.py                       # 9 x 8192 (2.4 GB), ~25 min
    python benchmarks/bench_large_model.py --layers 2 --dim 1024 # a quick dry run (20 s)
    ... --workdir DIR --only static   # keep the built model in DIR (not removed), run a subset
    ... --edgequant "python wrapper.py"  # another command for the CLI (e.g. with a patch applied)

Disk: the model (2.4 GB) plus one run's outputs at a time (each run's folder is removed after
its check); the temp dir is removed at the end unless --workdir was given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
_EQ = [str(Path(sys.executable).with_name("edgequant"))]
SCRIPT = Path(__file__).resolve()


def build_model(folder: Path, layers: int, dim: int, seed: int = 0) -> Path:
    """Write ``model.onnx`` + ``model.onnx.data`` (all weights external), one layer in memory at a time."""
    import onnx
    from onnx import TensorProto, helper

    path, data_name = folder / "model.onnx", "model.onnx.data"
    rng = np.random.default_rng(seed)
    nodes, inits, offset = [], [], 0
    prev = "input"
    with open(folder / data_name, "wb") as data:
        for i in range(layers):
            for name, shape in ((f"w{i}", (dim, dim)), (f"b{i}", (dim,))):
                if name.startswith("w"):
                    arr = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / dim))
                else:
                    arr = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)).astype(np.float32)
                raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
                data.write(raw)
                t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape))
                t.data_location = TensorProto.EXTERNAL
                for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                    t.external_data.add(key=k, value=v)
                inits.append(t)
                offset += len(raw)
                del arr, raw
            out = "output" if i == layers - 1 else f"relu{i}"
            nodes += [
                helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"),
                helper.make_node("Add", [f"mm{i}", f"b{i}"], [f"add{i}"], name=f"add{i}"),
                helper.make_node("Relu", [f"add{i}"], [out], name=f"relu{i}"),
            ]
            prev = out
        data.flush()
        os.fsync(data.fileno())
    graph = helper.make_graph(
        nodes,
        "large_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    onnx.checker.check_model(str(path))  # by path: reads the headers, checks external data exists
    return path


def _rss_mib(pid: int | str, field: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run_child(cmd: list[str], timeout: float, max_rss_gib: float) -> dict[str, Any]:
    """Run ``cmd``; wall time, peak RSS (MiB), status (ok / failed / OOM / timeout), output tails."""
    out, err = tempfile.TemporaryFile(mode="w+"), tempfile.TemporaryFile(mode="w+")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=_ROOT)
    status, hwm = "ok", 0.0
    while True:
        pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = _rss_mib(proc.pid, "VmRSS:")
        hwm = max(hwm, rss, _rss_mib(proc.pid, "VmHWM:"))
        if rss > max_rss_gib * 1024:
            status = "OOM"
        elif time.monotonic() - t0 > timeout:
            status = "timeout"
        if status != "ok":
            os.kill(proc.pid, signal.SIGKILL)
            pid, wstatus, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    seconds = time.monotonic() - t0
    code = os.waitstatus_to_exitcode(wstatus)
    if status == "ok" and code != 0:
        status = f"failed (exit {code})"
    out.seek(0)
    err.seek(0)
    peak = usage.ru_maxrss / 1024.0 if status == "ok" or status.startswith("failed") else hwm
    return {
        "status": status,
        "seconds": round(seconds, 1),
        "peak_rss_mib": round(max(peak, hwm), 0),
        "stdout": out.read()[-3000:],
        "stderr": err.read()[-3000:],
    }


def ort_worker(mode: str, model: str, out: str, calib: str) -> None:
    """Child side of the ORT runs: quantize_dynamic / quantize_static with external data."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if mode == "dynamic":
        quantize_dynamic(model, out, weight_type=QuantType.QInt8, use_external_data_format=True)
        return
    samples = np.load(calib)

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(samples):
                return None
            batch = {"input": samples[self.i : self.i + 8]}
            self.i += 8
            return batch

        def rewind(self) -> None:
            self.i = 0

    quantize_static(
        model,
        out,
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        use_external_data_format=True,
    )


def verify_worker(float_path: str, quant_path: str, feeds_path: str) -> None:
    """Load both models by path in ORT (one at a time), run the held-out feeds, print SQNR as JSON."""
    import onnxruntime as ort

    x = np.load(feeds_path)
    so = ort.SessionOptions()
    so.log_severity_level = 3

    def outputs(path: str) -> np.ndarray:
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        y = sess.run(None, {"input": x})[0]
        del sess
        return np.asarray(y, dtype=np.float64)

    ref = outputs(float_path)
    got = outputs(quant_path)
    noise = float(np.sum((ref - got) ** 2))
    sqnr = 10 * np.log10(float(np.sum(ref**2)) / noise) if noise > 0 else float("inf")
    print(json.dumps({"sqnr_db": round(sqnr, 2), "max_abs_ref": float(np.abs(ref).max())}))


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


def _model_in(folder: Path) -> Path | None:
    found = sorted(p for p in folder.glob("*.onnx") if not p.name.startswith("."))
    return found[0] if found else None


def runs(model: Path, calib: Path, work: Path, cli: list[str]) -> list[tuple[str, list[str], Path]]:
    py = [sys.executable, str(SCRIPT)]
    eq = [*cli, "quantize", str(model)]
    static = ["--method", "static", "--calib-method", "minmax", "--calib-samples", "16"]
    return [
        ("edgequant inspect", [*cli, "inspect", str(model)], work / "inspect"),
        (
            "edgequant static int8",
            [*eq, "-o", str(work / "eq_static"), *static, "--calib-data", str(calib)],
            work / "eq_static",
        ),
        (
            "edgequant dynamic int8",
            [*eq, "-o", str(work / "eq_dynamic"), "--method", "dynamic"],
            work / "eq_dynamic",
        ),
        (
            "edgequant weight-only int4 b128",
            [
                *eq,
                "-o",
                str(work / "eq_int4"),
                "--method",
                "weight-only",
                "--weight-bits",
                "4",
                "--block-size",
                "128",
            ],
            work / "eq_int4",
        ),
        (
            "ORT quantize_dynamic",
            [*py, "--ort", "dynamic", str(model), str(work / "ort_dynamic" / "model_q.onnx"), str(calib)],
            work / "ort_dynamic",
        ),
        (
            "ORT quantize_static",
            [*py, "--ort", "static", str(model), str(work / "ort_static" / "model_q.onnx"), str(calib)],
            work / "ort_static",
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=9)
    ap.add_argument("--dim", type=int, default=8192)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--max-rss-gib", type=float, default=12.0)
    ap.add_argument(
        "--workdir", type=Path, default=None, help="Kept afterwards (default: a temp dir, removed)."
    )
    ap.add_argument("--edgequant", default=None, help="Command that runs the CLI (default: the venv's).")
    ap.add_argument("--only", default=None, help="Run only the runs whose label contains this.")
    ap.add_argument("--out", type=Path, default=_ROOT / "benchmarks" / "results" / "bench_large_model.md")
    ap.add_argument("--ort", nargs=4, metavar=("MODE", "MODEL", "OUT", "CALIB"), help=argparse.SUPPRESS)
    ap.add_argument("--verify", nargs=3, metavar=("FLOAT", "QUANT", "FEEDS"), help=argparse.SUPPRESS)
    ap.add_argument("--build", nargs=3, metavar=("DIR", "LAYERS", "DIM"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ort:
        Path(a.ort[2]).parent.mkdir(parents=True, exist_ok=True)
        ort_worker(*a.ort)
        return
    if a.verify:
        verify_worker(*a.verify)
        return
    if a.build:
        build_model(Path(a.build[0]), int(a.build[1]), int(a.build[2]))
        return

    work = a.workdir or Path(tempfile.mkdtemp(prefix="eq-large-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows = bench(work, a)
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    write_markdown(rows, a)


def bench(work: Path, a: argparse.Namespace) -> list[dict[str, Any]]:
    model = work / "model.onnx"
    if not model.exists():
        r = run_child([sys.executable, str(SCRIPT), "--build", str(work), str(a.layers), str(a.dim)], 1800, 4)
        print(f"built {model} in {r['seconds']} s, peak {r['peak_rss_mib']} MiB ({r['status']})", flush=True)
        if r["status"] != "ok":
            sys.exit(f"build failed: {r['stderr']}")
    rng = np.random.default_rng(1)
    calib, feeds = work / "calib.npy", work / "eval.npy"
    np.save(calib, rng.standard_normal((16, a.dim), dtype=np.float32))
    np.save(feeds, rng.standard_normal((4, a.dim), dtype=np.float32))
    rows = [{"run": "float model", "status": "built", "files": _files(work)}]
    for label, cmd, outdir in runs(model, calib, work, a.edgequant.split() if a.edgequant else _EQ):
        if a.only and a.only not in label:
            continue
        shutil.rmtree(outdir, ignore_errors=True)
        print(f"--- {label}", flush=True)
        r = run_child(cmd, a.timeout, a.max_rss_gib)
        r["run"] = label
        if outdir.exists():
            r["files"] = _files(outdir)
            qmodel = _model_in(outdir)
            if r["status"] == "ok" and qmodel is not None:
                v = run_child([sys.executable, str(SCRIPT), "--verify", str(model), str(qmodel), str(feeds)],
                              a.timeout, a.max_rss_gib)  # fmt: skip
                r["verify"] = json.loads(v["stdout"]) if v["status"] == "ok" else {"status": v["status"],
                                                                                   "stderr": v["stderr"][-800:]}  # fmt: skip
                r["verify_peak_rss_mib"] = v["peak_rss_mib"]
            shutil.rmtree(outdir, ignore_errors=True)  # keep the disk free for the next run
        print(_row(r), flush=True)
        if r["status"] != "ok":
            print(r["stderr"][-1500:], flush=True)
        rows.append(r)
    return rows


def _row(r: dict[str, Any]) -> str:
    files = ", ".join(f"{k} {v / 1e6:,.1f} MB" for k, v in r.get("files", {}).items())
    v = r.get("verify") or {}
    sqnr = v.get("sqnr_db", v.get("status", "-"))
    return (
        f"| {r['run']} | {r['status']} | {r.get('seconds', '-')} | {r.get('peak_rss_mib', '-')} | "
        f"{sqnr} | {files} |"
    )


def write_markdown(rows: list[dict[str, Any]], a: argparse.Namespace) -> None:
    import onnx
    import onnxruntime

    head = [
        "# Large model (> 2 GB, external data)",
        "",
        f"Model: {a.layers} x (MatMul [{a.dim}x{a.dim}] float32 -> Add -> Relu), input [N, {a.dim}], "
        f"weights {a.layers * a.dim * (a.dim + 1) * 4 / 1e9:.2f} GB in `model.onnx.data`.  "
        f"Limits per run: {a.timeout:.0f} s, {a.max_rss_gib:g} GiB resident.  "
        f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, 2 cores.",
        "",
        f"EdgeQuant CLI: `{a.edgequant or ' '.join(_EQ)}`",
        "",
        "SQNR: output of the quantized model vs float on 4 held-out seeded samples, both loaded by path",
        "in a fresh ORT process (peak RSS of that check not included).",
        "",
        "| run | status | wall s | peak RSS MiB | SQNR dB | output files |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    body = [_row(r) for r in rows]
    errors = [
        f"- **{r['run']}**: `{r['stderr'].strip().splitlines()[-1][:400] if r['stderr'].strip() else ''}`"
        for r in rows
        if r.get("status") not in ("ok", "built")
    ]
    text = "\n".join(head + body + (["", "Failures:", "", *errors] if errors else [])) + "\n"
    print(text)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(f".{a.out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
