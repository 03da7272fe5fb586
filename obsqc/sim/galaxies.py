"""Simulated galaxy cutouts and source stamps: the default training data of the learned scorers.

**Galaxy cutouts** (:func:`galaxy_images`), made to look like what
:func:`obsqc.models.cutouts.galaxy_cutouts` cuts from our exposures (90 s, DECam-like 0.263"/px):

* *central galaxy*: r magnitude from the galaxy counts of :mod:`obsqc.sim.scene`
  (``N(<m) ~ 10^(0.36 m)``) on :data:`MAG_RANGE` = 17-21, the range of the extended, >= 10 sigma
  galaxies that ``galaxy_cutouts`` selects from simulated 90 s r exposures (5-95% at 17.3-20.7);
  placed at pixel ``size // 2`` plus a sub-pixel offset uniform in +-0.5 px (the rounding of the
  centroid there). A fraction :data:`SERSIC_FRACTION` is a single Sersic profile (GalSim), with
  ``n`` from the bimodal distribution of single-Sersic fits (disks: log-normal around 1.2,
  sigma_ln 0.35; spheroids, 40%: around 3.5, sigma_ln 0.25; kept in 0.5-6, on a 0.1 grid so that
  GalSim builds each profile once); the others are an exponential disk plus, for 65%, a de
  Vaucouleurs bulge, exactly the bulge + disk population of ``scene.py``: same half-light radius
  relation (0.9" at r = 21, -0.13 dex/mag, 0.15 dex scatter, 0.1-6"), intrinsic shapes (reduced
  shear N(0, 0.27) per component, |g| < 0.85; bulges 0.2-0.5 of the disk |g|) and B/T ~ Beta(1.2, 2.5).
  High-n Sersics are rounder (0.4-0.8 of the drawn |g|).
* *colours* (g, r, i): disks g-r = 0.55 +- 0.20, r-i = 0.30 +- 0.10; bulges and n > 2.5 Sersics
  g-r = 1.00 +- 0.15, r-i = 0.45 +- 0.08, so bulge + disk galaxies have colour gradients; each
  galaxy also shifts both colours by a common N(0, 0.1) (redshift). Stars: the mean colours of
  :data:`obsqc.sim.config.BANDS` with 0.3 mag scatter.
* *neighbours* (``neighbours=True``): other galaxies (r 16-25) and stars (r 11-25) over the
  cutout plus a 16 px margin, drawn from the counts of ``scene.py`` (~15 galaxies per 96x96
  cutout, most below the noise; a star in ~1 of 4), as real cutouts carry them.
* *PSF*: Moffat, FWHM per image from the seeing law of :mod:`obsqc.sim.conditions` (log-normal
  around 0.95", sigma_ln 0.18, 0.7-1.4"; times ``seeing_factor`` per band), beta uniform in 2.5-4.5;
  round (the normal PSF's |g| <= 0.03 is negligible on galaxies). FWHM is put on a 0.1 px grid and
  beta on 0.5 so that PSF grids are shared between images.
* *sky and noise*: 90 s exposure, sky of the band's dark-sky brightness made brighter by
  U(0, 1.2) mag (same offset in every band), read noise U(5.5, 8) e-; the noise is Gaussian with
  variance ``sky + signal + read_noise^2`` e- (the photon noise in its normal limit, as in
  :mod:`obsqc.sim.defects`); the sky is then subtracted (the background fit of the detectors).
* *scaling*: bands converted to one calibrated flux unit (``10^(-0.4 zeropoint)`` per e-), then
  :func:`obsqc.models.preprocess.asinh_scale` with the image's noise, as ``galaxy_cutouts`` does.

Bulge + disk galaxies, neighbours and stars are drawn with :func:`obsqc.sim.render.render_objects`
(GalSim's Fourier method, exact, batched); Sersic centrals by :func:`sersic_image`, the same
method with the Sersic transform tabulated from GalSim (checked against GalSim's ``drawImage``).

Speed (one core, measured on a busy 2-core machine): ~200 single-band 96x96 cutouts/s, ~330 at
64x64, ~100 three-band; the Fourier grids of the ~130 distinct PSFs are computed once per call.

**Source stamps** (:func:`source_stamps_from_simulation`): normal simulated CCDs through
:func:`obsqc.detectors.ccd.measure_ccd` and :func:`obsqc.models.cutouts.source_stamps`.

Seeding: one :class:`numpy.random.SeedSequence` per call, split into a *draw* stream (galaxies,
neighbours, conditions) and a *noise* stream, so the same seed gives the same images, and
:mod:`obsqc.sim.galaxy_anomalies` can render an anomalous twin with the very same noise field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import lru_cache

import galsim
import numpy as np
import scipy.fft

from obsqc.detectors.ccd import measure_ccd
from obsqc.models.cutouts import galaxy_cutouts, source_stamps
from obsqc.models.preprocess import asinh_scale
from obsqc.sim.config import BANDS, PIXEL_SCALE
from obsqc.sim.conditions import sky_electrons
from obsqc.sim.exposure import simulate_ccd
from obsqc.sim.psf import PSFModel
from obsqc.sim.render import ObjectList, render_objects, shear_matrix_sq
from obsqc.sim.scene import DEG2_PER_PIX, GAL_N24, GAL_SLOPE, STAR_N155, flux_e, star_magnitudes

EXPTIME_S: float = 90.0
"""Exposure time of the simulated cutouts, s (the simulator's presets)."""

MAG_RANGE: tuple[float, float] = (17.0, 21.0)
"""r magnitudes of the central galaxies (module docstring), mag."""

SERSIC_FRACTION: float = 0.3
"""Fraction of central galaxies drawn as a single Sersic profile instead of bulge + disk."""

NEIGHBOUR_MARGIN_PX: int = 16
"""Neighbours are placed over the cutout plus this margin, so light enters from outside, px."""

NEIGHBOUR_MAG_FAINT: float = 25.0
"""Faintest neighbour drawn (galaxies and stars), r mag."""

_FWHM_STEP_PX: float = 0.1
"""Grid of PSF FWHM values, px (0.026": far below what a 96x96 cutout can tell)."""

_BETA_STEP: float = 0.5
"""Grid of Moffat beta values."""

_PSF_GRID: int = 256
"""Every PSF's Fourier grid is computed once at this stamp size; smaller power-of-two stamps subsample it."""

_SERSIC_T: np.ndarray = np.linspace(0.0, math.sqrt(4000.0), 4097)
"""Grid of t = sqrt(|k| hlr) on which Sersic transforms are tabulated (as render.py's de Vaucouleurs)."""

_CHUNK_IMAGES: int = 256
"""Images observed and scaled per chunk (bounds temporary memory)."""

_DISK_COLOUR = ((0.55, 0.20), (0.30, 0.10))
"""(mean, sd) of g-r and r-i of disks, mag."""

_BULGE_COLOUR = ((1.00, 0.15), (0.45, 0.08))
"""(mean, sd) of g-r and r-i of bulges and spheroids, mag."""


@dataclass
class CutoutConditions:
    """Per-image observing conditions, bands in the order asked: ``fwhm_px`` (n, C), ``beta`` (n,),
    ``sky_e`` (n, C) sky per pixel, e-; ``read_noise_e`` (n,); ``unit`` (C,) calibrated flux per e-."""

    fwhm_px: np.ndarray
    beta: np.ndarray
    sky_e: np.ndarray
    read_noise_e: np.ndarray
    unit: np.ndarray

    @property
    def sigma_e(self) -> np.ndarray:
        """Sky + read noise per pixel, e- (n, C)."""
        return np.sqrt(self.sky_e + self.read_noise_e[:, None] ** 2)


@dataclass
class Objects:
    """A flat table of the objects to draw in a batch of cutouts (arrays of equal length m).

    ``image``: which cutout; ``x``, ``y``: position in it (px, x = column; the cutout's centre is
    pixel ``size // 2``); ``role``: 0 central, 1 neighbour, 2 added by an anomaly. Fluxes (m, C) in
    e- per band: ``flux_point`` (stars), ``flux_disk`` / ``flux_bulge`` (exponential / de
    Vaucouleurs, half-light radii ``hlr_disk`` / ``hlr_bulge`` px, shears ``g1_*``, ``g2_*``),
    ``flux_sersic`` (Sersic index ``sersic_n``, ``hlr_sersic``, shear ``g1_sersic``, ``g2_sersic``).
    """

    image: np.ndarray
    x: np.ndarray
    y: np.ndarray
    role: np.ndarray
    flux_point: np.ndarray
    flux_disk: np.ndarray
    hlr_disk: np.ndarray
    g1_disk: np.ndarray
    g2_disk: np.ndarray
    flux_bulge: np.ndarray
    hlr_bulge: np.ndarray
    g1_bulge: np.ndarray
    g2_bulge: np.ndarray
    flux_sersic: np.ndarray
    sersic_n: np.ndarray
    hlr_sersic: np.ndarray
    g1_sersic: np.ndarray
    g2_sersic: np.ndarray

    def __len__(self) -> int:
        return len(self.image)

    @staticmethod
    def empty(n_bands: int) -> "Objects":
        """No objects."""
        kw = {f.name: np.zeros(0) for f in fields(Objects)}
        for k in ("flux_point", "flux_disk", "flux_bulge", "flux_sersic"):
            kw[k] = np.zeros((0, n_bands))
        kw["image"] = np.zeros(0, np.int64)
        kw["role"] = np.zeros(0, np.int8)
        return Objects(**kw)

    @staticmethod
    def concat(parts: list["Objects"]) -> "Objects":
        """Concatenate tables."""
        return Objects(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Objects)})

    def subset(self, idx) -> "Objects":
        """The rows at ``idx``."""
        return Objects(**{f.name: getattr(self, f.name)[idx] for f in fields(Objects)})


@dataclass
class GalaxyDraw:
    """Everything drawn for a batch of cutouts: ``size``, ``bands``, per-image ``conditions``, the
    ``objects`` and the ``truth`` of the central galaxies (dict of (n,) arrays: mag_r, hlr_px,
    sersic_n (0 for bulge + disk), bt, g1, g2, dx, dy)."""

    size: int
    bands: tuple[str, ...]
    conditions: CutoutConditions
    objects: Objects
    truth: dict

    @property
    def n(self) -> int:
        """Number of cutouts."""
        return len(self.conditions.beta)


# --------------------------------------------------------------------------- drawing


def _power_law_mags(rng: np.random.Generator, n: int, slope: float, m1: float, m2: float) -> np.ndarray:
    """Magnitudes with N(<m) proportional to 10^(slope m) on [m1, m2] (scene.py's counts)."""
    a, b = 10 ** (slope * m1), 10 ** (slope * m2)
    return np.log10(a + rng.random(n) * (b - a)) / slope


def _shapes(rng: np.random.Generator, n: int, sigma: float = 0.27, gmax: float = 0.85):
    """Intrinsic reduced shears g1, g2 ~ N(0, sigma) each, redrawn until |g| < gmax (scene.py)."""
    g1, g2 = rng.normal(0.0, sigma, n), rng.normal(0.0, sigma, n)
    bad = np.hypot(g1, g2) >= gmax
    while bad.any():
        g1[bad], g2[bad] = rng.normal(0.0, sigma, bad.sum()), rng.normal(0.0, sigma, bad.sum())
        bad = np.hypot(g1, g2) >= gmax
    return g1, g2


def _hlr_px(rng: np.random.Generator, mag_r: np.ndarray) -> np.ndarray:
    """Disk half-light radius of scene.py: 0.9" at r = 21, -0.13 dex/mag, 0.15 dex scatter, 0.1-6"."""
    arcsec = 10 ** (math.log10(0.9) - 0.13 * (mag_r - 21.0) + rng.normal(0.0, 0.15, len(mag_r)))
    return np.clip(arcsec, 0.1, 6.0) / PIXEL_SCALE


def _band_mags(mag_r: np.ndarray, gr: np.ndarray, ri: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
    """(m, C) magnitudes from r and the colours g-r, r-i (z: r-i plus 0.25 of it again)."""
    cols = []
    for b in bands:
        cols.append({"g": mag_r + gr, "r": mag_r, "i": mag_r - ri, "z": mag_r - 1.25 * ri}[b])
    return np.stack(cols, axis=1)


def _colours(rng: np.random.Generator, n: int, which) -> tuple[np.ndarray, np.ndarray]:
    (gm, gs), (im, is_) = which
    return rng.normal(gm, gs, n), rng.normal(im, is_, n)


def _fluxes(mags: np.ndarray, bands: tuple[str, ...]) -> np.ndarray:
    """(m, C) electrons from (m, C) magnitudes in a 90 s exposure."""
    out = np.empty(mags.shape)
    for j, b in enumerate(bands):
        out[:, j] = flux_e(mags[:, j], b, EXPTIME_S)
    return out


def draw_galaxies(rng: np.random.Generator, m_r: np.ndarray, bands: tuple[str, ...], *,
                  sersic_fraction: float = SERSIC_FRACTION, central: bool = True) -> dict:
    """Galaxies of r magnitudes ``m_r``: the population of the module docstring. Returns a dict of
    per-galaxy arrays (fluxes (m, C) in e-) ready for :class:`Objects` (positions not set)."""
    m = len(m_r)
    c = len(bands)
    hlr = _hlr_px(rng, m_r)
    g1, g2 = _shapes(rng, m)
    is_sersic = rng.random(m) < sersic_fraction if central else np.zeros(m, bool)
    spheroid = rng.random(m) < 0.4
    n_s = np.where(spheroid, 3.5 * np.exp(0.25 * rng.standard_normal(m)), 1.2 * np.exp(0.35 * rng.standard_normal(m)))
    n_s = np.round(np.clip(n_s, 0.5, 6.0), 1)
    round_s = np.where(n_s > 2.5, rng.uniform(0.4, 0.8, m), 1.0)
    has_bulge = rng.random(m) < 0.65
    bt = np.where(has_bulge, rng.beta(1.2, 2.5, m), 0.0)
    hlr_b = hlr * rng.uniform(0.3, 0.6, m)
    shrink = rng.uniform(0.2, 0.5, m)
    gr_d, ri_d = _colours(rng, m, _DISK_COLOUR)
    gr_b, ri_b = _colours(rng, m, _BULGE_COLOUR)
    shift = rng.normal(0.0, 0.1, m)
    gr_d, ri_d, gr_b, ri_b = gr_d + shift, ri_d + shift, gr_b + shift, ri_b + shift
    # Disk and bulge magnitudes in r from the total and B/T; Sersic colour by its index.
    with np.errstate(divide="ignore"):
        md = m_r - 2.5 * np.log10(np.maximum(1.0 - bt, 1e-12))
        mb = m_r - 2.5 * np.log10(np.maximum(bt, 1e-300))
    f_d = _fluxes(_band_mags(md, gr_d, ri_d, bands), bands) * (bt < 1.0)[:, None]
    f_b = _fluxes(_band_mags(mb, gr_b, ri_b, bands), bands) * (bt > 0.0)[:, None]
    red = n_s > 2.5
    f_s = _fluxes(_band_mags(m_r, np.where(red, gr_b, gr_d), np.where(red, ri_b, ri_d), bands), bands)
    zero = np.zeros((m, c))
    s = is_sersic[:, None]
    return dict(
        flux_point=zero, flux_disk=np.where(s, 0.0, f_d), hlr_disk=hlr, g1_disk=g1, g2_disk=g2,
        flux_bulge=np.where(s, 0.0, f_b), hlr_bulge=hlr_b, g1_bulge=g1 * shrink, g2_bulge=g2 * shrink,
        flux_sersic=np.where(s, f_s, 0.0), sersic_n=np.where(is_sersic, n_s, 0.0), hlr_sersic=hlr,
        g1_sersic=g1 * round_s, g2_sersic=g2 * round_s, bt=np.where(is_sersic, np.nan, bt),
    )


def draw_stars(rng: np.random.Generator, m_r: np.ndarray, bands: tuple[str, ...]) -> dict:
    """Point sources of r magnitudes ``m_r`` with the stellar colours of ``config.BANDS``."""
    m = len(m_r)
    cols = []
    for b in bands:
        scatter = rng.normal(0.0, 0.3, m)  # drawn for every band (r ignores it)
        cols.append(m_r if b == "r" else m_r + BANDS[b].star_color - BANDS["r"].star_color + scatter)
    mags = np.stack(cols, axis=1)
    z = np.zeros(m)
    zc = np.zeros((m, len(bands)))
    return dict(flux_point=_fluxes(mags, bands), flux_disk=zc, hlr_disk=z, g1_disk=z, g2_disk=z,
                flux_bulge=zc, hlr_bulge=z, g1_bulge=z, g2_bulge=z, flux_sersic=zc, sersic_n=z,
                hlr_sersic=z, g1_sersic=z, g2_sersic=z)


def objects_from(image: np.ndarray, x: np.ndarray, y: np.ndarray, role: int, params: dict) -> Objects:
    """An :class:`Objects` table from per-object ``params`` (as :func:`draw_galaxies` returns) placed at (x, y)."""
    names = [f.name for f in fields(Objects)]
    kw = {k: v for k, v in params.items() if k in names}
    return Objects(image=np.asarray(image, np.int64), x=np.asarray(x, float), y=np.asarray(y, float),
                   role=np.full(len(image), role, np.int8), **kw)


def draw_conditions(rng: np.random.Generator, n: int, bands: tuple[str, ...]) -> CutoutConditions:
    """Per-image seeing, Moffat beta, sky and read noise (module docstring)."""
    seeing = np.clip(0.95 * np.exp(0.18 * rng.standard_normal(n)), 0.7, 1.4)
    beta = np.round(rng.uniform(2.5, 4.5, n) / _BETA_STEP) * _BETA_STEP
    brighten = rng.uniform(0.0, 1.2, n)
    read_noise = rng.uniform(5.5, 8.0, n)
    fwhm = np.stack([np.round(seeing * BANDS[b].seeing_factor / PIXEL_SCALE / _FWHM_STEP_PX) * _FWHM_STEP_PX
                     for b in bands], axis=1)
    sky = np.stack([np.array([sky_electrons(b, BANDS[b].sky_dark - d, EXPTIME_S) for d in brighten])
                    for b in bands], axis=1)
    unit = np.array([10 ** (-0.4 * BANDS[b].zeropoint) for b in bands]) * 1e10
    return CutoutConditions(fwhm_px=fwhm, beta=beta, sky_e=sky, read_noise_e=read_noise, unit=unit)


def draw_batch(rng: np.random.Generator, n: int, *, size: int = 96, bands: tuple[str, ...] = ("r",),
               neighbours: bool = True, mag_range: tuple[float, float] = MAG_RANGE,
               sersic_fraction: float = SERSIC_FRACTION) -> GalaxyDraw:
    """Draw ``n`` cutouts: conditions, a central galaxy each and (optionally) neighbours."""
    bands = tuple(bands)
    for b in bands:
        if b not in BANDS:
            raise ValueError(f"unknown band {b!r}; choose from {sorted(BANDS)}")
    cond = draw_conditions(rng, n, bands)
    m_r = _power_law_mags(rng, n, GAL_SLOPE, *mag_range)
    cen = draw_galaxies(rng, m_r, bands, sersic_fraction=sersic_fraction)
    dx, dy = rng.uniform(-0.5, 0.5, n), rng.uniform(-0.5, 0.5, n)
    h = size // 2
    parts = [objects_from(np.arange(n), h + dx, h + dy, 0, cen)]
    if neighbours:
        side = size + 2 * NEIGHBOUR_MARGIN_PX
        area = side * side * DEG2_PER_PIX
        n_gal = GAL_N24 * (10 ** (GAL_SLOPE * (NEIGHBOUR_MAG_FAINT - 24.0)) - 10 ** (GAL_SLOPE * (16.0 - 24.0)))
        k = rng.poisson(n_gal * area, n)
        img = np.repeat(np.arange(n), k)
        mg = _power_law_mags(rng, len(img), GAL_SLOPE, 16.0, NEIGHBOUR_MAG_FAINT)
        xy = rng.uniform(-NEIGHBOUR_MARGIN_PX, size + NEIGHBOUR_MARGIN_PX, (2, len(img)))
        parts.append(objects_from(img, xy[0], xy[1], 1, draw_galaxies(rng, mg, bands, central=False)))
        ms = star_magnitudes(rng, area * n, STAR_N155 * float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
                             NEIGHBOUR_MAG_FAINT)
        img_s = rng.integers(0, n, len(ms))
        xy = rng.uniform(-NEIGHBOUR_MARGIN_PX, size + NEIGHBOUR_MARGIN_PX, (2, len(ms)))
        parts.append(objects_from(img_s, xy[0], xy[1], 1, draw_stars(rng, ms, bands)))
    sers = cen["sersic_n"] > 0
    truth = dict(mag_r=m_r, hlr_px=np.where(sers, cen["hlr_sersic"], cen["hlr_disk"]), sersic_n=cen["sersic_n"],
                 bt=cen["bt"], g1=np.where(sers, cen["g1_sersic"], cen["g1_disk"]),
                 g2=np.where(sers, cen["g2_sersic"], cen["g2_disk"]), dx=dx, dy=dy)
    return GalaxyDraw(size=int(size), bands=bands, conditions=cond, objects=Objects.concat(parts), truth=truth)


# --------------------------------------------------------------------------- rendering


class PSFCache:
    """One :class:`PSFModel` per (FWHM, beta) on their grids, shared by the images of a batch."""

    def __init__(self) -> None:
        self._psf: dict[tuple[int, int], PSFModel] = {}

    def get(self, fwhm_px: float, beta: float) -> PSFModel:
        """The round Moffat PSF of this FWHM (px) and beta."""
        key = (int(round(fwhm_px / _FWHM_STEP_PX)), int(round(beta / _BETA_STEP)))
        if key not in self._psf:
            psf = PSFModel(fwhm_px=key[0] * _FWHM_STEP_PX, beta=key[1] * _BETA_STEP)
            psf.prepare(_PSF_GRID)
            self._psf[key] = psf
        return self._psf[key]


@lru_cache(maxsize=128)
def _sersic_table(n_s: float) -> np.ndarray:
    """FT of a unit-flux Sersic of index ``n_s`` and half-light radius 1 at u = t^2 (GalSim's kValue)."""
    prof = galsim.Sersic(n_s, half_light_radius=1.0)
    return np.array([prof.kValue(galsim.PositionD(float(t) ** 2, 0.0)).real for t in _SERSIC_T])


def sersic_image(n_s: float, hlr: float, g1: float, g2: float, flux: float, x: float, y: float,
                 psf: PSFModel, size: int) -> np.ndarray:
    """A sheared Sersic (index ``n_s``, half-light radius ``hlr`` px, GalSim's shear convention)
    convolved with ``psf`` and the pixel, centred at (x, y) of a size x size image (float64, e-).

    Drawn like :mod:`obsqc.sim.render` draws bulges: the profile's transform (tabulated from GalSim)
    times the PSF's on the doubled k grid, folded onto the frequencies of a power-of-two grid at
    least 32 px wider than the image (sampling at pixel centres), inverse-transformed and cropped:
    the drawing is periodic, and the margin keeps the light folding back from beyond the edge
    32 px away from the image.
    """
    size = int(size)
    n = max(2 ** math.ceil(math.log2(size + 32)), 16)
    h = n // 2
    k = (2.0 * math.pi / n) * np.arange(-n, n)
    cols = np.concatenate([np.arange(0, h + 1), np.arange(n, n + h + 1)])
    kx, ky = k[cols][None, :], k[:, None]
    m00, m01, m11 = shear_matrix_sq(g1, g2)
    u = np.sqrt(np.maximum(m00 * kx * kx + 2.0 * m01 * kx * ky + m11 * ky * ky, 0.0)) * hlr
    f = flux * np.interp(np.sqrt(u), _SERSIC_T, _sersic_table(round(float(n_s), 1)))
    c = size // 2
    big = f * psf.kimage(n)[:, cols] * np.exp(-1j * (kx * (x - c) + ky * (y - c)))
    g = big[:n, : h + 1] + big[n:, : h + 1] + big[:n, h + 1:] + big[n:, h + 1:]
    a = h - size // 2
    return np.fft.fftshift(scipy.fft.irfft2(g, s=(n, n)))[a:a + size, a:a + size]


def render(draw: GalaxyDraw, psfs: PSFCache | None = None) -> np.ndarray:
    """Noiseless, sky-free images (n, C, S, S) float32 in e- of every object of ``draw``."""
    psfs = psfs or PSFCache()
    n, s, bands = draw.n, draw.size, draw.bands
    o = draw.objects
    out = np.zeros((n, len(bands), s, s), dtype=np.float32)
    order = np.argsort(o.image, kind="stable")
    starts = np.searchsorted(o.image[order], np.arange(n + 1))
    canvas = np.zeros((s, s), dtype=np.float64)
    for i in range(n):
        rows = order[starts[i]:starts[i + 1]]
        if len(rows) == 0:
            continue
        sub = o.subset(rows)
        sersic = np.flatnonzero((sub.sersic_n > 0) & (sub.flux_sersic.max(axis=1) > 0))
        for b in range(len(bands)):
            psf = psfs.get(draw.conditions.fwhm_px[i, b], draw.conditions.beta[i])
            canvas[:] = 0.0
            ol = ObjectList(x=sub.x, y=sub.y, flux_point=sub.flux_point[:, b], flux_disk=sub.flux_disk[:, b],
                            hlr_disk=sub.hlr_disk, g1_disk=sub.g1_disk, g2_disk=sub.g2_disk,
                            flux_bulge=sub.flux_bulge[:, b], hlr_bulge=sub.hlr_bulge, g1_bulge=sub.g1_bulge,
                            g2_bulge=sub.g2_bulge)
            live = np.flatnonzero(ol.flux > 0)
            if len(live):
                render_objects(canvas, ol.subset(live), psf)
            for j in sersic:
                canvas += sersic_image(sub.sersic_n[j], sub.hlr_sersic[j], sub.g1_sersic[j], sub.g2_sersic[j],
                                       sub.flux_sersic[j, b], sub.x[j], sub.y[j], psf, s)
            out[i, b] = canvas
    return out


def observe(flux_e: np.ndarray, cond: CutoutConditions, noise: np.ndarray) -> np.ndarray:
    """Sky-subtracted noisy images, e-: ``flux + sqrt(sky + max(flux, 0) + rn^2) * noise``, with
    ``noise`` a standard-normal field of the same shape (drawn by the caller, so twins can share it)."""
    var = np.maximum(flux_e, 0.0) + (cond.sky_e + cond.read_noise_e[:, None] ** 2)[:, :, None, None]
    return (flux_e + np.sqrt(var) * noise).astype(np.float32)


def scale(noisy_e: np.ndarray, cond: CutoutConditions) -> np.ndarray:
    """Calibrated flux (one unit across bands), then :func:`obsqc.models.preprocess.asinh_scale`."""
    x = noisy_e * cond.unit.astype(np.float32)[None, :, None, None]
    return asinh_scale(x, sigma=cond.sigma_e * cond.unit[None, :])


def noise_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """The standard-normal noise field of a batch (float32)."""
    return rng.standard_normal(shape, dtype=np.float32)


def finish(flux_e: np.ndarray | list[np.ndarray], cond: CutoutConditions, rng_noise: np.random.Generator):
    """Noise, sky subtraction and scaling of rendered batches, in chunks (float32 [0, 1]).

    ``flux_e`` (n, C, S, S) e-, or a list of such arrays (twins: the same cutouts with and without
    something added), which then get the very same noise field; returns an array or a list.
    """
    batches = flux_e if isinstance(flux_e, list) else [flux_e]
    n = batches[0].shape[0]
    outs = [np.empty(b.shape, dtype=np.float32) for b in batches]
    for a in range(0, n, _CHUNK_IMAGES):
        b = min(n, a + _CHUNK_IMAGES)
        sub = subset_conditions(cond, np.arange(a, b))
        z = noise_field(rng_noise, batches[0][a:b].shape)
        for flux, out in zip(batches, outs):
            out[a:b] = scale(observe(flux[a:b], sub, z), sub)
    return outs if isinstance(flux_e, list) else outs[0]


def subset_conditions(cond: CutoutConditions, idx: np.ndarray) -> CutoutConditions:
    """The conditions of the images ``idx``."""
    return CutoutConditions(cond.fwhm_px[idx], cond.beta[idx], cond.sky_e[idx], cond.read_noise_e[idx], cond.unit)


def subset_draw(draw: GalaxyDraw, idx: np.ndarray) -> GalaxyDraw:
    """The cutouts ``idx`` of a draw, renumbered 0 .. len(idx) - 1 in that order."""
    idx = np.asarray(idx, dtype=np.int64)
    where = np.full(draw.n, -1, np.int64)
    where[idx] = np.arange(len(idx))
    o = draw.objects.subset(where[draw.objects.image] >= 0)
    o.image = where[o.image]
    truth = {k: np.asarray(v)[idx] for k, v in draw.truth.items()}
    return GalaxyDraw(draw.size, draw.bands, subset_conditions(draw.conditions, idx), o, truth)


def galaxy_images(n: int, *, size: int = 96, bands=("r",), seed: int = 0, neighbours: bool = True,
                  mag_range: tuple[float, float] = MAG_RANGE, sersic_fraction: float = SERSIC_FRACTION,
                  return_truth: bool = False):
    """``n`` simulated galaxy cutouts, float32 (n, C, size, size) in [0, 1] (module docstring).

    ``bands``: ("r",) or e.g. ("g", "r", "i") (channel order as given). Same arguments, same images.
    With ``return_truth`` also the :class:`GalaxyDraw` (conditions, objects, central-galaxy truth).
    """
    if n < 0 or size < 8:
        raise ValueError(f"need n >= 0 and size >= 8, got n={n}, size={size}")
    ss_draw, ss_noise = np.random.SeedSequence(int(seed)).spawn(2)
    draw = draw_batch(np.random.default_rng(ss_draw), int(n), size=int(size), bands=tuple(bands),
                      neighbours=neighbours, mag_range=mag_range, sersic_fraction=sersic_fraction)
    images = finish(render(draw), draw.conditions, np.random.default_rng(ss_noise))
    return (images, draw) if return_truth else images


# --------------------------------------------------------------------------- from simulated exposures


def _simulated_ccds(seed: int, shape: tuple[int, int]):
    """Normal simulated CCDs, measured: yields (image, CCDStats, truth) for seeds derived from ``seed``."""
    ss = np.random.SeedSequence(int(seed))
    k = 0
    while True:
        ccd_seed = int(ss.spawn(1)[0].generate_state(1)[0])
        img, truth = simulate_ccd(shape, seed=ccd_seed)
        stats = measure_ccd(img, saturate=truth["saturate"], seed=k)
        yield img, stats, truth
        k += 1


def source_stamps_from_simulation(n: int, *, seed: int = 0, shape: tuple[int, int] = (1024, 1024),
                                  size: int = 64) -> np.ndarray:
    """``n`` autoencoder stamps (float32 (n, size, size) in [0, 1]) from normal simulated CCDs.

    Each CCD (:func:`obsqc.sim.exposure.simulate_ccd`, its own seed, so its own seeing, sky and
    field) goes through :func:`obsqc.detectors.ccd.measure_ccd` and
    :func:`obsqc.models.cutouts.source_stamps` (papers/000 §4.2); CCDs are added until ``n``
    stamps are collected. A 1024x1024 CCD gives ~80 stamps; ~370 stamps/s on one core.
    """
    out = np.empty((int(n), size, size), dtype=np.float32)
    got = 0
    for img, stats, _ in _simulated_ccds(seed, shape) if n > 0 else ():
        st = source_stamps(img, stats.sources, stats.background.coeffs, size=size, max_n=n - got)
        out[got:got + len(st.rows)] = st.pixels
        got += len(st.rows)
        if got >= n:
            break
    return out


def galaxy_cutouts_from_simulation(n: int, *, seed: int = 0, shape: tuple[int, int] = (1024, 1024),
                                   size: int = 96) -> np.ndarray:
    """``n`` galaxy cutouts (float32 (n, 1, size, size)) cut by
    :func:`obsqc.models.cutouts.galaxy_cutouts` from normal simulated CCDs: exactly what the service
    scores (cosmic rays and all), at ~60 cutouts/s on one core (~12 per 1024x1024 CCD; use
    :func:`galaxy_images` for large training sets)."""
    out = np.empty((int(n), 1, size, size), dtype=np.float32)
    got = 0
    for img, stats, truth in _simulated_ccds(seed, shape) if n > 0 else ():
        c = galaxy_cutouts(img, stats.sources, stats.background.coeffs, stats.background.sigma, size=size,
                           saturate=truth["saturate"], max_n=n - got)
        out[got:got + len(c.rows)] = c.pixels
        got += len(c.rows)
        if got >= n:
            break
    return out
