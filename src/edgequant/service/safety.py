"""Checks on everything a client sends: names, model files, npz archives, zips of images.

* Names (models, datasets, artifact files) are names of ``edgequant.names`` (``[A-Za-z0-9._-]{1,64}``)
  that also start with a letter or digit and hold no ``..``; so a name can never leave its
  directory.  Anything else is a 400.
* Models: ONNX is parsed by ``edgequant.model.io.parse_onnx`` (the check ``load_model`` makes,
  worded for an upload); external data is refused (a single upload cannot carry it, and its
  location could point anywhere).  The parsed copy is dropped before ``onnx.checker`` reads the file
  itself, so at most about two copies of the weights are in memory at once (bytes + parsed proto).
  TorchScript archives are accepted by structure (``code/`` + ``constants.pkl``) only when torch
  is installed, and only loaded in a job worker with ``torch.jit.load``; ``torch.save`` pickles
  are refused.  Nothing is ever unpickled.
* npz: each member is a ``.npy`` whose header is read without loading data; object dtypes are
  refused (``allow_pickle=False`` semantics); the header's shape x itemsize must equal the bytes the
  member really holds (a header declaring 192 GiB in a small file is refused), and one array holds at
  most ``max_elements`` values; CRCs are verified; total uncompressed size is capped.
* Zips of images: every member name is checked (no absolute path, drive, backslash, ``..``, NUL,
  symlink or encrypted member), the sum of declared sizes is capped before anything is written, and
  the bytes actually inflated are counted against each member's declared size (a lying header stops
  extraction).  Image sizes are read from their headers before anything is decoded: each image at
  most ``MAX_IMAGE_PIXELS`` and all of them together at most ``max_pixels`` decoded pixels; then each
  is verified with Pillow.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edgequant.errors import DataError, DependencyError, ModelError, first_line
from edgequant.names import is_name
from edgequant.service.config import BadRequest

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff"})
MAX_IMAGE_PIXELS = 16 * 1024 * 1024
_CHUNK = 1 << 20


def check_name(name: str, what: str = "model name") -> str:
    """Return ``name`` if it is a safe store name, else raise BadRequest (HTTP 400)."""
    if not is_name(name) or not name[0].isalnum() or ".." in name:
        shown = repr(name)[:80]
        raise BadRequest(
            f"invalid {what} {shown}: allowed are 1-64 characters from A-Z a-z 0-9 . _ -, starting with a "
            "letter or digit, without '..' or path separators.",
            "rename it, e.g. 'resnet18_v1'.",
        )
    return name


def default_name(filename: str | None, what: str) -> str:
    """A store name from an uploaded file name: its stem, validated (a path in it is a 400)."""
    if not filename:
        raise BadRequest(
            f"the upload has no file name and no '{what}' field.", f"send a form field '{what}'."
        )
    if "/" in filename or "\\" in filename or "\x00" in filename:
        raise BadRequest(
            f"the uploaded file name {filename[:80]!r} contains a path.",
            f"send a plain file name or a '{what}'.",
        )
    return check_name(PurePosixPath(filename).stem or filename, what)


@dataclass(frozen=True)
class ModelInfo:
    format: str  # "onnx" | "torchscript"
    suffix: str
    details: dict[str, Any]


def inspect_model(path: Path) -> ModelInfo:
    """Validate an uploaded model file; ModelError (400) for anything that is not a usable model."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PK\x03\x04":
        return _inspect_torchscript(path)
    import onnx
    from onnx import external_data_helper

    from edgequant.model.io import parse_onnx

    model = parse_onnx(
        path,
        subject="the upload",
        hint="upload an .onnx file (or a TorchScript archive where torch is installed).",
    )
    if any(external_data_helper.uses_external_data(t) for t in model.graph.initializer):
        raise ModelError(
            "the ONNX model stores weights as external data, which a single upload cannot carry.",
            "re-save it with all tensors inside the file (onnx.save(model, path, save_as_external_data=False)).",
        )
    io = {
        "inputs": [
            i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}
        ],
        "outputs": [o.name for o in model.graph.output],
        "nodes": len(model.graph.node),
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
    }
    del model  # the checker reads the file itself: never the parsed copy and a serialized one at once
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ModelError(
            f"the ONNX model fails onnx.checker: {first_line(exc, 300)}",
            "re-export the model; check it locally with onnx.checker.check_model.",
        ) from exc
    return ModelInfo("onnx", ".onnx", io)


def _inspect_torchscript(path: Path) -> ModelInfo:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise ModelError(
            f"the upload looks like a zip but is corrupt: {exc}.", "re-export the model."
        ) from exc
    parts = [PurePosixPath(n).parts for n in names]
    is_script = any(len(p) > 1 and p[1] == "code" for p in parts) and any(
        len(p) == 2 and p[1] == "constants.pkl" for p in parts
    )
    if not is_script:
        raise ModelError(
            "the upload is a zip archive but not a TorchScript model (a torch.save pickle or another "
            "archive); EdgeQuant never unpickles uploads.",
            "upload ONNX, or a TorchScript model saved with torch.jit.script/trace(...).save(path).",
        )
    if importlib.util.find_spec("torch") is None:
        raise DependencyError.missing("torch", "torch", "Uploading a TorchScript model")
    return ModelInfo("torchscript", ".pt", {"entries": len(names)})


def open_zip(path: Path, detail: str, hint: str) -> zipfile.ZipFile:
    """Open a zip archive; DataError "``detail``: <zipfile's reason>." with ``hint`` when it is not one."""
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{detail}: {exc}.", hint) from exc


def _checked_member(name: str) -> PurePosixPath:
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or name.startswith("/")
        or re.match(r"^[A-Za-z]:", name)
        or any(part in ("..", "") for part in name.rstrip("/").split("/"))
    ):
        raise DataError(
            f"zip member {name[:120]!r} has an unsafe path (absolute, drive, backslash or '..').",
            "zip the images with relative paths only, e.g. 'zip -r data.zip images/'.",
        )
    return PurePosixPath(name)


def _zip_infos(zf: zipfile.ZipFile, max_members: int, what: str) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > max_members:
        raise DataError(f"{what} has {len(infos)} members; at most {max_members} are allowed.", "split it.")
    return infos


def extract_images(
    archive: Path, dest: Path, max_total: int, max_members: int, max_pixels: int = 64_000_000
) -> dict[str, Any]:
    """Safely extract the images of a zip into ``dest`` (created); returns counts for the listing."""
    with open_zip(archive, "the upload is not a valid zip or npz file", "re-create the archive.") as zf:
        chosen: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
        skipped: list[str] = []
        total = 0
        for info in _zip_infos(zf, max_members, "the zip"):
            rel = _checked_member(info.filename)
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DataError(
                    f"zip member {info.filename!r} is a symbolic link.", "zip regular files only."
                )
            if info.flag_bits & 0x1:
                raise DataError(f"zip member {info.filename!r} is encrypted.", "zip without a password.")
            if rel.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append(info.filename)
                continue
            total += info.file_size
            if total > max_total:
                raise DataError(
                    f"the zip inflates to more than {max_total} bytes (limit of the server); refused as a "
                    "possible zip bomb.",
                    "upload fewer or smaller images, or raise --max-upload-mb on the server.",
                )
            chosen.append((info, rel))
        if not chosen:
            raise DataError(
                f"the zip holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); {len(skipped)} other file(s).",
                "zip a folder of image files.",
            )
        dest.mkdir(parents=True)
        root = dest.resolve()
        for info, rel in chosen:
            target = (dest / rel).resolve()
            if root not in target.parents:
                raise DataError(
                    f"zip member {info.filename!r} leaves the dataset folder.", "use relative paths."
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with zf.open(info) as src, open(target, "wb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > info.file_size:
                        raise DataError(
                            f"zip member {info.filename!r} inflates beyond its declared size.",
                            "the archive is corrupt or hostile; re-create it.",
                        )
                    out.write(chunk)
    _verify_images(dest, [rel for _, rel in chosen], max_pixels)
    return {"format": "images", "images": len(chosen), "skipped_files": skipped[:20], "bytes": total}


def _verify_images(root: Path, members: list[PurePosixPath], max_pixels: int) -> None:
    try:
        from PIL import Image
    except ImportError as exc:
        raise DependencyError.missing("pillow", "data", "Image datasets") from exc
    total = 0
    for rel in members:  # sizes from the headers first: nothing is decoded past the budget
        try:
            with Image.open(root / rel) as im:
                w, h = im.size
        except Exception as exc:
            raise DataError(
                f"image {str(rel)!r} in the zip cannot be decoded: {str(exc)[:200]}.", "remove or re-save it."
            ) from exc
        if w * h > MAX_IMAGE_PIXELS:
            raise DataError(
                f"image {str(rel)!r} has {w}x{h} pixels, above this server's limit of {MAX_IMAGE_PIXELS} "
                "pixels per image.",
                "downscale it.",
            )
        total += w * h
        if total > max_pixels:
            raise DataError(
                f"the images decode to more than {max_pixels} pixels in total (this server's budget).",
                "upload fewer or smaller images.",
            )
    for rel in members:
        try:
            with Image.open(root / rel) as im:
                im.verify()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(
                f"image {str(rel)!r} in the zip cannot be decoded: {str(exc)[:200]}.", "remove or re-save it."
            ) from exc


def inspect_npz(
    path: Path, max_total: int, max_members: int, max_elements: int = 64_000_000
) -> dict[str, Any]:
    """Check an npz without loading its data or unpickling; returns array names, shapes and dtypes."""
    arrays: dict[str, Any] = {}
    with open_zip(path, "the upload is not a valid npz (zip) file", "save it with np.savez.") as zf:
        infos = _zip_infos(zf, max_members, "the npz")
        total = sum(i.file_size for i in infos)
        if total > max_total:
            raise DataError(
                f"the npz inflates to {total} bytes, above the server limit of {max_total}.",
                "upload fewer samples.",
            )
        for info in infos:
            _checked_member(info.filename)
            if not info.filename.endswith(".npy"):
                raise DataError(f"npz member {info.filename!r} is not a .npy array.", "save with np.savez.")
            with zf.open(info) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        raise ValueError(f".npy format version {version} is not supported")
                    header_bytes = fh.tell()
                except Exception as exc:
                    raise DataError(
                        f"npz member {info.filename!r} has no valid .npy header: {str(exc)[:200]}.",
                        "save the arrays with np.savez.",
                    ) from exc
            if dtype.hasobject:
                raise DataError(
                    f"npz array {info.filename[:-4]!r} has dtype {dtype}, which needs pickle; refused.",
                    "store numeric arrays only (np.asarray(x, dtype=np.float32)).",
                )
            count = int(np.prod(shape, dtype=object)) if shape else 1
            if count * dtype.itemsize != info.file_size - header_bytes:
                raise DataError(
                    f"npz array {info.filename[:-4]!r} declares shape {tuple(shape)} of {dtype} "
                    f"({count * dtype.itemsize} bytes) but holds {info.file_size - header_bytes} bytes.",
                    "save the arrays with np.savez.",
                )
            if count > max_elements:
                raise DataError(
                    f"npz array {info.filename[:-4]!r} has {count} values, above this server's limit of "
                    f"{max_elements} per array.",
                    "upload fewer or smaller samples.",
                )
            arrays[info.filename[:-4]] = {"shape": list(shape), "dtype": str(dtype)}
        bad = zf.testzip()
        if bad is not None:
            raise DataError(f"npz member {bad!r} is corrupt (CRC mismatch).", "re-create the file.")
    if not arrays:
        raise DataError("the npz holds no arrays.", "save at least one array with np.savez.")
    return {"format": "npz", "arrays": arrays}


def remove_tree(path: Path) -> None:
    """Delete a file or a directory tree; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
