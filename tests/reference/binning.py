"""Plain-numpy twin of obsqc.detectors.binning.clipped_block_means."""

import numpy as np

from tests.reference.background import model_image


def clipped_block_means(image, coeffs, sigma, factor, clip_sigma, saturate=np.inf):
    image = np.asarray(image, float)
    ny, nx = image.shape
    by, bx = ny // factor, nx // factor
    resid = image - model_image(coeffs, image.shape)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(image) & (image < saturate) & (np.abs(resid) <= clip_sigma * sigma)
    out = np.full((by, bx), np.nan)
    for j in range(by):
        for i in range(bx):
            sl = (slice(j * factor, (j + 1) * factor), slice(i * factor, (i + 1) * factor))
            n = ok[sl].sum()
            if n >= (factor * factor) // 2 and n > 0:
                out[j, i] = resid[sl][ok[sl]].mean()
    return out
