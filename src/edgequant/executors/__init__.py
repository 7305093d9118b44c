"""Where independent units of work run: ``local`` (this process, in order) or ``ray`` (Ray Core tasks).

The units are ``compare``'s methods, ``sweep``'s cells, the isolated-node runs of the per-layer
analysis behind ``--target-sqnr`` (``evaluate.layers``), and the service's jobs.  An executor
only moves work; the functions it runs are the same in both, so the results are the same bit for
bit (measured timings aside).  See ``docs/ray.md``.

``create("ray", address=..., num_cpus=...)`` connects to a cluster (``ray://head:10001``) or starts
a local Ray instance; without the ``ray`` package it raises ``DependencyError`` naming
``pip install 'edgequant[ray]'``.  ``using(executor)`` makes an executor the current one for the
code below it (``current()``), so deep layers such as the per-layer analysis pick it up without
threading a parameter through the pipeline.
"""

from edgequant.executors.base import Executor, create, current, using
from edgequant.executors.local import LocalExecutor

__all__ = ["Executor", "LocalExecutor", "create", "current", "using"]
