"""Exclude patterns: one matcher (``edgequant.recipe.exclude``) for the library/CLI and the service,
with a safe subset checked before any pattern is compiled (issue 10 item 3, review findings 1 and 17)."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
from service_helpers import Server, tiny_model, tiny_npz, upload

from edgequant.errors import RecipeError
from edgequant.planner import excluded_nodes
from edgequant.recipe import from_dict
from edgequant.recipe.exclude import MAX_PATTERN_CHARS, MAX_REPEAT_COUNT, compile_pattern
from edgequant.service.worker import resolve_regex_excludes


@pytest.mark.parametrize(
    ("pattern", "needle"),
    [
        ("re:a{1000000000}", f"limit is {MAX_REPEAT_COUNT}"),
        ("re:x{2,5000}", f"limit is {MAX_REPEAT_COUNT}"),
        ("re:(a+)+b", "nested repeats"),
        ("re:(?:a{2})*", "nested repeats"),
        (r"re:(a)\1", "backreference"),
        ("re:" + "a" * (MAX_PATTERN_CHARS + 1), f"limit is {MAX_PATTERN_CHARS}"),
    ],
)
def test_unsafe_patterns_are_refused_before_compiling(pattern: str, needle: str) -> None:
    with pytest.raises(RecipeError) as err:
        compile_pattern(pattern)
    assert needle in str(err.value) and pattern[:40] in str(err.value)


def test_the_service_refuses_a_huge_repeat_count_at_submission(server: Server) -> None:
    """Before: the job was queued and its worker grew to 7.7 GB compiling 'a{1000000000}'."""
    with server.client() as c:
        assert (
            upload(
                c, "models", "pat", tiny_model().SerializeToString(), "p.onnx", overwrite="true"
            ).status_code
            == 201
        )
        assert upload(c, "datasets", "pat-data", tiny_npz(), "d.npz", overwrite="true").status_code == 201
        before = c.get("/api/v1/jobs").json()
        for pattern in ("re:a{1000000000}", "re:(a+)+$"):
            r = c.post(
                "/api/v1/model/pat/quantize", params={"dataset": "pat-data"}, json={"exclude": [pattern]}
            )
            assert r.status_code == 422, r.text
            assert r.json()["error"] == "RecipeError" and pattern in r.json()["detail"], r.text
        assert c.get("/api/v1/jobs").json() == before  # nothing was queued


def _names(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node]


@pytest.mark.parametrize("pattern", [r"re:.*[^\s\S]", "re:(?i)CONV.*", r"re:\w+", "re:[cf].*", "re:x|r.*"])
def test_library_and_service_match_the_same_nodes_as_python_re(tmp_path: Path, pattern: str) -> None:
    """The planner (library/CLI) and the service select what Python's re.fullmatch selects; before,
    the service's 'regex' module matched every node with '.*[^\\s\\S]', which matches nothing."""
    model = tiny_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    expected = {n for n in _names(model) if re.fullmatch(pattern[3:], n)}
    if not expected:
        with pytest.raises(RecipeError, match="matches no node"):
            excluded_nodes(model, from_dict({"exclude": [pattern]}))
        with pytest.raises(RecipeError, match="matches no node"):
            resolve_regex_excludes(path, [pattern])
        return
    assert excluded_nodes(model, from_dict({"exclude": [pattern]})) == expected
    assert set(resolve_regex_excludes(path, [pattern])) == expected
