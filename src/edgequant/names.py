"""Names that become parts of file paths: one validator, and one confinement check.

A *name* (a recipe ``tag``; in the REST service also model, dataset and artifact names) matches
``[A-Za-z0-9._-]{1,64}`` and is not ``.`` or ``..``, so it can never hold a path separator.
``confined(folder, filename)`` resolves ``folder / filename`` and refuses any result that is not a
direct child of ``folder`` (a symlink or a name from elsewhere that escapes it), before anything is
written.  Both raise an EdgeQuantError subclass chosen by the caller (RecipeError by default).
"""

from __future__ import annotations

import re
from pathlib import Path

from edgequant.errors import EdgeQuantError, ExportError, RecipeError

NAME_PATTERN = r"[A-Za-z0-9._-]{1,64}"
_NAME_RE = re.compile(NAME_PATTERN)


def is_name(value: object) -> bool:
    """True when ``value`` is a str matching ``NAME_PATTERN`` and not ``.``/``..``."""
    return isinstance(value, str) and bool(_NAME_RE.fullmatch(value)) and value not in (".", "..")


def check_name(value: object, what: str, error: type[EdgeQuantError] = RecipeError) -> str:
    """Return ``value`` if it is a safe name (see module doc), else raise ``error`` naming ``what``."""
    if not is_name(value):
        raise error(
            f"invalid {what} {str(value)[:80]!r}: allowed are 1-64 characters from A-Z a-z 0-9 . _ - "
            "(no path separators, not '.' or '..').",
            f"rename the {what}, e.g. 'int8_v2'.",
        )
    return str(value)


def confined(folder: str | Path, filename: str, error: type[EdgeQuantError] = ExportError) -> Path:
    """``folder / filename`` resolved; ``error`` unless it is a direct child of the resolved folder."""
    root = Path(folder).resolve()
    if not filename or "/" in filename or "\\" in filename or "\x00" in filename or filename in (".", ".."):
        raise error(
            f"output file name {filename[:80]!r} is not a plain file name.",
            "use names without path separators.",
        )
    path = (root / filename).resolve()
    if path.parent != root:
        raise error(
            f"output file '{filename[:80]}' would be written outside the output folder (it resolves elsewhere).",
            "remove the symbolic link, or choose another output folder.",
        )
    return path


__all__ = ["NAME_PATTERN", "check_name", "confined", "is_name"]
