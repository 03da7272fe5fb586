r"""The generator residual in noise units: what s_gen measures in obsqc (numpy only, never torch).

Storey-Fisher et al. (2021, papers/003 §3.2, eq. 5) score a cutout by the L1 distance between the
scaled image and its reconstruction, :math:`s_{gen} = \sum_p |x_p - G(z)_p|`, on images each
normalised to [0, 1]. On our cutouts that ranked injected anomalies *below chance* (BENCHMARKS.md,
"Galaxy anomalies", first run: ROC AUC 0.41): an L1 sum over 4,096 pixels is mostly the sky noise,
which the generator cannot reproduce, so the score follows how loud the noise is after the
normalisation; and a compact bright anomaly (a cosmic ray, a second nucleus) *raises* the brightest
pixel, dims everything else and lowers the score (cosmic rays: AUC 0.11).

So obsqc measures the same residual in the units of the data's noise. The scaled images are mapped
back to flux in units of :data:`~obsqc.models.preprocess.REFERENCE_NOISE` (the asinh scale is
fixed, not normalised per image: :func:`~obsqc.models.preprocess.asinh_unscale`), and

.. math::

    s_{gen} = \frac{1}{P} \sum_p \frac{(x_p - g_p)^2}{\sigma^2 + (\epsilon\, g_p)^2},

a reduced chi-square: :math:`x` the cutout, :math:`g = G(z)` the refined reconstruction, both in
flux; :math:`\sigma` = REFERENCE_NOISE the pixel noise (every cutout is rescaled to it);
:math:`\epsilon` (:data:`MODEL_ERROR`) a fractional model error, so that the generator's imperfect
rendering of a bright core counts as it would for a normal galaxy, not as hundreds of sigma. A pure
noise residual gives about 1 (less where the scale clipped negative noise to 0); a cosmic ray of 40
sigma in the sky adds 1,600 / P per pixel it touches. For three bands the one-band inverse is applied
per channel, an approximation of the colour-preserving map (the shipped model has one band).
"""

from __future__ import annotations

import numpy as np

from obsqc.models.preprocess import REFERENCE_NOISE, SOFTENING_Q, STRETCH, asinh_unscale

MODEL_ERROR: float = 0.4
"""Fractional model error epsilon of the generator's reconstruction (dimensionless): the residual of a
pixel is weighed by ``sqrt(sigma^2 + (MODEL_ERROR * g)^2)``. Chosen on simulated normal and anomalous
cutouts (BENCHMARKS.md, "Galaxy anomalies"): 0.1-0.4 rank alike, larger values lose the faint kinds."""

_CHUNK: int = 256
"""Images per chunk (bounds the float64 temporaries)."""


def noise_chi2(images: np.ndarray, reconstructions: np.ndarray, *, model_error: float = MODEL_ERROR,
               stretch: float = STRETCH, Q: float = SOFTENING_Q) -> np.ndarray:
    """Reduced chi-square of each cutout against its reconstruction, in noise units (module docstring).

    ``images`` and ``reconstructions``: (N, C, S, S) on the fixed asinh scale (``per_image=False``)
    of :func:`~obsqc.models.preprocess.asinh_scale`. Returns float64 (N,); N = 0 gives an empty array.
    """
    x = np.asarray(images)
    g = np.asarray(reconstructions)
    if x.shape != g.shape or x.ndim != 4:
        raise ValueError(f"images and reconstructions must both be (N, C, S, S); got {x.shape} and {g.shape}")
    if not model_error >= 0:
        raise ValueError(f"model_error must be >= 0, got {model_error}")
    n = len(x)
    out = np.empty(n, np.float64)
    var0 = REFERENCE_NOISE ** 2
    for a in range(0, n, _CHUNK):
        b = min(n, a + _CHUNK)
        fx = asinh_unscale(x[a:b], stretch=stretch, Q=Q).astype(np.float64)
        fg = asinh_unscale(g[a:b], stretch=stretch, Q=Q).astype(np.float64)
        chi = (fx - fg) ** 2 / (var0 + (model_error * fg) ** 2)
        out[a:b] = chi.reshape(b - a, -1).mean(axis=1)
    return out


def generator_score(images: np.ndarray, reconstructions: np.ndarray, *, model_error: float = MODEL_ERROR) -> np.ndarray:
    r"""obsqc's s_gen: :math:`\ln \chi^2_\nu` of :func:`noise_chi2` (float64 (N,)).

    The logarithm because the reduced chi-square of normal cutouts has a long upper tail (its standard
    deviation was 22 times its mean on simulated cutouts): in sigma units of mean and std (003 §4.1)
    the tail would hide everything else, while ln chi^2 is close to normal. The ranking is the same.
    """
    return np.log(np.maximum(noise_chi2(images, reconstructions, model_error=model_error), 1e-12))


def anomaly_score(s_gen: np.ndarray, s_disc: np.ndarray, *, lam: float = 0.3,
                  reference: dict[str, tuple[float, float]] | None = None) -> np.ndarray:
    r"""obsqc's s_anom: :math:`(1 - \lambda)\, \hat s_{gen} + \lambda\, \hat s_{disc}` (003 §3.2, eq. 6's weights).

    The paper adds the raw scores because its s_gen and s_disc are both L1 sums of [0, 1] images and
    features. Ours are in other units (a log chi-square and the critic's feature L1), so each is first put
    in sigma units of ``reference`` ({name: (mean, std)} of held-out normal cutouts, ``model.json``):
    :math:`\hat s = (s - \mu) / \sigma`. Without a reference for a score it enters raw.
    """
    ref = reference or {}

    def standard(name: str, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        if name in ref and ref[name][1] > 0:
            return (v - ref[name][0]) / ref[name][1]
        return v

    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    return (1.0 - lam) * standard("s_gen", s_gen) + lam * standard("s_disc", s_disc)
