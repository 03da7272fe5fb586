"""Warm the numba kernels so that the first real exposure is not slowed by JIT compilation.

All kernels are compiled with ``cache=True``: the first run on a machine compiles them and writes the
cache next to the modules (or under ``NUMBA_CACHE_DIR``); later processes only load it. ``warm_up``
runs every step once on a small synthetic CCD, which triggers the compile-or-load for the argument
types real data uses (float32 images, with and without a mask).
"""

from __future__ import annotations

import time

import numpy as np

from obsqc.detectors.ccd import measure_ccd
from obsqc.detectors.config import DetectorParams


def _synthetic_ccd(shape: tuple[int, int] = (128, 128), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 5.0, shape).astype(np.float32)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    for y0, x0 in ((40, 40), (90, 70), (60, 100)):
        image += (500.0 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / 8.0)).astype(np.float32)
    return image


def warm_up(params: DetectorParams = DetectorParams()) -> float:
    """Compile (or load from cache) every detector kernel; returns the seconds it took."""
    t0 = time.perf_counter()
    image = _synthetic_ccd()
    measure_ccd(image, params=params)
    measure_ccd(image, mask=np.zeros(image.shape, bool), saturate=1e4, params=params)
    measure_ccd(image.astype(np.float64), params=params)
    return time.perf_counter() - t0
