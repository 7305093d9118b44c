"""Predicted latency on a target from its profile's vendor throughput, and a target's own energy numbers.

Expected latencies are MACs counted by hand from the tiny MLP's shapes divided by the vendor figure
typed in here (PG338: B4096 = 8 x 16 x 16 = 2048 MACs per cycle; UG1354: 300 MHz on the ZCU104).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import tinymodels

from edgequant import targets
from edgequant.errors import TargetError
from edgequant.evaluate import compare, format_table
from edgequant.evaluate.energy import EnergyProfile
from edgequant.evaluate.predict import predict_latency, target_energy_profile
from edgequant.targets import performance

MLP_MACS = 32 * 64 + 64 * 8  # tinymodels.mlp: [1,32] @ [32,64], then [64,8]
DPU_MACS_PER_S = 2048 * 300e6


def _profile_with(tmp_path: Path, section: str) -> Path:
    """cpu.yaml with a performance section appended, saved under the profile's own name."""
    text = (Path(targets.__file__).parent / "cpu.yaml").read_text()
    path = tmp_path / "cpu.yaml"
    path.write_text(text.rstrip("\n") + "\n" + section)
    return path


def _first_source(tmp_path: Path) -> str:
    return next(iter(targets.get("cpu").sources))


def test_vitis_dpu_profile_gives_its_sourced_throughput_and_cpu_none() -> None:
    dpu = targets.get("vitis-dpu").performance
    assert dpu is not None and dpu.clock_mhz == 300 and dpu.macs_per_cycle == {"int8": 2048}
    assert dpu.macs_per_second("int8") == DPU_MACS_PER_S and dpu.macs_per_second("fp32") is None
    assert "docs.amd.com" in targets.get("vitis-dpu").cite(dpu.source)
    assert targets.get("cpu").performance is None and targets.get("ti-npu").performance is None


def test_prediction_is_macs_over_peak_throughput() -> None:
    p = predict_latency({"int8": 614_400_000}, targets.get("vitis-dpu"))
    assert p["kind"] == "prediction" and p["ms"] == pytest.approx(1.0)  # 6.144e8 / (2048 * 3e8) s
    assert "peak compute bound" in p["basis"] and "pg338" not in p["note"]
    mixed = predict_latency({"int8": 1000, "fp32": 2_000_000}, targets.get("vitis-dpu"))
    assert mixed["ms"] is None
    assert (
        mixed["note"]
        == "no prediction: the model has 2 M fp32 MACs and target 'vitis-dpu' gives throughput only for int8"
    )
    none = predict_latency({"int8": 1000}, targets.get("cpu"))
    assert (
        none["ms"] is None
        and none["note"] == "no prediction: target 'cpu' profile gives no throughput numbers"
    )


def test_performance_section_is_validated(tmp_path: Path) -> None:
    src = _first_source(tmp_path)
    good = _profile_with(
        tmp_path,
        f"performance:\n  clock_mhz: 100\n  macs_per_cycle: {{int8: 4, fp32: 1}}\n"
        f"  energy_pj: {{mac_int8: 0.05, weight_byte: 20}}\n  source: {src}\n",
    )
    perf = targets.load_profile(good).performance
    assert perf is not None and perf.macs_per_second("fp32") == 1e8 and perf.energy_pj["mac_int8"] == 0.05
    bad = {
        "speed: 3": "'performance.speed' is not a known key",
        "macs_per_cycle: {int4: 8}": "'performance.macs_per_cycle.int4' is not a known key",
        "macs_per_cycle: {int8: 0}": "'performance.macs_per_cycle.int8' = 0 is not a positive number",
        "energy_pj: {mac_int3: 1}": "'performance.energy_pj.mac_int3' is not a known key",
    }
    for line, message in bad.items():
        path = _profile_with(tmp_path, f"performance:\n  clock_mhz: 100\n  {line}\n  source: {src}\n")
        with pytest.raises(TargetError, match=message.replace(".", r"\.").replace("{", r"\{")):
            targets.load_profile(path)
    no_clock = _profile_with(tmp_path, f"performance:\n  macs_per_cycle: {{int8: 4}}\n  source: {src}\n")
    with pytest.raises(TargetError, match="clock_mhz' is missing"):
        targets.load_profile(no_clock)
    unsourced = _profile_with(
        tmp_path, "performance:\n  clock_mhz: 1\n  macs_per_cycle: {int8: 4}\n  source: x\n"
    )
    with pytest.raises(TargetError, match="names no entry of 'sources'"):
        targets.load_profile(unsourced)


def test_energy_keys_match_the_energy_profile_and_a_target_scales_the_estimate(tmp_path: Path) -> None:
    own = {f.name for f in dataclasses.fields(EnergyProfile)} - {"name", "source"}
    assert set(performance.ENERGY_KEYS) == own
    path = _profile_with(
        tmp_path,
        f"performance:\n  energy_pj: {{mac_int8: 0.05}}\n  source: {_first_source(tmp_path)}\n",
    )
    prof = target_energy_profile(targets.load_profile(path))
    assert prof is not None and prof.mac_int8 == 0.05 and prof.mac_fp32 == 4.6  # the rest stays Horowitz
    assert prof.name.startswith("cpu") and "Horowitz" in prof.source
    assert target_energy_profile(targets.get("vitis-dpu")) is None  # no vendor energy figure in it


def test_compare_shows_the_prediction_beside_the_measured_latency(tmp_path: Path) -> None:
    m = tinymodels.mlp(seed=0)
    path = tmp_path / "mlp.onnx"
    onnx.save_model(m, str(path))
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 32)).astype(np.float32)
    ev = rng.standard_normal((24, 32)).astype(np.float32)
    out = tmp_path / "cmp"
    res = compare(
        path, calib, {"x": ev}, outdir=out, methods="float,int8-static", target="vitis-dpu",
        latency_runs=2, warmup=0, measure_memory=False, top_k=0,
    )  # fmt: skip
    q = res.method("int8-static")
    assert q.ok, q.error
    assert q.predicted_latency is not None
    assert q.predicted_latency["ms"] == pytest.approx(MLP_MACS / DPU_MACS_PER_S * 1e3)
    assert (q.latency or {})["median_ms"] > 0  # measured here, shown beside it
    fp32 = res.method("float").predicted_latency or {}
    assert fp32["ms"] is None and "fp32 MACs" in fp32["note"]
    assert "peak compute bound" in res.settings["latency_prediction"]
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert float(rows["int8-static"]["predicted_ms"]) == pytest.approx(MLP_MACS / DPU_MACS_PER_S * 1e3)
    assert rows["float"]["predicted_ms"] == ""
    md = (out / "report.md").read_text()
    assert "predicted ms (target)" in md and "Predicted ms (a prediction, not a measurement)" in md
    report = json.loads((out / "report.json").read_text())
    assert report["methods"][1]["predicted_latency"]["kind"] == "prediction"
    table = format_table(res)
    assert any(str(c.header) == "pred ms" for c in table.columns)
    assert "pred ms = predicted latency on vitis-dpu" in str(table.caption)
    assert "a prediction, not a measurement" in str(table.caption)


def test_compare_on_a_target_without_numbers_says_so(tmp_path: Path) -> None:
    m = tinymodels.mlp(seed=0)
    rng = np.random.default_rng(1)
    res = compare(
        m, None, {"x": rng.standard_normal((8, 32)).astype(np.float32)}, outdir=tmp_path, methods="float,fp16",
        latency_runs=2, warmup=0, measure_memory=False, top_k=0, report=False,
    )  # fmt: skip
    assert (
        res.settings["latency_prediction"]
        == "no prediction: target 'cpu' profile gives no throughput numbers"
    )
    assert all((r.predicted_latency or {}).get("ms") is None for r in res.methods)
    assert not any("pred" in str(c.header) for c in format_table(res).columns)
    assert "no throughput numbers" in str(format_table(res).caption)


def test_compare_prices_energy_with_the_target_s_own_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    compare_mod = importlib.import_module("edgequant.evaluate.compare")  # the module, not the function
    src = _first_source(tmp_path)
    custom = targets.load_profile(
        _profile_with(tmp_path, f"performance:\n  energy_pj: {{mac_fp32: 10.0}}\n  source: {src}\n")
    )
    monkeypatch.setattr(compare_mod.target_profiles, "get", lambda name="cpu": custom)
    res = compare(
        tinymodels.mlp(seed=0), None, {"x": np.ones((4, 32), np.float32)}, outdir=tmp_path / "o", methods="float",
        latency_runs=1, warmup=0, measure_memory=False, top_k=0, report=False,
    )  # fmt: skip
    est = res.method("float").energy or {}
    assert est["breakdown_mj"]["mac_fp32"] == pytest.approx(MLP_MACS * 10.0 * 1e-9)  # pJ -> mJ
    assert res.settings["energy_profile"] == "cpu (Horowitz 45 nm for the rest)"
    # an --energy-profile given by the user wins over the target's numbers
    res = compare(
        tinymodels.mlp(seed=0), None, {"x": np.ones((4, 32), np.float32)}, outdir=tmp_path / "p", methods="float",
        latency_runs=1, warmup=0, measure_memory=False, top_k=0, report=False, energy_profile={"mac_fp32": 2.0},
    )  # fmt: skip
    assert (res.method("float").energy or {})["breakdown_mj"]["mac_fp32"] == pytest.approx(MLP_MACS * 2e-9)
