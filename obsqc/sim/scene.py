"""The sky scene of one CCD: stars and galaxies with realistic counts, sizes and shapes.

Number counts (per deg^2, r band, high-to-intermediate galactic latitude):

* galaxies: ``N(<m) = 7.4e4 * 10^(0.36 (m - 24))`` (slope 0.36 mag^-1 dex, i.e. ~500 deg^-2 at
  r < 18, ~2.7e3 at r < 20, ~7e4 at r < 24: deep-field r-band counts), from r = 16 to the
  preset's faint limit (25: well below the ~23 detection limit, the confusion background);
* stars: ``N(<m) = N15.5 * 10^(0.3 (m - 15.5))`` up to r = 18, then slope 0.15 (the halo
  flattening), with ``N15.5 = 150 deg^-2`` times the exposure's density factor (0.5-2), from
  r = 11: a 1024^2 CCD (0.0056 deg^2) then holds ~1 star bright enough to saturate in 90 s.

Galaxies are an exponential disk plus, for 65% of them, a de Vaucouleurs bulge
(B/T ~ Beta(1.2, 2.5)); disk half-light radius ``log10 r_h = log10 0.9" - 0.13 (r - 21) +
N(0, 0.15)`` (0.9" at r = 21, 0.35" at r = 24), bulge radius 0.3-0.6 of the disk's; intrinsic
reduced shear g1, g2 ~ N(0, 0.27) each with |g| < 0.85 (shape noise ~0.27 per component),
bulges rounder (0.2-0.5 of the disk |g|), position angles uniform. Magnitudes in other bands
add the mean colour of :class:`obsqc.sim.config.Band` and a 0.3 mag scatter.
"""

from __future__ import annotations

import math

import numpy as np

from obsqc.sim.config import BANDS, PIXEL_SCALE
from obsqc.sim.conditions import Conditions
from obsqc.sim.render import ObjectList

DEG2_PER_PIX: float = (PIXEL_SCALE / 3600.0) ** 2
"""Solid angle of one pixel, deg^2."""

GAL_N24: float = 7.4e4
"""Galaxies per deg^2 brighter than r = 24."""

GAL_SLOPE: float = 0.36
"""d log10 N / dm of galaxy counts."""

GAL_MAG_BRIGHT: float = 16.0
"""Brightest galaxy drawn, r mag."""

STAR_N155: float = 150.0
"""Stars per deg^2 brighter than r = 15.5 at density factor 1."""

STAR_MAG_BRIGHT: float = 11.0
"""Brightest star drawn, r mag (brighter ones are rare and would need huge stamps)."""

MARGIN_PX: int = 32
"""Objects are placed over the CCD plus this margin so that light enters from outside."""


def flux_e(mag: np.ndarray, band: str, exptime: float) -> np.ndarray:
    """Electrons collected from a source of magnitude ``mag``: 10^(0.4 (zp - m)) * exptime."""
    return 10 ** (0.4 * (BANDS[band].zeropoint - np.asarray(mag, dtype=np.float64))) * exptime


def _sample_power_law(rng: np.random.Generator, n: int, slope: float, m1: float, m2: float) -> np.ndarray:
    """Magnitudes with N(<m) proportional to 10^(slope m) on [m1, m2] (inverse CDF)."""
    a, b = 10 ** (slope * m1), 10 ** (slope * m2)
    return np.log10(a + rng.random(n) * (b - a)) / slope


def _star_cumulative(m: float, n155: float) -> float:
    if m <= 18.0:
        return n155 * 10 ** (0.3 * (m - 15.5))
    return n155 * 10 ** (0.3 * 2.5) * 10 ** (0.15 * (m - 18.0))


def star_magnitudes(rng: np.random.Generator, area_deg2: float, n155: float, m_faint: float) -> np.ndarray:
    """Stellar r magnitudes over ``area_deg2`` (broken power law, see module docstring)."""
    c_lo = _star_cumulative(STAR_MAG_BRIGHT, n155)
    c_18 = _star_cumulative(18.0, n155)
    c_hi = _star_cumulative(m_faint, n155)
    n = rng.poisson((c_hi - c_lo) * area_deg2)
    c = c_lo + rng.random(n) * (c_hi - c_lo)
    bright = c <= c_18
    m = np.empty(n)
    m[bright] = 15.5 + np.log10(c[bright] / n155) / 0.3
    m[~bright] = 18.0 + np.log10(c[~bright] / c_18) / 0.15
    return m


def _shapes(rng: np.random.Generator, n: int, sigma: float = 0.27,
            gmax: float = 0.85) -> tuple[np.ndarray, np.ndarray]:
    g1 = rng.normal(0.0, sigma, n)
    g2 = rng.normal(0.0, sigma, n)
    bad = np.hypot(g1, g2) >= gmax
    while bad.any():
        g1[bad] = rng.normal(0.0, sigma, bad.sum())
        g2[bad] = rng.normal(0.0, sigma, bad.sum())
        bad = np.hypot(g1, g2) >= gmax
    return g1, g2


def make_scene(rng: np.random.Generator, cond: Conditions, shape: tuple[int, int], *,
               mag_faint: float, peak_fraction: float, full_well: float,
               min_saturated: int = 0) -> tuple[ObjectList, dict]:
    """Stars and galaxies of one CCD (positions in its pixels, fluxes in e-).

    ``peak_fraction`` (the PSF's brightest-pixel fraction) and ``full_well`` decide which stars
    saturate; if fewer than ``min_saturated`` do, bright stars (peak 2-30x full well) are added
    inside the CCD, at least 40 px from its edges.

    Returns the objects and a truth dict of numpy arrays: ``kind`` (0 star, 1 galaxy), ``mag``
    (in the exposure's band), ``x``, ``y``, ``flux`` (e-), ``hlr`` (disk, px), ``g1``, ``g2``
    (intrinsic disk shear).
    """
    ny, nx = shape
    band = BANDS[cond.band]
    area = (nx + 2 * MARGIN_PX) * (ny + 2 * MARGIN_PX) * DEG2_PER_PIX

    # Stars.
    ms = star_magnitudes(rng, area, STAR_N155 * cond.star_density, mag_faint)
    ns = len(ms)
    xs = rng.uniform(-MARGIN_PX, nx + MARGIN_PX, ns)
    ys = rng.uniform(-MARGIN_PX, ny + MARGIN_PX, ns)
    ms = ms + band.star_color + rng.normal(0.0, 0.3, ns)
    fs = flux_e(ms, cond.band, cond.exptime)
    inside = (xs > 40) & (xs < nx - 40) & (ys > 40) & (ys < ny - 40)
    n_sat = int(np.sum(inside & (fs * peak_fraction + cond.sky_e > full_well)))
    n_add = max(0, min_saturated - n_sat)
    if n_add:
        peak = full_well * 10 ** rng.uniform(math.log10(2.0), math.log10(30.0), n_add)
        f_add = peak / peak_fraction
        xs = np.concatenate([xs, rng.uniform(40, nx - 40, n_add)])
        ys = np.concatenate([ys, rng.uniform(40, ny - 40, n_add)])
        fs = np.concatenate([fs, f_add])
        ms = np.concatenate([ms, band.zeropoint - 2.5 * np.log10(f_add / cond.exptime)])
        ns += n_add

    # Galaxies.
    n_gal_total = GAL_N24 * (10 ** (GAL_SLOPE * (mag_faint - 24.0))
                             - 10 ** (GAL_SLOPE * (GAL_MAG_BRIGHT - 24.0)))
    ng = rng.poisson(max(n_gal_total, 0.0) * area * cond.galaxy_density)
    mr = _sample_power_law(rng, ng, GAL_SLOPE, GAL_MAG_BRIGHT, mag_faint)
    xg = rng.uniform(-MARGIN_PX, nx + MARGIN_PX, ng)
    yg = rng.uniform(-MARGIN_PX, ny + MARGIN_PX, ng)
    mg = mr + band.gal_color + rng.normal(0.0, 0.3, ng)
    fg = flux_e(mg, cond.band, cond.exptime)
    hlr_arcsec = np.clip(10 ** (math.log10(0.9) - 0.13 * (mr - 21.0) + rng.normal(0.0, 0.15, ng)), 0.1, 6.0)
    hlr_d = hlr_arcsec / PIXEL_SCALE
    g1d, g2d = _shapes(rng, ng)
    has_bulge = rng.random(ng) < 0.65
    bt = np.where(has_bulge, rng.beta(1.2, 2.5, ng), 0.0)
    hlr_b = hlr_d * rng.uniform(0.3, 0.6, ng)
    shrink = rng.uniform(0.2, 0.5, ng)
    zs = np.zeros(ns)
    objects = ObjectList(
        x=np.concatenate([xs, xg]), y=np.concatenate([ys, yg]),
        flux_point=np.concatenate([fs, np.zeros(ng)]),
        flux_disk=np.concatenate([zs, fg * (1 - bt)]), hlr_disk=np.concatenate([zs, hlr_d]),
        g1_disk=np.concatenate([zs, g1d]), g2_disk=np.concatenate([zs, g2d]),
        flux_bulge=np.concatenate([zs, fg * bt]), hlr_bulge=np.concatenate([zs, hlr_b]),
        g1_bulge=np.concatenate([zs, g1d * shrink]), g2_bulge=np.concatenate([zs, g2d * shrink]),
    )
    truth = dict(
        kind=np.concatenate([np.zeros(ns, np.int8), np.ones(ng, np.int8)]),
        mag=np.concatenate([ms, mg]), x=objects.x, y=objects.y, flux=objects.flux,
        hlr=objects.hlr_disk, g1=objects.g1_disk, g2=objects.g2_disk,
    )
    return objects, truth
