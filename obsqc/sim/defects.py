"""Normal detector effects: blooming (bleed trails), cosmic rays, bad columns, hot pixels,
noise and digital saturation. None of these is an anomaly: every real exposure has them.

* Blooming: a pixel holds at most ``full_well`` e-; the excess spills along its column (the
  parallel-clock direction, rows) into the neighbours, filling them to full well in turn, up
  and down in a ratio that varies by star; charge reaching the CCD edge is lost. This
  conserves charge, so a star of 5e7 e- on a 1.7e5 e- well draws a ~300 px trail.
* Cosmic rays: muons and secondaries, 2.5 events cm^-2 min^-1 (mountain site plus the
  radioactivity of the dewar window), over the exposure plus readout. A muon at zenith angle
  theta (p(cos theta) ~ cos^3 theta) crosses the 250 um depletion depth in a track of
  ``16.7 tan(theta)`` px depositing ~80 e-/um (Landau-like spread); charge diffusion
  (sigma 0.35-0.6 px) makes tracks 1-3 px wide. 20% are low-energy spots/worms (<= 3 px).
* Bad columns (hot: extra dark current; dead: low response) and hot pixels are static per
  CCD (:mod:`obsqc.sim.focalplane`).
* Noise: photon noise with Poisson variance ``e`` plus read noise; above 50 e- (always true
  for the sky) it is drawn as ``e + sqrt(e + RN^2) z`` (the Poisson law's normal limit: skewness
  1/sqrt(e) < 0.06 at sky levels, invisible to every statistic used here, and 4x faster),
  below it exactly (Poisson + Gaussian read noise).
* Digital saturation: pixels that reached full well read exactly ``SATURATE``; values above
  it (a cosmic ray on a star) are clipped to it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from obsqc.sim.config import CCD_THICKNESS_UM, PIXEL_SIZE_UM, READOUT_TIME_S
from obsqc.sim.focalplane import CCD

COSMIC_RATE_PER_CM2_MIN: float = 2.5
"""Cosmic-ray events per cm^2 per minute."""

MASK_SATURATED: int = 1
"""Truth-mask bit: pixel at full well (saturated star or bleed trail)."""

MASK_COSMIC: int = 2
"""Truth-mask bit: pixel with > 5 e- from a cosmic ray."""

MASK_BAD: int = 4
"""Truth-mask bit: static bad column or hot pixel."""

GAUSS_NOISE_MIN_E: float = 50.0
"""Above this many electrons photon noise is drawn from its normal limit."""


def _spill(col: np.ndarray, start: int, step: int, charge: float, full_well: float) -> None:
    """Pour ``charge`` into ``col`` from index ``start`` in direction ``step``, filling each
    pixel to ``full_well`` before moving on; what passes the end is lost."""
    if charge <= 0:
        return
    idx = np.arange(start, len(col)) if step > 0 else np.arange(start, -1, -1)
    if len(idx) == 0:
        return
    room = np.maximum(full_well - col[idx], 0.0)
    cum = np.cumsum(room)
    k = int(np.searchsorted(cum, charge))
    col[idx[:k]] = full_well
    if k < len(idx):
        col[idx[k]] += charge - (cum[k - 1] if k > 0 else 0.0)


def bleed(image_e: np.ndarray, full_well: float, up_fraction: float = 0.5) -> np.ndarray:
    """Spread charge above ``full_well`` along columns (in place); return the saturated mask."""
    sat = image_e >= full_well
    cols = np.flatnonzero(sat.any(axis=0))
    for c in cols:
        col = image_e[:, c].astype(np.float64)
        s = col >= full_well
        edges = np.diff(np.concatenate(([0], s.astype(np.int8), [0])))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for a, b in zip(starts, ends):
            excess = float(np.sum(col[a:b] - full_well))
            col[a:b] = full_well
            _spill(col, b, +1, excess * up_fraction, full_well)
            _spill(col, a - 1, -1, excess * (1.0 - up_fraction), full_well)
        image_e[:, c] = col
    return image_e >= full_well * (1.0 - 1e-6)


def cosmic_rays(rng: np.random.Generator, shape: tuple[int, int], exptime: float) -> list[dict]:
    """Draw the cosmic-ray events of one CCD: dicts with x, y (start), angle, length (px),
    charge (e-), sigma (px)."""
    ny, nx = shape
    area_cm2 = ny * nx * (PIXEL_SIZE_UM * 1e-4) ** 2
    n = rng.poisson(COSMIC_RATE_PER_CM2_MIN * area_cm2 * (exptime + READOUT_TIME_S) / 60.0)
    depth_px = CCD_THICKNESS_UM / PIXEL_SIZE_UM
    out = []
    for _ in range(n):
        if rng.random() < 0.2:  # low-energy electron: spot or short worm
            length = rng.uniform(0.0, 3.0)
            charge = rng.uniform(1500.0, 8000.0)
        else:
            cos_t = rng.random() ** 0.25
            tan_t = math.sqrt(max(1.0 - cos_t**2, 0.0)) / cos_t
            length = min(depth_px * tan_t, 60.0)
            charge = 80.0 * CCD_THICKNESS_UM / cos_t * math.exp(0.35 * rng.standard_normal())
        out.append(dict(x=float(rng.uniform(0, nx)), y=float(rng.uniform(0, ny)),
                        angle=float(rng.uniform(0, np.pi)), length=float(length),
                        charge=float(charge), sigma=float(rng.uniform(0.35, 0.6))))
    return out


def add_cosmic_rays(image_e: np.ndarray, events: list[dict]) -> np.ndarray:
    """Deposit cosmic-ray tracks (charge spread by diffusion along a segment); return the mask
    of pixels that got more than 5 e-. Charge falling beyond the CCD edge is lost."""
    ny, nx = image_e.shape
    mask = np.zeros(image_e.shape, dtype=bool)
    for ev in events:
        x0, y0, L, s = ev["x"], ev["y"], ev["length"], ev["sigma"]
        ux, uy = math.cos(ev["angle"]), math.sin(ev["angle"])
        x1, y1 = x0 + L * ux, y0 + L * uy
        # Unclipped box around the track, then clip when adding.
        bxa, bxb = math.floor(min(x0, x1) - 4 * s - 1), math.ceil(max(x0, x1) + 4 * s + 2)
        bya, byb = math.floor(min(y0, y1) - 4 * s - 1), math.ceil(max(y0, y1) + 4 * s + 2)
        px = np.arange(bxa, bxb)[None, :] - x0
        py = np.arange(bya, byb)[:, None] - y0
        t = px * ux + py * uy
        d = -px * uy + py * ux
        across = np.exp(-0.5 * (d / s) ** 2)
        if L > 0.05:
            along = 0.5 * (erf(t / (math.sqrt(2) * s)) - erf((t - L) / (math.sqrt(2) * s)))
        else:
            along = np.exp(-0.5 * (t / s) ** 2)
        dep = across * along
        dep *= ev["charge"] / dep.sum()
        xa, xb, ya, yb = max(bxa, 0), min(bxb, nx), max(bya, 0), min(byb, ny)
        if xa >= xb or ya >= yb:
            continue
        part = dep[ya - bya:yb - bya, xa - bxa:xb - bxa]
        image_e[ya:yb, xa:xb] += part.astype(image_e.dtype)
        mask[ya:yb, xa:xb] |= part > 5.0
    return mask


def apply_static_defects(image_e: np.ndarray, ccd: CCD, exptime: float) -> np.ndarray:
    """Hot columns and hot pixels add dark current, dead columns lose response (in place);
    return their mask."""
    mask = np.zeros(image_e.shape, dtype=bool)
    dark_time = exptime + 0.5 * READOUT_TIME_S
    for bc in ccd.bad_columns:
        sl = (slice(bc.row0, bc.row1), bc.col)
        if bc.kind == "hot":
            image_e[sl] += np.float32(bc.level * dark_time)
        else:
            image_e[sl] *= np.float32(bc.level)
        mask[sl] = True
    rows, cols, rate = ccd.hot_pixels
    if len(rows):
        np.add.at(image_e, (rows, cols), (rate * dark_time).astype(image_e.dtype))
        mask[rows, cols] = True
    return mask


def add_noise(rng: np.random.Generator, image_e: np.ndarray, read_noise: float) -> np.ndarray:
    """Photon + read noise on an e- image (see module docstring); returns a new float32 array."""
    out = rng.standard_normal(image_e.shape, dtype=np.float32)
    sd = image_e.astype(np.float32, copy=True)
    sd += np.float32(read_noise**2)
    np.maximum(sd, np.float32(read_noise**2), out=sd)
    np.sqrt(sd, out=sd)
    out *= sd
    out += image_e
    if float(image_e.min()) < GAUSS_NOISE_MIN_E:
        low = image_e < GAUSS_NOISE_MIN_E
        n = int(low.sum())
        e = np.maximum(image_e[low], 0.0).astype(np.float64)
        rn = np.float32(read_noise) * rng.standard_normal(n, dtype=np.float32)
        out[low] = rng.poisson(e).astype(np.float32) + rn
    return out


def digitize_saturation(adu: np.ndarray, saturated: np.ndarray, saturate: float) -> None:
    """Pixels at full well read ``saturate``; nothing reads above it (in place)."""
    np.minimum(adu, np.float32(saturate), out=adu)
    adu[saturated] = np.float32(saturate)
