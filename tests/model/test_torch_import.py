"""PyTorch -> ONNX import: numeric agreement, dynamic batch, checkpoints, refusals and mismatches."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tinymodels import optional

torch = optional("torch")  # skips locally without the extra, fails in CI
from torch import nn  # noqa: E402

from edgequant.errors import DataError, DependencyError, ModelError, RecipeError  # noqa: E402
from edgequant.model import checkpoint, verify  # noqa: E402
from edgequant.model import torch_import as ti  # noqa: E402
from edgequant.model.checkpoint import load_factory, load_torchscript  # noqa: E402
from edgequant.model.torch_import import export_torch, parse_input_shapes  # noqa: E402
from edgequant.model.verify import ImportReport  # noqa: E402
from edgequant.runtime import OrtRuntime  # noqa: E402

# --------------------------------------------------------------------------- tiny models


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)
        self.act = nn.GELU()

    def forward(self, x: Any) -> Any:
        y = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.act(self.fc(y))


class DepthwiseSeparable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.pw = nn.Conv2d(8, 16, 1)

    def forward(self, x: Any) -> Any:
        return self.pw(torch.relu(self.bn(self.dw(x))))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: Any) -> Any:
        return torch.relu(x + self.c2(torch.relu(self.bn(self.c1(x)))))


class Recurrent(nn.Module):
    """LSTM or GRU + Linear head; returns the sequence output and the final hidden state."""

    def __init__(self, cell: str, batch_first: bool) -> None:
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(6, 12, num_layers=2, batch_first=batch_first)
        self.head = nn.Linear(12, 4)

    def forward(self, x: Any) -> Any:
        y, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state
        return self.head(y), h


def _randomize_bn(module: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial running statistics so folding it is really exercised."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return module


# name -> (factory, example shape, batch axis)
CASES: dict[str, tuple[Any, tuple[int, ...], int]] = {
    "convnet": (ConvNet, (2, 3, 16, 16), 0),
    "depthwise": (DepthwiseSeparable, (2, 8, 8, 8), 0),
    "residual": (Residual, (2, 8, 8, 8), 0),
    "lstm_batch_first": (lambda: Recurrent("lstm", True), (2, 7, 6), 0),
    "lstm_time_major": (lambda: Recurrent("lstm", False), (7, 2, 6), 1),
    "gru_batch_first": (lambda: Recurrent("gru", True), (2, 7, 6), 0),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, ImportReport]]:
    """Every case exported once, shared by the tests below."""
    out_dir = tmp_path_factory.mktemp("exports")
    results = {}
    for i, (name, (factory, shape, axis)) in enumerate(CASES.items()):
        torch.manual_seed(i)
        module = _randomize_bn(factory()).eval()
        x = torch.randn(*shape)
        report = export_torch(module, x, out_dir / f"{name}.onnx", batch_axis=axis)
        results[name] = (module, report)
    return results


@pytest.mark.parametrize("name", list(CASES))
def test_export_matches_torch(name: str, exported: dict[str, tuple[nn.Module, ImportReport]]) -> None:
    _, report = exported[name]
    assert report.onnx_path.is_file()
    assert report.max_abs_diff < 1e-4
    assert report.sqnr_db > 60.0
    assert report.opset == 17
    assert report.source.startswith("torch:")
    # only the final file is written: no temporary or data files beside it
    assert sorted(p.name for p in report.onnx_path.parent.glob(f"{name}*")) == [f"{name}.onnx"]


@pytest.mark.parametrize("name", list(CASES))
def test_dynamic_batch_runs_at_1_and_5(
    name: str, exported: dict[str, tuple[nn.Module, ImportReport]]
) -> None:
    module, report = exported[name]
    _, shape, axis = CASES[name]
    session = OrtRuntime().session(report.onnx_path)
    try:
        dims = session.inputs[0].shape
        assert dims[axis] == "batch"
        assert [d for i, d in enumerate(dims) if i != axis] == [d for i, d in enumerate(shape) if i != axis]
        for batch in (1, 5):
            sized = list(shape)
            sized[axis] = batch
            x = np.random.default_rng(batch).standard_normal(sized).astype(np.float32)
            got = session.run({"input": x})
            with torch.no_grad():
                ref = module(torch.from_numpy(x))
            refs = list(ref) if isinstance(ref, tuple) else [ref]
            assert len(got) == len(refs)
            for g, r in zip(got.values(), refs, strict=True):
                r_np = r.numpy()
                assert g.shape == r_np.shape
                assert float(np.max(np.abs(g - r_np))) < 1e-4
    finally:
        session.close()


def test_recurrent_hidden_state_batch_axis_is_1(exported: dict[str, tuple[nn.Module, ImportReport]]) -> None:
    # h_n is (num_layers, batch, hidden) whatever batch_first says: detected, not assumed to be axis 0
    for name in ("lstm_batch_first", "lstm_time_major", "gru_batch_first"):
        session = OrtRuntime().session(exported[name][1].onnx_path)
        assert session.output_names == ["output_0", "output_1"]
        assert session._session.get_outputs()[1].shape == [2, "batch", 12]
        session.close()


def test_static_batch_export_is_quiet(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    report = export_torch(
        Residual().eval(), torch.randn(1, 8, 4, 4), tmp_path / "s.onnx", dynamic_batch=False
    )
    session = OrtRuntime().session(report.onnx_path)
    assert session.inputs[0].shape == [1, 8, 4, 4]
    session.close()
    assert capfd.readouterr() == ("", "")  # no exporter warnings or prints reach the terminal


def test_multi_input_names_and_training_mode_restored(tmp_path: Path) -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.drop = nn.Dropout(0.5)

        def forward(self, a: Any, b: Any) -> Any:
            return self.drop(self.fc(a)) * b

    torch.manual_seed(0)
    module = TwoInputs().train()
    report = export_torch(
        module, (torch.randn(2, 4), torch.randn(2, 3)), tmp_path / "m.onnx", input_names=["a", "b"]
    )
    assert module.training  # the caller's mode is restored
    assert report.sqnr_db > 60.0  # dropout was off during export and verification
    session = OrtRuntime().session(report.onnx_path)
    assert session.input_names == ["a", "b"]
    session.close()
    with pytest.raises(DataError, match=r"input_names \['a'\] must be 2 distinct name\(s\)"):
        export_torch(module, (torch.randn(2, 4), torch.randn(2, 3)), tmp_path / "n.onnx", input_names=["a"])


def test_dynamo_exporter(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(3)
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    report = export_torch(module, torch.randn(2, 3, 8, 8), tmp_path / "d.onnx", exporter="dynamo", opset=18)
    assert report.max_abs_diff < 1e-4 and report.sqnr_db > 60.0
    assert report.opset == 18
    session = OrtRuntime().session(report.onnx_path)
    assert session.inputs[0].shape[0] == "batch"
    session.close()
    assert capfd.readouterr() == ("", "")  # dynamo's progress lines and log warnings are captured


# --------------------------------------------------------------------------- mismatch


class ExportsDifferently(nn.Module):
    """Multiplies by 3 when run, by 2 when traced for ONNX: a deliberately wrong export."""

    def forward(self, x: Any) -> Any:
        return x * (2.0 if torch.onnx.is_in_onnx_export() else 3.0)


def test_mismatch_is_model_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "bad.onnx"
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32))
    with pytest.raises(ModelError) as info:
        export_torch(ExportsDifferently(), x, out)
    msg = str(info.value)
    # y = 3x vs 2x: noise = x^2, signal = 9x^2 -> SQNR = 10*log10(9) = 9.5 dB
    assert "ONNX Runtime output does not match the source model (required SQNR >= 40.0 dB)" in msg
    assert "'output' on the example inputs: SQNR 9.5 dB, max abs diff " in msg
    diff = float(np.max(np.abs(x.numpy())))
    assert f"max abs diff {diff:.3g}" in msg
    assert list(tmp_path.iterdir()) == []


def test_mismatch_threshold_is_respected(tmp_path: Path) -> None:
    # the same 9.5 dB export passes when the caller asks for only 5 dB (static: only the example runs)
    report = export_torch(
        ExportsDifferently(), torch.ones(2, 3), tmp_path / "ok.onnx", rtol_sqnr_db=5.0, dynamic_batch=False
    )
    assert report.sqnr_db == pytest.approx(10 * np.log10(9.0), abs=1e-3)
    assert report.max_abs_diff == pytest.approx(1.0, abs=1e-6)


def test_fixed_batch_module_is_refused_with_dynamic_batch(tmp_path: Path) -> None:
    class FixedBatch(nn.Module):
        def forward(self, x: Any) -> Any:
            return x.reshape(2, 6)

    with pytest.raises(ModelError, match=r"the module fails at batch 4 \(example batch 2\)"):
        export_torch(FixedBatch(), torch.randn(2, 6), tmp_path / "f.onnx")
    assert list(tmp_path.iterdir()) == []


def test_bad_example_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="example input 0 is a list"):
        export_torch(nn.Identity(), ([1.0, 2.0],), tmp_path / "x.onnx")
    with pytest.raises(ModelError, match=re.escape("expected a torch.nn.Module, got function")):
        export_torch(lambda x: x, torch.ones(1), tmp_path / "x.onnx")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- checkpoints


@pytest.fixture
def factory_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg = tmp_path / "pkgroot" / "eqtiny"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            def build():
                return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "pkgroot"))
    yield "eqtiny.nets:build"
    for name in [m for m in sys.modules if m == "eqtiny" or m.startswith("eqtiny.")]:
        del sys.modules[name]


def test_state_dict_round_trip_with_factory(tmp_path: Path, factory_package: str) -> None:
    torch.manual_seed(7)
    trained = load_factory(factory_package, None)
    for wrap in ("raw", "state_dict", "model"):
        ckpt = tmp_path / f"{wrap}.pt"
        sd = trained.state_dict()
        torch.save(sd if wrap == "raw" else {wrap: sd, "epoch": 3}, ckpt)
        loaded = load_factory(factory_package, ckpt)
        for k, v in trained.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v), (wrap, k)
    report = export_torch(loaded, torch.randn(3, 4), tmp_path / "f.onnx")
    assert report.sqnr_db > 60.0


def test_full_module_pickle_is_refused(tmp_path: Path, factory_package: str) -> None:
    ckpt = tmp_path / "full.pt"
    torch.save(load_factory(factory_package, None), ckpt)  # pickles the nn.Module object itself
    with pytest.raises(ModelError) as info:
        load_factory(factory_package, ckpt)
    msg = str(info.value)
    assert (
        "holds pickled Python objects (such as a whole nn.Module), which weights_only loading refuses" in msg
    )
    assert "torch.save(model.state_dict(), path)" in msg


def test_state_dict_key_mismatch_lists_keys(tmp_path: Path, factory_package: str) -> None:
    sd = load_factory(factory_package, None).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["2.bias"]
    torch.save(sd, tmp_path / "k.pt")
    with pytest.raises(
        ModelError, match=r"1 missing key\(s\) \['2.bias'\], 1 unexpected key\(s\) \['extra.weight'\]"
    ):
        load_factory(factory_package, tmp_path / "k.pt")
    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}}, tmp_path / "o.pt")
    with pytest.raises(ModelError, match=r"holds a dict \(keys \['epoch', 'optimizer'\]\), not a state_dict"):
        load_factory(factory_package, tmp_path / "o.pt")
    sd = load_factory(factory_package, None).state_dict()
    sd["0.weight"] = torch.zeros(3, 3)
    torch.save(sd, tmp_path / "s.pt")
    with pytest.raises(ModelError, match=re.escape("size mismatch for 0.weight")):
        load_factory(factory_package, tmp_path / "s.pt")


def test_bad_factory_references(factory_package: str) -> None:
    with pytest.raises(ModelError, match=re.escape("is not of the form 'package.module:factory'")):
        load_factory("eqtiny.nets.build", None)
    with pytest.raises(ModelError, match=re.escape("cannot import module 'eqtiny.nope'")):
        load_factory("eqtiny.nope:build", None)
    with pytest.raises(ModelError, match=re.escape("module 'eqtiny.nets' has no callable 'missing'")):
        load_factory("eqtiny.nets:missing", None)


# --------------------------------------------------------------------------- TorchScript and helpers


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_load_and_export(tmp_path: Path) -> None:
    torch.manual_seed(5)
    scripted = torch.jit.trace(_randomize_bn(DepthwiseSeparable()).eval(), torch.randn(1, 8, 6, 6))
    path = tmp_path / "m.pt"
    torch.jit.save(scripted, str(path))
    loaded = load_torchscript(path)
    report = export_torch(loaded, torch.randn(2, 8, 6, 6), tmp_path / "m.onnx")
    assert report.max_abs_diff < 1e-4 and report.sqnr_db > 60.0
    (tmp_path / "junk.pt").write_bytes(b"not an archive")
    with pytest.raises(ModelError, match="is not a loadable TorchScript archive"):
        load_torchscript(tmp_path / "junk.pt")
    with pytest.raises(ModelError, match="does not exist"):
        load_torchscript(tmp_path / "absent.pt")


def test_parse_input_shapes() -> None:
    assert parse_input_shapes("1x3x32x32") == [(1, 3, 32, 32)]
    assert parse_input_shapes("1x3x32x32, 1X10") == [(1, 3, 32, 32), (1, 10)]
    for bad in ("", "1x0x3", "1x-3", "1x3,", "axb", "1,,2"):
        with pytest.raises(RecipeError, match=r"positive integers|no input shape"):
            parse_input_shapes(bad)


def test_missing_torch_is_dependency_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(DependencyError) as info:
        checkpoint.require_torch()
    assert str(info.value) == (
        "Importing a PyTorch model needs the Python package 'torch', which is not installed. "
        "Fix: pip install 'edgequant[torch]'"
    )


def test_moved_names_stay_importable_from_torch_import() -> None:
    # cli.py, service/worker.py and model/tf_import.py import these from torch_import
    for name in ("load_factory", "load_state_dict", "load_torchscript", "require_torch"):
        assert getattr(ti, name) is getattr(checkpoint, name), name
    for name in ("ImportReport", "compare_outputs", "quiet", "run_onnx", "second_batch"):
        assert getattr(ti, name) is getattr(verify, name), name
