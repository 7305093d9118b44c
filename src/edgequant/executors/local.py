"""The local executor: every task in this process, one after another (EdgeQuant's default)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from edgequant.executors.base import OnResult


class LocalExecutor:
    """Runs the tasks in this process, in order; ``put`` returns the value itself."""

    name = "local"
    in_process = True

    def put(self, value: Any) -> Any:
        return value

    def map(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], on_result: OnResult | None = None
    ) -> list[Any]:
        out: list[Any] = []
        for i, a in enumerate(args):
            out.append(fn(*a))
            if on_result is not None:
                on_result(i, out[-1])
        return out

    def describe(self) -> str:
        return "local (this process)"

    def close(self) -> None:
        return None
