"""Multipart uploads to ``POST /v1/exposures``: streamed to disk, size-limited while streaming.

The body is parsed as it arrives (``python-multipart``), never held in memory: the part named
``file`` goes to a temporary file ``<home>/uploads/.incoming-<random>`` in about 1 MiB writes, and the
upload is refused with 413 as soon as it passes ``Settings.upload_max_bytes`` (or at once when the
``Content-Length`` already says so), its partial file deleted. Text fields (``exposure_id``) are kept
(64 KiB at most in all). The caller then opens the file's headers (is it FITS? which exposure?) and
keeps it with :func:`keep_upload` under a name derived from the exposure id, never the client's file
name, or deletes it with :meth:`SpooledUpload.discard`.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from obsqc.service.api.errors import ApiError
from obsqc.service.queue import job_id_for

__all__ = ["FILE_FIELD", "SpooledUpload", "keep_upload", "spool_upload", "sweep_incoming", "upload_path_for"]

FILE_FIELD = "file"
"""Name of the multipart part holding the FITS file."""

MAX_FIELDS_BYTES = 64 * 1024
"""Most bytes of text fields (names and values) accepted next to the file."""

MAX_FIELDS = 32
"""Most text fields accepted next to the file."""

_WRITE_BYTES = 1 << 20
"""File data is written to disk in batches of about this many bytes (in a worker thread)."""

_INCOMING_PREFIX = ".incoming-"


@dataclass
class SpooledUpload:
    """An upload on disk, not yet judged: ``path`` is a temporary name under the upload directory."""

    path: Path
    size: int
    filename: str | None
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        """Delete the temporary file (no error when already gone)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def sweep_incoming(upload_dir: Path, older_than_s: float = 3600.0) -> int:
    """Delete temporary upload files untouched for ``older_than_s`` (left by a killed server); returns
    how many. A live upload writes its file continuously, so it is never that old."""
    removed = 0
    cutoff = time.time() - older_than_s
    with contextlib.suppress(FileNotFoundError), os.scandir(upload_dir) as entries:
        for entry in entries:
            if entry.name.startswith(_INCOMING_PREFIX) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                        os.unlink(entry.path)
                        removed += 1
    return removed


def upload_path_for(upload_dir: Path, exposure_id: str) -> Path:
    """Where the upload of ``exposure_id`` is kept: a hash of the id, so any id makes a safe name."""
    return Path(upload_dir) / f"{job_id_for(exposure_id)}.fits"


def keep_upload(spooled: SpooledUpload, upload_dir: Path, exposure_id: str) -> Path:
    """Move ``spooled`` to its kept name (:func:`upload_path_for`) and return that path."""
    final = upload_path_for(upload_dir, exposure_id)
    os.replace(spooled.path, final)  # spooled.path is gone now, so discard() is a no-op
    return final


class _Parts:
    """python-multipart callbacks: text fields into memory, the ``file`` part into ``pending``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.fields: dict[str, str] = {}
        self.field_bytes = 0
        self.pending = bytearray()
        self.size = 0
        self.filename: str | None = None
        self.seen_file = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data, "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._is_file, self._value = b"", None, False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise ApiError(422, "bad_upload", 'a multipart part has no Content-Disposition name')
        self._name = options[b"name"].decode("utf-8", "replace")
        self._is_file = b"filename" in options
        if self._is_file:
            if self._name != FILE_FIELD or self.seen_file:
                raise ApiError(422, "bad_upload", f"send exactly one file, in the part named {FILE_FIELD!r}")
            self.seen_file = True
            self.filename = options[b"filename"].decode("utf-8", "replace")
        elif len(self.fields) >= MAX_FIELDS:
            raise ApiError(422, "bad_upload", f"more than {MAX_FIELDS} form fields")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        n = end - start
        if self._is_file:
            self.size += n
            if self.size > self.max_bytes:
                raise ApiError(413, "payload_too_large",
                               f"the upload is larger than {self.max_bytes:,} bytes (OBSQC_UPLOAD_MAX_BYTES); "
                               "put the file under a data root and submit its path instead")
            self.pending += data[start:end]
        else:
            self.field_bytes += n
            if self.field_bytes > MAX_FIELDS_BYTES:
                raise ApiError(413, "payload_too_large", f"form fields larger than {MAX_FIELDS_BYTES} bytes")
            self._value += data[start:end]

    def on_part_end(self) -> None:
        if not self._is_file and self._name is not None:
            try:
                self.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(422, "bad_upload", f"form field {self._name!r} is not UTF-8") from None


async def spool_upload(request: Request, upload_dir: Path, max_bytes: int) -> SpooledUpload:
    """Stream the multipart body of ``request`` to a temporary file under ``upload_dir``.

    Raises :class:`ApiError` 413 past ``max_bytes`` of file data (nothing left on disk), 422
    ``bad_upload`` for a malformed body or one without a ``file`` part.
    """
    _, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(422, "bad_upload", "multipart/form-data without a boundary")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes + MAX_FIELDS_BYTES + 16 * 1024:
        raise ApiError(413, "payload_too_large",
                       f"the upload is larger than {max_bytes:,} bytes (OBSQC_UPLOAD_MAX_BYTES); "
                       "put the file under a data root and submit its path instead")
    upload_dir = Path(upload_dir)
    upload_dir.mkdir(parents=True, exist_ok=True)
    path = upload_dir / f"{_INCOMING_PREFIX}{uuid.uuid4().hex}"
    parts = _Parts(max_bytes)
    parser = MultipartParser(boundary, parts.callbacks())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                parser.write(chunk)
                if len(parts.pending) >= _WRITE_BYTES:
                    batch, parts.pending = bytes(parts.pending), bytearray()
                    await anyio.to_thread.run_sync(out.write, batch)
            parser.finalize()
            if parts.pending:
                await anyio.to_thread.run_sync(out.write, bytes(parts.pending))
        if not parts.seen_file:
            raise ApiError(422, "bad_upload", f"the multipart body has no part named {FILE_FIELD!r} with a filename")
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        if isinstance(exc, FormParserError):
            raise ApiError(422, "bad_upload", f"malformed multipart body ({exc})") from None
        raise
    return SpooledUpload(path=path, size=parts.size, filename=parts.filename, fields=parts.fields)
