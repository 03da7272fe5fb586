"""Measure one exposure file: read its CCDs and run the detectors on each, in parallel threads.

The numba kernels release the GIL (``nogil=True``), so one thread per CCD scales across cores with
no shared state and no pickling; at most ``threads`` CCD arrays are alive at a time, so memory does
not grow with the number of CCDs. A CCD that cannot be measured (all NaN, too few usable pixels) is
skipped and recorded with its reason; the exposure is rejected only when no CCD is left.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from obsqc.detectors.ccd import CCDStats, measure_ccd
from obsqc.detectors.config import DetectorParams
from obsqc.detectors.exposure import ExposureStats, combine_ccds
from obsqc.service.errors import InvalidExposureError
from obsqc.service.fits_ingest import ExposureHeader, ExposureReader, IngestLimits, open_exposure

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CutoutRequest:
    """What to cut from each CCD while its pixels are in memory, for the learned scorers: up to
    ``max_stamps`` source stamps of ``stamp_size`` (autoencoder, Alonso et al. §4.2) and up to
    ``max_galaxies`` galaxy cutouts of ``galaxy_size`` (WGAN, Storey-Fisher et al. 2021 §2.2), both
    per exposure and spread evenly over its CCDs (0 = none)."""

    max_stamps: int = 2000
    stamp_size: int = 64
    max_galaxies: int = 300
    galaxy_size: int = 96


@dataclass(frozen=True, slots=True)
class ExposureCutouts:
    """Cutouts of one exposure: ``stamps`` (N, 64, 64) for the autoencoder; ``galaxies`` (M, 1, S, S)
    in [0, 1] with the CCD name and 0-based position (x along NAXIS1) of each."""

    stamps: np.ndarray
    galaxies: np.ndarray
    galaxy_ccd: np.ndarray
    galaxy_x: np.ndarray
    galaxy_y: np.ndarray


@dataclass(frozen=True, slots=True)
class MeasuredExposure:
    """An exposure's header, its measured statistics, the CCD positions and the wall time (s);
    ``cutouts`` when a :class:`CutoutRequest` asked for them."""

    header: ExposureHeader
    stats: ExposureStats
    detsec: dict[str, tuple[int, int, int, int]]
    wall_s: float
    cutouts: ExposureCutouts | None = None


def _parse_detsec(text: object) -> tuple[int, int, int, int] | None:
    """'[x1:x2,y1:y2]' (FITS, 1-based) -> (x1, x2, y1, y2), or None when absent or malformed."""
    if not isinstance(text, str):
        return None
    try:
        xs, ys = text.strip().strip("[]").split(",")
        x1, x2 = (int(v) for v in xs.split(":"))
        y1, y2 = (int(v) for v in ys.split(":"))
    except ValueError:
        return None
    return x1, x2, y1, y2


def _measure_one(reader: ExposureReader, index: int, params: DetectorParams, seed: int,
                 request: CutoutRequest | None = None, n_ccds: int = 1):
    ccd = reader.read_ccd(index)
    stats = measure_ccd(ccd.data, name=ccd.name, saturate=ccd.saturate, params=params, seed=seed + 7919 * index)
    cut = _cut(ccd.data, stats, ccd.saturate, request, n_ccds) if request is not None else None
    return stats, _parse_detsec(ccd.header.get("DETSEC")), cut


def _cut(image: np.ndarray, stats: CCDStats, saturate: float | None, request: CutoutRequest, n_ccds: int):
    """This CCD's share of the stamps and galaxy cutouts (numpy only: obsqc.models.cutouts)."""
    from obsqc.models.cutouts import galaxy_cutouts, source_stamps

    per_ccd = lambda total: -(-total // max(n_ccds, 1))  # noqa: E731  (ceil division)
    coeffs, sigma = stats.background.coeffs, stats.background.sigma
    stamps = np.empty((0, request.stamp_size, request.stamp_size), np.float32)
    if request.max_stamps > 0:
        stamps = source_stamps(image, stats.sources, coeffs, size=request.stamp_size,
                               max_n=per_ccd(request.max_stamps)).pixels
    galaxies = np.empty((0, 1, request.galaxy_size, request.galaxy_size), np.float32)
    x = y = np.empty(0)
    if request.max_galaxies > 0:
        cut = galaxy_cutouts(image, stats.sources, coeffs, sigma, size=request.galaxy_size, saturate=saturate,
                             max_n=per_ccd(request.max_galaxies))
        galaxies, x, y = cut.pixels, cut.x, cut.y
    return stamps, galaxies, x, y


def measure_reader(
    reader: ExposureReader, *, params: DetectorParams = DetectorParams(), threads: int = 1, seed: int = 0,
    cutouts: CutoutRequest | None = None,
) -> MeasuredExposure:
    """Measure every CCD of an open exposure (and cut what ``cutouts`` asks for). Raises
    ``InvalidExposureError`` if no CCD is measurable."""
    t0 = time.perf_counter()
    header = reader.header
    results: list[CCDStats] = []
    skipped: list[tuple[str, str]] = []
    detsec: dict[str, tuple[int, int, int, int]] = {}
    pieces: list[tuple[str, tuple]] = []

    def task(i: int):
        try:
            return _measure_one(reader, i, params, seed, cutouts, header.n_ccds)
        except InvalidExposureError as exc:
            if exc.reason in ("truncated", "unreadable", "not_fits"):
                raise
            return exc
        except ValueError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for i, outcome in enumerate(pool.map(task, range(header.n_ccds))):
            name = header.ccd_names[i]
            if isinstance(outcome, Exception):
                logger.warning("exposure %s: CCD %s skipped: %s", header.exposure_id, name, outcome)
                skipped.append((name, str(outcome)))
                continue
            stats, sec, cut = outcome
            results.append(stats)
            if cut is not None:
                pieces.append((stats.name, cut))
            if sec is not None:
                detsec[stats.name] = sec
    if not results:
        reasons = "; ".join(f"{n}: {r}" for n, r in skipped)
        raise InvalidExposureError(
            f"no CCD of exposure {header.exposure_id!r} could be measured ({reasons})", reason="no_usable_ccd"
        )
    stats = combine_ccds(header.exposure_id, results, skipped=tuple(skipped))
    return MeasuredExposure(header=header, stats=stats, detsec=detsec, wall_s=time.perf_counter() - t0,
                            cutouts=_join(pieces, cutouts) if cutouts is not None else None)


def _join(pieces: list[tuple[str, tuple]], request: CutoutRequest) -> ExposureCutouts:
    """One exposure's cutouts from its CCDs' pieces (in CCD order)."""
    s, g = request.stamp_size, request.galaxy_size
    stamps = [p[0] for _, p in pieces]
    galaxies = [p[1] for _, p in pieces]
    return ExposureCutouts(
        stamps=np.concatenate(stamps) if stamps else np.empty((0, s, s), np.float32),
        galaxies=np.concatenate(galaxies) if galaxies else np.empty((0, 1, g, g), np.float32),
        galaxy_ccd=np.array([name for name, p in pieces for _ in range(len(p[1]))], dtype=str),
        galaxy_x=np.concatenate([p[2] for _, p in pieces]) if pieces else np.empty(0),
        galaxy_y=np.concatenate([p[3] for _, p in pieces]) if pieces else np.empty(0),
    )


def measure_file(
    path: str,
    *,
    params: DetectorParams = DetectorParams(),
    threads: int = 1,
    exposure_id: str | None = None,
    id_from_filename: bool = False,
    limits: IngestLimits | None = None,
    cutouts: CutoutRequest | None = None,
) -> MeasuredExposure:
    """Open a FITS exposure and measure it (see :func:`measure_reader`)."""
    kwargs = {"exposure_id": exposure_id, "id_from_filename": id_from_filename}
    if limits is not None:
        kwargs["limits"] = limits
    with open_exposure(path, **kwargs) as reader:
        return measure_reader(reader, params=params, threads=threads, cutouts=cutouts)
