"""Receive a multipart upload straight to disk, enforcing the size limit while it streams.

The body is never held in memory: ``Content-Length`` (when sent) is checked before a byte is read,
then the request stream is fed chunk by chunk to python-multipart's push parser, and the one file
part is written to a temporary file in the store.  Crossing the limit stops reading at once with a
413 and removes the partial file.  Plain form fields are capped at 1 KiB each.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.requests import Request

from edgequant.service.config import BadRequest, PayloadTooLarge

FORM_OVERHEAD = 64 * 1024  # multipart headers and small fields on top of the file itself
MAX_FIELD = 1024


@dataclass
class Upload:
    path: Path  # temporary file in the store; the caller renames or deletes it
    filename: str | None
    size: int
    fields: dict[str, str] = field(default_factory=dict)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the upload is larger than this server's limit of {limit / 1024 / 1024:g} MB.",
        "send a smaller file, or start the server with a larger --max-upload-mb.",
    )


class _Receiver:
    """python-multipart callbacks: one file part named ``file_field`` plus small text fields."""

    def __init__(self, tmp_dir: Path, limit: int, file_field: str) -> None:
        self.tmp_dir, self.limit, self.file_field = tmp_dir, limit, file_field
        self.headers: dict[str, str] = {}
        self._hname = b""
        self._hvalue = b""
        self.part_name: str | None = None
        self.out: IO[bytes] | None = None
        self.path: Path | None = None
        self.filename: str | None = None
        self.size = 0
        self.fields: dict[str, str] = {}
        self._field_buf = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: setattr(self, "_hname", self._hname + d[s:e]),
            "on_header_value": lambda d, s, e: setattr(self, "_hvalue", self._hvalue + d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self.headers, self.part_name = {}, None
        self._field_buf = bytearray()

    def on_header_end(self) -> None:
        self.headers[self._hname.decode("latin-1").lower()] = self._hvalue.decode("latin-1")
        self._hname = self._hvalue = b""

    def on_headers_finished(self) -> None:
        _, opts = parse_options_header(self.headers.get("content-disposition", ""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        filename = opts.get(b"filename")
        self.part_name = name
        if filename is not None:
            if name != self.file_field:
                raise BadRequest(
                    f"unexpected file field '{name}'; the file goes in the form field '{self.file_field}'.",
                    f"send the file as -F {self.file_field}=@path.",
                )
            if self.path is not None:
                raise BadRequest("the upload holds more than one file.", "send one file per request.")
            self.filename = filename.decode("utf-8", "replace")
            fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=".tmp", dir=self.tmp_dir)
            self.path = Path(tmp)
            self.out = os.fdopen(fd, "wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.out is not None:
            self.size += end - start
            if self.size > self.limit:
                raise _too_large(self.limit)
            self.out.write(data[start:end])
        else:
            self._field_buf += data[start:end]
            if len(self._field_buf) > MAX_FIELD:
                raise BadRequest(f"form field '{self.part_name}' exceeds {MAX_FIELD} bytes.", "shorten it.")

    def on_part_end(self) -> None:
        if self.out is not None:
            self.out.flush()
            os.fsync(self.out.fileno())
            self.out.close()
            self.out = None
        elif self.part_name:
            self.fields[self.part_name] = self._field_buf.decode("utf-8", "replace")

    def discard(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)


async def receive_upload(request: Request, tmp_dir: Path, limit: int, file_field: str = "file") -> Upload:
    """Stream ``request``'s multipart body into ``tmp_dir``; 413 beyond ``limit`` bytes of file."""
    mime, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise BadRequest(
            f"expected a multipart/form-data upload, got content type '{mime.decode('latin-1')}'.",
            f"send the file as a form field, e.g. curl -F {file_field}=@model.onnx.",
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError as exc:
            raise BadRequest(f"bad Content-Length {declared[:40]!r}.", "send a number.") from exc
        if n > limit + FORM_OVERHEAD:
            raise _too_large(limit)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    receiver = _Receiver(tmp_dir, limit, file_field)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + FORM_OVERHEAD:
                raise _too_large(limit)
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        receiver.discard()
        raise BadRequest(f"the multipart body is malformed: {exc}.", "send a standard form upload.") from exc
    except BaseException:
        receiver.discard()
        raise
    if receiver.path is None or receiver.out is not None:
        receiver.discard()
        raise BadRequest(
            f"the upload has no complete file in form field '{file_field}'.",
            f"send the file as -F {file_field}=@path.",
        )
    return Upload(receiver.path, receiver.filename, receiver.size, receiver.fields)
