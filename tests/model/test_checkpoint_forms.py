"""Checkpoint forms: {'model_state_dict': ...} / {'state_dict': ...} (the key detected and stated),
and a run directory holding one checkpoint plus args.json (the factory built from it)."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from tinymodels import optional

torch = optional("torch")  # skips locally without the extra, fails in CI

from edgequant.errors import ModelError  # noqa: E402
from edgequant.model.checkpoint import load_checkpoint, load_factory_noted  # noqa: E402


@pytest.fixture
def gru_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    pkg = tmp_path / "pkgroot" / "eqgru"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class Decoder(nn.Module):
                def __init__(self, n_in=4, hidden=8, n_out=3):
                    super().__init__()
                    self.gru = nn.GRU(n_in, hidden, batch_first=True)
                    self.head = nn.Linear(hidden, n_out)

                def forward(self, x):
                    y, _ = self.gru(x)
                    return self.head(y)

            def build(n_in=4, hidden=8, n_out=3):
                return Decoder(n_in, hidden, n_out)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "pkgroot"))
    yield "eqgru.nets:build"
    for name in [m for m in sys.modules if m == "eqgru" or m.startswith("eqgru.")]:
        del sys.modules[name]


@pytest.mark.parametrize("key", ["model_state_dict", "state_dict"])
def test_training_loop_checkpoint_key_is_detected_and_stated(
    tmp_path: Path, gru_factory: str, key: str
) -> None:
    from eqgru.nets import build  # type: ignore[import-not-found]

    torch.manual_seed(3)
    trained = build()
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"epoch": 7, key: trained.state_dict(), "optimizer_state_dict": {"lr": 0.1}}, ckpt)
    state, form = load_checkpoint(ckpt)
    assert set(state) == set(trained.state_dict())
    assert form == f"the '{key}' entry of 'ckpt.pt' (other entries: epoch, optimizer_state_dict)"
    module, notes = load_factory_noted(gru_factory, ckpt)
    assert notes == [f"weights from {form}"]
    for k, v in trained.state_dict().items():
        assert torch.equal(module.state_dict()[k], v)


def test_run_directory_builds_the_factory_from_args_json(tmp_path: Path, gru_factory: str) -> None:
    from eqgru.nets import build

    run = tmp_path / "run"
    run.mkdir()
    trained = build(n_in=5, hidden=6, n_out=2)
    torch.save({"model_state_dict": trained.state_dict()}, run / "best.pth")
    (run / "args.json").write_text(
        json.dumps({"n_in": 5, "hidden": 6, "n_out": 2, "lr": 0.001, "epochs": 40})
    )
    module, notes = load_factory_noted(gru_factory, run)
    assert module.gru.hidden_size == 6 and module.head.out_features == 2
    assert notes == [
        "weights from the 'model_state_dict' entry of 'best.pth' (other entries: none)",
        "factory called with n_in=5, hidden=6, n_out=2 from 'args.json' (not parameters of the factory, "
        "not used: epochs, lr)",
    ]
    torch.save({}, run / "other.pt")
    with pytest.raises(ModelError, match=r"holds 2 checkpoint files \(best.pth, other.pt\)"):
        load_factory_noted(gru_factory, run)
