"""``edgequant demo``: every method on the built-in example, evaluated, with a summary table.

The example (``examples/shapes_cnn.onnx``, its calibration and labelled evaluation sets) ships in
the repository; see ``examples/README.md`` for how it was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgequant.errors import DataError, EdgeQuantError

EXAMPLE = "shapes_cnn.onnx"


def find_examples(start: Path | None = None) -> Path:
    """The ``examples`` folder: under the working directory, or beside the source checkout."""
    candidates = [Path.cwd() / "examples", Path(__file__).resolve().parents[3] / "examples"]
    if start is not None:
        candidates.insert(0, start)
    for c in candidates:
        if (c / EXAMPLE).is_file():
            return c
    raise DataError(
        f"the built-in example '{EXAMPLE}' was not found in {', '.join(str(c) for c in candidates)}.",
        "run the demo from the repository root (git clone, then 'bash scripts/demo.sh'), or pass --examples DIR.",
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        out: Annotated[
            Path | None,
            typer.Option(
                "-o", "--out", help="Output directory [default: a new temporary directory, printed]."
            ),
        ] = None,
        examples: Annotated[Path | None, typer.Option(help="Folder holding shapes_cnn.onnx.")] = None,
        methods: Annotated[str, typer.Option(help="all, or a comma-separated list of methods.")] = "all",
        max_drop: Annotated[float, typer.Option(help="Allowed top-1 drop, percentage points.")] = 1.0,
        overwrite: Annotated[
            bool,
            typer.Option(
                "--overwrite",
                help="Replace an earlier run in -o, as compare --overwrite does (without it, a file this run "
                "would write that exists refuses the run before any work).",
                show_default="off",
            ),
        ] = False,
    ) -> None:
        """Quantize the built-in example with every method, evaluate each, and print the table."""
        from edgequant.cli import ProgressBar, console, fail
        from edgequant.evaluate import compare, format_table, resolve_methods
        from edgequant.evaluate.compare_files import CLI_FIX, check_outdir, planned_files
        from edgequant.evaluate.table import print_table

        if out is None:  # nothing lands in the working tree unasked
            import tempfile

            out = Path(tempfile.mkdtemp(prefix="edgequant-demo-"))
            console.print(f"writing into {out}", markup=False, highlight=False)
        try:
            folder = find_examples(examples)
            chosen = methods if methods == "all" else [m.strip() for m in methods.split(",")]
            planned = planned_files(
                Path(EXAMPLE).stem,
                resolve_methods(chosen),
                [],
                target="cpu",
                allow_synthetic=False,
                report=True,
            )
            check_outdir(
                out, planned, overwrite=overwrite, model=folder / EXAMPLE, fix=CLI_FIX
            )  # before the work
            with ProgressBar() as bar:
                result = compare(
                    folder / EXAMPLE,
                    folder / "shapes_calib.npz",
                    folder / "shapes_eval.npz",
                    methods=chosen,
                    max_drop=max_drop,
                    outdir=out,
                    progress=bar,
                    batch_size=1,
                    overwrite=overwrite,
                )
        except EdgeQuantError as exc:
            fail(exc)
        print_table(console, format_table(result))
        console.print(f"report: {out / 'report.html'} (also report.md, report.json, results.csv)")
