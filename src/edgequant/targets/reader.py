"""``ProfileReader``: one mapping of a target profile file read strictly (``targets.profile``).

Unknown keys are refused with the allowed ones listed and the closest one suggested; a missing required
key, a value outside its choices or a ``source`` naming no entry of ``sources`` is a TargetError naming
the file, the key's place (``weights.bits``) and the fix.
"""

from __future__ import annotations

import difflib
from typing import Any

from edgequant.errors import TargetError


class ProfileReader:
    """Reads one mapping of a profile file, rejecting unknown keys with the allowed ones listed."""

    def __init__(self, path: str, where: str, data: Any, allowed: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise self.error(
                path, where, f"must be a mapping, got {type(data).__name__}", "write key: value pairs"
            )
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                raise self.error(
                    path,
                    f"{where}.{key}" if where else str(key),
                    f"is not a known key; allowed: {', '.join(allowed)}",
                    f"rename it to '{close[0]}'" if close else "remove it",
                )
        self.path, self.where, self.data = path, where, data

    @staticmethod
    def error(path: str, where: str, what: str, fix: str) -> TargetError:
        return TargetError(f"target profile '{path}': '{where}' {what}.", f"{fix} in {path}.")

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, default: Any = None, required: bool = False) -> Any:
        if name not in self.data:
            if required:
                raise self.error(self.path, self.key(name), "is missing", "add it")
            return default
        return self.data[name]

    def choice(self, name: str, allowed: tuple[Any, ...], default: Any = None, required: bool = False) -> Any:
        value = self.get(name, default, required)
        if value not in allowed:
            raise self.error(
                self.path, self.key(name), f"= {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}",
                "use an allowed value",
            )  # fmt: skip
        return value

    def choices(self, name: str, allowed: tuple[Any, ...], default: tuple[Any, ...] = ()) -> tuple[Any, ...]:
        value = self.get(name, list(default))
        if not isinstance(value, list) or not value:
            raise self.error(
                self.path, self.key(name), f"must be a non-empty list of {allowed}", "write a list"
            )
        for v in value:
            if v not in allowed or isinstance(v, bool) != any(isinstance(a, bool) for a in allowed):
                raise self.error(
                    self.path, self.key(name), f"holds {v!r}; allowed: {', '.join(map(str, allowed))}",
                    "use allowed values",
                )  # fmt: skip
        return tuple(value)

    def source(self, known: set[str]) -> str:
        src = self.get("source", required=True)
        if src not in known:
            raise self.error(
                self.path, self.key("source"), f"= {src!r} names no entry of 'sources' ({', '.join(sorted(known))})",
                "cite a listed source id",
            )  # fmt: skip
        return str(src)
