"""The one matcher for ``exclude`` entries, used by the planner (library, CLI) and the service.

An entry is a node name, an op type, or ``re:PATTERN``: a Python ``re`` regular expression that must
match a whole node name (``re.fullmatch``).  The same module, the same ``re`` semantics everywhere,
so a pattern means the same thing on the command line and in a REST job.

Patterns are checked before they are compiled (``compile_pattern``), and refused with a RecipeError
naming the pattern and the limit when they leave the safe subset:

* at most ``MAX_PATTERN_CHARS`` characters;
* every repeat count (``{m}``, ``{m,n}``) at most ``MAX_REPEAT_COUNT``;
* no repeat inside a repeated group (``(a+)+``, ``(a*)*``, ``(?:x{2})*``: catastrophic backtracking);
* no backreferences (``\\1``, ``(?P=name)``).

``match_names(..., budget_s=...)`` additionally bounds the matching time of all patterns together
(SIGALRM: ``re`` checks signals while it backtracks) when it runs in a process's main thread; the
service's workers and Ray tasks run jobs there.  Without a budget (the CLI) there is no time bound.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from edgequant.errors import RecipeError

MAX_PATTERN_CHARS = 200
MAX_REPEAT_COUNT = 100
PREFIX = "re:"


def _parse(text: str) -> Any:
    try:
        import re._parser as sre_parse  # Python >= 3.11
    except ImportError:  # pragma: no cover - older Pythons
        import sre_parse  # type: ignore[no-redef]
    return sre_parse.parse(text)


def _walk(items: Any, pattern: str, in_repeat: bool) -> None:
    """Refuse repeat counts above the bound, nested repeats and backreferences (module doc)."""
    import re._constants as c

    max_repeat = c.MAXREPEAT
    for op, arg in items:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, high, body = arg
            for count in (low, high):
                if count != max_repeat and count > MAX_REPEAT_COUNT:
                    raise RecipeError(
                        f"exclude pattern '{pattern}' repeats {count} times; the limit is {MAX_REPEAT_COUNT}.",
                        "use a smaller count, or '+' / '*'.",
                    )
            if in_repeat:
                raise RecipeError(
                    f"exclude pattern '{pattern}' repeats inside a repeated group (like '(a+)+'), which can "
                    "backtrack for minutes; nested repeats are not accepted.",
                    "write the pattern without a repeat inside a repeated group.",
                )
            _walk(body, pattern, True)
        elif op in (c.GROUPREF, c.GROUPREF_EXISTS):
            raise RecipeError(
                f"exclude pattern '{pattern}' uses a backreference, which is not accepted.",
                "write the pattern without backreferences.",
            )
        elif op == c.SUBPATTERN:
            _walk(arg[-1], pattern, in_repeat)
        elif op in (c.ATOMIC_GROUP,):
            _walk(arg, pattern, in_repeat)
        elif op in (c.ASSERT, c.ASSERT_NOT):
            _walk(arg[1], pattern, in_repeat)
        elif op == c.BRANCH:
            for branch in arg[1]:
                _walk(branch, pattern, in_repeat)


def compile_pattern(entry: str) -> re.Pattern[str]:
    """The compiled regex of an exclude entry ``re:PATTERN`` after the safe-subset checks.

    Raises RecipeError naming the entry when it is too long, has a repeat count above
    ``MAX_REPEAT_COUNT``, nests repeats, uses backreferences, or is not a valid regex.
    """
    text = entry[len(PREFIX) :] if entry.startswith(PREFIX) else entry
    if len(text) > MAX_PATTERN_CHARS:
        raise RecipeError(
            f"exclude pattern '{entry[:40]}...' is {len(text)} characters long; the limit is "
            f"{MAX_PATTERN_CHARS}.",
            "shorten it, or list node names.",
        )
    try:
        _walk(_parse(text), entry, False)
        return re.compile(text)
    except re.error as exc:
        raise RecipeError(f"exclude pattern '{entry}' is not a valid regex: {exc}.", "fix it.") from exc
    except RecursionError as exc:
        raise RecipeError(f"exclude pattern '{entry[:40]}' nests too deeply.", "simplify it.") from exc


def check_patterns(exclude: Sequence[str]) -> None:
    """Check every ``re:`` entry of ``exclude`` (``compile_pattern``'s RecipeError) without matching."""
    for entry in exclude:
        if isinstance(entry, str) and entry.startswith(PREFIX):
            compile_pattern(entry)


def entry_matches(entry: str, name: str, op_type: str, compiled: re.Pattern[str] | None = None) -> bool:
    """Whether one exclude entry selects the node ``name`` of type ``op_type``."""
    if entry.startswith(PREFIX):
        regex = compiled if compiled is not None else compile_pattern(entry)
        return regex.fullmatch(name) is not None
    return entry in (name, op_type)


@contextmanager
def _time_bound(budget_s: float | None, what: str) -> Iterator[None]:
    if budget_s is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, budget_s)
    try:
        yield
    except TimeoutError as exc:
        raise TimeoutError(
            f"the exclude patterns took longer than {budget_s:g} s to match {what} (a pattern that "
            "backtracks, like '(a|a)*b')."
        ) from exc
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def match_names(
    exclude: Sequence[str], nodes: Sequence[tuple[str, str]], budget_s: float | None = None
) -> dict[str, list[str]]:
    """For each exclude entry, the names of the ``(name, op_type)`` nodes it selects, in node order.

    ``budget_s`` bounds the time of all matching together (module doc); past it TimeoutError.
    Raises RecipeError for a pattern outside the safe subset (``compile_pattern``).  An entry that
    selects no node maps to ``[]``: the caller decides how to refuse it.
    """
    compiled = {e: compile_pattern(e) for e in exclude if e.startswith(PREFIX)}
    out: dict[str, list[str]] = {}
    with _time_bound(budget_s, f"{len(nodes)} node names"):
        for entry in exclude:
            regex = compiled.get(entry)
            out[entry] = [n for n, op in nodes if entry_matches(entry, n, op, regex)]
    return out


__all__ = ["MAX_PATTERN_CHARS", "MAX_REPEAT_COUNT", "check_patterns", "compile_pattern", "match_names"]


def no_match_detail(pattern: str, nodes: Sequence[tuple[str, str]], limit: int = 3) -> str:
    """`` (closest names: 'conv_1', 'conv_2'; op types: Conv, Gemm, Relu)``: what an exclude entry
    ``pattern`` that matched nothing could have named, from ``nodes`` (name, op type)."""
    import difflib

    names = [n for n, _ in nodes if n]
    ops = sorted({op for _, op in nodes})
    close = difflib.get_close_matches(pattern.removeprefix("re:"), names, n=limit, cutoff=0.4)
    shown = close or names[:limit]
    label = "closest names" if close else f"first of {len(names)} names"
    parts = ([f"{label}: {', '.join(repr(n) for n in shown)}"] if shown else []) + (
        [f"op types: {', '.join(ops)}"] if ops else []
    )
    return f" ({'; '.join(parts)})" if parts else ""


def no_match_error(pattern: str, nodes: Sequence[tuple[str, str]]) -> RecipeError:
    """The refusal of an exclude entry ``pattern`` that matches nothing in ``nodes`` (name, op type):
    the planner's (CLI, library) and the service's at submission."""
    return RecipeError(
        f"exclude '{pattern}' matches no node name or op type in the model{no_match_detail(pattern, nodes)}.",
        "check the names with 'edgequant inspect MODEL'; regexes are written 're:PATTERN'.",
    )
