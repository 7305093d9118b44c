"""``edgequant check MODEL --target NAME [--json]``: a QDQ model's compliance with a target profile.

Exit codes: 0 compliant, 1 findings, 2 bad input (unknown target, unreadable or float model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table


def findings_table(report: dict[str, Any]) -> Table:
    t = Table(
        "node",
        "op",
        "rule",
        "found",
        "required",
        "consequence",
        "fix",
        title=f"findings on {report['target']}",
    )
    for f in report["findings"]:
        t.add_row(f["node"], f["op"], f["rule"], f["found"], f["required"], f["consequence"], f["fix"])
    return t


def summary_line(report: dict[str, Any]) -> str:
    by = report["findings_by_consequence"]
    return (
        f"{report['target']}: {'compliant' if report['compliant'] else 'not compliant'}; "
        f"{len(report['findings'])} finding(s) ({', '.join(f'{n} {c}' for c, n in by.items())}); "
        f"on the accelerator: {100 * report['mac_share_on_target']:.1f} % of {report['macs']:,} MACs, "
        f"{100 * report['param_share_on_target']:.1f} % of {report['params']:,} parameters, "
        f"{report['nodes_on_target']}/{report['nodes']} nodes"
    )


def register(app: typer.Typer) -> None:
    @app.command("check")
    def check_command(
        model: Annotated[
            Path, typer.Argument(help="A QDQ ONNX model (EdgeQuant's, or e.g. ORT quantize_static's).")
        ],
        target: Annotated[str, typer.Option(help="Target profile name ('edgequant targets' lists them).")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the compliance report as JSON.")] = False,
    ) -> None:
        """Check MODEL against a hardware target's rules: exit 0 compliant, 1 findings, 2 bad input."""
        from edgequant.cli import console, run_guarded
        from edgequant.cli_support import print_table
        from edgequant.model import load_model
        from edgequant.targets.check import check_model

        report = run_guarded(lambda: check_model(load_model(model), target))
        if as_json:
            typer.echo(json.dumps(report, indent=1))
        else:
            if report["findings"]:
                print_table(console, findings_table(report))
            console.print(summary_line(report), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(0 if report["compliant"] else 1)
