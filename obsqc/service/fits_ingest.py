"""Read a telescope exposure (a FITS file, usually multi-extension) one CCD at a time.

    with open_exposure(path) as reader:
        reader.header.exposure_id, reader.header.ccd_names
        for ccd in reader.iter_ccds():          # one CCD in memory at a time
            ccd.data                            # 2-D float32, rows = y (NAXIS2), columns = x (NAXIS1)

``open_exposure`` reads only the headers: it finds the CCDs, validates every header against
``IngestLimits`` and checks the file size against the sizes the headers declare, so a damaged or
hostile file is refused before any pixel memory is allocated. Pixels are read by ``read_ccd(index)``,
which threads may call concurrently; a reader can also be pickled to another process (it reopens the
file there and checks that it is still the same file).

Exposure metadata (``reader.header``): the id is the ``exposure_id`` argument, else the first of
EXPNUM, EXPID, OBSID in the primary header, then in the first CCD's header, else (``id_from_filename``)
the file name without its .fits/.fit/.fts/.fz/.gz suffixes and with control characters as "?"; else
InvalidExposureError(reason="missing_exposure_id"). INSTRUME and FILTER (or BAND) are looked up the same way
and default to "unknown" with a warning; MJD-OBS and EXPTIME to None. Warnings about a file are logged
and kept in ``reader.warnings`` so that they can be stored with the verdict.

Which HDUs are CCDs:
  * an image HDU with data: the primary HDU, an IMAGE extension, or a tile-compressed image (a
    BINTABLE with ZIMAGE = T); a primary or extension with NAXIS = 0 is skipped;
  * tables (BINTABLE, TABLE), random groups and unknown extensions are skipped;
  * image HDUs whose EXTNAME says they carry per-pixel metadata rather than sky are skipped: EXTNAME
    split at non-alphanumerics has a token in ``AUXILIARY_EXTNAME_TOKENS`` (MASK, BPM, DQ, WEIGHT,
    WHT, VARIANCE, VAR, IVAR, ERR, SIGMA, UNCERT, EXPMAP, FLAGS, ...), e.g. "MASK", "N4_WEIGHT", "dq-3".
Every other image HDU is a CCD, named by EXTNAME, else CCDNAME, else "HDU<n>" (astropy's default name
"COMPRESSED_IMAGE" counts as no name; a repeated name gets "_HDU<n>" appended).

Pixel values: ``BZERO + BSCALE * stored``; integer pixels equal to BLANK and non-finite float pixels
(NaN, +-inf) become NaN. If the header has a DATASEC card ``[x1:x2,y1:y2]`` (1-based, inclusive, x
first) the image is cropped to it; a malformed or out-of-range DATASEC is ignored with a warning.
A cube whose extra axes (NAXIS3...) all have length 1 is read as its 2-D plane.

Speed: uncompressed pixels are read with ``os.preadv`` (no shared file position, so threads share one
descriptor) in row chunks of about 512 KiB into a reused big-endian buffer, and each chunk is converted
(byte swap, BSCALE/BZERO, BLANK and non-finite values to NaN) into the float32 output while it is still
in cache (reading straight into the output and byte-swapping it in place was slower: one more pass).
Tile-compressed HDUs are decoded by astropy (``CompImageHDU``) from the HDU's bytes.
"""

from __future__ import annotations

import logging
import math
import os
import stat
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from obsqc.service.errors import InvalidExposureError
from obsqc.service.fits_headers import (
    AUXILIARY_EXTNAME_TOKENS,
    CCDInfo,
    IngestLimits,
    Scaling,
    Unparsable,
    is_int,
    is_number,
    plan_ccds,
    scan_hdus,
)

__all__ = [
    "AUXILIARY_EXTNAME_TOKENS",
    "CCDImage",
    "CCDInfo",
    "ExposureHeader",
    "ExposureReader",
    "IngestLimits",
    "open_exposure",
]

logger = logging.getLogger(__name__)

ID_KEYWORDS = ("EXPNUM", "EXPID", "OBSID")
_FITS_SUFFIXES = (".fz", ".gz", ".fits", ".fit", ".fts")
# astropy parses headers under warnings.catch_warnings, which is not thread-safe: serialize it
_ASTROPY_LOCK = threading.Lock()


@dataclass(frozen=True)
class ExposureHeader:
    exposure_id: str
    instrument: str
    band: str
    mjd: float | None
    exptime_s: float | None
    path: str
    n_ccds: int
    ccd_names: tuple[str, ...]


@dataclass(frozen=True)
class CCDImage:
    name: str  # EXTNAME or CCDNAME, else "HDU<n>"
    index: int  # 0-based position among the CCDs of the exposure
    hdu_index: int
    data: np.ndarray  # 2-D float32, C-contiguous, rows = y (NAXIS2), cols = x (NAXIS1); BLANK / invalid -> NaN
    saturate: float | None  # from SATURATE (or min of SATURATA/SATURATB), in the units of data
    header: fits.Header  # the HDU header as read (image form for compressed HDUs); lenient, never rewritten


def open_exposure(
    path: str | os.PathLike,
    *,
    exposure_id: str | None = None,
    id_from_filename: bool = False,
    limits: IngestLimits = IngestLimits(),
) -> ExposureReader:
    """Open an exposure file and validate its headers. Raises InvalidExposureError (see errors.py)."""
    if exposure_id is not None and (not isinstance(exposure_id, str) or not exposure_id.strip()):
        raise ValueError("exposure_id must be a non-empty string or None")
    return ExposureReader(path, exposure_id=exposure_id, id_from_filename=id_from_filename, limits=limits)


class ExposureReader:
    """An open exposure. Use as a context manager; ``close()`` releases the file."""

    def __init__(self, path, *, exposure_id=None, id_from_filename=False, limits=IngestLimits()):
        try:
            spath = os.fsdecode(os.fspath(path))
        except TypeError:
            raise TypeError(f"path must be str or os.PathLike, not {type(path).__name__}") from None
        self.limits = limits
        self.warnings: list[str] = []  # ingest warnings, also logged; for the verdict record
        self.skipped: list[InvalidExposureError] = []  # CCDs skipped by iter_ccds(skip_invalid=True)
        label = os.path.basename(os.path.normpath(spath)) or spath
        self._label = "".join(c if c.isprintable() else "?" for c in label)  # safe in logs and messages
        self._path = os.path.abspath(spath)
        self._fd: int | None = None
        self._reopen_lock = threading.Lock()
        self._closed = False
        self._primary_header: fits.Header | None = None
        fd, st = self._open_fd()
        self._fd = fd
        self._identity = _identity(st)
        try:
            self._scan(st.st_size, exposure_id, id_from_filename)
        except BaseException:
            self.close()
            raise

    # ---- opening ---------------------------------------------------------------------------

    def _error(self, reason: str, message: str, ccd: str | None = None) -> InvalidExposureError:
        return InvalidExposureError(f"{self._label}: {message}", reason=reason, ccd=ccd, path=self._path)

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning("%s", message)

    def _open_fd(self) -> tuple[int, os.stat_result]:
        denied = "permission denied. Make the file readable by the obsqc user."
        try:
            self._check_stat(os.stat(self._path))  # before opening: never open a device or a pipe
            fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        except InvalidExposureError:
            raise
        except FileNotFoundError:
            raise self._error("not_found", "no such file. Check the path (and that the exposure was copied there).") from None
        except PermissionError:
            raise self._error("unreadable", denied) from None
        except ValueError as e:  # an embedded NUL
            raise self._error("not_found", f"cannot use this path ({e}). Check the path.") from None
        except OSError as e:
            raise self._error("unreadable", f"cannot open the file ({e.strerror or e}). Check the path and the storage.") from None
        try:
            st = os.fstat(fd)
            self._check_stat(st)  # again: the path may have been replaced meanwhile
        except BaseException:
            os.close(fd)
            raise
        return fd, st

    def _check_stat(self, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise self._error("not_a_file", "is a directory, not a FITS file. Submit one exposure file.")
        if not stat.S_ISREG(st.st_mode):
            raise self._error("not_a_file", "is not a regular file (a device, socket or pipe). Submit a FITS file.")
        if st.st_size > self.limits.max_file_bytes:
            raise self._error(
                "too_large",
                f"the file is {st.st_size:,} bytes, over the limit of "
                f"{self.limits.max_file_bytes:,} bytes (IngestLimits.max_file_bytes). "
                "Check that this is one exposure, or raise the limit.",
            )

    def _scan(self, file_size: int, exposure_id: str | None, id_from_filename: bool) -> None:
        lim = self.limits
        try:
            hdus = scan_hdus(self._fd, file_size, self._label, max_hdus=lim.max_hdus, warn=self._warn)
        except InvalidExposureError as e:
            e.path = self._path
            raise
        except OSError as e:
            raise self._error("unreadable", f"I/O error while reading the headers ({e}). Check the storage.") from None
        self._hdus = hdus
        ccds = plan_ccds(hdus, self._label, self._path, lim, self._warn)
        self.ccds: tuple[CCDInfo, ...] = tuple(ccds)
        nextend = hdus[0].cards.get("NEXTEND")
        if is_int(nextend) and nextend > len(hdus) - 1:
            self._warn(
                f"{self._label}: the primary header declares NEXTEND = {nextend} but the file holds "
                f"{len(hdus) - 1} extensions; it may be truncated at an HDU boundary"
            )
        lookup = (hdus[0].cards, ccds[0].hdu.cards)
        self.header = ExposureHeader(
            exposure_id=self._exposure_id(lookup, exposure_id, id_from_filename),
            instrument=self._text_keyword(lookup, ("INSTRUME",)),
            band=self._text_keyword(lookup, ("FILTER", "BAND")),
            mjd=self._float_keyword(lookup, "MJD-OBS"),
            exptime_s=self._float_keyword(lookup, "EXPTIME"),
            path=self._path,
            n_ccds=len(ccds),
            ccd_names=tuple(c.name for c in ccds),
        )

    def _exposure_id(self, lookup, explicit: str | None, from_filename: bool) -> str:
        if explicit is not None:
            return explicit.strip()
        for cards in lookup:
            for key in ID_KEYWORDS:
                v = cards.get(key)
                if isinstance(v, bool) or v is None or isinstance(v, Unparsable):
                    continue
                if isinstance(v, float):
                    v = int(v) if v.is_integer() else v
                text = str(v).strip()
                if text:
                    return text
        if from_filename:
            stem = self._label
            while stem.lower().endswith(_FITS_SUFFIXES) and "." in stem[1:]:
                stem = stem[: stem.rindex(".")]
            return stem
        raise self._error(
            "missing_exposure_id",
            "no exposure id: none of EXPNUM, EXPID, OBSID in the primary header or the first CCD header. "
            "Add one to the header, or pass the id with the request (obsqc rank uses the file name).",
        )

    def _text_keyword(self, lookup, keys: tuple[str, ...]) -> str:
        for cards in lookup:
            for key in keys:
                v = cards.get(key)
                if isinstance(v, str) and not isinstance(v, Unparsable) and v.strip():
                    return v.strip()
        self._warn(f"{self._label}: no {' or '.join(keys)} in the headers; using 'unknown'")
        return "unknown"

    def _float_keyword(self, lookup, key: str) -> float | None:
        for cards in lookup:
            v = cards.get(key)
            if v is None:
                continue
            if is_number(v) and math.isfinite(v):
                return float(v)
            self._warn(f"{self._label}: ignored {key} = {v!r} (not a number)")
            return None
        return None

    # ---- reading ---------------------------------------------------------------------------

    @property
    def primary_header(self) -> fits.Header:
        """The primary header as read (lenient; accessing a malformed card may raise astropy's VerifyError)."""
        if self._primary_header is None:
            self._primary_header = _header_from_text(self._hdus[0].header_text)
        return self._primary_header

    def read_ccd(self, index: int) -> CCDImage:
        """Read one CCD by its 0-based index. Thread-safe. Raises InvalidExposureError with ``ccd`` set
        ("all_nan", "truncated", "unreadable") when only this CCD cannot be used."""
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"CCD index must be an int, not {type(index).__name__}")
        if not -len(self.ccds) <= index < len(self.ccds):
            raise IndexError(f"CCD index {index} out of range: the exposure has {len(self.ccds)} CCDs")
        info = self.ccds[index]
        fd = self._ensure_open()
        try:
            if info.compressed:
                data, any_finite, header = self._read_compressed(fd, info)
            else:
                data, any_finite = read_image(
                    fd, info.hdu.data_offset, info.bitpix, info.full_shape[1], info.crop, info.scaling
                )
                header = _header_from_text(info.hdu.header_text)
        except ShortRead:
            raise self._error(
                "truncated",
                f"CCD {info.name!r} ends early: the file shrank after it was opened. Copy it again from the source.",
                ccd=info.name,
            ) from None
        except OSError as e:
            raise self._error("unreadable", f"I/O error reading CCD {info.name!r} ({e}).", ccd=info.name) from None
        if not any_finite:
            raise self._error(
                "all_nan",
                f"CCD {info.name!r} has no valid pixel (all NaN, infinite or BLANK), so it cannot be measured; "
                "the other CCDs can. Check this CCD's readout.",
                ccd=info.name,
            )
        return CCDImage(info.name, info.index, info.hdu_index, data, info.saturate, header)

    def iter_ccds(self, *, skip_invalid: bool = False) -> Iterator[CCDImage]:
        """Yield the CCDs in order, reading each only when asked for; the reader keeps no reference.

        A CCD that cannot be used raises InvalidExposureError (with ``ccd`` set) from ``next()``; the
        iterator stays usable, so a caller may record the error and continue. With ``skip_invalid``
        such CCDs are logged, appended to ``self.skipped`` and passed over.
        """
        return _CCDIterator(self, skip_invalid)

    def _read_compressed(self, fd: int, info: CCDInfo) -> tuple[np.ndarray, bool, fits.Header]:
        h = info.hdu
        buf = bytearray(h.data_offset + h.data_size - h.header_offset)
        pread_into(fd, buf, h.header_offset)
        buf[: len(h.header_text)] = h.header_text.encode("ascii")  # sanitized, same length
        try:
            with _ASTROPY_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = fits.BinTableHDU.fromstring(bytes(buf), ignore_missing_end=True)
                hdu = fits.CompImageHDU(bintable=table)
                header = hdu.header
            arr = np.asarray(hdu.data)  # decoding runs outside the lock
            while arr.ndim > 2:
                arr = arr[0]
            y0, y1, x0, x1 = info.crop
            sub = arr[y0:y1, x0:x1]
            if sub.shape != info.shape:
                raise ValueError(f"decoded shape {arr.shape} does not match the header")
        except Exception as e:  # astropy raises many types on corrupt compressed data
            raise self._error(
                "unreadable",
                f"cannot decompress CCD {info.name!r} ({type(e).__name__}: {e}). The compressed data is "
                "corrupt; re-compress it from the original.",
                ccd=info.name,
            ) from None
        data = np.empty(info.shape, np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            data[...] = sub
            if sub.dtype.kind not in "iu":
                return data, _nonfinite_to_nan(data), header
        any_finite = True
        blank = header.get("BLANK")  # astropy turns BLANK into NaN when it scales; not otherwise
        if is_int(blank):
            mask = sub == blank * float(header.get("BSCALE", 1) or 1) + float(header.get("BZERO", 0) or 0)
            if mask.any():
                data[mask] = np.nan
                any_finite = not mask.all()
        return data, any_finite, header

    # ---- file handle, context manager, pickling --------------------------------------------

    def _ensure_open(self) -> int:
        if self._closed:
            raise ValueError("I/O operation on a closed ExposureReader")
        if self._fd is None:  # unpickled in another process: reopen and check it is the same file
            with self._reopen_lock:
                if self._fd is None:
                    fd, st = self._open_fd()
                    if _identity(st) != self._identity:
                        os.close(fd)
                        raise self._error("unreadable", "the file changed after it was opened; submit it again.")
                    self._fd = fd
        return self._fd

    def close(self) -> None:
        self._closed = True
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> ExposureReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_fd"] = None
        state["_primary_header"] = None
        del state["_reopen_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reopen_lock = threading.Lock()

    def __repr__(self) -> str:
        h = getattr(self, "header", None)
        what = f"{h.exposure_id!r}, {h.n_ccds} CCDs" if h else "unopened"
        return f"<ExposureReader {self._label!r} {what}{' closed' if self._closed else ''}>"


class _CCDIterator:
    def __init__(self, reader: ExposureReader, skip_invalid: bool):
        self._reader = reader
        self._next = 0
        self._skip = skip_invalid

    def __iter__(self):
        return self

    def __next__(self) -> CCDImage:
        reader = self._reader
        while self._next < len(reader.ccds):
            i = self._next
            self._next += 1
            try:
                return reader.read_ccd(i)
            except InvalidExposureError as e:
                if not self._skip or e.ccd is None:
                    raise
                logger.warning("%s", e.message)
                reader.skipped.append(e)
        raise StopIteration


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _header_from_text(text: str) -> fits.Header:
    with _ASTROPY_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fits.Header.fromstring(text)


# ---- pixels --------------------------------------------------------------------------------

_RAW_DTYPES = {8: np.dtype("u1"), 16: np.dtype(">i2"), 32: np.dtype(">i4"), 64: np.dtype(">i8"),
              -32: np.dtype(">f4"), -64: np.dtype(">f8")}
_CHUNK_BYTES = 1 << 19
_F32_MAX = float(np.finfo(np.float32).max)


class ShortRead(Exception):
    """The file ended before the bytes its header declares (it shrank after it was opened)."""


def pread_into(fd: int, buf, offset: int) -> None:
    """Fill a writable contiguous buffer (numpy array or memoryview) from the file at ``offset``."""
    mv = memoryview(buf).cast("B")
    n = len(mv)
    done = 0
    while done < n:
        if hasattr(os, "preadv"):
            got = os.preadv(fd, [mv[done:]], offset + done)
        else:  # pragma: no cover - platforms without preadv
            chunk = os.pread(fd, n - done, offset + done)
            got = len(chunk)
            mv[done : done + got] = chunk
        if got == 0:
            raise ShortRead(offset + done)
        done += got


def read_image(
    fd: int, data_offset: int, bitpix: int, nx: int, crop: tuple[int, int, int, int], scaling: Scaling
) -> tuple[np.ndarray, bool]:
    """Read an uncompressed image (``nx`` pixels per row) into a new C-contiguous float32 array.

    ``crop`` is (y0, y1, x0, x1), 0-based and half-open. Returns the array and whether it holds any
    finite value. Raises ShortRead when the file ends early.
    """
    y0, y1, x0, x1 = crop
    raw_dt = _RAW_DTYPES[bitpix]
    out = np.empty((y1 - y0, x1 - x0), np.float32)
    row_bytes = nx * raw_dt.itemsize
    rows = max(1, _CHUNK_BYTES // row_bytes)
    is_float = bitpix < 0
    # a float result can only be non-finite for float input, or when the scaling overflows float32
    max_raw = 2.0 ** (bitpix - 1) if bitpix > 8 else 255.0
    check_finite = is_float or max_raw * abs(scaling.bscale) + abs(scaling.bzero) > _F32_MAX
    blank = scaling.blank if not is_float else None
    any_finite = False
    with np.errstate(over="ignore", invalid="ignore"):
        buf = np.empty(rows * nx, raw_dt)
        wide = bitpix in (32, 64) or (bitpix == -64 and not scaling.identity)
        tmp = np.empty(rows * (x1 - x0), np.float64) if wide else None
        for r in range(y0, y1, rows):
            n = min(rows, y1 - r)
            b = buf[: n * nx]
            pread_into(fd, b, data_offset + r * row_bytes)
            src = b.reshape(n, nx)[:, x0:x1]
            dst = out[r - y0 : r - y0 + n]
            if wide:
                t = tmp[: dst.size].reshape(dst.shape)
                np.multiply(src, scaling.bscale, out=t, dtype=np.float64)
                if scaling.bzero:
                    t += scaling.bzero
                dst[...] = t
            elif scaling.identity:
                dst[...] = src
            elif scaling.bscale == 1.0:
                np.add(src, np.float32(scaling.bzero), out=dst, dtype=np.float32)
            else:  # float32 arithmetic, as astropy does for BITPIX 8, 16 and -32
                np.multiply(src, np.float32(scaling.bscale), out=dst, dtype=np.float32)
                if scaling.bzero:
                    dst += np.float32(scaling.bzero)
            chunk_finite = True
            if blank is not None:
                mask = src == blank
                if mask.any():
                    dst[mask] = np.nan
                    chunk_finite = not mask.all()
            if check_finite:
                chunk_finite = _nonfinite_to_nan(dst)
            any_finite |= chunk_finite
    return out, any_finite


def _nonfinite_to_nan(a: np.ndarray) -> bool:
    """Set +-inf to NaN in place; return whether any finite value is left."""
    fin = np.isfinite(a)
    if fin.all():
        return a.size > 0
    a[~fin] = np.nan
    return bool(fin.any())
