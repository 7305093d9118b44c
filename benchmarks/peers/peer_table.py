"""Markdown for bench_peers.py's results: one table per model, failures kept as rows with their reason."""

from __future__ import annotations

from typing import Any

METRIC_KEYS = ("accuracy", "top1_agree", "cer", "step_agree", "frame_agree", "cos_mean", "cos_min", "kl")
LABELS = {
    "float": "float",
    "edgequant": "EdgeQuant default",
    "edgequant-accurate": "EdgeQuant `accurate`",
    "ort-minmax": "ORT quantize_static MinMax",
    "ort-percentile": "ORT quantize_static Percentile",
    "nncf": "NNCF default",
    "quark-u8s8": "Quark U8S8",
    "quark-u8s8-adaround": "Quark U8S8 + AdaRound",
}


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    lines = [
        "# EdgeQuant beside ONNX Runtime's tool, NNCF and AMD Quark",
        "",
        "Written by `benchmarks/bench_peers.py` (peers in their own venvs: `benchmarks/peers/setup.py`: "
        + "; ".join(f"{k}: `{v}`" for k, v in meta.get("peers", {}).items())
        + f"). ORT {meta.get('onnxruntime')}, Python {meta.get('python')}, {meta.get('cores')} cores "
        f"({meta.get('cpu')}). Every tool reads the same seeded calibration samples from the same .npy files "
        "(EdgeQuant holds back its check samples from them); metrics on each model's held-out set. "
        f"Latency: {meta.get('latency')}, interleaved, median, vs the float model in the same rounds. "
        f"Quark AdaRound bounded: {meta.get('quark_adaround')} (Quark's default NumIterations is 1,000). "
        f"Shared machine: load average {meta.get('load_average_start')} (1/5/15 min) at the start and the "
        "value after each model below; latencies and seconds are noisy.",
        "",
    ]
    if meta.get("note"):
        lines += [meta["note"], ""]
    for name, m in results.get("models", {}).items():
        rows = m["rows"]
        keys = [k for k in METRIC_KEYS if any(k in r for r in rows.values())]
        lines += [
            f"## {name}: {m['model']}",
            "",
            "; ".join(
                [
                    f"source `{m['source']}`",
                    f"{m['calibration_samples']} calibration samples",
                    f"load average after: {m.get('load_average_after')}",
                    *m.get("notes", []),
                    *m.get("merged", []),
                ]
            ),
            "",
            "| tool | " + " | ".join(keys) + " | SQNR dB | ms | vs float | MiB | quantize s | peak MiB |",
            "|---|" + "---|" * (len(keys) + 6),
        ]
        for tool, r in rows.items():
            label = LABELS.get(tool, tool)
            if r.get("status") != "ok":
                lines.append(f"| {label} | {r.get('status')} |" + " |" * (len(keys) + 5))
                continue
            vals = " | ".join(_fmt(r.get(k), 4) for k in keys)
            lines.append(
                f"| {label} | {vals} | {_fmt(r.get('sqnr_db'), 1)} | {_fmt(r.get('ms'), 3 if (r.get('ms') or 1) < 1 else 2)} | "
                f"{_fmt(r.get('speedup'), 2)}x | {_fmt(r.get('mib'), 2)} | {_fmt(r.get('seconds'), 1)} | "
                f"{_fmt(r.get('peak_mib'), 0)} |"
            )
        lines.append("")
    return "\n".join(lines)
