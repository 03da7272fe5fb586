"""Anomaly parameters (per exposure) and the background anomalies (per CCD).

Strengths are set by the physics and by what surveys report, not by any detector.
Amplitudes "in sigma" are relative to the per-pixel noise of the sky,
``sigma = sqrt(sky + RN^2)`` (~33 e- for a 90 s r-band exposure).

PSF anomalies (papers/000 §2.1; the PSF itself is built in :mod:`obsqc.sim.psf`):

* ``psf_elongation``: reduced shear |g| 0.05-0.08 (subtle: the "small but systematic
  elongation" of §3.3, missed by eye) or 0.15-0.25 (prominent: e ~0.3-0.5, fig. 1a,c).
  Mechanism ``tracking`` (half): along the mount axes, x or y within 5 deg; ``astigmatism``:
  any direction.
* ``double_image``: second image at 1-1.5 FWHM with flux ratio 0.25-0.35 (subtle: a shoulder)
  or 2-4 FWHM with ratio 0.6-1 (prominent: fig. 1b), any direction.
* ``defocus``: Noll Z4 = 1.0-1.8 waves (subtle: donut diameter 0.9-1.6", comparable to the
  seeing: a PSF ~10-40% broader, like a bout of bad seeing) or 4-8 waves (prominent: a
  3.7-7.3" donut with a hole, as in a focus failure); residual astigmatism 0.05-0.2 waves in both.

Background anomalies (§2.2):

* ``readout_stripes``: electronic pick-up. ``interference``: a tone sampled by the serial
  readout gives straight stripes, period 12-80 px at any angle (the same on every affected CCD,
  which share the electronics, with random phases); ``banding``: 1/f bias wander, row offsets
  (or column offsets, 20%) correlated over 1.5-15 px. Peak amplitude 0.1-0.2 sigma (subtle) or
  0.5-1 sigma (prominent), on 30-100% of the CCDs.
* ``scattered_light``: ``ghost``: 1-3 out-of-focus pupil images (annuli, inner/outer =
  obscuration) of a bright star, 0.25-0.7 focal-plane radii across; ``arc``: concentric arcs
  of a bright star outside the field. Peak 0.25-0.5 sigma (subtle: 1-2% of the sky) or
  1.5-3 sigma (prominent: 5-10% of the sky); spans at least two CCDs when there are two.
* ``satellite_trail``: a straight streak across the focal plane. Its width is the PSF
  convolved with the pupil image at the satellite's range (LEO at 350-1500 km: 0.5-2.4"
  defocus; 25% at MEO/GEO, in focus); peak 1-3 sigma (subtle: faint debris or a fast LEO)
  or 30-300 sigma (prominent: bright satellite), with slow tumbling modulation of 0-30%.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from obsqc.sim.config import MIRROR_DIAMETER_M, OBSCURATION, PIXEL_SCALE
from obsqc.sim.conditions import Conditions
from obsqc.sim.focalplane import CCD
from obsqc.sim.psf import ARCSEC_PER_RAD, donut_radius_px


@dataclass
class AnomalySpec:
    """The anomaly of an exposure: class, strength, parameters and affected CCD indices."""

    kind: str | None
    strength: str | None
    params: dict = field(default_factory=dict)
    affected: tuple[int, ...] = ()


def _u(rng: np.random.Generator, strength: str, subtle: tuple[float, float],
       prominent: tuple[float, float]) -> float:
    lo, hi = subtle if strength == "subtle" else prominent
    return float(rng.uniform(lo, hi))


# --------------------------------------------------------------------------- geometry helpers

def _ccd_grid(ccd: CCD, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane X (row vector) and Y (column vector) of a CCD's pixels (every ``step``)."""
    ny, nx = ccd.shape
    if step is None:
        xs, ys = np.arange(nx), np.arange(ny)
    else:
        xs, ys = np.linspace(0, nx - 1, step), np.linspace(0, ny - 1, step)
    return (ccd.x0 + xs)[None, :].astype(np.float64), (ccd.y0 + ys)[:, None].astype(np.float64)


def scattered_light_pattern(params: dict, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Scattered-light surface brightness (e-/px) at focal-plane (X, Y)."""
    out = np.zeros(np.broadcast_shapes(X.shape, Y.shape), dtype=np.float64)
    amp = params["amplitude_e"]
    for ring in params["rings"]:
        r = np.hypot(X - ring["cx"], Y - ring["cy"])
        if params["model"] == "ghost":
            s = ring["soft"]
            inner = 0.5 * (1.0 + np.tanh((r - ring["r_in"]) / s))
            outer = 0.5 * (1.0 + np.tanh((ring["r_out"] - r) / s))
            out += amp * ring["rel"] * inner * outer
        else:
            out += amp * ring["rel"] * np.exp(-0.5 * ((r - ring["r"]) / ring["width"]) ** 2)
    return out


def _trail_distance(params: dict, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = math.radians(params["angle_deg"])
    dxp, dyp = X - params["x"], Y - params["y"]
    return -dxp * math.sin(a) + dyp * math.cos(a), dxp * math.cos(a) + dyp * math.sin(a)


def trail_hits(params: dict, ccd: CCD, margin: float) -> bool:
    """Whether the trail's line passes within ``margin`` px of the CCD."""
    xmin, xmax, ymin, ymax = ccd.bounds
    X = np.array([xmin, xmax, xmin, xmax])
    Y = np.array([ymin, ymin, ymax, ymax])
    d, _ = _trail_distance(params, X, Y)
    return bool(d.min() <= margin and d.max() >= -margin)


# --------------------------------------------------------------------------- parameter draws

def draw_anomaly(kind: str | None, strength: str | None, rng: np.random.Generator, *,
                 cond: Conditions, ccds: tuple[CCD, ...], fp_radius: float, sigma_e: float) -> AnomalySpec:
    """Draw the parameters of an anomaly of class ``kind`` and ``strength`` (module docstring).

    ``sigma_e``: reference per-pixel sky noise of the exposure, e-.
    """
    if kind is None:
        return AnomalySpec(None, None)
    all_ccds = tuple(range(len(ccds)))
    s = strength
    if kind == "psf_elongation":
        g = _u(rng, s, (0.05, 0.08), (0.15, 0.25))
        if rng.random() < 0.5:
            mech = "tracking"
            ang = (0.0 if rng.random() < 0.5 else 90.0) + rng.normal(0.0, 5.0)
        else:
            mech = "astigmatism"
            ang = rng.uniform(0.0, 180.0)
        ang = float(ang % 180.0)
        p = dict(g=g, angle_deg=ang, g1=g * math.cos(2 * math.radians(ang)),
                 g2=g * math.sin(2 * math.radians(ang)), mechanism=mech)
        return AnomalySpec(kind, s, p, all_ccds)
    if kind == "double_image":
        off = _u(rng, s, (1.0, 1.5), (2.0, 4.0))
        ratio = _u(rng, s, (0.25, 0.35), (0.6, 1.0))
        p = dict(offset_fwhm=off, offset_px=off * cond.psf_fwhm_px, flux_ratio=ratio,
                 angle_deg=float(rng.uniform(0.0, 360.0)))
        return AnomalySpec(kind, s, p, all_ccds)
    if kind == "defocus":
        a4 = _u(rng, s, (1.0, 1.8), (4.0, 8.0))
        ast = float(rng.uniform(0.05, 0.2))
        r = donut_radius_px(a4, cond.band)
        p = dict(defocus_waves=a4, donut_radius_px=r, donut_diameter_arcsec=2 * r * PIXEL_SCALE,
                 astig_waves=ast, astig_angle_deg=float(rng.uniform(0.0, 180.0)),
                 donut_g=min(0.3, ast / (math.sqrt(2.0) * a4)))
        return AnomalySpec(kind, s, p, all_ccds)
    if kind == "readout_stripes":
        amp = _u(rng, s, (0.1, 0.2), (0.5, 1.0))
        pattern = "interference" if rng.random() < 0.6 else "banding"
        p = dict(pattern=pattern, amplitude_sigma=amp,
                 period_px=float(math.exp(rng.uniform(math.log(12.0), math.log(80.0)))),
                 wave_angle_deg=float(rng.uniform(0.0, 180.0)),
                 band_axis="rows" if rng.random() < 0.8 else "columns",
                 corr_px=float(rng.uniform(1.5, 15.0)))
        frac = rng.uniform(0.3, 1.0)
        n_aff = max(1, int(round(frac * len(ccds))))
        aff = tuple(sorted(int(i) for i in rng.choice(len(ccds), n_aff, replace=False)))
        return AnomalySpec(kind, s, p, aff)
    if kind == "scattered_light":
        amp_sigma = _u(rng, s, (0.25, 0.5), (1.5, 3.0))
        need = min(2, len(ccds))
        for _ in range(200):
            p = _draw_scattered(rng, fp_radius, ccds)
            p["amplitude_sigma"] = amp_sigma
            p["amplitude_e"] = amp_sigma * sigma_e
            aff = tuple(i for i, c in enumerate(ccds) if _scatter_hits(p, c))
            if len(aff) >= need:
                return AnomalySpec(kind, s, p, aff)
        raise RuntimeError("could not place scattered light on the focal plane")  # pragma: no cover
    if kind == "satellite_trail":
        peak = _u(rng, s, (1.0, 3.0), (30.0, 300.0))
        if rng.random() < 0.75:
            alt = float(math.exp(rng.uniform(math.log(350.0), math.log(1500.0))))
        else:
            alt = float(rng.uniform(20000.0, 36000.0))
        c = ccds[int(rng.integers(len(ccds)))]
        ny, nx = c.shape
        p = dict(angle_deg=float(rng.uniform(0.0, 180.0)),
                 x=float(c.x0 + rng.uniform(0.1, 0.9) * nx), y=float(c.y0 + rng.uniform(0.1, 0.9) * ny),
                 altitude_km=alt,
                 defocus_px=MIRROR_DIAMETER_M / (alt * 1e3) * ARCSEC_PER_RAD / PIXEL_SCALE,
                 peak_sigma=peak, glint_amp=float(rng.uniform(0.0, 0.3)),
                 glint_period_px=float(math.exp(rng.uniform(math.log(300.0), math.log(5000.0)))),
                 glint_phase=float(rng.uniform(0.0, 2 * math.pi)))
        margin = 3.0 * cond.psf_fwhm_px + p["defocus_px"]
        aff = tuple(i for i, cc in enumerate(ccds) if trail_hits(p, cc, margin))
        return AnomalySpec(kind, s, p, aff)
    raise ValueError(f"unknown anomaly {kind!r}")


def _draw_scattered(rng: np.random.Generator, R: float, ccds: tuple[CCD, ...]) -> dict:
    xmin = min(c.bounds[0] for c in ccds)
    xmax = max(c.bounds[1] for c in ccds)
    ymin = min(c.bounds[2] for c in ccds)
    ymax = max(c.bounds[3] for c in ccds)
    rings = []
    if rng.random() < 0.5:
        model = "ghost"
        cx, cy = rng.uniform(0.8 * xmin, 0.8 * xmax), rng.uniform(0.8 * ymin, 0.8 * ymax)
        r_out = rng.uniform(0.25, 0.7) * R
        rel = 1.0
        for _k in range(int(rng.integers(1, 4))):
            rings.append(dict(cx=float(cx), cy=float(cy), r_out=float(r_out), r_in=float(OBSCURATION * r_out),
                              soft=float(rng.uniform(0.01, 0.04) * R + 3.0), rel=float(rel)))
            scale = rng.uniform(0.7, 1.3)
            cx, cy = cx * scale, cy * scale
            r_out *= rng.uniform(0.5, 0.8)
            rel = float(rng.uniform(0.4, 1.0))
    else:
        model = "arc"
        phi = rng.uniform(0.0, 2 * math.pi)
        dist = rng.uniform(1.05, 1.6) * R
        cx, cy = dist * math.cos(phi), dist * math.sin(phi)
        r = dist + rng.uniform(-0.6, 0.3) * R
        spacing = rng.uniform(0.1, 0.3) * R
        width = rng.uniform(0.03, 0.12) * R
        for k in range(int(rng.integers(1, 4))):
            rings.append(dict(cx=float(cx), cy=float(cy), r=float(r + k * spacing), width=float(width),
                              rel=float(0.7**k)))
    return dict(model=model, rings=rings)


def _scatter_hits(params: dict, ccd: CCD) -> bool:
    X, Y = _ccd_grid(ccd, step=33)
    return bool(scattered_light_pattern(params, X, Y).max() >= 0.25 * params["amplitude_e"])


# --------------------------------------------------------------------------- per-CCD images

def _smallest_scale(params: dict) -> float:
    if params["model"] == "ghost":
        return min(r["soft"] for r in params["rings"])
    return min(r["width"] for r in params["rings"])


def scattered_light_e(spec: AnomalySpec, ccd: CCD) -> np.ndarray:
    """Scattered light on one CCD, e-/px (float32).

    The pattern varies on scales of tens to hundreds of pixels (edge softness or arc width), so
    it is evaluated on a grid of step ~1/8 of that scale and interpolated bilinearly."""
    ny, nx = ccd.shape
    step = max(1, int(_smallest_scale(spec.params) / 8.0))
    if step == 1:
        X, Y = _ccd_grid(ccd)
        return scattered_light_pattern(spec.params, X, Y).astype(np.float32)
    xs = np.arange(0, nx - 1 + step, step, dtype=np.float64)
    ys = np.arange(0, ny - 1 + step, step, dtype=np.float64)
    coarse = scattered_light_pattern(spec.params, (ccd.x0 + xs)[None, :], (ccd.y0 + ys)[:, None])
    fx = np.arange(nx) / step
    ix = np.minimum(fx.astype(np.int64), len(xs) - 2)
    wx = (fx - ix).astype(np.float32)
    fy = np.arange(ny) / step
    iy = np.minimum(fy.astype(np.int64), len(ys) - 2)
    wy = (fy - iy).astype(np.float32)[:, None]
    c = coarse.astype(np.float32)
    rows = c[:, ix] * (1 - wx) + c[:, ix + 1] * wx  # (len(ys), nx)
    return rows[iy] * (1 - wy) + rows[iy + 1] * wy


def add_trail(image_e: np.ndarray, spec: AnomalySpec, ccd: CCD, lsf: tuple[np.ndarray, np.ndarray],
              e_per_px: float) -> None:
    """Add the satellite trail (``e_per_px`` e- per px of length, cross profile ``lsf``) in place."""
    d_grid, prof = lsf
    halfw = float(d_grid[-1])
    X, Y = _ccd_grid(ccd)
    d, s = _trail_distance(spec.params, X, Y)
    near = np.abs(d) < halfw
    if not near.any():
        return
    p = spec.params
    mod = 1.0 + p["glint_amp"] * np.sin(2 * math.pi * s[near] / p["glint_period_px"] + p["glint_phase"])
    image_e[near] += (e_per_px * np.interp(d[near], d_grid, prof) * mod).astype(np.float32)


def stripes_adu(spec: AnomalySpec, rng: np.random.Generator, ccd: CCD, sigma_adu: float) -> np.ndarray:
    """Readout stripe pattern of one affected CCD, ADU (float32)."""
    p = spec.params
    ny, nx = ccd.shape
    amp = p["amplitude_sigma"] * sigma_adu * rng.uniform(0.7, 1.3)
    if p["pattern"] == "interference":
        ang = math.radians(p["wave_angle_deg"] + rng.normal(0.0, 2.0))
        phase = rng.uniform(0.0, 2 * math.pi)
        kx = 2 * math.pi * math.cos(ang) / p["period_px"]
        ky = 2 * math.pi * math.sin(ang) / p["period_px"]
        ax = kx * np.arange(nx) + phase
        by = ky * np.arange(ny)
        # sin(a + b) = sin a cos b + cos a sin b: two outer products instead of a 2-D sine.
        sa, ca = (amp * np.sin(ax)).astype(np.float32), (amp * np.cos(ax)).astype(np.float32)
        cb, sb = np.cos(by).astype(np.float32), np.sin(by).astype(np.float32)
        return cb[:, None] * sa[None, :] + sb[:, None] * ca[None, :]
    n = ny if p["band_axis"] == "rows" else nx
    corr = p["corr_px"]
    h = int(math.ceil(4 * corr))
    kern = np.exp(-0.5 * (np.arange(-h, h + 1) / corr) ** 2)
    white = rng.standard_normal(n + 2 * h)
    off = np.convolve(white, kern, mode="valid")
    off *= amp / math.sqrt(2.0) / off.std()
    off = off.astype(np.float32)
    pattern = off[:, None] if p["band_axis"] == "rows" else off[None, :]
    return np.broadcast_to(pattern, (ny, nx)).astype(np.float32)
