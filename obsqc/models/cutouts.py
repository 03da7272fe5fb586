"""Stamps and cutouts from one CCD: 64x64 source stamps for the autoencoder, galaxy cutouts for the WGAN.

Inputs are what :func:`obsqc.detectors.ccd.measure_ccd` produces: the raw CCD image
(``image[row, col]``, x = column, y = row, 0-based), its catalogue (``SOURCE_DTYPE``) and the six
background-polynomial coefficients (convention of :mod:`obsqc.detectors.background`). Pure numpy:
the service imports this module; nothing here imports torch.

**Source stamps** (Alonso, Zhang & Li, papers/000 §4.2-4.3, 64x64 stamps of "all its sources"):
the usable sources (``flags & EXCLUDE_FLAGS == 0``, as for the orientation statistics of §3.1),
brightest peak first, each centred on its peak pixel (§3.1 defines a source centre as that pixel)
at stamp index ``size // 2``; background subtracted and scaled as
:func:`~obsqc.models.preprocess.normalize_stamps` does (divided by the peak, clipped to [0, 1]),
in the same pass. Pixels beyond the CCD edge are 0 (the background level): the paper keeps every
source, and a stamp cut by the edge still shows its source.

Speed: one compiled pass gathers the windows and subtracts the background; the asinh then costs a
numpy log per pixel. On a simulated DECam CCD (2048x4096, 899 sources) cutting 165 galaxy cutouts
takes ~10-15 ms and 737 source stamps ~15-20 ms on one busy core: the windows are scattered over a
32 MB image, and gathering them is memory-bound (a plain copy of the same windows takes ~4 ms).

**Galaxy cutouts** (Storey-Fisher et al., papers/003 §2.2: extended objects, none with a saturated,
cosmic-ray or interpolated centre, none at the survey edge; 96x96 cutouts around each object):

* *unflagged*: no ``FLAG_EDGE | FLAG_SATURATED | FLAG_SHARP | FLAG_BAD_PIXELS`` (a saturated or
  masked pixel on the isophote, a cosmic-ray-sharp peak); with ``saturate`` also no raw pixel at or
  above it in the central ``CORE_HALF`` box (the catalogue may have been made without SATURATE);
* *bright enough to classify*: peak >= ``min_snr`` sigma (:data:`MIN_SNR`);
* *extended*: the second-moment size ``T = q_xx + q_yy`` of the catalogue is measured inside an
  isophote at ``t = max(0.02, 2 sigma / peak)`` of the peak, which shrinks T for faint sources. It
  is corrected to the full-profile value of a Gaussian, ``T_c = T / g(t)`` with
  ``g(t) = [1 - t (1 - ln t)] / (1 - t)`` (the truncated second moment of a 2-D Gaussian), which
  makes the stellar locus flat in brightness (on a simulated CCD: stars at T_c = 9.1-9.5 px^2
  from 2000 down to 30 sigma, 7.7-10.5 px^2 at 6-12 sigma, while T falls from 8.5 to 3.6 px^2); the locus ``T_psf`` is the densest
  cluster of ``T_c`` among this CCD's bright sources (:func:`stellar_locus`), and a galaxy needs
  ``T_c >= min_size_ratio * T_psf`` (:data:`MIN_SIZE_RATIO` = 1.5, clearly above the locus);
* *not thinner than the PSF*: a convolution adds the PSF's second moments in every direction, so
  a real object's minor-axis moment is at least the PSF's (``T_psf / 2``); tracks of cosmic rays
  that escaped ``FLAG_SHARP`` are far below (:data:`MIN_MINOR_RATIO`). On 8 simulated 1024x1024
  CCDs (656 sources) this selects 82: 74 within 2.5 px of a simulated galaxy, 6 big or blended
  galaxies whose centroid is further from the truth position, 2 stars blended with a galaxy;
* *centred*: the cutout's pixel ``size // 2`` (row and column) is the source's centroid rounded to
  the nearest pixel (no resampling, which would smooth the noise);
* *edge policy*: by default (``edge="skip"``) a source whose cutout would cross the CCD edge is
  left out, as the paper leaves out sources at the survey edge: a zero-padded border is an artefact
  the WGAN would learn or flag. ``edge="pad"`` keeps them, padded with the background level (0);
* asinh-scaled with the CCD's noise ``sigma`` (:func:`~obsqc.models.preprocess.asinh_scale`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from obsqc.detectors.config import MOMENT_FLOOR_SIGMA, MOMENT_THRESHOLD_FRACTION
from obsqc.detectors.sources import EXCLUDE_FLAGS, FLAG_TRUNCATED
from obsqc.models.preprocess import asinh_scale

STAMP_SIZE: int = 64
"""Side of the autoencoder's source stamps (papers/000 §4.2: 64x64), pixels."""

CUTOUT_SIZE: int = 96
"""Default side of a galaxy cutout (papers/003 §2.2: 96x96), pixels."""

MIN_SNR: float = 10.0
"""A galaxy cutout needs a peak at least this many noise sigma above background, in sigma."""

MIN_SIZE_RATIO: float = 1.5
"""A galaxy's corrected size T_c must be at least this times the stellar locus T_psf, dimensionless."""

LOCUS_MIN_SNR: float = 20.0
"""Sources brighter than this (peak, in sigma) define the stellar locus; fainter ones only when
fewer than ``LOCUS_MIN_SOURCES`` are, in sigma."""

LOCUS_MIN_SOURCES: int = 3
"""Fewest sources from which a stellar locus is estimated, count."""

LOCUS_HALF_WIDTH: float = 0.15
"""Half-width of the window in ln T_c that finds the stellar locus (+-16%), dimensionless."""

MIN_MINOR_RATIO: float = 0.5
"""A galaxy's corrected minor-axis moment must be at least this times the PSF's (T_psf / 2), dimensionless."""

CORE_HALF: int = 3
"""Half-side of the central box that must be below SATURATE in a galaxy cutout, pixels."""

GALAXY_EXCLUDE_FLAGS: int = EXCLUDE_FLAGS
"""Catalogue flags that keep a source out of the galaxy cutouts (edge, saturated, sharp, bad pixels)."""


@dataclass(frozen=True, slots=True)
class Stamps:
    """Autoencoder stamps: ``pixels`` float32 (N, S, S) in [0, 1]; ``rows`` int64 (N,) into ``sources``."""

    pixels: np.ndarray
    rows: np.ndarray


@dataclass(frozen=True, slots=True)
class Cutouts:
    """Galaxy cutouts: ``pixels`` float32 (N, 1, S, S) in [0, 1] (asinh-scaled); ``rows`` int64 (N,)
    into ``sources``; ``x``, ``y`` float64 (N,) the centroids (px, x = column); ``t_psf`` the stellar
    locus used (px^2, NaN when none could be estimated)."""

    pixels: np.ndarray
    rows: np.ndarray
    x: np.ndarray
    y: np.ndarray
    t_psf: float = float("nan")


# --------------------------------------------------------------------------- pixels


@njit(cache=True, nogil=True)
def _residual_kernel(image, coeffs, x0, y0, scale, lo, hi, out):  # pragma: no cover - compiled
    """out[b] = clip(scale[b] (image - B), lo, hi) on the window whose pixel (0, 0) is at column
    x0[b], row y0[b]; pixels beyond the image or non-finite are 0. B is the polynomial of
    :mod:`obsqc.detectors.background` (``u = 2 x / (nx - 1) - 1``, ``v = 2 y / (ny - 1) - 1``),
    evaluated per row as a + b u + c u^2 into a row buffer, so the inner loop is branch-free."""
    ny, nx = image.shape
    size = out.shape[1]
    du = 2.0 / (nx - 1) if nx > 1 else 0.0
    dv = 2.0 / (ny - 1) if ny > 1 else 0.0
    bg = np.empty(size, np.float32)
    flo = np.float32(lo)
    fhi = np.float32(hi)
    zero = np.float32(0.0)
    for k in range(out.shape[0]):
        s = np.float32(scale[k])
        xa = x0[k]
        ca = max(0, -xa)
        cb = min(size, nx - xa)
        for r in range(size):
            y = y0[k] + r
            if y < 0 or y >= ny or ca >= cb:
                out[k, r, :] = zero
                continue
            v = y * dv - 1.0 if ny > 1 else 0.0
            a = coeffs[0] + coeffs[2] * v + coeffs[5] * v * v
            b = coeffs[1] + coeffs[4] * v
            for c in range(ca, cb):
                u = (xa + c) * du - 1.0 if nx > 1 else 0.0
                bg[c] = a + u * (b + coeffs[3] * u)
            out[k, r, :ca] = zero
            out[k, r, cb:] = zero
            row = image[y, xa + ca:xa + cb]
            dst = out[k, r, ca:cb]
            ref = bg[ca:cb]
            for c in range(cb - ca):
                val = min(max((row[c] - ref[c]) * s, flo), fhi)
                dst[c] = val if val - val == zero else zero  # inf - inf and NaN fail: non-finite -> 0


def _residual_windows(image: np.ndarray, coeffs: np.ndarray, cx: np.ndarray, cy: np.ndarray, size: int,
                      scale: np.ndarray | None = None, lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
    """(N, size, size) float32 background-subtracted windows with pixel ``size // 2`` (row and
    column) at column cx, row cy, times ``scale`` (per window) and clipped to [lo, hi]; pixels
    beyond the image and non-finite ones are 0."""
    h = size // 2
    x0 = np.ascontiguousarray(cx, dtype=np.int64) - h
    y0 = np.ascontiguousarray(cy, dtype=np.int64) - h
    scale = np.ones(len(x0)) if scale is None else np.ascontiguousarray(scale, dtype=np.float64)
    out = np.empty((len(x0), size, size), dtype=np.float32)
    _residual_kernel(image, coeffs, x0, y0, scale, float(lo), float(hi), out)
    return out


def _check(image: np.ndarray, sources: np.ndarray, background_coeffs) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"cutouts need a 2-D CCD image, got shape {image.shape}")
    if image.dtype not in (np.float32, np.float64):
        image = image.astype(np.float32)
    coeffs = np.asarray(background_coeffs, dtype=np.float64)
    if coeffs.shape != (6,):
        raise ValueError(f"background_coeffs must have 6 terms, got shape {coeffs.shape}")
    for name in ("x", "y", "peak_x", "peak_y", "peak", "flags"):
        if sources.dtype.names is None or name not in sources.dtype.names:
            raise ValueError(f"sources must be a SOURCE_DTYPE catalogue; field {name!r} is missing")
    return image, coeffs


# --------------------------------------------------------------------------- source stamps


def source_stamps(image: np.ndarray, sources: np.ndarray, background_coeffs, *, size: int = STAMP_SIZE,
                  max_n: int | None = None, exclude_flags: int = EXCLUDE_FLAGS) -> Stamps:
    """64x64 autoencoder stamps of the usable sources of one CCD (papers/000 §4.2; module docstring).

    Sources with ``flags & exclude_flags`` are left out; the rest are taken brightest peak first,
    at most ``max_n``. No source is an empty result, not an error.
    """
    image, coeffs = _check(image, sources, background_coeffs)
    keep = np.flatnonzero((sources["flags"] & exclude_flags) == 0)
    keep = keep[np.argsort(-sources["peak"][keep], kind="stable")]
    if max_n is not None:
        keep = keep[: max(0, int(max_n))]
    if len(keep) == 0:
        return Stamps(np.zeros((0, size, size), np.float32), np.zeros(0, np.int64))
    peak = np.asarray(sources["peak"][keep], dtype=np.float64)
    good = np.isfinite(peak) & (peak > 0)
    inv = np.where(good, 1.0 / np.where(good, peak, 1.0), 0.0)  # as normalize_stamps, in one pass
    pixels = _residual_windows(image, coeffs, sources["peak_x"][keep], sources["peak_y"][keep], size,
                               scale=inv, lo=0.0, hi=1.0)
    return Stamps(pixels, keep.astype(np.int64))


# --------------------------------------------------------------------------- extendedness


def _isophote_correction(sources: np.ndarray, sigma, threshold_fraction: float, floor_sigma: float) -> np.ndarray:
    """g(t) of the module docstring for each source (NaN where the isophote is undefined)."""
    peak = np.asarray(sources["peak"], dtype=np.float64)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), peak.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.maximum(threshold_fraction, floor_sigma * sig / peak)
        t = np.where((peak > 0) & (t < 1.0), t, np.nan)
        return (1.0 - t * (1.0 - np.log(t))) / (1.0 - t)


def corrected_size(sources: np.ndarray, sigma, *, threshold_fraction: float = MOMENT_THRESHOLD_FRACTION,
                   floor_sigma: float = MOMENT_FLOOR_SIGMA, minor: bool = False) -> np.ndarray:
    """Second-moment size ``T_c = (q_xx + q_yy) / g(t)`` corrected for the isophote (module docstring).

    ``t = max(threshold_fraction, floor_sigma * sigma / peak)`` is the isophote of
    :func:`obsqc.detectors.sources.find_sources` relative to the peak, and
    ``g(t) = [1 - t (1 - ln t)] / (1 - t)`` the fraction of a Gaussian's ``<r^2>`` inside it.
    With ``minor=True``, the smaller eigenvalue of the moment matrix, corrected the same way
    (``T_c / 2`` for a round source). ``sigma``: the CCD's noise (scalar or per source).
    px^2; NaN where undefined.
    """
    g = _isophote_correction(sources, sigma, threshold_fraction, floor_sigma)
    q_xx, q_yy, q_xy = (np.asarray(sources[k], dtype=np.float64) for k in ("q_xx", "q_yy", "q_xy"))
    size = q_xx + q_yy
    if minor:
        size = 0.5 * size - np.sqrt(0.25 * (q_xx - q_yy) ** 2 + q_xy**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return size / g


def stellar_locus(sources: np.ndarray, sigma, *, min_snr: float = LOCUS_MIN_SNR) -> float:
    """T_psf: the corrected size of point sources on this CCD (or on several, concatenated).

    Among unflagged sources (no ``EXCLUDE_FLAGS``, not truncated) with peak >= ``min_snr`` sigma
    (falling back to 10 then 5 sigma when fewer than ``LOCUS_MIN_SOURCES`` qualify), the densest
    cluster of T_c: the window of +-``LOCUS_HALF_WIDTH`` in log T_c holding most sources (ties go to
    the smaller size), and its median. Stars share one size while galaxies spread above it, and
    unflagged cosmic rays scatter below. Without stars it settles on the commonest compact galaxies,
    which only makes the extendedness cut stricter. NaN when too few sources qualify.
    """
    tc = corrected_size(sources, sigma)
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), tc.shape)
    clean = ((sources["flags"] & (EXCLUDE_FLAGS | FLAG_TRUNCATED)) == 0) & np.isfinite(tc) & (tc > 0)
    for snr in (min_snr, 10.0, 5.0):
        cand = np.sort(np.log(tc[clean & (sources["peak"] >= snr * sig)]))
        if len(cand) >= LOCUS_MIN_SOURCES:
            hi = np.searchsorted(cand, cand + 2 * LOCUS_HALF_WIDTH, side="right")
            best = int(np.argmax(hi - np.arange(len(cand))))  # first (smallest) densest window
            return float(np.exp(np.median(cand[best:hi[best]])))
    return float("nan")


def galaxy_mask(sources: np.ndarray, sigma: float, *, t_psf: float, min_snr: float = MIN_SNR,
                min_size_ratio: float = MIN_SIZE_RATIO, min_minor_ratio: float = MIN_MINOR_RATIO,
                exclude_flags: int = GALAXY_EXCLUDE_FLAGS) -> np.ndarray:
    """Which sources are galaxies fit for a cutout: unflagged, peak >= ``min_snr`` sigma,
    ``T_c >= min_size_ratio * t_psf`` and a minor-axis moment of at least
    ``min_minor_ratio * t_psf / 2``: a convolution adds the PSF's second moments in every direction,
    so anything thinner than the PSF (a cosmic-ray track, a hot column) is not a galaxy.
    All False when ``t_psf`` is NaN."""
    if not np.isfinite(t_psf):
        return np.zeros(len(sources), dtype=bool)
    tc = corrected_size(sources, sigma)
    minor = corrected_size(sources, sigma, minor=True)
    ok = ((sources["flags"] & exclude_flags) == 0) & (sources["peak"] >= min_snr * sigma)
    ok &= np.isfinite(tc) & (tc >= min_size_ratio * t_psf) & (minor >= min_minor_ratio * 0.5 * t_psf)
    return np.asarray(ok, dtype=bool)


def _core_below(image: np.ndarray, px: np.ndarray, py: np.ndarray, saturate: float) -> np.ndarray:
    """True where no raw pixel of the (2 CORE_HALF + 1)^2 box around (px, py) reaches ``saturate``."""
    ny, nx = image.shape
    offs = np.arange(-CORE_HALF, CORE_HALF + 1)
    ys = np.clip(np.asarray(py, np.int64)[:, None, None] + offs[None, :, None], 0, ny - 1)
    xs = np.clip(np.asarray(px, np.int64)[:, None, None] + offs[None, None, :], 0, nx - 1)
    with np.errstate(invalid="ignore"):
        return ~np.any(image[ys, xs] >= saturate, axis=(1, 2))


# --------------------------------------------------------------------------- galaxy cutouts


def galaxy_cutouts(image: np.ndarray, sources: np.ndarray, background_coeffs, sigma: float, *,
                   size: int = CUTOUT_SIZE, saturate: float | None = None, max_n: int | None = None,
                   psf_size: float | None = None, min_snr: float = MIN_SNR,
                   min_size_ratio: float = MIN_SIZE_RATIO, min_minor_ratio: float = MIN_MINOR_RATIO,
                   edge: str = "skip") -> Cutouts:
    """Asinh-scaled cutouts of the extended, unsaturated sources of one CCD (papers/003 §2; module docstring).

    ``sigma``: the CCD's pixel noise (``BackgroundModel.sigma``, data units). ``psf_size``: the
    stellar locus T_psf (px^2) when known from elsewhere (e.g. all CCDs of the exposure);
    otherwise :func:`stellar_locus` of this catalogue. ``edge``: ``"skip"`` or ``"pad"``.
    At most ``max_n`` cutouts, highest flux first. No galaxy is an empty result, not an error.
    """
    image, coeffs = _check(image, sources, background_coeffs)
    if edge not in ("skip", "pad"):
        raise ValueError(f"edge must be 'skip' or 'pad', not {edge!r}")
    sigma = float(sigma)
    empty = Cutouts(np.zeros((0, 1, size, size), np.float32), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    if not (np.isfinite(sigma) and sigma > 0) or len(sources) == 0:
        return empty
    t_psf = float(psf_size) if psf_size is not None else stellar_locus(sources, sigma)
    cx = np.floor(sources["x"] + 0.5).astype(np.int64)
    cy = np.floor(sources["y"] + 0.5).astype(np.int64)
    ok = galaxy_mask(sources, sigma, t_psf=t_psf, min_snr=min_snr, min_size_ratio=min_size_ratio,
                     min_minor_ratio=min_minor_ratio)
    if edge == "skip":
        ny, nx = image.shape
        h = size // 2
        ok &= (cx - h >= 0) & (cy - h >= 0) & (cx - h + size <= nx) & (cy - h + size <= ny)
    rows = np.flatnonzero(ok)
    if saturate is not None and len(rows):
        rows = rows[_core_below(image, sources["peak_x"][rows], sources["peak_y"][rows], float(saturate))]
    rows = rows[np.argsort(-sources["flux"][rows], kind="stable")] if "flux" in sources.dtype.names else rows
    if max_n is not None:
        rows = rows[: max(0, int(max_n))]
    if len(rows) == 0:
        return Cutouts(empty.pixels, empty.rows, empty.x, empty.y, t_psf)
    win = _residual_windows(image, coeffs, cx[rows], cy[rows], size)
    pixels = asinh_scale(win[:, None], sigma=sigma)  # one band: the fused kernel path
    return Cutouts(pixels, rows.astype(np.int64), np.asarray(sources["x"][rows], np.float64),
                   np.asarray(sources["y"][rows], np.float64), t_psf)
