"""Exposure simulator: realistic multi-extension FITS exposures with known anomalies.

Public API::

    SIZE_PRESETS, ANOMALY_CLASSES, STRENGTHS, BANDS
    simulate_exposure(*, size, anomaly, strength, seed, exposure_id, dtype, compress, ...) -> HDUList
    render_exposure(size, *, anomaly, strength, seed, ...) -> (list of float32 CCD arrays, ExposureTruth)
    simulate_ccd(shape, anomaly, strength, seed, ...) -> (float32 image, truth dict)
    simulate_night(out_dir, *, n, anomaly_fraction, seed, size, dtype, compress, progress, workers)
        -> list[Label]

The physics, units and parameter choices are documented in each module's docstring:
``config`` (camera, presets), ``focalplane`` (layout, static defects), ``conditions`` (seeing,
sky), ``psf`` (PSF and PSF anomalies), ``scene`` (stars, galaxies), ``render`` (drawing),
``defects`` (bleed, cosmic rays, noise), ``anomalies`` (anomaly parameters, background
anomalies), ``exposure`` (one exposure, FITS), ``night`` (many exposures, labels).
"""

from obsqc.sim.config import (
    ANOMALY_CLASSES,
    BACKGROUND_ANOMALIES,
    BANDS,
    SIZE_PRESETS,
    SOURCE_ANOMALIES,
    STRENGTHS,
    SizePreset,
)
from obsqc.sim.exposure import ExposureTruth, render_exposure, simulate_ccd, simulate_exposure, to_hdulist
from obsqc.sim.night import LABEL_COLUMNS, Label, read_labels, simulate_night

__all__ = [
    "ANOMALY_CLASSES",
    "BACKGROUND_ANOMALIES",
    "BANDS",
    "SIZE_PRESETS",
    "SOURCE_ANOMALIES",
    "STRENGTHS",
    "SizePreset",
    "ExposureTruth",
    "render_exposure",
    "simulate_ccd",
    "simulate_exposure",
    "to_hdulist",
    "LABEL_COLUMNS",
    "Label",
    "read_labels",
    "simulate_night",
]
