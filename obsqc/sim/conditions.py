"""Observing conditions of one exposure: seeing, normal PSF shape, sky, field density.

All draws come from the exposure's *conditions* generator, so an anomalous exposure and a
normal one made from the same seed share the same sky, seeing and stars.

Physics and ranges (r band, CTIO-like site, DECam-like camera):

* seeing FWHM: log-normal around 0.95" (sigma_ln 0.18), kept in 0.7-1.4" (2.7-5.3 px at
  0.263"/px), scaled by ``Band.seeing_factor`` (Kolmogorov lambda^-0.2);
* Moffat beta uniform in 2.5-4.5 (atmospheric wings; beta=4.765 is the Kolmogorov-like fit);
* normal PSF ellipticity (residual optics, wind shake averaged over the exposure): reduced
  shear |g| <= 0.02, uniform in the disc, random direction; plus a field pattern of amplitude
  <= 0.01 at the focal-plane edge (astigmatism grows as field radius squared, tangential or
  radial depending on the sign of the focus offset);
* sky: dark-sky brightness of the band brightened by 0-1.2 mag (moon, twilight, airmass);
  a linear gradient of 0-3% of the sky level across the focal plane radius (moonlight) plus a
  small quadratic term (vignetting residual after flat-fielding);
* field density: stars vary by a factor 0.5-2 (galactic latitude), galaxies by 15% rms
  (large-scale structure).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from obsqc.sim.config import BANDS, PIXEL_SCALE


@dataclass(frozen=True)
class Conditions:
    """Per-exposure conditions. Lengths in px unless the name says arcsec."""

    band: str
    exptime: float
    mjd: float
    seeing_arcsec: float
    psf_fwhm_px: float
    psf_beta: float
    psf_g1: float
    psf_g2: float
    psf_field_g: float
    sky_mag: float
    sky_e: float
    sky_grad_frac: float
    sky_grad_angle: float
    sky_quad_frac: float
    star_density: float
    galaxy_density: float

    def as_dict(self) -> dict:
        """Plain dict (for labels and truth)."""
        return asdict(self)


def sky_electrons(band: str, sky_mag: float, exptime: float) -> float:
    """Sky counts per pixel, e-: 10^(0.4 (zp - mu)) * pixel area (arcsec^2) * exptime."""
    b = BANDS[band]
    return float(10 ** (0.4 * (b.zeropoint - sky_mag)) * PIXEL_SCALE**2 * exptime)


def draw_conditions(rng: np.random.Generator, *, band: str, exptime: float, mjd: float,
                    seeing_arcsec: float | None = None, sky_mag: float | None = None) -> Conditions:
    """Draw the conditions of one exposure (see the module docstring for the ranges).

    ``seeing_arcsec`` and ``sky_mag`` override the random draws (a night simulator uses them
    to make conditions drift smoothly); the draws are still made so the stream stays aligned.
    """
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; choose one of {sorted(BANDS)}")
    b = BANDS[band]
    seeing = float(np.clip(0.95 * np.exp(0.18 * rng.standard_normal()), 0.7, 1.4)) * b.seeing_factor
    if seeing_arcsec is not None:
        seeing = float(seeing_arcsec)
    beta = float(rng.uniform(2.5, 4.5))
    gmag = 0.02 * np.sqrt(rng.random())
    gang = rng.uniform(0.0, np.pi)
    field_g = float(rng.uniform(-0.01, 0.01))
    mu = float(b.sky_dark - rng.uniform(0.0, 1.2))
    if sky_mag is not None:
        mu = float(sky_mag)
    grad = float(rng.uniform(0.0, 0.03))
    grad_angle = float(rng.uniform(0.0, 2 * np.pi))
    quad = float(rng.uniform(-0.005, 0.005))
    star_density = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    galaxy_density = float(np.exp(0.15 * rng.standard_normal()))
    return Conditions(
        band=band, exptime=float(exptime), mjd=float(mjd),
        seeing_arcsec=seeing, psf_fwhm_px=seeing / PIXEL_SCALE, psf_beta=beta,
        psf_g1=float(gmag * np.cos(2 * gang)), psf_g2=float(gmag * np.sin(2 * gang)),
        psf_field_g=field_g, sky_mag=mu, sky_e=sky_electrons(band, mu, exptime),
        sky_grad_frac=grad, sky_grad_angle=grad_angle, sky_quad_frac=quad,
        star_density=star_density, galaxy_density=galaxy_density,
    )


def sky_image(cond: Conditions, x0: float, y0: float, shape: tuple[int, int], fp_radius: float) -> np.ndarray:
    """Sky in e- per pixel over a CCD whose pixel (0, 0) sits at focal-plane (x0, y0).

    ``sky_e * (1 + a (u cos phi + v sin phi) + q (u^2 + v^2))`` with (u, v) = (X, Y) / R_fp,
    so ``a`` is the fractional change over one focal-plane radius. Returned as float32.
    """
    ny, nx = shape
    u = (x0 + np.arange(nx, dtype=np.float64)) / fp_radius
    v = (y0 + np.arange(ny, dtype=np.float64)) / fp_radius
    a, q, phi = cond.sky_grad_frac, cond.sky_quad_frac, cond.sky_grad_angle
    col_term = cond.sky_e * (a * math.cos(phi) * u + q * u * u)  # separable: one pass over the CCD
    row_term = cond.sky_e * (1.0 + a * math.sin(phi) * v + q * v * v)
    return np.add(row_term.astype(np.float32)[:, None], col_term.astype(np.float32)[None, :])
