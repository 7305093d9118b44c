"""``edgequant inspect MODEL``: inputs, outputs, op histogram, parameters and quantizable nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgequant.cli_support import print_table


def register(app: typer.Typer) -> None:
    @app.command()
    def inspect(
        model: Annotated[Path, typer.Argument(help="ONNX file.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Show inputs, outputs, an op histogram, the parameter count and the quantizable nodes (the compute
        nodes quantize quantizes by default, after its repairs: an Einsum it rewrites as a MatMul counts)."""
        from edgequant.cli import console, run_guarded
        from edgequant.model import load_model, summarize

        info = run_guarded(lambda: summarize(load_model(model)))
        if as_json:
            console.print_json(json.dumps(info))
            return
        console.print(f"[bold]{model}[/bold]  opset {info['opset']}  {info['producer']}")
        io = Table("", "name", "dtype", "shape")
        for kind in ("inputs", "outputs"):
            for v in info[kind]:
                io.add_row(kind[:-1], v["name"], v["dtype"], "x".join(map(str, v["shape"])) or "?")
        print_table(console, io)
        ops = Table("op", "count")
        for op, n in info["ops"].items():
            ops.add_row(op, str(n))
        print_table(console, ops)
        console.print(
            f"parameters: {info['parameters']:,}  nodes: {info['nodes']} (in subgraphs: {info['subgraph_nodes']})"
        )
        q = info["quantizable_nodes"]
        console.print(
            f"quantizable nodes ({len(q)}, as quantize plans them by default after its repairs): "
            + (", ".join(f"{n['name']} [{n['op_type']}]" for n in q[:40]) + (", ..." if len(q) > 40 else ""))
            + info["quantizable_note"]
        )
