"""Inputs for workers on other machines: files as bytes through Ray's object store, or shared paths.

``ship(path, shared)`` describes one input: under ``shared`` (a folder every node mounts, named by
the user) it stays a path; otherwise the file's bytes (a folder: every file's relative path and
bytes) travel in the task's arguments, i.e. Ray's object store.  ``materialize`` writes them into
the task's temporary folder under the same name, so the code that reads them sees the same file
name and content as on the driver.  Only raw bytes move: nothing a user uploaded is ever unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgequant.errors import DataError
from edgequant.names import confined


@dataclass(frozen=True)
class Shipped:
    """A path kept as is (``path``), or a file/folder as bytes (``name`` + ``files``)."""

    path: str | None = None
    name: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    folder: bool = False


def ship(path: str | Path, shared: Path | None = None) -> Shipped:
    """One input file or folder for a remote worker (module docstring).  DataError when it is missing."""
    p = Path(path)
    if shared is not None and p.resolve().is_relative_to(shared.resolve()):
        return Shipped(path=str(p.resolve()))
    if p.is_file():
        return Shipped(name=p.name, files={p.name: p.read_bytes()})
    if p.is_dir():
        files = {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}
        return Shipped(name=p.name, files=files, folder=True)
    raise DataError(f"'{path}' is neither a file nor a folder.", "pass an existing path.")


def materialize(item: Shipped, into: Path) -> Path:
    """The path to read ``item`` from on this worker: the shared path, or the bytes written into ``into``."""
    if item.path is not None:
        if not Path(item.path).exists():
            raise DataError(
                f"'{item.path}' is not visible on this Ray worker.",
                "put the inputs on a folder every node mounts at the same path, or drop --ray-shared-dir "
                "so they travel through the object store.",
            )
        return Path(item.path)
    if item.folder:
        root = confined(into, item.name, DataError)
        for rel, data in item.files.items():
            target = (root / rel).resolve()
            if not target.is_relative_to(root.resolve()):
                raise DataError(f"'{rel}' escapes its folder.", "ship plain relative paths.")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return root
    path = confined(into, item.name, DataError)
    path.write_bytes(item.files[item.name])
    return path
