"""Issue 9 §7: different settings never write the same file name; the default tag names each setting
that changes the model (recipe.tags), an explicit tag wins, a preset's tag names its own settings only."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest
from tinymodels import conv_net, images
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.recipe import Recipe, preset

SETTINGS: list[dict[str, object]] = [
    {}, {"per_channel": False}, {"power_of_two": True}, {"weight_symmetric": False}, {"act_symmetric": True},
    {"act_signed": "signed"}, {"act_signed": "unsigned"}, {"calib_method": "entropy"},
    {"calib_method": "percentile"}, {"calib_method": "percentile", "percentile": 99.9}, {"calib_method": "mse"},
    {"calib_method": "search"}, {"reduce_range": "on"}, {"reduce_range": "off"}, {"placement": "all"},
    {"placement": "matmul-inputs"}, {"act16_below_db": 25.0}, {"target_sqnr_db": 30.0}, {"algorithms": ["cle"]},
    {"algorithms": ["cle", "adaround"]}, {"bias_correction": True}, {"hoist_gru": True}, {"skip_first": True},
    {"skip_last": True}, {"target": "ti-npu"}, {"target": "vitis-dpu"}, {"exclude": ["Conv"]},
    {"calib_samples": 64}, {"seed": 3, "sampling": "random"}, {"check_samples": 8}, {"weight_bits": 4},
    {"act_bits": 16}, {"method": "dynamic"}, {"method": "fp16"}, {"method": "weight-only"},
    {"method": "weight-only", "weight_bits": 4, "block_size": 32}, {"method": "dynamic", "per_channel": False},
]  # fmt: skip


def test_every_setting_gets_its_own_tag() -> None:
    tags = [Recipe(**s).default_tag for s in SETTINGS]  # type: ignore[arg-type]
    assert len(set(tags)) == len(SETTINGS), [t for t in tags if tags.count(t) > 1]
    pairs = [{**a, **b} for a, b in itertools.combinations(SETTINGS[1:25], 2) if not set(a) & set(b)]
    both = [Recipe(**p).default_tag for p in pairs]  # type: ignore[arg-type]
    assert len(set(both) | set(tags)) == len(both) + len(tags)
    assert all(len(t) <= 64 for t in tags + both)


def test_the_common_tags_read_as_documented() -> None:
    expect = {
        "int8": {}, "int8_pt": {"per_channel": False}, "w4a8": {"weight_bits": 4}, "int8_entropy": {"calib_method": "entropy"},
        "int8_sym": {"act_symmetric": True}, "int8_ti-npu": {"target": "ti-npu"}, "w4b32": {"method": "weight-only",
        "weight_bits": 4, "block_size": 32}, "fp16": {"method": "fp16"}, "dynamic_int8": {"method": "dynamic"},
        "int8_percentile99.9": {"calib_method": "percentile", "percentile": 99.9}, "custom": {"tag": "custom",
        "per_channel": False},
    }  # fmt: skip
    assert {Recipe(**v).default_tag: k for k, v in expect.items()} == {k: k for k in expect}  # type: ignore[arg-type]
    # settings fp16 does not read cannot change an fp16 model: same tag
    assert Recipe(method="fp16", calib_samples=64, seed=4).default_tag == "fp16"


def test_a_preset_tag_names_the_preset_settings_only() -> None:
    assert preset("int8-static").default_tag == "int8"
    assert preset("int8-static", weight_bits=4).default_tag == "w4a8"  # the sweep's int8-static_cpu_w4 cell
    assert preset("int8-static", target="ti-npu").default_tag == "int8_ti-npu"
    assert preset("accurate").default_tag == "accurate"
    assert preset("accurate", calib_data="x.npz").default_tag == "accurate"  # data is not a setting
    assert preset("accurate", weight_bits=4).default_tag != "accurate"


def test_runs_with_different_settings_write_different_files(tmp_path: Path) -> None:
    model = tmp_path / "net.onnx"
    onnx.save_model(conv_net(), model)
    np.save(tmp_path / "x.npy", images(48))
    out = tmp_path / "x"
    base = ["quantize", str(model), "-o", str(out), "--calib-data", str(tmp_path / "x.npy")]
    for extra in (
        [],
        ["--target", "ti-npu"],
        ["--calib-method", "entropy"],
        ["--symmetric"],
        ["--per-tensor"],
    ):
        res = CliRunner().invoke(app, [*base, *extra])
        assert res.exit_code == 0, res.output  # no --overwrite needed: each writes its own name
    names = sorted(p.name for p in out.glob("*.onnx"))
    assert names == [
        f"net_{t}.onnx" for t in sorted(["int8", "int8_ti-npu", "int8_entropy", "int8_sym", "int8_pt"])
    ]


def test_accurate_at_low_bits_is_one_recipe_and_one_name_everywhere() -> None:
    """Before: a REST request for accurate at 4 bits skipped the preset's low-bit AdaRound and wrote
    w4a8_search_cle-bc, while the CLI and API ran it and wrote w4a8_search_cle-adaround-bc."""
    from edgequant.recipe import from_dict
    from edgequant.service.routes_jobs import build_recipe

    for bits, base in ((4, "w4a8"), ("ternary", "wta8"), (8, None)):
        written = {
            "method": "static",
            "weight_bits": bits,
            "calib_method": "search",
        }  # the preset, spelled out
        passes = ["cle", "adaround", "bias_correction"] if base else ["cle", "bias_correction"]
        expect = f"{base}_search_cle-adaround-bc" if base else "accurate"
        if base:
            assert from_dict({**written, "algorithms": passes}).default_tag == expect  # the tag rules' name
        api = preset("accurate", weight_bits=bits)
        rest = build_recipe({"weight_bits": bits}, "accurate", None)
        assert (api.default_tag, list(api.algorithms)) == (expect, passes)
        assert (rest["tag"], rest["algorithms"]) == (expect, passes), rest


def test_a_rest_body_refines_a_preset_as_cli_flags_do_and_a_conflicting_method_is_refused() -> None:
    """A REST body key under ?method=PRESET was overwritten by the preset's value (method=accurate with
    calib_method=minmax ran the range search, tagged accurate): the body now wins, as --method accurate
    --calib-method minmax does on the CLI, and a body method that contradicts ?method=static is a 422."""
    from edgequant.errors import RecipeError
    from edgequant.service.routes_jobs import build_recipe

    body = {"calib_method": "minmax", "percentile": None}
    cli = preset("accurate", calib_method="minmax")
    rest = build_recipe(body, "accurate", None)
    assert rest["calib_method"] == cli.calib_method == "minmax"
    assert (rest["tag"], rest["algorithms"]) == (cli.default_tag, list(cli.algorithms)), rest
    assert rest["tag"] != "accurate"  # the preset's name would claim the range search
    no_bc = build_recipe({"bias_correction": False}, "accurate", None)
    assert no_bc["algorithms"] == list(preset("accurate", bias_correction=False).algorithms) == ["cle"]
    own = build_recipe({"algorithms": ["cle"], "weight_bits": 4}, "accurate", None)
    assert own["algorithms"] == ["cle"]  # the body's own pass list: no AdaRound added, as preset()
    assert build_recipe({"method": "static"}, "static", None)["method"] == "static"
    with pytest.raises(RecipeError, match="method=static and the body says method=dynamic"):
        build_recipe({"method": "dynamic"}, "static", None)
