"""PNG views of a scored galaxy: its cutout, the WGAN's reconstruction and the residual between them.

They are drawn on demand from the exposure's galaxy artifact ``galaxies.npz`` (written by the jobs),
which holds ``cutouts`` float32 (N, C, S, S) in [0, 1], ``reconstructions`` float32 (N, C, S, S) once
the galaxies are scored, and ``ccd``, ``x``, ``y`` (N,); a galaxy's ``idx`` is its row. Only that row is
read: when the member is stored uncompressed (``np.savez``) straight from its offset in the file,
otherwise by decompressing up to it, never the whole (N, C, S, S) array.

Drawing: values clipped to [0, 1] and mapped linearly to 0-255, so zero is black and galaxies are
comparable with one another. C = 1 is grey; C = 3 holds the bands (g, r, i) and is shown as the usual
gri composite, i -> red, r -> green, g -> blue. Pixel row 0 is drawn at the bottom, as FITS viewers
show an image (y up). The residual is ``|cutout - reconstruction|``, the absolute difference of seed
paper 003 section 3.3. Small cutouts are enlarged by an integer factor, nearest neighbour, to at
least :data:`MIN_SIDE` pixels a side.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["KINDS", "MIN_SIDE", "ArtifactMissing", "galaxy_png", "read_row", "render_png"]

KINDS = ("cutout", "reconstruction", "residual")
"""The views of a galaxy served as PNG."""

MIN_SIDE = 192
"""Cutouts smaller than this (pixels a side) are enlarged by an integer factor."""

_ARRAY_OF_KIND = {"cutout": ("cutouts",), "reconstruction": ("reconstructions",),
                  "residual": ("cutouts", "reconstructions")}


class ArtifactMissing(LookupError):
    """The galaxy artifact, one of its arrays, or the requested row is not there."""


def _stored_data_start(path: Path, info: zipfile.ZipInfo) -> int:
    """Offset in the file of the first byte of an uncompressed zip member's data."""
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"{path.name}: bad local header for {info.filename}")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_length + extra_length


def read_row(path: Path, name: str, idx: int) -> np.ndarray:
    """Row ``idx`` of the array ``name`` of the ``.npz`` file at ``path`` (no pickles are ever loaded).

    Raises :class:`ArtifactMissing` when the file, the array or the row does not exist."""
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise ArtifactMissing(f"no galaxy artifact {path.name}") from None
    with archive:
        try:
            info = archive.getinfo(f"{name}.npy")
        except KeyError:
            raise ArtifactMissing(f"the galaxy artifact has no {name!r} array (yet)") from None
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(member)
            else:  # a header version without a public reader: read the whole array
                shape, fortran_order, dtype = None, True, None
            if shape is not None and (dtype.hasobject or len(shape) == 0):
                raise ValueError(f"{path.name}: {name} is not a numeric array with rows")
            if shape is not None and not 0 <= idx < shape[0]:
                raise ArtifactMissing(f"the galaxy artifact has {shape[0]} rows in {name!r}, not row {idx}")
            if fortran_order:
                with np.load(path, allow_pickle=False) as data:
                    array = data[name]
                if not 0 <= idx < len(array):
                    raise ArtifactMissing(f"the galaxy artifact has {len(array)} rows in {name!r}, not row {idx}")
                return np.array(array[idx])
            row_shape = tuple(shape[1:])
            row_bytes = math.prod(row_shape) * dtype.itemsize
            offset = member.tell() + idx * row_bytes
            if info.compress_type == zipfile.ZIP_STORED:
                with open(path, "rb") as raw:
                    raw.seek(_stored_data_start(path, info) + offset)
                    data = raw.read(row_bytes)
            else:
                member.seek(offset)
                data = member.read(row_bytes)
    if len(data) != row_bytes:
        raise ValueError(f"{path.name}: {name} is truncated")
    return np.frombuffer(data, dtype=dtype).reshape(row_shape)


def render_png(image: np.ndarray, min_side: int = MIN_SIDE) -> bytes:
    """PNG of a (C, S, S) or (S, S) image with values in [0, 1] (see the module's notes on drawing)."""
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] < 1 or min(a.shape[1:]) < 1:
        raise ValueError(f"expected a (C, H, W) image, got shape {np.shape(image)}")
    a = np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    if a.shape[0] == 3:
        pixels, mode = a[::-1].transpose(1, 2, 0), "RGB"  # (g, r, i) -> (R, G, B) = (i, r, g)
    else:
        pixels, mode = (a[0] if a.shape[0] == 1 else a.mean(axis=0)), "L"
    pixels = np.ascontiguousarray(np.round(pixels[::-1] * 255.0).astype(np.uint8))  # row 0 at the bottom
    factor = max(1, math.ceil(min_side / min(pixels.shape[:2])))
    if factor > 1:
        pixels = np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


@functools.lru_cache(maxsize=256)
def _cached_png(path: str, _mtime_ns: int, _size: int, idx: int, kind: str) -> bytes:
    arrays = [read_row(Path(path), name, idx) for name in _ARRAY_OF_KIND[kind]]
    if kind == "residual":
        cutout, reconstruction = (a.astype(np.float32) for a in arrays)
        if cutout.shape != reconstruction.shape:
            raise ValueError(f"cutout {cutout.shape} and reconstruction {reconstruction.shape} differ in shape")
        return render_png(np.abs(cutout - reconstruction))
    return render_png(arrays[0])


def galaxy_png(path: Path, idx: int, kind: str) -> bytes:
    """The PNG of view ``kind`` (:data:`KINDS`) of row ``idx`` of the galaxy artifact at ``path``.

    Drawn once per version of the file (its modification time and size are part of the cache key).
    Raises :class:`ArtifactMissing` when the file, an array or the row is missing."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ArtifactMissing(f"no galaxy artifact {path.name}") from None
    return _cached_png(str(path), stat.st_mtime_ns, stat.st_size, idx, kind)
