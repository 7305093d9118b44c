"""``compare`` of every method on the local executor and on Ray, on this machine; a paper estimate for N.

Models: the built-in example (``shapes``) and two real models already in benchmarks/models
(``ocr_cls``: PP-OCR mobile cls; ``vad``: Silero VAD), with the data of bench_compare.py (128
seeded calibration samples; its evaluation sets).  Per model, the same ``edgequant.evaluate.compare``
call (methods all, 5 latency runs, no memory subprocess) runs:

    local       the local executor (one method after another, in this process)
    ray-2       a local Ray instance with 2 logical CPUs (this machine has 2 cores)
    ray-8       a local Ray instance with 8 logical CPUs on the same 2 cores: a scheduling check
                (8 tasks at once share 2 cores) -- NOT a speed-up, and not reported as one
    ray-1       (example only) Ray with 1 logical CPU: methods one after another like local, so
                (ray-1 - local) / methods is Ray's overhead per cell (shipping the job, task start,
                files back; Ray's start-up is timed separately and not included)

Every run's rows are checked equal to the local run's (timings aside, as tests/executors holds).
Per-cell times are those of the local run (each method's quantize + evaluate + latency + energy).
Paper estimate for N machines (one cell at a time per machine, as measured here): the driver's
preparation (local wall - sum of cells) + the longest-processing-time-first makespan of the cells on
N machines + the measured overhead per cell x cells per machine.  It assumes machines as fast as
this one and ignores data transfer beyond what ray-1 measured on this one machine.

    .venv/bin/python benchmarks/bench_ray.py                    # -> results/bench_ray.{md,json}
    .venv/bin/python benchmarks/bench_ray.py --models shapes
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_compare
import models
from models.common import DataFiles

from edgequant.evaluate import compare
from edgequant.evaluate import method_run as mr
from edgequant.executors import LocalExecutor

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
TIMED = (*mr.TIMED, "energy")


def _same(a: Any, b: Any) -> bool:
    def strip(rows: Any) -> Any:
        return json.dumps(
            [{k: v for k, v in r.to_dict().items() if k not in TIMED} for r in rows], default=str
        )

    return strip(a) == strip(b)


def _setup(name: str, samples: int) -> dict[str, Any]:
    m = models.load(name)
    tmp = Path(tempfile.mkdtemp(prefix=f"bray_{name}_"))
    DataFiles.write(tmp / "calib", m.make_calib(samples, 0), m.unbatched)
    return {"m": m, "tmp": tmp, **bench_compare._eval_set(name, m, tmp)}


def _compare(s: dict[str, Any], out: Path, executor: Any) -> tuple[Any, float]:
    data, ev = DataFiles(s["tmp"] / "calib"), DataFiles(Path(s["eval"]))
    batch = s["m"].calib_batch
    labels = np.load(s["labels"]) if s.get("labels") else None
    t0 = time.perf_counter()
    res = compare(
        str(s["m"].path), lambda: data.batches(batch), list(ev.batches(s["eval_batch"])), labels=labels,
        task=s["task"], methods="all", outdir=out, measure_memory=False, latency_runs=5, max_drop=None,
        executor=executor,
    )  # fmt: skip
    return res, time.perf_counter() - t0


def _ray(cpus: int) -> tuple[Any, float]:
    import ray

    from edgequant.executors.ray import RayExecutor

    if ray.is_initialized():
        ray.shutdown()
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(BENCH), os.environ.get("PYTHONPATH", "")]
    )  # workers: models
    t0 = time.perf_counter()
    ex = RayExecutor(num_cpus=cpus)
    ray.get([ray.remote(lambda: 0).remote() for _ in range(cpus)])  # workers up before timing
    return ex, time.perf_counter() - t0


def lpt(times: list[float], machines: int) -> float:
    """Makespan of ``times`` on ``machines`` by longest processing time first."""
    heap = [0.0] * machines
    for t in sorted(times, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + t)
    return max(heap)


def bench(name: str, samples: int) -> dict[str, Any]:
    s = _setup(name, samples)
    cells: dict[str, float] = {}
    real = mr.run_method

    def timed(job: Any, method: str, out: Path) -> Any:
        t0 = time.perf_counter()
        got = real(job, method, out)
        cells[method] = time.perf_counter() - t0
        return got

    mr.run_method = timed  # the local run's per-cell times
    try:
        local, t_local = _compare(s, s["tmp"] / "local", LocalExecutor())
    finally:
        mr.run_method = real
    runs: dict[str, Any] = {"local": {"wall_s": t_local}}
    for cpus in (1, 2, 8) if name == "shapes" else (2, 8):
        ex, t_start = _ray(cpus)
        res, t = _compare(s, s["tmp"] / f"ray{cpus}", ex)
        runs[f"ray-{cpus}"] = {
            "wall_s": t,
            "startup_s": t_start,
            "equal_to_local": _same(res.methods, local.methods),
        }
        ex.close()
        print(f"  {name} ray-{cpus}: {t:.1f} s (local {t_local:.1f} s)", file=sys.stderr, flush=True)
    n = len(cells)
    out: dict[str, Any] = {
        "model": name, "title": s["m"].title, "methods": n, "cells_s": cells, "runs": runs,
        "ok": sum(1 for r in local.methods if r.ok), "prep_s": t_local - sum(cells.values()),
    }  # fmt: skip
    if "ray-1" in runs:
        out["overhead_per_cell_s"] = (runs["ray-1"]["wall_s"] - t_local) / n
    return out


def estimate(r: dict[str, Any], overhead: float, machines: int) -> float:
    times = list(r["cells_s"].values())
    return r["prep_s"] + lpt(times, machines) + overhead * math.ceil(len(times) / machines)


def report(results: list[dict[str, Any]]) -> str:
    overhead = next(r["overhead_per_cell_s"] for r in results if "overhead_per_cell_s" in r)
    lines = [
        "# compare on the local executor and on Ray (benchmarks/bench_ray.py)",
        "",
        f"Machine: {os.cpu_count()} CPUs, SHARED with other jobs while this ran: every wall time here is noisy "
        "(run-to-run differences of tens of percent are load, not the executor).",
        "Each run is one `compare(..., methods='all')` (10 methods, 5 latency runs, no memory subprocess); "
        "Ray's start-up is timed apart and not included. `equal` = the rows equal the local run's, timings aside.",
        "",
        "| model | methods ok | local s | Ray 2 CPUs s | Ray 8 logical CPUs on 2 cores s | equal |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ru = r["runs"]
        eq = all(v.get("equal_to_local", True) for v in ru.values())
        lines.append(
            f"| {r['model']} | {r['ok']}/{r['methods']} | {ru['local']['wall_s']:.1f} | {ru['ray-2']['wall_s']:.1f} "
            f"| {ru['ray-8']['wall_s']:.1f} | {'yes' if eq else 'NO'} |"
        )
    lines += [
        "",
        "Ray with 8 logical CPUs on this 2-core machine runs 8 tasks at once on 2 cores: it checks that the "
        "tasks are scheduled and their results gathered; it is not a speed-up (the cores are the same).",
        "",
        f"Ray overhead per cell on the example (Ray with 1 CPU, methods one after another, minus local, per "
        f"method): {overhead:.2f} s.",
        "",
        "## Paper estimate for N machines (from the measured per-cell times; not measured)",
        "",
        "T(N) = driver preparation + LPT makespan of the cells on N machines + overhead per cell x cells per machine; "
        "machines as fast as this one, one cell at a time each.",
        "",
        "| model | sum of cells s | longest cell s | N=1 | N=2 | N=4 | N=10 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        c = list(r["cells_s"].values())
        est = [estimate(r, overhead, n) for n in (1, 2, 4, 10)]
        lines.append(
            f"| {r['model']} | {sum(c):.1f} | {max(c):.1f} | " + " | ".join(f"{e:.1f}" for e in est) + " |"
        )
    lines += ["", "The longest cell bounds the speed-up: past N = cells, more machines give nothing."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["shapes", "ocr_cls", "vad"], choices=models.NAMES)
    p.add_argument("--samples", type=int, default=128)
    args = p.parse_args()
    results = [bench(n, args.samples) for n in args.models]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_ray.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "bench_ray.md").write_text(report(results))
    print(report(results))


if __name__ == "__main__":
    main()
