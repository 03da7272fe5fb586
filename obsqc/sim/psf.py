"""Point-spread functions: the normal atmospheric PSF and the three PSF anomalies.

Profiles are in **pixel units** (1 px). The renderer (:mod:`obsqc.sim.render`) needs only the
Fourier transform of PSF x pixel on a grid; :meth:`PSFModel.kimage` evaluates it from GalSim's
Moffat transform (tabulated once per beta) and closed forms for shears, shifts, the annulus
(jinc) and the pixel (sinc). :attr:`PSFModel.profile` builds the same PSF as a GalSim object;
the tests check that both agree with GalSim's ``drawKImage`` to 1e-6.

* normal: ``Moffat(beta, fwhm)`` sheared by the small normal ellipticity (|g| <= ~0.02 plus
  the field pattern), see :mod:`obsqc.sim.conditions`;
* ``psf_elongation`` (papers/000 §2.1 "elongations on the sources", fig. 1a,c): the normal PSF
  sheared by ``g`` along one direction. Tracking/guiding errors act along the mount axes, so
  half of them are nearly along x or y (the paper notes most DECaLS cases are vertical);
  astigmatism picks any direction;
* ``double_image`` (fig. 1b "multiple source images", a telescope shake or a jump of the
  guider): the normal PSF plus a shifted copy, fluxes 1 : ratio, flux-weighted centroid kept at
  the origin;
* ``defocus``: geometric-optics donut (a uniform annulus, the pupil image with its central
  obscuration) convolved with the atmospheric Moffat. For Noll Z4 = a4 waves rms the donut
  radius is ``8 sqrt(3) a4 lambda / D`` radians (0.457" per wave at 640 nm on 4 m, 1.74 px).
  Diffraction (lambda/D = 0.03") is 30x below the seeing, so geometric optics is exact enough.
  Residual astigmatism a_ast (Z5/Z6 waves) makes the donut elliptical with reduced shear
  ``g = a_ast / (sqrt(2) a4)`` (from the pupil-to-image mapping of the wavefront gradient).
"""

from __future__ import annotations

import math
from functools import lru_cache

import galsim
import numpy as np
import scipy.fft
from scipy.special import j1

from obsqc.sim.config import BANDS, MIRROR_DIAMETER_M, OBSCURATION, PIXEL_SCALE
from obsqc.sim.conditions import Conditions

ARCSEC_PER_RAD: float = 180.0 / math.pi * 3600.0

_GSPARAMS = galsim.GSParams(maximum_fft_size=16384)

_MOFFAT_U_MAX: float = 120.0
"""Largest k * alpha tabulated (k <= 2 pi sqrt 2 /px, alpha <= ~13 px)."""


def donut_radius_px(defocus_waves: float, band: str) -> float:
    """Outer radius of the geometric defocus donut for Noll Z4 = ``defocus_waves``, px."""
    lam = BANDS[band].wavelength_nm * 1e-9
    rad = 8.0 * math.sqrt(3.0) * defocus_waves * lam / MIRROR_DIAMETER_M
    return rad * ARCSEC_PER_RAD / PIXEL_SCALE


def annulus(radius_px: float, obscuration: float = OBSCURATION) -> galsim.GSObject:
    """Uniform annulus of unit flux, outer radius ``radius_px``, inner ``obscuration`` x outer."""
    eps2 = obscuration**2
    outer = galsim.TopHat(radius=radius_px, flux=1.0 / (1.0 - eps2), gsparams=_GSPARAMS)
    inner = galsim.TopHat(radius=obscuration * radius_px, flux=-eps2 / (1.0 - eps2), gsparams=_GSPARAMS)
    return galsim.Add([outer, inner])


def field_shear(cond: Conditions, x: float, y: float, fp_radius: float) -> tuple[float, float]:
    """Normal PSF shear at focal-plane (x, y): exposure value + field pattern.

    The pattern is ``field_g * rho^2`` along the tangential direction (radial when
    ``field_g`` < 0), rho = r / R_fp, like third-order astigmatism near focus.
    """
    rho2 = (x * x + y * y) / fp_radius**2
    phi = math.atan2(y, x)
    g1 = cond.psf_g1 - cond.psf_field_g * rho2 * math.cos(2 * phi)
    g2 = cond.psf_g2 - cond.psf_field_g * rho2 * math.sin(2 * phi)
    return g1, g2


def shear_matrix(g1: float, g2: float) -> np.ndarray:
    """GalSim's shear matrix S = [[1+g1, g2], [g2, 1-g1]] / sqrt(1 - g^2)."""
    return np.array([[1 + g1, g2], [g2, 1 - g1]]) / math.sqrt(1.0 - g1 * g1 - g2 * g2)


@lru_cache(maxsize=64)
def _moffat_table(beta: float) -> tuple[np.ndarray, np.ndarray]:
    """GalSim's FT of a unit-flux round Moffat of scale radius 1, on u = k alpha in [0, U_MAX]."""
    m = 32768  # du = 0.0037: linear interpolation error < 2e-6
    du = _MOFFAT_U_MAX / m
    line = galsim.Moffat(beta=beta, scale_radius=1.0, gsparams=_GSPARAMS).drawKImage(nx=2 * m, ny=2, scale=du)
    f = line.array[1, m:].real.copy()  # row ky = 0, columns kx = 0 .. (m-1) du
    return np.arange(m) * du, f


class PSFModel:
    """The PSF of one CCD: Moffat (``fwhm_px``, ``beta``) sheared by (g1, g2), then an anomaly.

    ``anomaly``/``params`` as drawn by :func:`obsqc.sim.anomalies.draw_anomaly` (only the PSF
    anomalies change the PSF). ``extra_radius`` (px) is how far the anomaly spreads light
    beyond one Moffat (double offset, donut radius); :meth:`radius` uses it to size stamps.
    """

    def __init__(self, *, fwhm_px: float, beta: float, g1: float = 0.0, g2: float = 0.0,
                 anomaly: str | None = None, params: dict | None = None):
        self.fwhm_px = float(fwhm_px)
        self.beta = float(beta)
        self.g1, self.g2 = float(g1), float(g2)
        self.anomaly = anomaly if anomaly in ("psf_elongation", "double_image", "defocus") else None
        self.params = dict(params or {})
        self.alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))  # Moffat scale, px
        p = self.params
        self.matrix = shear_matrix(g1, g2)
        self.g = math.hypot(g1, g2)
        self.extra_radius = 0.0
        if self.anomaly == "psf_elongation":
            # base.shear(g_n).shear(g_a): F(k) = F0(S_n S_a k).
            self.matrix = self.matrix @ shear_matrix(p["g1"], p["g2"])
            self.g = min(0.9, self.g + p["g"])
        elif self.anomaly == "double_image":
            self.extra_radius = p["offset_px"]
        elif self.anomaly == "defocus":
            self.extra_radius = p["donut_radius_px"]
        self._k: dict[int, np.ndarray] = {}
        self._peak: float | None = None

    # ---------------------------------------------------------------- Fourier grid
    def _grid(self, n: int) -> np.ndarray:
        k = (2.0 * math.pi / n) * np.arange(-n, n)
        kx, ky = k[None, :], k[:, None]
        m = self.matrix
        ux = m[0, 0] * kx + m[0, 1] * ky
        uy = m[1, 0] * kx + m[1, 1] * ky
        u = np.sqrt(ux * ux + uy * uy) * self.alpha
        tu, tf = _moffat_table(self.beta)
        f = np.interp(u, tu, tf, right=0.0).astype(np.complex128)
        f *= np.sinc(kx / (2 * math.pi)) * np.sinc(ky / (2 * math.pi))
        p = self.params
        if self.anomaly == "double_image":
            r, d = p["flux_ratio"], p["offset_px"]
            ang = math.radians(p["angle_deg"])
            dx, dy = d * math.cos(ang), d * math.sin(ang)
            w1, w2 = 1.0 / (1.0 + r), r / (1.0 + r)
            f *= w1 * np.exp(1j * w2 * (kx * dx + ky * dy)) + w2 * np.exp(-1j * w1 * (kx * dx + ky * dy))
        elif self.anomaly == "defocus":
            sd = shear_matrix(*_g12(p["donut_g"], p["astig_angle_deg"]))
            vx = sd[0, 0] * kx + sd[0, 1] * ky
            vy = sd[1, 0] * kx + sd[1, 1] * ky
            x = np.sqrt(vx * vx + vy * vy) * p["donut_radius_px"]
            eps = OBSCURATION
            f *= (_jinc(x) - eps**2 * _jinc(eps * x)) / (1.0 - eps**2)
        return f

    def kimage(self, n: int) -> np.ndarray:
        """FT of PSF x pixel on the (2n, 2n) grid k = 2 pi m / n, m = -n..n-1 ([ky, kx]), complex128.

        The grid of a smaller stamp is every (N/n)-th point of a larger one (same k range, coarser
        step), so only the largest grid asked for is computed (see :meth:`prepare`)."""
        if n not in self._k:
            bigger = [m for m in self._k if m > n and m % n == 0]
            if bigger:
                m = min(bigger)
                r = m // n
                self._k[n] = np.ascontiguousarray(self._k[m][::r, ::r])
            else:
                self._k[n] = self._grid(n)
        return self._k[n]

    def prepare(self, n_max: int) -> None:
        """Compute the Fourier grid of the largest stamp ``n_max`` once."""
        if not any(m >= n_max and m % n_max == 0 for m in self._k):
            self.kimage(n_max)

    # ---------------------------------------------------------------- real space
    def image(self, n: int = 64) -> np.ndarray:
        """PSF x pixel sampled on an n x n stamp centred on pixel n//2 (sums to ~1)."""
        k = self.kimage(n)
        half = n // 2 + 1
        cols = np.concatenate([np.arange(0, half), np.arange(n, n + half)])
        big = k[:, cols]
        g = big[:n, :half] + big[n:, :half] + big[:n, half:] + big[n:, half:]
        return np.fft.fftshift(scipy.fft.irfft2(g, s=(n, n)))

    @property
    def peak_fraction(self) -> float:
        """Fraction of a centred star's flux in its brightest pixel."""
        if self._peak is None:
            self._peak = float(self.image(64).max())
        return self._peak

    def radius(self, flux: np.ndarray | float, threshold: float) -> np.ndarray:
        """Radius (px) beyond which ``flux`` x the PSF surface brightness is below ``threshold`` e-/px.

        Uses the Moffat envelope stretched by the shear, plus ``extra_radius``.
        """
        flux = np.asarray(flux, dtype=np.float64)
        a_major = self.alpha * (1.0 + self.g) / math.sqrt(max(1e-6, 1.0 - self.g**2))
        central = flux * (self.beta - 1.0) / (math.pi * self.alpha**2)
        c = np.maximum(central / threshold, 1.0)
        return a_major * np.sqrt(np.maximum(c ** (1.0 / self.beta) - 1.0, 0.0)) + self.extra_radius

    # ---------------------------------------------------------------- GalSim reference
    @property
    def profile(self) -> galsim.GSObject:
        """The same PSF (without the pixel) as a GalSim object."""
        base = galsim.Moffat(beta=self.beta, fwhm=self.fwhm_px, gsparams=_GSPARAMS)
        if self.g1 or self.g2:
            base = base.shear(g1=self.g1, g2=self.g2)
        p = self.params
        if self.anomaly == "psf_elongation":
            return base.shear(g1=p["g1"], g2=p["g2"])
        if self.anomaly == "double_image":
            r, d = p["flux_ratio"], p["offset_px"]
            ang = math.radians(p["angle_deg"])
            dx, dy = d * math.cos(ang), d * math.sin(ang)
            w1, w2 = 1.0 / (1.0 + r), r / (1.0 + r)
            return galsim.Add([base.withFlux(w1).shift(-w2 * dx, -w2 * dy),
                               base.withFlux(w2).shift(w1 * dx, w1 * dy)])
        if self.anomaly == "defocus":
            donut = annulus(p["donut_radius_px"])
            if p["donut_g"] > 0:
                donut = donut.shear(g=p["donut_g"], beta=math.radians(p["astig_angle_deg"]) * galsim.radians)
            return galsim.Convolve(base, donut, gsparams=_GSPARAMS)
        return base


def _g12(g: float, angle_deg: float) -> tuple[float, float]:
    a = 2.0 * math.radians(angle_deg)
    return g * math.cos(a), g * math.sin(a)


def _jinc(x: np.ndarray) -> np.ndarray:
    """2 J1(x) / x, the FT of a unit-flux disk of radius 1 at |k| = x (1 at x = 0)."""
    out = np.ones_like(x)
    nz = x > 1e-8
    out[nz] = 2.0 * j1(x[nz]) / x[nz]
    return out


def build_psf(cond: Conditions, anomaly: str | None, params: dict, g1: float, g2: float) -> PSFModel:
    """The PSF of one CCD: the exposure's Moffat with normal shear (g1, g2), modified by a PSF
    anomaly (``params`` from :func:`obsqc.sim.anomalies.draw_anomaly`; background anomalies and
    normal exposures leave it alone)."""
    return PSFModel(fwhm_px=cond.psf_fwhm_px, beta=cond.psf_beta, g1=g1, g2=g2, anomaly=anomaly,
                    params=params)


def line_spread(cond: Conditions, defocus_diameter_px: float, step: float = 0.25,
                half_width: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Cross-track profile of a trail: the round Moffat (x pixel) convolved with an annulus of
    diameter ``defocus_diameter_px`` (a satellite at finite range is out of focus: it blurs
    into the pupil image, angular diameter D / range), projected on one axis (GalSim).

    Returns (d, lsf): distances in px and the fraction of the trail's charge per px of
    distance; ``lsf`` integrates to 1 over d.
    """
    prof = galsim.Moffat(beta=cond.psf_beta, fwhm=cond.psf_fwhm_px, gsparams=_GSPARAMS)
    if defocus_diameter_px > 0.05:
        prof = galsim.Convolve(prof, annulus(0.5 * defocus_diameter_px), gsparams=_GSPARAMS)
    prof = galsim.Convolve(prof, galsim.Pixel(1.0), gsparams=_GSPARAMS)
    n = int(2 * half_width / step)
    im = prof.drawImage(nx=n, ny=n, scale=step, method="no_pixel")
    lsf = im.array.sum(axis=0)
    lsf /= lsf.sum() * step  # per px of distance
    d = (np.arange(n) - 0.5 * (n - 1)) * step
    return d, lsf
