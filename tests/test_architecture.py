"""Package boundaries from DESIGN.md, the public API, and the lint/type gates (ruff, mypy)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgequant

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "edgequant"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_runtime_imports_onnxruntime() -> None:
    offenders = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "onnxruntime" in _imports(p) and p.parent.name != "runtime"
    ]
    assert offenders == []


@pytest.mark.parametrize("package", ["recipe", "schemes"])
def test_recipe_and_schemes_import_neither_onnx_nor_onnxruntime(package: str) -> None:
    for p in (SRC / package).rglob("*.py"):
        assert not _imports(p) & {"onnx", "onnxruntime"}, p


def test_public_api() -> None:
    assert sorted(edgequant.__all__) == sorted(
        [
            "DataError",
            "DependencyError",
            "EdgeQuantError",
            "ExportError",
            "InferenceError",
            "ModelError",
            "QuantPlan",
            "QuantResult",
            "Recipe",
            "RecipeError",
            "TargetError",
            "UnsupportedError",
            "__version__",
            "compare",
            "evaluate",
            "load_recipe",
            "quantize",
        ]
    )
    for name in edgequant.__all__:
        assert hasattr(edgequant, name), name


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    assert found, f"{name} is not installed; install the test extra: pip install -e '.[test]'"
    return found


def test_ruff_lint_and_format() -> None:
    for args in (
        ["check", "src", "tests", "benchmarks", "examples"],
        ["format", "--check", "src", "tests", "benchmarks", "examples"],
    ):
        res = subprocess.run([_tool("ruff"), *args], cwd=ROOT, capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_src() -> None:
    res = subprocess.run([_tool("mypy"), "src/edgequant"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr


def test_readme_links_stay_inside_the_repository() -> None:
    """Every relative link of the README names a file of this repository (none reaches ``../``)."""
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [t for t in re.findall(r"\]\(([^)#\s]+)", text) if "://" not in t and not t.startswith("mailto:")]
    assert links, "the README links to files of the repository"
    outside = [t for t in links if not (ROOT / t).resolve().is_relative_to(ROOT)]
    missing = [t for t in links if not (ROOT / t).exists()]
    assert not outside and not missing, (outside, missing)


def test_no_test_is_marked_slow() -> None:
    """Every test runs in the README's test command: no ``slow`` marker that a run might deselect."""
    hits = [
        p.name for p in (ROOT / "tests").rglob("*.py") if "mark." + "slow" in p.read_text(encoding="utf-8")
    ]
    assert not hits and "slow" not in (ROOT / "pyproject.toml").read_text(encoding="utf-8"), hits


def test_optional_extras_are_imported_through_the_ci_guard() -> None:
    """``tinymodels.optional`` fails in CI where ``pytest.importorskip`` would skip: no test calls the latter."""
    hits = []
    for path in (ROOT / "tests").rglob("*.py"):
        if path.name == "tinymodels.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "importorskip")
                or (isinstance(node.func, ast.Name) and node.func.id == "importorskip")
            ):
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not hits, f"use tinymodels.optional(module) instead of pytest.importorskip: {hits}"
