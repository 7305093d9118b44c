"""The Ray executor: each task a Ray Core task (``@ray.remote``), retried when its worker dies.

Connection: ``address`` given -> ``ray.init(address=...)`` (``ray://head:10001`` through Ray Client,
``head:6379`` or ``auto`` on a cluster node); none -> a local Ray instance with ``num_cpus``
logical CPUs, no dashboard, workers' output not forwarded to this terminal.  If Ray is already
initialised in this process (a notebook, the test session), that connection is used as it is.

Every task asks for one logical CPU and is re-run up to ``max_retries`` times when its worker
process dies (killed, out of memory: Ray's *system* failures); an exception the task raises is not
retried and comes back as its own type (an ``EdgeQuantError`` stays one).  The functions run are
looked up by module path on the workers, so EdgeQuant (same version) must be installed there.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from edgequant.errors import DependencyError, ExecutorError, first_line
from edgequant.executors.base import OnResult

log = logging.getLogger(__name__)


def require_ray() -> Any:
    """The ``ray`` module, or DependencyError naming ``pip install 'edgequant[ray]'``."""
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise DependencyError.missing("ray", "ray", "--executor ray") from exc
    return ray


def connect_error(address: str | None, exc: BaseException) -> ExecutorError:
    """The one-line error for a failed ``ray.init``: the address, Ray's own reason, and the fixes
    (the address forms; token authentication, which Ray 2.60 turns on by default and which a
    client must opt into with RAY_AUTH_MODE=token, else it cannot connect and times out)."""
    reason = first_line(exc, 500)
    hint = (
        "check --ray-address (ray://HEAD:10001 for Ray Client, or HEAD:6379 on a cluster node), that it is "
        "reachable from here, and that the cluster runs the same Ray and EdgeQuant versions"
    )
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        hint += (
            "; a cluster with token authentication (on by default in Ray 2.60) needs RAY_AUTH_MODE=token "
            "(and RAY_AUTH_TOKEN, or the token file from 'ray get-auth-token') in this process's environment"
        )
    return ExecutorError(
        f"cannot connect to the Ray cluster at '{address or 'a new local instance'}': "
        f"{type(exc).__name__}: {reason}",
        hint + ".",
    )


@contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Restore this process's SIGTERM/SIGINT handlers after the block: ``ray.init`` installs its own
    (SIGTERM -> ``sys.exit(15)``, and a C++ handler that logs a stack), which would replace a server's
    graceful shutdown (uvicorn's handlers) with a SystemExit traceback.  Outside the main thread the
    handlers cannot be set and the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)


def init_quietly(address: str | None, **kwargs: Any) -> None:
    """``ray.init(address=..., **kwargs)`` with Ray's driver log off and its Python warnings captured
    (logged at debug: ``-v`` shows them): Ray Client warns "connection timed out ..." before it raises,
    and the caller's one-line ExecutorError (``connect_error``) says it all.  ExecutorError when the
    connection fails."""
    ray = require_ray()
    kwargs = {"log_to_driver": False, "logging_level": logging.ERROR, **kwargs}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
            raise connect_error(address, exc) from exc
        finally:
            for w in caught:
                log.debug("ray.init warning: %s", w.message)


def probe(address: str) -> None:
    """Connect to the Ray cluster at ``address`` and disconnect: ExecutorError (``connect_error``) when
    it cannot.  A process already connected to Ray is left as it is."""
    ray = require_ray()
    if ray.is_initialized():
        return
    with keep_signal_handlers():
        init_quietly(address)
        ray.shutdown()


class RayExecutor:
    """Ray Core tasks (module docstring).  ``close()`` shuts down a local instance it started."""

    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3) -> None:
        ray = require_ray()
        self._ray = ray
        self.max_retries = max_retries
        self.started = False
        self._remotes: dict[Any, Any] = {}
        if not ray.is_initialized():
            if address is not None:
                init_quietly(address)
            else:
                init_quietly(None, num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
                self.started = True
        self.address = address or "local"

    def put(self, value: Any) -> Any:
        return self._ray.put(value)

    def _remote(self, fn: Callable[..., Any]) -> Any:
        remote = self._remotes.get(fn)
        if remote is None:
            remote = self._ray.remote(num_cpus=1, max_retries=self.max_retries, retry_exceptions=False)(fn)
            self._remotes[fn] = remote
        return remote

    def map(
        self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]], on_result: OnResult | None = None
    ) -> list[Any]:
        ray = self._ray
        remote = self._remote(fn)
        refs = [remote.remote(*a) for a in args]
        index = {ref: i for i, ref in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    out[index[ref]] = self._get(ref, fn)
                    if on_result is not None:
                        on_result(index[ref], out[index[ref]])
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return out

    def _get(self, ref: Any, fn: Callable[..., Any]) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task raised: its own exception
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except (
            ray.exceptions.WorkerCrashedError,
            ray.exceptions.NodeDiedError,
            ray.exceptions.ObjectLostError,
        ) as exc:
            raise ExecutorError(
                f"a Ray task ({getattr(fn, '__name__', 'task')}) was lost after {self.max_retries} retries: {exc}",
                "check the cluster's nodes and memory (ray status), then run again; finished sweep cells are cached.",
            ) from exc

    def describe(self) -> str:
        res = self._ray.cluster_resources()
        return (
            f"ray ({self.address}; {int(res.get('CPU', 0))} logical CPUs, {len(self._ray.nodes())} node(s))"
        )

    def close(self) -> None:
        if self.started:
            self._ray.shutdown()
            self.started = False
