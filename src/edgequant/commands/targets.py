"""``edgequant targets [NAME]``: the hardware target profiles, one line each, or one target's rules."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from edgequant.cli_support import print_table
from edgequant.targets import Profile, TensorRule


def _tensor_line(rule: TensorRule) -> str:
    signed = "/".join("signed" if s else "unsigned" for s in rule.signed)
    sym = "/".join("symmetric" if s else "asymmetric" for s in rule.symmetric)
    scales = ", ".join(f"{b}-bit: {k}" for b, k in sorted(rule.scale.items(), reverse=True))
    narrow = "" if rule.narrow_range is None else (", narrow range" if rule.narrow_range else ", full range")
    return f"{'/'.join(map(str, rule.bits))}-bit, {signed}, {sym}, {'/'.join(rule.granularity)}{narrow}; scales {scales}"


def print_rules(p: Profile) -> None:
    from edgequant.cli import console

    console.print(
        f"[bold]{p.name}[/bold]: {p.title}" + (f"  (aliases: {', '.join(p.aliases)})" if p.aliases else "")
    )
    console.print(p.summary, markup=False)
    if p.compliance_only:
        console.print(
            "compliance only: EdgeQuant checks models against these rules; it does not convert for it."
        )
    from edgequant import toolchains

    if p.name in toolchains.TARGETS:  # a vendor back end builds the deployable artifact
        tc = toolchains.TARGETS[p.name]
        console.print(
            f"conversion: --target {p.name} also builds <name>_<tag>{toolchains.SUFFIX[p.name]} with the {tc} "
            f"toolchain (edgequant toolchain install {tc}).",
            markup=False,
        )
    t = Table("rule", "value", "source", show_lines=False)
    t.add_row("methods", ", ".join(p.methods), "")
    t.add_row("weights", _tensor_line(p.weights), p.weights.source)
    t.add_row("activations", _tensor_line(p.activations), p.activations.source)
    bias = ", ".join(f"{v}-bit with {k}-bit weights" for k, v in sorted(p.bias_bits.items(), reverse=True))
    t.add_row("bias", f"{bias}; scale {p.bias_scale.replace('_', ' ')}", p.bias_source)
    if p.multiplier_bits:
        t.add_row("requantization", f"{p.multiplier_bits}-bit unsigned multiplier and a right shift", "")
    consequence = "runs on the host CPU" if p.unsupported == "host" else "cannot be deployed (error)"
    t.add_row("any other op", consequence, "")
    print_table(console, t)
    ops = Table("op kind", "runs", "limits", "source", "note")
    for kind, rule in p.ops.items():
        limits = [f"{k} {lim.describe()}" for k, lim in rule.limits.items()]
        if rule.strides is not None:
            limits.append("strides " + " ".join("x".join(map(str, s)) for s in rule.strides))
        ops.add_row(kind, "yes" if rule.runs else "no", "; ".join(limits), rule.source, rule.note)
    print_table(console, ops)
    for s in p.sources.values():
        console.print(f"[{s.id}] {s.title} <{s.url}>", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    @app.command("targets")
    def targets_command(
        name: Annotated[
            str | None, typer.Argument(help="A target name (or alias) to print its rules.")
        ] = None,
    ) -> None:
        """List the hardware target profiles (one line each), or print one target's rules and sources."""
        from edgequant import targets
        from edgequant.cli import console, run_guarded

        if name is not None:
            print_rules(run_guarded(targets.get, name))
            return
        for p in targets.all_profiles():
            alias = f" (alias {', '.join(p.aliases)})" if p.aliases else ""
            console.print(f"{p.name:<10} {p.summary}{alias}", markup=False, highlight=False, soft_wrap=True)
