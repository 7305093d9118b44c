"""The executor protocol, the factory and the current-executor context."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from edgequant.errors import RecipeError

EXECUTORS = ("local", "ray")
OnResult = Callable[[int, Any], None]


class Executor(Protocol):
    """Runs ``fn(*args)`` for each ``args`` of a list and returns the results in list order.

    ``in_process`` is True when the functions run in this process (arguments are not copied);
    ``put(value)`` stores a value once for many tasks (the value itself locally, an object
    reference on Ray: NumPy arrays and bytes are shared without a copy there).  ``map`` calls
    ``on_result(index, result)`` as each task finishes (any order on Ray).  An exception raised by
    ``fn`` is raised by ``map`` as its own type; a worker that dies is retried (Ray only).
    """

    name: str
    in_process: bool

    def put(self, value: Any) -> Any: ...

    def map(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], on_result: OnResult | None = None
    ) -> list[Any]: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


_current: ContextVar[Executor | None] = ContextVar("edgequant_executor", default=None)


def current() -> Executor:
    """The executor set by ``using``, else a ``LocalExecutor``."""
    from edgequant.executors.local import LocalExecutor

    return _current.get() or LocalExecutor()


@contextmanager
def using(executor: Executor) -> Iterator[Executor]:
    """Make ``executor`` the current one inside the ``with`` block."""
    token = _current.set(executor)
    try:
        yield executor
    finally:
        _current.reset(token)


def create(
    name: str,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    max_retries: int = 3,
) -> Executor:
    """``local`` or ``ray``.  ``address`` (Ray only): ``ray://host:10001``, ``host:6379`` or ``auto``;
    None starts a local Ray instance with ``num_cpus`` logical CPUs (default: this machine's).
    ``max_retries``: times a Ray task is re-run after its worker process died.

    Raises RecipeError for an unknown name or an address given to the local executor,
    DependencyError when Ray is not installed, ExecutorError when the cluster cannot be reached.
    """
    if name not in EXECUTORS:
        raise RecipeError(
            f"unknown executor '{name}'; allowed: {', '.join(EXECUTORS)}.", "pass --executor local or ray."
        )
    if num_cpus is not None and (name == "local" or address is not None):
        raise RecipeError(
            f"--ray-cpus {num_cpus} sets the CPUs of a local Ray instance, and none is started here"
            f" ({'the local executor' if name == 'local' else f'--ray-address {address}'}).",
            "drop --ray-cpus, or use --executor ray without --ray-address.",
        )
    if name == "local":
        if address is not None:
            raise RecipeError(
                f"--ray-address {address} was given with the local executor.",
                "add --executor ray, or drop the address.",
            )
        from edgequant.executors.local import LocalExecutor

        return LocalExecutor()
    from edgequant.executors.ray import RayExecutor

    return RayExecutor(address=address, num_cpus=num_cpus, max_retries=max_retries)
