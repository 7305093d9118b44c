"""The ``--executor``/``--ray-address``/``--ray-cpus``/``--ray-shared-dir`` options shared by commands."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from edgequant.executors import Executor, create, using

ExecutorName = Annotated[
    str, typer.Option("--executor", help="local (this process) or ray (needs edgequant[ray]).")
]
Address = Annotated[
    str | None,
    typer.Option(help="Ray cluster, e.g. ray://head:10001 [default: start a local Ray instance]."),
]
Cpus = Annotated[
    int | None, typer.Option(help="Logical CPUs of a local Ray instance [default: this machine's].")
]
Shared = Annotated[
    Path | None,
    typer.Option(help="A folder every Ray node mounts: inputs under it go as paths, others as bytes."),
]


@contextmanager
def open_executor(name: str, address: str | None, cpus: int | None) -> Iterator[Executor]:
    """The executor, current for the block (the per-layer analysis picks it up), closed afterwards."""
    ex = create(name, address=address, num_cpus=cpus)
    try:
        with using(ex):
            yield ex
    finally:
        ex.close()
