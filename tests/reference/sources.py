"""Plain-numpy twin of obsqc.detectors.sources.find_sources, written for clarity, not speed."""

import numpy as np

from tests.reference import background as ref_bg
from tests.reference import moments as ref_mom


def find_sources(image, coeffs, sigma, saturate=np.inf, detect_sigma=4.0, footprint_sigma=2.0,
                 min_pixels=6, window=64, frac=0.02, floor_sigma=2.0, sharp_ratio=0.2):
    image = np.asarray(image, float)
    ny, nx = image.shape
    resid = image - ref_bg.model_image(coeffs, image.shape)
    half = window // 2
    out = []
    with np.errstate(invalid="ignore"):
        cand = np.argwhere(resid > detect_sigma * sigma)
    for y0, x0 in cand:
        r0 = resid[y0, x0]
        win = resid[max(0, y0 - half): y0 + half + 1, max(0, x0 - half): x0 + half + 1]
        oy, ox = y0 - max(0, y0 - half), x0 - max(0, x0 - half)
        flat = win.ravel()
        pos = oy * win.shape[1] + ox
        with np.errstate(invalid="ignore"):
            if np.any(flat > r0) or np.any(flat[:pos] == r0):
                continue
        stamp = np.full((2 * half + 1, 2 * half + 1), -np.inf)
        ys, xs = slice(max(0, y0 - half), min(ny, y0 + half + 1)), slice(max(0, x0 - half), min(nx, x0 + half + 1))
        sub = resid[ys, xs].copy()
        raw = image[ys, xs]
        sub[~np.isfinite(raw) | (raw >= saturate)] = np.nan
        stamp[ys.start - (y0 - half): ys.stop - (y0 - half), xs.start - (x0 - half): xs.stop - (x0 - half)] = sub
        stamp[half, half] = r0
        fp = ref_mom.connected_moments(stamp, half, half, footprint_sigma * sigma)
        nb = image[max(0, y0 - 1): y0 + 2, max(0, x0 - 1): x0 + 2]
        saturated = image[y0, x0] >= saturate or int(np.sum(nb == image[y0, x0])) - 1 >= 2
        if fp["n_pix"] <= min_pixels and not saturated:
            continue
        thr = max(frac * r0, floor_sigma * sigma)
        mo = fp if thr <= footprint_sigma * sigma else ref_mom.connected_moments(stamp, half, half, thr)
        flags = (1 if mo["outside"] else 0) | (8 if mo["invalid"] else 0) | (16 if mo["border"] else 0)
        nb = image[max(0, y0 - 1): y0 + 2, max(0, x0 - 1): x0 + 2]
        n_equal = int(np.sum(nb == image[y0, x0])) - 1
        four = np.array([stamp[half - 1, half], stamp[half + 1, half], stamp[half, half - 1], stamp[half, half + 1]])
        four[~np.isfinite(four)] = -np.inf
        if image[y0, x0] >= saturate or n_equal >= 2:
            flags |= 2
        elif four.min() < sharp_ratio * r0:
            flags |= 4
        e1, e2, theta = ref_mom.shape_from_moments(mo["q_xx"], mo["q_yy"], mo["q_xy"])
        out.append(dict(peak_x=x0, peak_y=y0, x=x0 + mo["x_c"], y=y0 + mo["y_c"], peak=r0, flux=mo["flux"],
                        n_footprint=fp["n_pix"], n_pix=mo["n_pix"], q_xx=mo["q_xx"], q_yy=mo["q_yy"],
                        q_xy=mo["q_xy"], e1=e1, e2=e2, theta_rad=theta, flags=flags))
    return out
