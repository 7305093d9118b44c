"""What people expect of a CLI: --version, python -m, -v/-q, defaults and help text in --help, notes on
screen, recipe keys spelled as the flags, presets and --print-recipe, one line for a missing extra."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import typer
import yaml
from tinymodels import conv_net, images, optional
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.errors import RecipeError
from edgequant.recipe import from_dict, load_recipe

runner = CliRunner()


def test_version_flag_and_python_m() -> None:
    expected = importlib.metadata.version("edgequant")
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"edgequant {expected}"
    proc = subprocess.run([sys.executable, "-m", "edgequant", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"edgequant {expected}"


def test_every_option_has_help_and_brackets_survive() -> None:
    cmd = typer.main.get_command(app)
    commands = cmd.commands  # type: ignore[attr-defined]
    assert {"quantize", "evaluate", "compare", "demo", "inspect"} <= set(commands)
    for name, sub in commands.items():
        for p in sub.params:
            if p.param_type_name == "option":
                assert p.help, f"{name} {p.opts} has no help text"
    res = runner.invoke(app, ["quantize", "--help"], terminal_width=200)
    assert "edgequant[tf]" in res.output  # rich markup used to swallow "[tf]"
    assert "[default: 8]" in res.output and "[default: static]" in res.output
    assert "[default: auto]" in res.output and "[default: 128]" in res.output


def _note_model(tmp_path: Path) -> Path:
    """conv_net with its first weight held in a Constant node: the repair moves it and says so."""
    m = conv_net()
    w1 = next(t for t in m.graph.initializer if t.name == "w1")
    m.graph.initializer.remove(w1)
    m.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["w1"], name="w1_const", value=w1))
    path = tmp_path / "cnet.onnx"
    onnx.save_model(m, path)
    return path


def test_notes_are_printed_and_quiet_hides_them_not_warnings(files: dict[str, Path], tmp_path: Path) -> None:
    model = _note_model(tmp_path)
    args = ["quantize", str(model), "-o", str(tmp_path / "o1"), "--calib-data", str(files["calib"])]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "note: 1 Constant node(s) converted to initializers" in res.output
    res = runner.invoke(app, ["-q", *args[:3], str(tmp_path / "o2"), *args[4:]])
    assert res.exit_code == 0, res.output
    assert "note:" not in res.output
    # -q hides notes, never a warning: 24 samples cannot give the 32 held-out ones asked for
    assert "warning: the data has 24 samples: 12 held back for the check" in res.output


def test_recipe_keys_spelled_as_flags(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("symmetric: true\ntarget_sqnr: 20\ndata_option:\n  video_frames: 4\n")
    r = load_recipe(path)
    assert r.act_symmetric is True and r.target_sqnr_db == 20.0 and r.data_options == {"video_frames": 4}
    old = from_dict({"act_symmetric": True, "target_sqnr_db": 20, "data_options": {"video_frames": 4}})
    assert old == r
    with pytest.raises(RecipeError, match="two spellings"):
        from_dict({"symmetric": True, "act_symmetric": False})


def test_recipe_preset_name_and_print_recipe(files: dict[str, Path]) -> None:
    args = ["quantize", str(files["model"]), "-o", str(files["out"]), "--calib-data", str(files["calib"])]
    res = runner.invoke(app, [*args, "--recipe", "w4a8", "--print-recipe"])
    assert res.exit_code == 0, res.output
    printed = yaml.safe_load(res.output[: res.output.index("preprocess:")])
    assert printed["weight_bits"] == 4 and printed["act_bits"] == 8 and printed["method"] == "static"
    report = json.loads((files["out"] / "net_w4a8.json").read_text())
    assert report["recipe"]["weight_bits"] == 4


def test_missing_torch_extra_is_one_line(files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    pt = files["model"].with_suffix(".pt")
    pt.write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ModuleNotFoundError
    res = runner.invoke(app, ["quantize", str(pt), "-o", str(files["out"]), "--input-shape", "1x3x16x16"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'edgequant[torch]'" in lines[0]
    assert not files["out"].exists()


def test_torchscript_shape_from_first_calibration_sample(tmp_path: Path) -> None:
    torch = optional("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(5)
    )
    net(torch.zeros(1, 3, 12, 12))
    pt = tmp_path / "tiny_net.pt"
    torch.jit.save(torch.jit.script(net.eval()), str(pt))
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((20, 3, 12, 12)).astype(np.float32))
    out = tmp_path / "out"
    res = runner.invoke(app, ["quantize", str(pt), "-o", str(out), "--calib-data", str(calib)])
    assert res.exit_code == 0, res.output
    q = onnx.load(str(out / "tiny_net_int8.onnx"))
    dims = [d.dim_value for d in q.graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 12, 12]  # the sample's shape; the batch axis is exported dynamic
    # no .npy/.npz to read a shape from: one line naming --input-shape
    res = runner.invoke(app, ["quantize", str(pt), "-o", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "--input-shape" in res.output and not (tmp_path / "o2").exists()


def _option_names() -> set[str]:
    cmd = typer.main.get_command(app)
    return {o for sub in cmd.commands.values() for p in sub.params for o in getattr(p, "opts", [])}  # type: ignore[attr-defined]


def test_hints_name_options_that_exist(files: dict[str, Path], tmp_path: Path) -> None:
    import re

    torch = optional("torch")
    options = _option_names()
    sd = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), str(sd))
    cases = [
        ["quantize", str(sd), "-o", str(tmp_path / "a"), "--input-shape", "1x3"],
        ["inspect", str(tmp_path)],  # a directory
    ]
    locked = tmp_path / "locked.npz"
    np.savez(locked, x=images(4))
    locked.chmod(0)
    if __import__("os").geteuid() != 0:  # root reads a chmod-0 file anyway
        cases.append(
            ["quantize", str(files["model"]), "-o", str(tmp_path / "b"), "--calib-data", str(locked)]
        )
    for args in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", res.output))
        assert named <= options, (named - options, res.output)
        assert "miniz" not in res.output and "PytorchStreamReader" not in res.output
    res = runner.invoke(app, cases[0])
    assert "--factory" in res.output and "--checkpoint" in res.output


def test_unreadable_npz_hint_is_not_resave(tmp_path: Path) -> None:
    from edgequant.data.arrays import open_npz

    with pytest.raises(Exception) as info:
        open_npz(tmp_path)  # a directory: the OS refuses it, re-saving would not help
    assert "np.savez" not in str(info.value) and "readable file" in str(info.value)


def test_example_recipe_keys_are_flag_names_and_it_runs(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    text = (root / "examples" / "recipe.yaml").read_text()
    data = yaml.safe_load(text)
    cmd = typer.main.get_command(app)
    flags = {
        o.lstrip("-").replace("-", "_")
        for p in cmd.commands["quantize"].params  # type: ignore[attr-defined]
        for o in getattr(p, "opts", [])
    }
    assert set(data) <= flags, set(data) - flags
    r = load_recipe(root / "examples" / "recipe.yaml")
    assert (r.calib_method, r.act_symmetric, r.per_channel) == ("entropy", False, True)
    res = runner.invoke(
        app,
        ["quantize", str(root / "examples" / "shapes_cnn.onnx"), "-o", str(tmp_path), "--recipe",
         str(root / "examples" / "recipe.yaml"), "--calib-data", str(root / "examples" / "shapes_calib.npz"),
         "--calib-samples", "32"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (
        json.loads((tmp_path / "shapes_cnn_int8_entropy_h145de2.json").read_text())["calibration"]["method"]
        == "entropy"
    )


def test_verbose_shows_info_logs(files: dict[str, Path], tmp_path: Path) -> None:
    model = _note_model(tmp_path)
    args = ["quantize", str(model), "-o", str(tmp_path / "v"), "--calib-data", str(files["calib"])]
    res = runner.invoke(app, ["-v", *args])
    assert res.exit_code == 0, res.output
    assert "INFO edgequant.model.repair: 1 Constant node(s) converted to initializers" in res.output
    res = runner.invoke(app, [*args[:3], str(tmp_path / "w"), *args[4:]])
    assert "INFO edgequant" not in res.output


def test_opset_raised_is_a_note_on_screen(tmp_path: Path) -> None:
    onnx.save(conv_net(opset=11), tmp_path / "net.onnx")
    np.save(tmp_path / "x.npy", images(64))
    args = ["quantize", str(tmp_path / "net.onnx"), "--calib-data", str(tmp_path / "x.npy"), "-o"]
    res = runner.invoke(app, [*args, str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "note: opset raised from 11 to 13" in " ".join(res.output.split())
    written = onnx.load(str(tmp_path / "o" / "net_int8.onnx"))
    assert max(o.version for o in written.opset_import if o.domain in ("", "ai.onnx")) == 13
