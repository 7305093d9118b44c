"""EdgeQuant beside its peers on the same real models and the same calibration bytes.

Peers, each in its own interpreter (``benchmarks/peers/run_*.py``; NNCF and AMD Quark in their own
venvs made by ``benchmarks/peers/setup.py``, since Quark pins onnx):

    edgequant            edgequant.quantize(model, data): the default recipe
    edgequant-accurate   the 'accurate' preset (CNNs)
    ort-minmax           onnxruntime quantize_static, QDQ, U8S8, per-channel, MinMax (MiniLM: after
                         quant_pre_process, as ORT documents for transformers)
    ort-percentile       the same with Percentile ranges (CNNs; ORT's default 99.999)
    nncf                 nncf.quantize, default preset (MiniLM: model_type=TRANSFORMER)
    quark-u8s8           Quark ONNX ModelQuantizer, its U8S8 (uint8 asymmetric activations, int8 symmetric
                         weights) default config
    quark-u8s8-adaround  the same with AdaRound (CNNs), bounded as QUARK_ADAROUND says

Models (benchmarks/models/): PP-OCR mobile v2.0 cls (depthwise mobile net), PP-OCRv4 rec, ResNet-18
(hand-built, random init, 112x112, as bench_algorithms), Silero VAD, all-MiniLM-L6-v2, and
EfficientNet-Lite0 (benchmarks/models/effnet.py) when that module exists.  Every tool reads the same
seeded calibration samples written once to .npy files; EdgeQuant holds back its check samples from
them as it does for any user's data.  Evaluation uses each model's own held-out set (another seed).

Columns: the task metric, mean KL(float || quantized) of the output distribution (classifiers; MiniLM:
mean cosine of sentence embeddings), output SQNR vs float, batch-1 latency against float (2 intra-op
threads, intra/inter-op spinning off, all sessions made first, then interleaved rounds; median), file
size, quantize wall seconds and peak RSS of the quantizing process.  A peer that fails keeps its row
with the one-line reason.

    .venv/bin/python benchmarks/peers/setup.py          # once: the peer venvs
    .venv/bin/python benchmarks/bench_peers.py          # -> results/bench_peers.{json,md}
    .venv/bin/python benchmarks/bench_peers.py --models ocr_cls --tools edgequant,nncf --merge
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "peers"))
import setup as peer_setup  # noqa: E402  (benchmarks/peers/setup.py)
from models import harness  # noqa: E402
from models.common import BenchModel, DataFiles  # noqa: E402
from peer_models import CNN, MODELS, load_model  # noqa: E402

RESULTS = HERE / "results"
LOGS = Path(tempfile.gettempdir()) / "bench-peers-logs"  # each runner's stdout + stderr
QUARK_ADAROUND = {"NumIterations": 100, "EarlyStop": True}  # Quark's default: 1,000 iterations
TOOLS: dict[str, tuple[str, dict[str, Any]]] = {
    "edgequant": ("edgequant", {}),
    "edgequant-accurate": ("edgequant", {"preset": "accurate"}),
    "ort-minmax": ("ort", {"calib": "minmax"}),
    "ort-percentile": ("ort", {"calib": "percentile"}),
    "nncf": ("nncf", {}),
    "quark-u8s8": ("quark", {"config": "U8S8"}),
    "quark-u8s8-adaround": ("quark", {"config": "U8S8", "adaround": QUARK_ADAROUND}),
}
CNN_ONLY = {"edgequant-accurate", "ort-percentile", "quark-u8s8-adaround"}
ADAROUND_MODELS: list[str] = []


def _interpreter(runner: str) -> Path:
    return Path(sys.executable) if runner in ("edgequant", "ort") else peer_setup.python(runner)


def quantize(tool: str, bm: BenchModel, calib: Path, tmp: Path, timeout: float) -> dict[str, Any]:
    """One quantization by ``tool`` in its own interpreter; the runner's JSON or the failure line."""
    runner, settings = TOOLS[tool]
    settings = dict(settings)
    if bm.name == "minilm" and tool == "nncf":
        settings["model_type"] = "transformer"
    if bm.name == "minilm" and runner == "ort":
        settings["pre"] = True
    out = tmp / f"{bm.name}_{tool}.onnx"
    # equal batches for all: ORT's histogram calibrators and Quark's AdaRound data fail on a short last
    # batch (Quark: "Optimizing #k module failed in getting data, skip it"); NNCF asks for batch-1 items
    n = len(DataFiles(calib))
    batch = 1 if runner == "nncf" else max(d for d in range(1, bm.calib_batch + 1) if n % d == 0)
    spec = {"model": str(bm.path), "calib": str(calib), "out": str(out), "batch": batch,
            "settings": settings}  # fmt: skip
    spec_path = tmp / f"{bm.name}_{tool}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [str(_interpreter(runner)), str(HERE / "peers" / f"run_{runner}.py"), str(spec_path)],
            capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=tmp,
        )  # fmt: skip
    except subprocess.TimeoutExpired as e:
        LOGS.mkdir(parents=True, exist_ok=True)
        text = [
            x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (e.stdout, e.stderr)
        ]
        (LOGS / f"{bm.name}_{tool}.log").write_text("\n".join(text))
        return {"status": f"timeout after {timeout:.0f} s"}
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / f"{bm.name}_{tool}.log").write_text(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip() and not ln.startswith(" ")]
        return {"status": "failed: " + (lines[-1] if lines else f"exit {proc.returncode}")[:240],
                "seconds": round(time.monotonic() - t0, 1)}  # fmt: skip
    info: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    info.update(status="ok", path=str(out), mib=round(out.stat().st_size / 2**20, 3))
    return info


def _runner(path: str | Path) -> Any:
    return harness.runner(path, threads=2, spinning=False)


def _as_probs(a: np.ndarray, is_probs: bool) -> np.ndarray:
    """Distributions over the last axis: renormalised when the float model outputs probabilities
    (decided on the float output, applied alike to every model), else softmax of the logits."""
    a = np.asarray(a, np.float64)
    if is_probs:
        a = np.clip(a, 1e-12, None)
        return a / a.sum(-1, keepdims=True)
    e = np.exp(a - a.max(-1, keepdims=True))
    return np.clip(e / e.sum(-1, keepdims=True), 1e-12, 1.0)


def closeness(bm: BenchModel, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean KL(float || quantized) over the last axis for classifiers; the sentence encoder's metrics
    already hold the cosine; the VAD's single probability has SQNR and agreement only."""
    key = next(iter(ref))
    if bm.name in ("vad", "minilm"):
        return {}
    r = np.asarray(ref[key], np.float64)
    is_probs = bool(r.min() >= 0 and np.allclose(r.sum(-1), 1.0, atol=1e-3))
    p, q = _as_probs(r, is_probs), _as_probs(got[key], is_probs)
    return {"kl": float(np.mean(np.sum(p * np.log(p / q), axis=-1)))}


def _metrics(bm: BenchModel, ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    m = bm.metrics(ref, got)
    if "kl_mean" in m:  # effnet computes the same mean KL itself
        m["kl"] = m.pop("kl_mean")
        return m
    return {**m, **closeness(bm, ref, got)}


def latency(models: dict[str, Path], feed: dict[str, np.ndarray], rounds: int, runs: int) -> dict[str, float]:
    """Median ms per batch-1 run, interleaved: every session is made and warmed up first, then each
    round runs every model ``runs`` times in turn."""
    return harness.latency_ms(
        models, feed, threads=2, runs=rounds * runs, rounds=rounds, warmup=3, spinning=False
    )


def bench(
    name: str, tools: list[str], samples: int, tmp: Path, timeout: float, rounds: int, runs: int
) -> dict[str, Any]:
    bm = load_model(name, tmp)
    calib = tmp / f"{name}_calib"
    n = samples if not bm.unbatched else samples * 2  # VAD: one 32 ms frame per sample
    DataFiles.write(calib, bm.make_calib(n, 0), bm.unbatched)
    ref = bm.predict(_runner(bm.path))
    rows: dict[str, Any] = {"float": {"status": "ok", "mib": round(bm.path.stat().st_size / 2**20, 3),
                                      **_metrics(bm, ref, ref)}}  # fmt: skip
    for tool in tools:
        if tool in CNN_ONLY and name not in CNN:
            continue
        if tool == "quark-u8s8-adaround" and name not in ADAROUND_MODELS:
            rows[tool] = {"status": "not run: bounded run time (--adaround-models)"}
            continue
        info = quantize(tool, bm, calib, tmp, timeout)
        if info["status"] == "ok":
            try:
                got = bm.predict(_runner(info["path"]))
                info.update(sqnr_db=round(bm.output_sqnr(ref, got), 2), **_metrics(bm, ref, got))
            except Exception as e:  # the peer's file does not run in this ORT: its row says so
                info["status"] = f"runs not in ORT {ort.__version__}: {str(e).splitlines()[0][:200]}"
        rows[tool] = info
        print(name, tool, {k: v for k, v in info.items() if k not in ("passes", "path")}, flush=True)
    feed = bm.latency_feed()
    if not bm.unbatched:
        feed = {k: v[:1] for k, v in feed.items()}
    paths = {
        "float": bm.path,
        **{k: Path(v["path"]) for k, v in rows.items() if v.get("status") == "ok" and "path" in v},
    }
    ms = latency(paths, feed, rounds, runs)
    for k, v in ms.items():
        rows[k]["ms"] = round(v, 3)
        rows[k]["speedup"] = round(ms["float"] / v, 2)
    for r in rows.values():
        r.pop("path", None)
    return {"model": bm.title, "source": bm.source, "calibration_samples": n, "rows": rows,
            "notes": bm.notes}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--samples", type=int, default=64, help="calibration samples (VAD: twice as many frames)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per quantization")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=6, help="runs per model per round")
    ap.add_argument(
        "--adaround-models",
        default="ocr_cls,effnet_lite0",
        help="models that get quark-u8s8-adaround (its time on 2 shared cores)",
    )
    ap.add_argument("--adaround-iters", type=int, default=QUARK_ADAROUND["NumIterations"])
    ap.add_argument("--merge", action="store_true", help="keep the other models' results")
    ap.add_argument("--out", default=str(RESULTS / "bench_peers"))
    ap.add_argument(
        "--keep", help="write the quantized files to this folder (kept) instead of a temporary one"
    )
    ap.add_argument("--merge-from", help="add the rows of another run's JSON (their ms vs that run's float)")
    ap.add_argument(
        "--latency-from", help="only re-time --models from DIR/<model>_<tool>.onnx (an earlier run's files)"
    )
    args = ap.parse_args()
    if args.latency_from:
        retime(Path(args.out), Path(args.latency_from), args.models.split(","), args.rounds, args.runs)
        return
    if args.merge_from:
        merge_from(Path(args.out), Path(args.merge_from))
        return
    tools = args.tools.split(",")
    QUARK_ADAROUND["NumIterations"] = args.adaround_iters
    ADAROUND_MODELS[:] = args.adaround_models.split(",")
    for t in tools:
        if t not in TOOLS:
            print(f"unknown tool '{t}'; known: {', '.join(TOOLS)}", file=sys.stderr)
            raise SystemExit(2)
    out = Path(args.out)
    results: dict[str, Any] = {"meta": {}, "models": {}}
    if args.merge and out.with_suffix(".json").exists():
        results = json.loads(out.with_suffix(".json").read_text())
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as scratch:
        tmp = args.keep or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            t0 = time.monotonic()
            r = bench(name, tools, args.samples, Path(tmp), args.timeout, args.rounds, args.runs)
            r["bench_seconds"] = round(time.monotonic() - t0, 1)
            r["load_average_after"] = round(os.getloadavg()[0], 2)
            if args.merge and name in results["models"]:
                old = results["models"][name]["rows"]
                r["rows"] = {**old, **r["rows"]}
            results["models"][name] = r
            results["meta"] = {
                "onnxruntime": ort.__version__, "python": platform.python_version(), "cores": os.cpu_count(),
                "cpu": _cpu(), "load_average_start": [round(x, 2) for x in load_start],
                "peers": {k: " ".join(v) for k, v in peer_setup.PEERS.items()},
                "quark_adaround": QUARK_ADAROUND, "latency": f"batch 1, 2 threads, spinning off, {args.rounds} rounds x {args.runs} runs",
            }  # fmt: skip
            out.with_suffix(".json").write_text(json.dumps(results, indent=1))
            from peer_table import markdown

            out.with_suffix(".md").write_text(markdown(results))


def retime(out: Path, folder: Path, names: list[str], rounds: int, runs: int) -> None:
    """Latency alone again, for files kept from an earlier run (a quieter moment, more rounds)."""
    from peer_table import markdown

    results = json.loads(out.with_suffix(".json").read_text())
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        for name in names:
            bm, rows = load_model(name, Path(tmp)), results["models"][name]["rows"]
            paths = {"float": bm.path}
            paths.update(
                {t: folder / f"{name}_{t}.onnx" for t in rows if (folder / f"{name}_{t}.onnx").exists()}
            )
            feed = bm.latency_feed()
            ms = latency(paths, feed if bm.unbatched else {k: v[:1] for k, v in feed.items()}, rounds, runs)
            for k, v in ms.items():
                rows[k].update(ms=round(v, 3), speedup=round(ms["float"] / v, 2))
                rows[k].pop("run", None)
            results["models"][name].setdefault("merged", []).append(
                f"latency of {', '.join(ms)} re-timed together ({rounds} rounds x {runs} runs, load average "
                f"{os.getloadavg()[0]:.1f} after)"
            )
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(markdown(results))


def merge_from(out: Path, other: Path) -> None:
    """Rows of ``other`` join ``out``'s models (speedups stay relative to the float of their own run)."""
    from peer_table import markdown

    results = json.loads(out.with_suffix(".json").read_text())
    extra = json.loads(other.read_text())
    for name, m in extra["models"].items():
        if name not in results["models"]:  # a model measured wholly in the other run
            results["models"][name] = m
            continue
        rows = {k: {**v, "run": f"separate run, float {m['rows']['float'].get('ms')} ms there"}
                for k, v in m["rows"].items() if k != "float"}  # fmt: skip
        results["models"][name]["rows"].update(rows)
        results["models"][name].setdefault("merged", []).append(
            f"{', '.join(rows)}: separate run (load average after {m.get('load_average_after')}, "
            f"{m.get('bench_seconds')} s)"
        )
    results["meta"]["merged_meta"] = extra["meta"]
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(markdown(results))


def _cpu() -> str:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next(
        (ln.split(":", 1)[1].strip() for ln in flags.splitlines() if ln.startswith("model name")), "?"
    )
    return f"{name}, {'VNNI' if 'vnni' in flags else 'no VNNI'}"


if __name__ == "__main__":
    main()
