"""Every option with a default shows it in --help: typer's own defaults, and the Recipe defaults behind
the options that default to None on the command line (the recipe file may set them)."""

from __future__ import annotations

import dataclasses

import typer
from typer.testing import CliRunner

from edgequant.cli import app
from edgequant.recipe.schema import FLAG_KEYS, Recipe

# None on the command line, a real default behind it that is not a Recipe field
IMPLIED = {"device": "cpu"}
# the values written by hand (not read from Recipe): a changed Recipe default must change the help too
EXPECTED = {"check_samples": "32", "weight_bits": "8", "act_bits": "8", "method": "static", "target": "cpu",
            "calib_samples": "128", "batch_size": "8", "placement": "auto", "format_": "qdq",
            "tune_trials": "0", "percentile": "99.99", "calib_method": "auto", "device": "cpu"}  # fmt: skip


def test_every_option_with_a_default_shows_it() -> None:
    recipe = {f.name: f.default for f in dataclasses.fields(Recipe) if f.default is not dataclasses.MISSING}
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    missing = []
    for name, sub in commands.items():
        rendered = " ".join(CliRunner().invoke(app, [name, "--help"], terminal_width=1000).output.split())
        for p in sub.params:
            if p.param_type_name != "option" or p.name == "help":
                continue
            field = FLAG_KEYS.get(p.name, p.name.rstrip("_"))
            if p.default is not None:  # typer's own default: shown by typer unless a plain off flag
                if (p.is_flag and not p.secondary_opts and p.default is False) or p.default == "":
                    continue
                if p.is_flag:
                    want = "[default: " + (p.opts[-1] if p.default else p.secondary_opts[-1]).lstrip("-")
                else:
                    want = f"[default: {p.default}]"
                if want not in rendered:
                    missing.append(f"{name} {p.opts[-1]}: {want}")
                continue
            default = recipe.get(field) if name in ("quantize", "qat") else None
            implied = IMPLIED.get(p.name)
            if default in (None, (), {}) and implied is None:
                continue
            help_text = p.help or ""
            if "[default: " not in help_text:
                missing.append(f"{name} {p.opts[-1]}: no [default: ...] (recipe default {default!r})")
            elif p.name in EXPECTED and f"[default: {EXPECTED[p.name]}" not in help_text:
                missing.append(f"{name} {p.opts[-1]}: want [default: {EXPECTED[p.name]}], help {help_text!r}")
            if (
                "[default: " in help_text
                and help_text[help_text.index("[default: ") :].split("]")[0] not in rendered
            ):
                missing.append(f"{name} {p.opts[-1]}: [default: ...] swallowed in the rendered --help")
    assert not missing, "\n".join(missing)
