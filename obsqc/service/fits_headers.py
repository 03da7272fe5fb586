"""FITS structure from the headers alone, without astropy: find the HDUs of a file, parse their cards
leniently, and decide which HDUs are CCDs, how large they are and how their pixels are scaled.

Used by :mod:`obsqc.service.fits_ingest`. Scanning reads nothing but header blocks (2880 bytes each),
so a hostile header cannot make it allocate pixel memory, and it computes where every HDU's data starts
and how many bytes the header declares, which is how truncated files are detected before any pixel is read.

Card parsing is deliberately forgiving (FITS 4.0 section 4 for what is standard): lower-case keywords
are upper-cased, cards without a value indicator, HIERARCH cards, unparsable values and non-ASCII bytes
are tolerated; the first occurrence of a keyword wins (as in astropy). Only the keywords that the
structure depends on (SIMPLE/XTENSION, BITPIX, NAXIS, NAXISn, PCOUNT, GCOUNT) must be well formed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from obsqc.service.errors import InvalidExposureError

BLOCK = 2880
CARD = 80
CARDS_PER_BLOCK = BLOCK // CARD
#: a header longer than this (36,000 cards) is refused as malformed rather than scanned forever
MAX_HEADER_BLOCKS = 1000
VALID_BITPIX = (8, 16, 32, 64, -32, -64)

_INT_RE = re.compile(r"[+-]?\d+\Z")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([EeDd][+-]?\d+)?\Z")
# bytes outside printable ASCII become '?', so that astropy's Header can parse the text
_SANITIZE = bytes(b if 32 <= b <= 126 else ord("?") for b in range(256))


class Unparsable(str):
    """The raw text of a card value that is not a FITS string, logical, integer or real."""


def parse_value(text: str):
    """Value of a card's value field (columns 11-80): str, bool, int, float, None (undefined) or Unparsable."""
    s = text.lstrip()
    if s.startswith("'"):
        out = []
        i = 1
        while i < len(s):
            ch = s[i]
            if ch == "'":
                if s[i + 1 : i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                return "".join(out).rstrip()
            out.append(ch)
            i += 1
        return Unparsable(s.rstrip())
    v = s.split("/", 1)[0].strip()
    if v == "":
        return None
    if v in ("T", "F"):
        return v == "T"
    if _INT_RE.match(v):
        return int(v)
    if _FLOAT_RE.match(v):
        return float(v.replace("D", "E").replace("d", "e"))
    return Unparsable(v)


def parse_cards(text: str) -> dict[str, object]:
    """Keyword -> value for every valued card of a header text (first occurrence wins)."""
    values: dict[str, object] = {}
    for i in range(0, len(text) - CARD + 1, CARD):
        card = text[i : i + CARD]
        if card[8] != "=":
            continue  # commentary cards, HIERARCH, CONTINUE, cards without a value indicator
        key = card[:8].rstrip().upper()
        if key and key not in values:
            values[key] = parse_value(card[9:] if card[9:10] != " " else card[10:])
    return values


@dataclass(frozen=True)
class HDUInfo:
    """Where one HDU lies in the file and what its header declares."""

    index: int
    header_offset: int
    data_offset: int
    data_size: int  # bytes the header declares (without the padding to a whole block)
    available: int  # bytes of that data actually present in the file (< data_size: truncated)
    xtension: str | None  # None for the primary HDU
    bitpix: int
    naxes: tuple[int, ...]  # NAXIS1, NAXIS2, ... (FITS order: x first)
    header_text: str  # sanitized header, whole cards up to and including END
    cards: Mapping[str, object] = field(repr=False)

    @property
    def truncated(self) -> bool:
        return self.available < self.data_size

    @property
    def is_compressed_image(self) -> bool:
        return (self.xtension or "").upper() in ("BINTABLE", "A3DTABLE") and self.cards.get("ZIMAGE") is True


def _invalid(reason: str, message: str, **kwargs) -> InvalidExposureError:
    return InvalidExposureError(message, reason=reason, **kwargs)


def _is_blank_tail(chunk: bytes) -> bool:
    return not chunk.strip(b"\x00 ")


def _read(fd: int, n: int, offset: int) -> bytes:
    parts = []
    while n > 0:
        got = os.pread(fd, n, offset)
        if not got:
            break
        parts.append(got)
        n -= len(got)
        offset += len(got)
    return b"".join(parts)


def _require_int(cards: Mapping[str, object], key: str, where: str, label: str, minimum: int = 0) -> int:
    v = cards.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        shown = "missing" if v is None else f"{v!r}"
        raise _invalid(
            "bad_header",
            f"{label}: {where} has a malformed or missing {key} card ({shown}); the file's structure cannot be "
            "determined. Regenerate or re-export the file (e.g. with astropy or fitsverify to locate the damage).",
        )
    return v


def scan_hdus(
    fd: int,
    file_size: int,
    label: str,
    *,
    max_hdus: int,
    warn: Callable[[str], None],
) -> list[HDUInfo]:
    """Find every HDU of an open FITS file.

    Raises InvalidExposureError: ``not_fits`` when the first card is not ``SIMPLE =``, ``truncated``
    when the file ends inside a header, ``bad_header`` when a structural keyword is malformed and
    ``too_large`` past ``max_hdus`` HDUs. A file that ends inside the data of its last HDU is *not*
    refused here: that HDU comes back with ``available < data_size`` and the caller decides (so that
    an absurd NAXIS can be reported as such rather than as a truncation).
    Trailing zeros after the last HDU are ignored; other trailing bytes are ignored with a warning.
    """
    if file_size == 0:
        raise _not_fits(b"", label)
    hdus: list[HDUInfo] = []
    pos = 0
    while pos < file_size:
        index = len(hdus)
        first = _read(fd, BLOCK, pos)
        if index == 0:
            if not first.startswith(b"SIMPLE  ="):
                raise _not_fits(first, label)
        elif not first.startswith(b"XTENSION="):
            if not _is_blank_tail(first) or not _is_blank_tail(_read(fd, min(file_size - pos, 1 << 20), pos)):
                warn(f"{label}: ignored {file_size - pos} bytes after the last HDU (they do not start an extension)")
            break
        if index >= max_hdus:
            raise _invalid(
                "too_large",
                f"{label}: the file has more than {max_hdus} HDUs (IngestLimits.max_hdus); an exposure "
                "holds one HDU per CCD. Check that this is a single exposure, or raise the limit.",
            )
        header_offset = pos
        raw_blocks = []
        block = first
        end_card = -1
        while True:
            if len(block) < BLOCK:
                where = "primary header" if index == 0 else f"header of HDU {index}"
                raise _invalid(
                    "truncated",
                    f"{label}: the file ends inside the {where} (file size {file_size} bytes); it was probably "
                    "cut during transfer or is still being written. Copy it again from the source.",
                )
            raw_blocks.append(block)
            pos += BLOCK
            for c in range(CARDS_PER_BLOCK):
                if block[c * CARD : c * CARD + 8] == b"END     ":
                    end_card = c
                    break
            if end_card >= 0:
                break
            if len(raw_blocks) >= MAX_HEADER_BLOCKS:
                raise _invalid(
                    "bad_header",
                    f"{label}: header of HDU {index} has no END card within {MAX_HEADER_BLOCKS * CARDS_PER_BLOCK} "
                    "cards; the file is corrupt. Regenerate or re-export it.",
                )
            if pos >= file_size:
                block = b""  # missing END at the end of the file
                text = (b"".join(raw_blocks)).translate(_SANITIZE).decode("ascii")
                cards = parse_cards(text)
                if cards.get("NAXIS") == 0 and pos == file_size and index > 0:
                    # astropy's ignore_missing_end: a final, data-less header without END
                    warn(f"{label}: header of HDU {index} has no END card; read it as a header without data")
                    end_card = CARDS_PER_BLOCK
                    break
                continue
            block = _read(fd, BLOCK, pos)
        raw = b"".join(raw_blocks)[: (len(raw_blocks) - 1) * BLOCK + min(end_card + 1, CARDS_PER_BLOCK) * CARD]
        sanitized = raw.translate(_SANITIZE)
        if sanitized != raw:
            warn(f"{label}: header of HDU {index} contains non-ASCII bytes; read them as '?'")
        text = sanitized.decode("ascii")
        cards = parse_cards(text)
        where = "the primary header" if index == 0 else f"the header of HDU {index}"
        xtension = None
        if index == 0:
            if cards.get("SIMPLE") is not True:
                warn(f"{label}: SIMPLE is not T in the primary header; reading it anyway")
        else:
            x = cards.get("XTENSION")
            xtension = x.strip().upper() if isinstance(x, str) else str(x)
        bitpix = cards.get("BITPIX")
        if bitpix not in VALID_BITPIX or isinstance(bitpix, bool):
            raise _invalid(
                "bad_header",
                f"{label}: {where} has BITPIX = {bitpix!r}; FITS allows only 8, 16, 32, 64, -32 or -64. "
                "The file is corrupt or not written by a FITS library; regenerate it.",
            )
        naxis = _require_int(cards, "NAXIS", where, label)
        if naxis > 999:
            raise _invalid("bad_header", f"{label}: {where} has NAXIS = {naxis} (> 999); the file is corrupt.")
        naxes = tuple(_require_int(cards, f"NAXIS{k}", where, label) for k in range(1, naxis + 1))
        pcount = gcount = None
        if index > 0:
            pcount = _require_int(cards, "PCOUNT", where, label) if "PCOUNT" in cards else 0
            gcount = _require_int(cards, "GCOUNT", where, label, minimum=1) if "GCOUNT" in cards else 1
        data_size = declared_data_size(bitpix, naxes, pcount or 0, gcount or 1, groups=index == 0 and cards.get("GROUPS") is True)
        data_offset = pos
        available = max(0, min(data_size, file_size - data_offset))
        hdus.append(
            HDUInfo(index, header_offset, data_offset, data_size, available, xtension, bitpix, naxes, text, cards)
        )
        if available < data_size:
            break  # nothing can follow a truncated HDU
        padded = -(-data_size // BLOCK) * BLOCK
        if data_offset + padded > file_size:
            warn(f"{label}: the last HDU lacks its final padding to a 2880-byte block; its data is complete")
        pos = data_offset + padded
    return hdus


def declared_data_size(bitpix: int, naxes: tuple[int, ...], pcount: int = 0, gcount: int = 1, groups: bool = False) -> int:
    """Bytes of data an HDU header declares (FITS 4.0 eq. 1 and 2), without padding."""
    if not naxes:
        return 0
    dims = naxes[1:] if groups and naxes[0] == 0 else naxes
    n = 1
    for d in dims:
        n *= d
    return abs(bitpix) // 8 * gcount * (pcount + n)


def _not_fits(first: bytes, label: str) -> InvalidExposureError:
    if not first:
        what = "the file is empty (0 bytes)"
    elif first.startswith(b"\x1f\x8b"):
        what = "it is gzip-compressed as a whole (.gz); decompress it with gunzip, or tile-compress it with fpack"
    elif first.startswith((b"BZh", b"\xfd7zXZ", b"PK\x03\x04")):
        what = "it is compressed as a whole (bzip2/xz/zip); decompress it first, or tile-compress it with fpack"
    elif first.startswith(b"XTENSION="):
        what = "it starts with an extension header, not a primary header (a fragment of a FITS file?)"
    else:
        what = "it does not start with the 'SIMPLE  =' card every FITS file starts with"
    return _invalid("not_fits", f"{label}: not a FITS file: {what}. Submit the exposure's FITS file.")


# ---------------------------------------------------------------------------------------------
# which HDUs are CCDs, and what their headers promise

AUXILIARY_EXTNAME_TOKENS = frozenset(
    "MASK BPM BPMASK BADPIX DQ DQI WEIGHT WHT WGT VARIANCE VAR IVAR INVVAR ERR ERROR SIGMA UNCERT "
    "EXPMAP FLAGS".split()
)
_DEFAULT_COMPRESSED_NAME = "COMPRESSED_IMAGE"  # astropy's EXTNAME for an unnamed CompImageHDU
_DATASEC_RE = re.compile(r"\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*\Z")


@dataclass(frozen=True)
class IngestLimits:
    """What ``open_exposure`` refuses. Checked on the headers, before any pixel memory is allocated."""

    min_side_px: int = 32  # the detectors' smallest useful CCD side (after DATASEC cropping)
    max_pixels_per_ccd: int = 64 * 2**20  # 64 Mpix: 256 MiB as float32
    max_ccds: int = 256
    max_file_bytes: int = 16 * 2**30
    max_hdus: int = 1024  # all HDUs, CCDs or not


@dataclass(frozen=True)
class Scaling:
    """Stored values to physical ones: ``bzero + bscale * stored``; integer ``blank`` -> NaN."""

    bscale: float = 1.0
    bzero: float = 0.0
    blank: int | None = None

    @property
    def identity(self) -> bool:
        return self.bscale == 1.0 and self.bzero == 0.0


@dataclass(frozen=True)
class CCDInfo:
    """What the headers say about one CCD (no pixels)."""

    name: str
    index: int  # 0-based among the CCDs
    hdu_index: int
    shape: tuple[int, int]  # (ny, nx) of the CCD's data, after DATASEC cropping
    full_shape: tuple[int, int]  # (NAXIS2, NAXIS1)
    crop: tuple[int, int, int, int]  # (y0, y1, x0, x1), 0-based half-open, into the full image
    bitpix: int  # stored BITPIX (ZBITPIX for tile-compressed HDUs)
    compressed: bool
    saturate: float | None
    scaling: Scaling = field(repr=False)  # identity for compressed HDUs (astropy scales them)
    hdu: HDUInfo = field(repr=False, compare=False)


class _Planner:
    def __init__(self, label: str, path: str, limits: IngestLimits, warn: Callable[[str], None]):
        self.label, self.path, self.limits, self.warn = label, path, limits, warn

    def error(self, reason: str, message: str, ccd: str | None = None) -> InvalidExposureError:
        return _invalid(reason, f"{self.label}: {message}", ccd=ccd, path=self.path)

    def ccd(self, h: HDUInfo, compressed: bool, name: str, index: int) -> CCDInfo:
        lim, cards = self.limits, h.cards
        if compressed:
            bitpix, naxis = cards.get("ZBITPIX"), cards.get("ZNAXIS")
            naxes = tuple(cards.get(f"ZNAXIS{k}") for k in range(1, naxis + 1)) if is_int(naxis) and 0 <= naxis <= 999 else None
            if bitpix not in VALID_BITPIX or naxes is None or not all(is_int(n) and n >= 0 for n in naxes):
                raise self.error(
                    "bad_header",
                    f"the tile-compressed HDU {h.index} ({name!r}) has malformed ZBITPIX/ZNAXIS cards; "
                    "re-compress the image from the original (e.g. with fpack).",
                    ccd=name,
                )
        else:
            bitpix, naxes = h.bitpix, h.naxes
        if len(naxes) < 2 or any(n != 1 for n in naxes[2:]):
            hint = " (split the cube into one image HDU per CCD)" if len(naxes) > 2 else ""
            raise self.error(
                "bad_dimensions",
                f"HDU {h.index} ({name!r}) holds {len(naxes)}-D data ({'x'.join(map(str, naxes))} values); "
                f"obsqc needs one 2-D image per CCD{hint}.",
                ccd=name,
            )
        nx, ny = naxes[0], naxes[1]
        if nx * ny > lim.max_pixels_per_ccd:
            raise self.error(
                "too_large",
                f"CCD {name!r} declares {nx}x{ny} = {nx * ny:,} px, over the limit of "
                f"{lim.max_pixels_per_ccd:,} px per CCD (IngestLimits.max_pixels_per_ccd). "
                "The header is probably corrupt; otherwise raise the limit.",
                ccd=name,
            )
        if compressed and h.data_size > 8 * lim.max_pixels_per_ccd + 2**20:  # it is read into memory whole
            raise self.error(
                "too_large",
                f"the tile-compressed CCD {name!r} holds {h.data_size:,} bytes, more than any image within "
                "IngestLimits.max_pixels_per_ccd can need. The header is probably corrupt; re-compress the image.",
                ccd=name,
            )
        crop = self.datasec(cards.get("DATASEC"), nx, ny, name)
        cny, cnx = crop[1] - crop[0], crop[3] - crop[2]
        if min(cnx, cny) < lim.min_side_px:
            after = " after DATASEC cropping" if crop != (0, ny, 0, nx) else ""
            raise self.error(
                "too_small",
                f"CCD {name!r} is {cnx}x{cny} px{after}; the detectors need at least "
                f"{lim.min_side_px}x{lim.min_side_px}. Check NAXIS1/NAXIS2 and DATASEC, or drop this extension.",
                ccd=name,
            )
        scaling = Scaling() if compressed else self.scaling(h, name)
        return CCDInfo(name, index, h.index, (cny, cnx), (ny, nx), crop, bitpix, compressed, saturation(cards), scaling, h)

    def datasec(self, value, nx: int, ny: int, name: str) -> tuple[int, int, int, int]:
        if value is None:
            return (0, ny, 0, nx)
        m = _DATASEC_RE.match(value) if isinstance(value, str) else None
        if m:
            xa, xb, ya, yb = (int(g) for g in m.groups())
            xa, xb, ya, yb = min(xa, xb), max(xa, xb), min(ya, yb), max(ya, yb)  # reversed ranges: crop only
            if 1 <= xa and xb <= nx and 1 <= ya and yb <= ny:
                return (ya - 1, yb, xa - 1, xb)
        self.warn(
            f"{self.label}: CCD {name!r}: ignored DATASEC = {value!r} (malformed, or outside the "
            f"{nx}x{ny} image); using the whole image"
        )
        return (0, ny, 0, nx)

    def scaling(self, h: HDUInfo, name: str) -> Scaling:
        vals = {}
        for key, default in (("BSCALE", 1.0), ("BZERO", 0.0)):
            v = h.cards.get(key)
            v = default if v is None else v
            if not is_number(v) or not math.isfinite(v) or (key == "BSCALE" and v == 0):
                raise self.error(
                    "bad_header",
                    f"CCD {name!r} (HDU {h.index}) has {key} = {v!r}, so its pixel values cannot be computed. "
                    "Fix the header: BSCALE must be a non-zero number, BZERO a number.",
                    ccd=name,
                )
            vals[key] = float(v)
        blank = h.cards.get("BLANK")
        if blank is not None and h.bitpix > 0:
            lo, hi = (0, 255) if h.bitpix == 8 else (-(2 ** (h.bitpix - 1)), 2 ** (h.bitpix - 1) - 1)
            if not is_int(blank) or not lo <= blank <= hi:
                self.warn(f"{self.label}: CCD {name!r}: ignored BLANK = {blank!r} (not an integer of BITPIX {h.bitpix})")
                blank = None
        else:
            blank = None  # BLANK is meaningless for float data (NaN is the blank there)
        return Scaling(vals["BSCALE"], vals["BZERO"], blank)


def plan_ccds(
    hdus: list[HDUInfo], label: str, path: str, limits: IngestLimits, warn: Callable[[str], None]
) -> list[CCDInfo]:
    """Pick the CCDs among the HDUs and validate their headers against ``limits``.

    Raises InvalidExposureError: bad_dimensions, too_large, too_small, too_many_ccds, bad_header,
    truncated (the last HDU's data is cut) and no_image_hdus.
    """
    planner = _Planner(label, path, limits, warn)
    ccds: list[CCDInfo] = []
    names: set[str] = set()
    skipped: list[str] = []
    for h in hdus:
        kind = image_kind(h)
        name = hdu_name(h, kind == "compressed") if kind else None
        if kind is None or (name is not None and is_auxiliary(name)):
            skipped.append(describe(h))
        else:
            if name is None or name in names:
                if name is not None:
                    warn(f"{label}: CCD name {name!r} repeats in HDU {h.index}; named it {name}_HDU{h.index}")
                name = f"{name}_HDU{h.index}" if name is not None else f"HDU{h.index}"
            names.add(name)
            if len(ccds) >= limits.max_ccds:
                raise planner.error(
                    "too_many_ccds",
                    f"the file holds more than {limits.max_ccds} CCD images (IngestLimits.max_ccds). "
                    "Check that this is a single exposure, or raise the limit.",
                )
            ccds.append(planner.ccd(h, kind == "compressed", name, len(ccds)))
        if h.truncated:
            raise planner.error(
                "truncated",
                f"the file is truncated: HDU {h.index} declares {h.data_size} bytes of data but only "
                f"{h.available} are present. It was probably cut during transfer or is still being "
                "written; copy it again from the source.",
            )
    if not ccds:
        raise planner.error(
            "no_image_hdus",
            f"no CCD image in the file (found: {'; '.join(skipped) or 'nothing'}). obsqc needs a FITS file "
            "with one image HDU per CCD.",
        )
    return ccds


def image_kind(h: HDUInfo) -> str | None:
    """"image", "compressed", or None for an HDU that holds no image (tables, empty HDUs, random groups)."""
    if h.is_compressed_image:
        return "compressed"
    if h.xtension not in (None, "IMAGE"):
        return None
    if h.index == 0 and h.cards.get("GROUPS") is True and h.naxes[:1] == (0,):
        return None
    if not h.naxes or 0 in h.naxes:
        return None
    return "image"


def hdu_name(h: HDUInfo, compressed: bool) -> str | None:
    for key in ("EXTNAME", "CCDNAME"):
        v = h.cards.get(key)
        if (isinstance(v, str) and not isinstance(v, Unparsable)) or is_int(v):
            v = str(v).strip()
            if v and not (compressed and key == "EXTNAME" and v == _DEFAULT_COMPRESSED_NAME):
                return v
    return None


def is_auxiliary(name: str) -> bool:
    """Whether an EXTNAME marks per-pixel metadata (mask, weight, variance, ...) rather than a CCD."""
    return any(tok in AUXILIARY_EXTNAME_TOKENS for tok in re.split(r"[^A-Z0-9]+", name.upper()))


def describe(h: HDUInfo) -> str:
    what = "primary HDU" if h.index == 0 else f"{h.xtension} extension"
    name = h.cards.get("EXTNAME")
    if isinstance(name, str) and name.strip():
        what += f" {name.strip()!r}"
    if not h.naxes or 0 in h.naxes:
        what += " without data"
    return f"HDU {h.index}: {what}"


def saturation(cards: Mapping[str, object]) -> float | None:
    """SATURATE, else the lower of SATURATA / SATURATB (two-amplifier CCDs), else None."""
    v = cards.get("SATURATE")
    if is_number(v) and math.isfinite(v):
        return float(v)
    ab = [float(x) for x in (cards.get("SATURATA"), cards.get("SATURATB")) if is_number(x) and math.isfinite(x)]
    return min(ab) if ab else None


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
