"""``sweep``: the cross product of models x methods x targets x bit widths, in one report.

``run_sweep`` expands the cells (``cells.expand``), skips those whose result is cached under the
content hash of model, data and recipe (``cache``), runs the rest on an executor (``local`` or
``ray``, ``edgequant.executors``) with ``compare``'s per-method body (``evaluate.method_run``), and
writes ``sweep.json``, ``sweep.csv`` and ``sweep.html`` with the Pareto front per model
(``pareto``: top-1 / score up, latency down, file size down).
"""

from edgequant.sweep.cells import Cell, expand
from edgequant.sweep.pareto import pareto_front
from edgequant.sweep.run import SweepResult, run_sweep

__all__ = ["Cell", "SweepResult", "expand", "pareto_front", "run_sweep"]
