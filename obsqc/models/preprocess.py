r"""Pixel scalings of the learned scorers: asinh (Lupton) for galaxy cutouts, peak for source stamps.

Pure numpy and astropy (never torch): the service imports this module to prepare what it scores.

**Galaxy cutouts** (Storey-Fisher et al. 2021, papers/003 §2): "We convert the flux values to RGB
values using the method of Lupton et al. 2004, which rescales the data using the inverse
hyperbolic sine function (asinh). We use a stretch value of 0.5 and a softening parameter of 15
... and we then normalize these image by image to between 0 and 1." With the astropy stretch
(:class:`astropy.visualization.LuptonAsinhStretch`, frac = 0.1) and the colour-preserving mapping
of :class:`astropy.visualization.lupton_rgb.RGBImageMappingLupton` (the machinery behind
``make_lupton_rgb``, which the paper's code called with ``Q=15, stretch=0.5, minimum=0``):

.. math::

    I = \frac{1}{C} \sum_c x_c, \qquad
    f(I) = \operatorname{asinh}\left(\frac{Q I}{\mathrm{stretch}}\right)
           \frac{0.1}{\operatorname{asinh}(0.1 Q)}, \qquad
    X_c = \max\left(x_c \frac{f(I)}{I}, 0\right) \ (0 \text{ where } I \le 0),

then, where :math:`\max_c X_c > 1`, every channel is divided by :math:`\max_c X_c` (the
saturation rule of Lupton et al. that keeps the colour), and finally each image (all its channels
together, so colours survive) is mapped to [0, 1] by ``(X - min) / (max - min)`` (the paper's
``norm0to1``). One band (C = 1) is the same formula with ``I = x``: ``X = min(f(max(x, 0)), 1)``.
Unlike the paper's pipeline the intermediate values are not rounded to 8 bits.

**obsqc leaves out the per-image normalisation by default** (``per_image=False``: the fixed map
``X`` above, in [0, 1) for any real flux; ``per_image=True`` is the paper's). Evidence: with it, the
WGAN scores of our first default model ranked injected anomalies below chance (ROC AUC 0.41, cosmic
rays 0.11; BENCHMARKS.md, "Galaxy anomalies"): a cosmic ray or a second nucleus raises an image's
brightest pixel, the normalisation dims everything else, and the residual shrinks; and the noise of a
faint galaxy is stretched to fill the range. With a fixed scale, every cutout's sky noise sits at the
same level (all data are first rescaled to REFERENCE_NOISE) and a pixel's value does not depend on
the others; the same model trained on it ranked them at 0.71 with the paper's own L1 score (1,500
steps, 3,000 cutouts at 5%), and the flux can be recovered exactly (:func:`asinh_unscale`) to score
residuals in noise units (:mod:`obsqc.models.noise_scores`).

**Flux unit.** ``stretch`` and ``Q`` are in the flux unit of the data: the asinh is linear below
``stretch / Q`` = 0.033 and logarithmic above. In the paper's HSC coadds (zeropoint 27) that knee
sits near the pixel noise: the i-band 5-sigma point-source depth of 26.2 mag in a 2" aperture
(papers/003 §2.1) is a flux of 2.09, i.e. sigma = 0.42 over the 111 pixels (0.168") of the
aperture, or :data:`REFERENCE_NOISE` = 0.04 per pixel. Our exposures have another zeropoint, pixel
and depth, so callers pass the pixel noise ``sigma`` and the data are rescaled to have exactly
that noise, ``x * REFERENCE_NOISE / sigma``: the stretch then acts at the same significance as in
the paper (knee at ~0.8 sigma) whatever the exposure. For C = 3 one factor is used per image
(the rms of the per-band noises), so the bands must share one calibrated flux unit.

**Source stamps** for the autoencoder (Alonso, Zhang & Li, papers/000 §4.2, 64x64 stamps): the
paper leaves their scaling open. :func:`normalize_stamps` divides each background-subtracted
stamp by its source's peak (the value of its centre pixel) and clips to [0, 1]. Why: by §3.1
criterion 2 the peak is the brightest pixel of the 64x64 window, so 1 is the stamp's maximum and
every stamp shows the *shape* of its source independent of its flux; the linear scale keeps the
core, where the source anomalies of §2.1 act (elongation, double images, defocus donuts), as it
is. An asinh scale would lift the sky noise of the many faint sources to the level of the core,
and a flux (sum) normalisation would make the scale depend on the stamp's noise and neighbours.
Negative noise is clipped at 0 so that the range suits a sigmoid output.
"""

from __future__ import annotations

import numpy as np
from astropy.visualization import LuptonAsinhStretch, ManualInterval
from astropy.visualization.lupton_rgb import RGBImageMappingLupton
from numba import njit

STRETCH: float = 0.5
"""Linear stretch of the Lupton asinh scaling (papers/003 §2: 0.5), flux units of REFERENCE_NOISE."""

SOFTENING_Q: float = 15.0
"""Asinh softening parameter Q (papers/003 §2: 15), dimensionless."""

REFERENCE_NOISE: float = 0.04
"""Pixel noise of the paper's HSC wide coadds in their flux unit (zeropoint 27), derived in the
module docstring; data given with ``sigma`` are rescaled to this noise before the stretch."""

_CHUNK_PIXELS: int = 1 << 22
"""Images are scaled in chunks of at most this many pixels (bounds temporary memory)."""

_LUPTON_FRAC: float = 0.1
"""``frac`` of astropy's LuptonAsinhStretch: the slope is set by the gradient at frac * stretch."""


@njit(cache=True, nogil=True)
def _asinh_argument(x, factor, soften, out):  # pragma: no cover - compiled
    """One band: ``w = z + sqrt(z^2 + 1)`` with ``z = soften * factor[i] * max(x, 0)`` for each image
    i of x (n, P), so that ``log(w) = asinh(z)``; non-finite x count as 0 and z is capped at 1e18
    (z^2 stays finite in float32). A branch-free loop the compiler vectorises; numpy takes the log."""
    n, m = x.shape
    for i in range(n):
        k = np.float32(soften * factor[i])
        for j in range(m):
            v = x[i, j]
            z = k * v if (v > 0) & (v < np.float32(np.inf)) else np.float32(0.0)  # NaN, +-inf -> 0
            z = min(z, np.float32(1e18))
            out[i, j] = z + np.sqrt(z * z + np.float32(1.0))


@njit(cache=True, nogil=True)
def _affine_clip(y, slope, lo, inv_span):  # pragma: no cover - compiled
    """In place on y (n, P): ``clip((min(slope y, 1) - lo[i]) * inv_span[i], 0, 1)``."""
    n, m = y.shape
    for i in range(n):
        a = lo[i]
        b = inv_span[i]
        for j in range(m):
            v = min(slope * y[i, j], np.float32(1.0))
            y[i, j] = min(max((v - a) * b, np.float32(0.0)), np.float32(1.0))


def lupton_constants(stretch: float, Q: float) -> tuple[float, float]:
    """(soften, slope) of :class:`astropy.visualization.LuptonAsinhStretch`:
    ``f(x) = asinh(soften x) * slope`` with ``soften = Q / stretch`` and ``slope = 0.1 / asinh(0.1 Q)``."""
    if not (stretch > 0 and Q > 0):
        raise ValueError(f"stretch and Q must be positive, got stretch={stretch}, Q={Q}")
    return float(Q) / float(stretch), _LUPTON_FRAC / float(np.arcsinh(_LUPTON_FRAC * float(Q)))


def _finish_asinh(w: np.ndarray, slope: float, per_image: bool = True) -> np.ndarray:
    """In place on w (n, P) from :func:`_asinh_argument`: ``y = min(slope * log(w), 1)`` (one band
    of the Lupton mapping), then per image ``(y - min) / (max - min)`` (min and max taken on w, as
    y is monotonic in w); without ``per_image`` the fixed map ``y`` itself (lo 0, span 1)."""
    n = w.shape[0]
    if per_image:
        wmin = w.min(axis=1).astype(np.float64)
        wmax = w.max(axis=1).astype(np.float64)
    np.log(w, out=w)
    if not per_image:
        _affine_clip(w, np.float32(slope), np.zeros(n, np.float32), np.ones(n, np.float32))
        return w
    lo = np.minimum(slope * np.log(wmin), 1.0)
    hi = np.minimum(slope * np.log(wmax), 1.0)
    inv_span = np.where(hi > lo, 1.0 / np.where(hi > lo, hi - lo, 1.0), 0.0)  # a flat image becomes 0
    _affine_clip(w, np.float32(slope), lo.astype(np.float32), inv_span.astype(np.float32))
    return w


def _per_image_factor(sigma, n: int, c: int) -> np.ndarray:
    """REFERENCE_NOISE / sigma as an (n,) float64 array; sigma scalar, (n,) or (n, c)."""
    s = np.asarray(sigma, dtype=np.float64)
    if s.ndim == 0:
        s = np.full(n, float(s))
    elif s.shape == (n, c):
        s = np.sqrt(np.mean(s * s, axis=1))
    elif s.shape != (n,):
        raise ValueError(f"sigma must be a scalar, ({n},) or ({n}, {c}); got shape {s.shape}")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise ValueError("sigma must be finite and positive")
    return REFERENCE_NOISE / s


def _one_band(x: np.ndarray, factor: np.ndarray, stretch: float, Q: float, per_image: bool = True) -> np.ndarray:
    """Scaled and normalised (n, 1, S, S) chunk: :func:`_asinh_argument` then :func:`_finish_asinh`."""
    soften, slope = lupton_constants(stretch, Q)
    n = x.shape[0]
    flat = np.ascontiguousarray(x.reshape(n, -1), dtype=np.float32)
    w = np.empty(flat.shape, np.float32)
    _asinh_argument(flat, np.ascontiguousarray(factor, dtype=np.float64), soften, w)
    return _finish_asinh(w, slope, per_image).reshape(x.shape)


def _three_bands(x: np.ndarray, factor: np.ndarray, stretch: float, Q: float, per_image: bool = True) -> np.ndarray:
    """Scaled and normalised (n, 3, S, S) chunk with astropy's colour-preserving Lupton mapping."""
    x = np.array(x, dtype=np.float32)
    x[~np.isfinite(x)] = 0.0
    x *= factor.astype(np.float32)[:, None, None, None]
    mapping = RGBImageMappingLupton(interval=ManualInterval(vmin=0.0, vmax=np.inf),
                                    stretch=LuptonAsinhStretch(stretch=stretch, Q=Q))
    with np.errstate(invalid="ignore", divide="ignore"):
        rgb = mapping.apply_mappings(x[:, 0], x[:, 1], x[:, 2])  # (3, n, S, S)
    y = np.ascontiguousarray(np.moveaxis(np.asarray(rgb, dtype=np.float32), 0, 1))
    if not per_image:
        return y
    flat = y.reshape(len(y), -1)
    lo = flat.min(axis=1)
    span = flat.max(axis=1) - lo
    span = np.where(span > 0, span, np.inf).astype(np.float32)  # a flat image becomes 0
    y -= lo[:, None, None, None]
    y /= span[:, None, None, None]
    return y


def asinh_scale(images: np.ndarray, *, stretch: float = STRETCH, Q: float = SOFTENING_Q,
                sigma=None, per_image: bool = False) -> np.ndarray:
    """Lupton et al. (2004) asinh scaling as in papers/003 §2; with ``per_image``, the paper's per-image
    [0, 1] normalisation after it (module docstring: obsqc's default is the fixed scale).

    ``images``: background-subtracted flux, (N, C, S, S) or (C, S, S), C = 1 or 3 (any channel
    order: the mapping treats the bands symmetrically). Non-finite pixels count as 0 (background).
    ``sigma``: the pixel noise of the data (scalar, (N,) or (N, C)); when given, the data are first
    rescaled to :data:`REFERENCE_NOISE` (module docstring). Without it the data must already be in
    that unit. Returns float32 of the same shape in [0, 1]; with ``per_image`` each image spans [0, 1]
    (a flat image is 0).

    Three bands go through astropy's ``RGBImageMappingLupton``; one band, the hot path of the
    service, through a fused kernel computing the same ``min(asinh(soften x) slope, 1)`` (checked
    against astropy's ``LuptonAsinhStretch`` in the tests).
    """
    x = np.asarray(images)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, S, S) or (C, S, S) with C = 1 or 3, got shape {np.shape(images)}")
    lupton_constants(stretch, Q)  # validates
    n, c = x.shape[:2]
    factor = np.ones(n) if sigma is None else _per_image_factor(sigma, n, c)
    out = np.empty(x.shape, dtype=np.float32)
    chunk = max(1, _CHUNK_PIXELS // max(1, int(np.prod(x.shape[1:]))))
    scale = _one_band if c == 1 else _three_bands
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        out[a:b] = scale(x[a:b], factor[a:b], float(stretch), float(Q), per_image)
    return out[0] if single else out


def normalize_stamps(stamps: np.ndarray, peak: np.ndarray) -> np.ndarray:
    """Source stamps divided by their peak and clipped to [0, 1] (module docstring, papers/000 §4.2).

    ``stamps`` (N, S, S) background-subtracted, ``peak`` (N,) the background-subtracted value of
    each source's centre pixel (``SOURCE_DTYPE['peak']``). A non-positive or non-finite peak gives
    an all-zero stamp; non-finite pixels become 0. Returns float32 (N, S, S).
    """
    s = np.asarray(stamps, dtype=np.float32)
    p = np.asarray(peak, dtype=np.float64)
    if s.ndim != 3 or p.shape != (s.shape[0],):
        raise ValueError(f"stamps must be (N, S, S) with peak (N,); got {s.shape} and {p.shape}")
    good = np.isfinite(p) & (p > 0)
    inv = np.where(good, 1.0 / np.where(good, p, 1.0), 0.0).astype(np.float32)
    out = s * inv[:, None, None]
    out[~np.isfinite(out)] = 0.0
    np.clip(out, 0.0, 1.0, out=out)
    return out


def asinh_unscale(scaled: np.ndarray, *, stretch: float = STRETCH, Q: float = SOFTENING_Q) -> np.ndarray:
    """Inverse of the one-band fixed map of :func:`asinh_scale` (``per_image=False``): flux in units of
    :data:`REFERENCE_NOISE`, ``x = sinh(y / slope) / soften`` (the module docstring's f inverted).

    Values at or above 1 (the Lupton saturation) are returned at the flux of 0.999; negative values
    as 0. float32 of the same shape.
    """
    soften, slope = lupton_constants(stretch, Q)
    y = np.clip(np.asarray(scaled, dtype=np.float64), 0.0, 0.999)
    return (np.sinh(y / slope) / soften).astype(np.float32)
