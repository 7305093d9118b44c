"""Counted operations, the energy estimate (Horowitz ISSCC 2014 numbers typed in here), RAPL reading
and the device refusal; expected counts are worked out by hand from the tiny models' shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tinymodels

from edgequant import pipeline
from edgequant.errors import InferenceError, RecipeError
from edgequant.evaluate import energy, opcount
from edgequant.runtime.device import parse_device, providers_for

X = tinymodels.images(1, seed=5)
# conv_net(channels=8) on [1,3,16,16]: conv1 2048*27, depthwise 2048*9, pointwise 2048*8, fc 16*10
CONV_MACS = 2048 * 27 + 2048 * 9 + 2048 * 8 + 160
# relu1, relu_dw, residual Add (2048 each), Concat 4096, GAP 16 (Flatten is shape-only)
CONV_ELEMS = 3 * 2048 + 4096 + 16
# elements read + written per node: conv1 768+2048; relu1, dwconv, relu_dw, pwconv 2*2048 each;
# Add 3*2048; Concat 2*2048+4096; GAP 4096+16; fc 16+10
CONV_ACT_ELEMS = 768 + 2048 + 4 * 4096 + 3 * 2048 + 8192 + 4112 + 26


def _counts(model: object) -> opcount.OpCounts:
    return opcount.count(model, opcount.tensor_shapes(model, {"x": X}))  # type: ignore[arg-type]


def test_float_counts_match_the_hand_count() -> None:
    c = _counts(tinymodels.conv_net(seed=0))
    assert c.macs == {"fp32": CONV_MACS}
    assert c.elem_ops == {"fp32": CONV_ELEMS}
    assert c.activation_bytes == 4 * CONV_ACT_ELEMS and not c.uncounted


def test_static_int8_macs_are_int8_and_fp16_macs_fp16() -> None:
    m = tinymodels.conv_net(seed=0)
    calib = tinymodels.images(16, seed=6)
    q = pipeline.quantize(m, calib, method="static")
    c = _counts(q.model)
    assert sum(c.macs.values()) == CONV_MACS  # the same work, in other precisions
    assert c.macs.get("int8", 0) >= 2048 * (27 + 8)  # at least conv1 and the pointwise Conv run int8
    assert c.folded_qdq > 0 and c.activation_bytes < 4 * CONV_ACT_ELEMS
    h = _counts(pipeline.quantize(m, None, method="fp16").model)
    assert h.macs.get("fp16", 0) >= 2048 * (27 + 9 + 8)


def test_lstm_and_dynamic_matmul_counts() -> None:
    m = tinymodels.lstm_with_state(seed=0, d_in=8, hidden=16)
    feeds = {"x": np.ones((5, 2, 8), np.float32), "h0": np.zeros((1, 2, 16), np.float32),
             "c0": np.zeros((1, 2, 16), np.float32)}  # fmt: skip
    c = opcount.count(m, opcount.tensor_shapes(m, feeds))
    assert c.macs == {"fp32": 5 * 2 * 4 * 16 * (8 + 16) + 2 * 16 * 4}  # LSTM T*N*4H*(I+H) + head
    mlp = tinymodels.mlp(seed=0)
    d = pipeline.quantize(mlp, None, method="dynamic").model
    got = opcount.count(d, opcount.tensor_shapes(d, {"x": np.ones((1, 32), np.float32)}))
    assert got.macs == {"int8": 32 * 64 + 64 * 8}
    # weight-only int8: the MatMuls multiply in float and both weights are dequantized at every call
    w = pipeline.quantize(mlp, None, method="weight-only", weight_bits=8).model
    wc = opcount.count(w, opcount.tensor_shapes(w, {"x": np.ones((1, 32), np.float32)}))
    assert wc.macs == {"fp32": 32 * 64 + 64 * 8} and wc.elem_ops["fp32"] >= 32 * 64 + 64 * 8
    # a static QDQ LSTM still runs in float in ORT (no integer LSTM kernel): its MACs count fp32
    s = pipeline.quantize(m, [feeds] * 4, method="static").model
    sc = opcount.count(s, opcount.tensor_shapes(s, feeds))
    assert sc.macs.get("fp32", 0) >= 5 * 2 * 4 * 16 * (8 + 16)


def test_estimate_uses_the_horowitz_figures() -> None:
    c = opcount.OpCounts(macs={"int8": 1000, "fp32": 10}, elem_ops={"fp32": 100}, activation_bytes=64)
    est = energy.estimate(c, weight_bytes=8)
    # Horowitz 2014, 45 nm: 8b mult 0.2 + 32b add 0.1; fp32 mult 3.7 + add 0.9; fp32 add 0.9;
    # DRAM 1.3 nJ / 64 bit; 1 MB SRAM 100 pJ / 64 bit
    pj = 1000 * 0.3 + 10 * 4.6 + 100 * 0.9 + 8 * 1300 / 8 + 64 * 100 / 8
    assert est["kind"] == "estimate" and est["total_mj"] == pytest.approx(pj * 1e-9)
    assert est["breakdown_mj"]["weights"] == pytest.approx(1300e-9)
    assert "ISSCC 2014" in est["source"]
    scaled = energy.estimate(c, 8, energy.EnergyProfile.from_mapping({"mac_int8": 0.1, "weight_byte": 0.0}))
    assert scaled["total_mj"] == pytest.approx((pj - 1000 * 0.2 - 1300) * 1e-9)
    with pytest.raises(RecipeError, match=r"energy profile key\(s\) \['mac_int9'\] are unknown"):
        energy.EnergyProfile.from_mapping({"mac_int9": 1.0})


def test_rapl_reads_package_domains_and_handles_wraparound(tmp_path: Path) -> None:
    assert energy.rapl_read(tmp_path / "none") == f"no RAPL counters under {tmp_path / 'none'} on this host"
    pkg, sub = tmp_path / "intel-rapl:0", tmp_path / "intel-rapl:0:0"
    for d, v in ((pkg, "1000"), (sub, "5")):
        d.mkdir()
        (d / "energy_uj").write_text(v)
    (pkg / "max_energy_range_uj").write_text("262143328850")
    before = energy.rapl_read(tmp_path)
    assert before == {"intel-rapl:0": 1000}  # the subdomain is inside the package: not added twice
    (pkg / "energy_uj").write_text("4000")
    assert energy.rapl_delta_mj(before, energy.rapl_read(tmp_path), tmp_path) == pytest.approx(3.0)  # type: ignore[arg-type]
    assert energy.rapl_delta_mj({"intel-rapl:0": 262143328000}, {"intel-rapl:0": 150}, tmp_path) == (
        pytest.approx((850 + 150) / 1000)
    )


def test_cuda_refusal_names_installed_providers_and_the_package() -> None:
    assert providers_for("cpu", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(InferenceError) as e:
        providers_for("cuda:1", ["AzureExecutionProvider", "CPUExecutionProvider"])
    msg = str(e.value)
    assert "installed providers: AzureExecutionProvider, CPUExecutionProvider" in msg
    assert "pip install onnxruntime-gpu" in msg
    assert (
        providers_for("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    )
    assert parse_device(None, 2) == ("cuda", 2) and parse_device("cuda") == ("cuda", 0)
    for bad, match in (("tpu", "is not cpu, cuda or cuda:N"), ("cpu:1", "is not cpu")):
        with pytest.raises(RecipeError, match=match):
            parse_device(bad)
    with pytest.raises(RecipeError, match="contradicts"):
        parse_device("cuda:0", 1)


def test_compare_shows_rapl_beside_the_estimate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import csv

    from edgequant.evaluate import compare

    reads = iter(range(10))  # each read advances the package counter by 1500 uJ per timed run (3 runs)

    def fake_read(root: Path = energy.POWERCAP) -> dict[str, int]:
        return {"intel-rapl:0": 1000 + 4500 * next(reads)}

    monkeypatch.setattr(energy, "rapl_read", fake_read)
    res = compare(
        tinymodels.mlp(seed=0), None, {"x": np.ones((4, 32), np.float32)}, outdir=tmp_path, methods="float",
        latency_runs=3, warmup=0, measure_memory=False, top_k=0,
    )  # fmt: skip
    est = res.method("float").energy or {}
    assert est["kind"] == "estimate" and est["measured_mj"] == pytest.approx(1.5)  # 4500 uJ / 3 runs
    assert est["measured_note"] == "RAPL, whole CPU package incl. other load"
    row = next(csv.DictReader((tmp_path / "results.csv").open()))
    assert float(row["energy_mj_measured"]) == pytest.approx(1.5) and float(row["energy_mj_estimate"]) > 0
    assert "energy mJ (estimate) | energy mJ (RAPL)" in (tmp_path / "report.md").read_text()
