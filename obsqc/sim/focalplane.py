"""Focal-plane layout and the static (per-camera) properties of every CCD.

Focal-plane coordinates (X, Y) are in pixels, with the optical axis at (0, 0) and the axes
parallel to the CCD pixel axes (no CCD is rotated): pixel (x, y) of a CCD sits at
``X = x0 + x``, ``Y = y0 + y``. Scattered light, sky gradients and satellite trails are
defined in these coordinates so that they continue across CCD gaps.

The ``decam`` layout follows the DECam hexagon: 12 columns of 2048x4096 CCDs with
3,4,5,6,6,7 | 7,6,6,5,4,3 CCDs, a pitch of 33.816 mm (2254 px) across and 63.89 mm (4259 px)
along the columns; CCDs west of the axis are S1..S31 (inner column first), east N1..N31;
CCDNUM runs 1..31 from the outer S column inwards, then N1..N31 = 32..62.

Static properties (gain, read noise, full well, bad columns, hot pixels) are fixed for a
camera: they are drawn from a generator seeded by the preset name and CCD index only, never
by the exposure seed, so the same CCD shows the same defects in every exposure.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from obsqc.sim.config import PIXEL_SIZE_UM, SizePreset

CAMERA_SEED: int = 20240611
"""Root seed of the static camera properties (any constant; changing it builds another camera)."""

_DECAM_COLUMN_COUNTS: tuple[int, ...] = (7, 6, 6, 5, 4, 3)
"""CCDs per column of each DECam half, from the central column outwards."""

_DECAM_PITCH_X_PX: float = 33.816e3 / PIXEL_SIZE_UM
"""DECam column pitch, 33.816 mm in pixels."""

_DECAM_PITCH_Y_PX: float = 63.890e3 / PIXEL_SIZE_UM
"""DECam pitch along a column, 63.890 mm in pixels."""


@dataclass(frozen=True)
class BadColumn:
    """A static column defect.

    ``kind``: ``"hot"`` (extra dark current ``level`` e-/s per pixel) or ``"dead"``
    (response multiplied by ``level`` < 1). Rows ``row0 <= y < row1`` are affected.
    """

    col: int
    row0: int
    row1: int
    kind: str
    level: float


@dataclass(frozen=True)
class CCD:
    """One CCD: where it sits and its static electronics and defects.

    ``x0, y0``: focal-plane position of its pixel (0, 0), px.
    ``gain``: e-/ADU. ``read_noise``: e- rms. ``full_well``: e- (charge that bleeds beyond it).
    ``saturate``: digital saturation level written to SATURATE, ADU (= full well / gain).
    """

    index: int
    extname: str
    ccdnum: int
    x0: float
    y0: float
    shape: tuple[int, int]
    gain: float
    read_noise: float
    full_well: float
    saturate: float
    bad_columns: tuple[BadColumn, ...] = field(default_factory=tuple)
    hot_pixels: tuple[np.ndarray, np.ndarray, np.ndarray] = field(
        default_factory=lambda: (np.zeros(0, int), np.zeros(0, int), np.zeros(0)))

    @property
    def center(self) -> tuple[float, float]:
        """Focal-plane (X, Y) of the CCD centre, px."""
        ny, nx = self.shape
        return self.x0 + 0.5 * (nx - 1), self.y0 + 0.5 * (ny - 1)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """Focal-plane extent (xmin, xmax, ymin, ymax) of the CCD's pixel edges, px."""
        ny, nx = self.shape
        return self.x0 - 0.5, self.x0 + nx - 0.5, self.y0 - 0.5, self.y0 + ny - 0.5


def _grid_positions(preset: SizePreset) -> list[tuple[str, int, float, float]]:
    ny, nx = preset.ccd_shape
    rows, cols = preset.grid_rows, preset.grid_cols
    if rows * cols < preset.n_ccd:
        raise ValueError(f"preset {preset.name}: {rows}x{cols} grid holds fewer than {preset.n_ccd} CCDs")
    width = cols * nx + (cols - 1) * preset.gap_px
    height = rows * ny + (rows - 1) * preset.gap_px
    out = []
    for i in range(preset.n_ccd):
        r, c = divmod(i, cols)
        x0 = -0.5 * width + c * (nx + preset.gap_px)
        y0 = -0.5 * height + r * (ny + preset.gap_px)
        out.append((f"S{i + 1}", i + 1, x0, y0))
    return out


def _decam_positions(preset: SizePreset) -> list[tuple[str, int, float, float]]:
    ny, nx = preset.ccd_shape
    out = []
    for side, sign in (("S", -1.0), ("N", 1.0)):
        number = 1
        for col, count in enumerate(_DECAM_COLUMN_COUNTS):
            xc = sign * (col + 0.5) * _DECAM_PITCH_X_PX
            for j in range(count):
                yc = (j - 0.5 * (count - 1)) * _DECAM_PITCH_Y_PX
                out.append((f"{side}{number}", 0, xc - 0.5 * nx, yc - 0.5 * ny))
                number += 1
    # CCDNUM: S side from the outer column inwards (S29 = 1 ... S7 = 31), then N1..N31 = 32..62.
    s_side = [p for p in out if p[0].startswith("S")]
    starts = np.cumsum((0,) + _DECAM_COLUMN_COUNTS)
    ccdnum = {}
    k = 1
    for col in reversed(range(len(_DECAM_COLUMN_COUNTS))):
        for name, *_ in s_side[starts[col]:starts[col + 1]]:
            ccdnum[name] = k
            k += 1
    for n in range(1, 32):
        ccdnum[f"N{n}"] = 31 + n
    out = [(name, ccdnum[name], x0, y0) for name, _, x0, y0 in out]
    if len(out) != preset.n_ccd:
        raise ValueError(f"the decam layout has {len(out)} CCDs, preset {preset.name} says {preset.n_ccd}")
    return out


def _static_rng(preset: SizePreset, index: int) -> np.random.Generator:
    tag = zlib.crc32(f"{preset.name}:{preset.ccd_shape}".encode())
    return np.random.default_rng(np.random.SeedSequence([CAMERA_SEED, tag, index]))


def _static_properties(preset: SizePreset, index: int) -> dict:
    """Gain, noise, full well and defects of CCD ``index``: DECam-like ranges."""
    rng = _static_rng(preset, index)
    ny, nx = preset.ccd_shape
    gain = float(rng.uniform(3.6, 4.4))  # e-/ADU
    read_noise = float(rng.uniform(5.5, 8.0))  # e-
    full_well = float(rng.uniform(150e3, 190e3))  # e-
    saturate = float(np.floor(full_well / gain))  # ADU, < 65535 so it fits unsigned 16-bit
    bad = []
    for _ in range(rng.poisson(preset.bad_columns_per_ccd)):
        col = int(rng.integers(4, nx - 4))
        # A charge trap or hot pixel at row r makes the column bad from r towards the
        # readout register (row 0) or over its whole length.
        r = int(rng.integers(0, ny))
        row0, row1 = (0, r) if rng.random() < 0.6 else (0, ny)
        row1 = max(row1, min(ny, 16))
        if rng.random() < 0.6:
            bad.append(BadColumn(col, row0, row1, "hot", float(rng.uniform(0.5, 5.0))))
        else:
            bad.append(BadColumn(col, row0, row1, "dead", float(rng.uniform(0.0, 0.6))))
    n_hot = rng.poisson(preset.hot_pixels_per_mpix * ny * nx / 1e6)
    hot = (rng.integers(0, ny, n_hot), rng.integers(0, nx, n_hot),
           np.exp(rng.uniform(np.log(1.0), np.log(100.0), n_hot)))  # e-/s
    return dict(gain=gain, read_noise=read_noise, full_well=full_well, saturate=saturate,
                bad_columns=tuple(bad), hot_pixels=hot)


_CACHE: dict[tuple, tuple[CCD, ...]] = {}


def build_focal_plane(preset: SizePreset) -> tuple[CCD, ...]:
    """All CCDs of ``preset`` with their positions and static properties (cached)."""
    key = (preset,)
    if key not in _CACHE:
        if preset.layout == "grid":
            positions = _grid_positions(preset)
        elif preset.layout == "decam":
            positions = _decam_positions(preset)
        else:
            raise ValueError(f"unknown layout {preset.layout!r}")
        _CACHE[key] = tuple(
            CCD(index=i, extname=name, ccdnum=num, x0=x0, y0=y0, shape=preset.ccd_shape,
                **_static_properties(preset, i))
            for i, (name, num, x0, y0) in enumerate(positions)
        )
    return _CACHE[key]


def focal_plane_radius(ccds: tuple[CCD, ...]) -> float:
    """Distance from the axis to the farthest CCD corner, px (the scale of wide features)."""
    r = 0.0
    for c in ccds:
        xmin, xmax, ymin, ymax = c.bounds
        r = max(r, np.hypot(max(abs(xmin), abs(xmax)), max(abs(ymin), abs(ymax))))
    return float(r)


def focal_plane_bounds(ccds: tuple[CCD, ...]) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) enclosing all CCDs, px."""
    b = np.array([c.bounds for c in ccds])
    return float(b[:, 0].min()), float(b[:, 1].max()), float(b[:, 2].min()), float(b[:, 3].max())
