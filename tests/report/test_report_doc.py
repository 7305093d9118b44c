"""docs/report.md documents every top-level field of the report and every field its ``compliance`` and
``ti_npu_int`` sections hold (the ``toolchain`` section is checked in tests/toolchains, where it is built).

The report is a real run (the built-in example, --target ti-npu --format ti-npu-int); the test reads its
keys and looks each one up in the document's section, so a field added without its line fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from edgequant.cli import app

ROOT = Path(__file__).resolve().parents[2]


def _section(doc: str, heading: str) -> str:
    start = doc.index(heading)
    end = doc.find("\n## ", start + len(heading))
    return doc[start : end if end > 0 else len(doc)]


def test_compliance_and_ti_npu_int_fields_are_documented(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app,
        ["quantize", str(ROOT / "examples" / "shapes_cnn.onnx"), "--calib-data",
         str(ROOT / "examples" / "shapes_calib.npz"), "--target", "ti-npu", "--format", "ti-npu-int",
         "-o", str(out), "-q"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    report = json.loads(next(p for p in out.glob("*.json") if not p.name.endswith(".plan.json")).read_text())
    doc = (ROOT / "docs" / "report.md").read_text()
    sections = {
        "compliance": _section(doc, "## `compliance`"),
        "ti_npu_int": _section(doc, "## `ti_npu_int`"),
    }
    compliance, ti = report["compliance"], report["ti_npu_int"]
    assert compliance["findings"] and ti["layers"] and ti["per_layer"]  # the nested keys are read below
    keys = {
        "compliance": [*compliance, *compliance["findings_by_consequence"], *compliance["findings"][0]],
        "ti_npu_int": [*ti, *ti["layers"][0], *ti["per_layer"][0]],
    }
    top = _section(doc, "# The run report")  # its first column: `key` or `key.sub`, one or more per row
    first_cells = re.findall(r"^\| ([^|]*)\|", top, re.M)
    documented_top = {key.split(".")[0] for cell in first_cells for key in re.findall(r"`([^`]+)`", cell)}
    undocumented = sorted(set(report) - documented_top)
    assert not undocumented, f"docs/report.md lacks the top-level report fields {undocumented}"
    for name, names in keys.items():
        documented = set(re.findall(r"`([^`]+)`", sections[name]))
        missing = [k for k in names if k not in documented]
        assert not missing, f"docs/report.md, section {name}, lacks {missing}"
