"""A simulated night: many exposures written as FITS files plus ``labels.csv``.

With ``anomaly_fraction = F``, ``round(F n)`` exposures are anomalous; their classes cycle
through :data:`ANOMALY_CLASSES` in a random order (counts differ by at most one), strengths
alternate within each class and across classes (subtle/prominent half and half, per class and
overall, to within one), and they land on random exposures.
Conditions drift like a real night: the seeing follows a log-normal AR(1) walk (correlation
0.9 between consecutive exposures), the sky has a nightly moon term plus 0.05 mag jitter, and
exposures follow each other every exposure time + 30 s of overhead.

Every exposure has its own seed (in the labels), so any file can be regenerated alone with
:func:`obsqc.sim.simulate_exposure` and the label's seed, anomaly, strength, exposure id, MJD,
seeing and sky.
"""

from __future__ import annotations

import csv
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np

from obsqc.sim.config import ANOMALY_CLASSES, BANDS, NONE, STRENGTHS, get_preset

LABELS_FILE: str = "labels.csv"


@dataclass
class Label:
    """One row of ``labels.csv``: the truth of one exposure.

    ``anomaly``/``strength`` are "none" for normal exposures. ``psf_g1``/``psf_g2``: the normal
    PSF shear of the exposure (before any anomaly). ``affected_ccds``: EXTNAMEs joined by
    ``;`` (empty for normal). ``anomaly_params``: JSON of the anomaly's parameters.
    ``seed``, ``mjd_obs``, ``seeing_arcsec`` and ``sky_mag`` are written at full precision: with
    the anomaly, strength, size and exposure id they regenerate the file exactly.
    """

    file: str
    exposure_id: int
    anomaly: str
    strength: str
    seed: int
    size: str
    band: str
    mjd_obs: float
    exptime: float
    seeing_arcsec: float
    psf_fwhm_px: float
    psf_beta: float
    psf_g1: float
    psf_g2: float
    sky_mag: float
    sky_adu: float
    n_ccd: int
    n_affected: int
    affected_ccds: str
    anomaly_params: str


LABEL_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Label))
"""Column order of ``labels.csv``."""


def label_from_truth(truth, file: str) -> Label:
    """Build the label of an exposure from its :class:`ExposureTruth`."""
    c = truth.conditions
    params = {k: v for k, v in truth.anomaly_params.items()}
    return Label(
        file=file, exposure_id=truth.exposure_id, anomaly=truth.anomaly or NONE,
        strength=truth.strength or NONE, seed=truth.seed, size=truth.size, band=c.band,
        mjd_obs=c.mjd, exptime=c.exptime, seeing_arcsec=c.seeing_arcsec,
        psf_fwhm_px=round(c.psf_fwhm_px, 4), psf_beta=round(c.psf_beta, 4),
        psf_g1=round(c.psf_g1, 5), psf_g2=round(c.psf_g2, 5), sky_mag=c.sky_mag,
        sky_adu=round(float(np.mean([s["sky_adu"] for s in truth.ccds])), 3), n_ccd=len(truth.ccds),
        n_affected=len(truth.affected), affected_ccds=";".join(truth.affected),
        anomaly_params=json.dumps(params, sort_keys=True, default=float),
    )


def plan_night(n: int, anomaly_fraction: float, seed: int, *, band: str = "r", exptime: float = 90.0,
               first_exposure_id: int = 1) -> list[dict]:
    """The schedule of a night: per exposure its id, seed, anomaly, strength, MJD, seeing, sky."""
    if n < 0:
        raise ValueError("n must be >= 0")
    if not 0.0 <= anomaly_fraction <= 1.0:
        raise ValueError("anomaly_fraction must be within [0, 1]")
    rng = np.random.default_rng([int(seed), 0x4E16])
    n_anom = int(round(anomaly_fraction * n))
    order = [ANOMALY_CLASSES[i] for i in rng.permutation(len(ANOMALY_CLASSES))]
    offset = int(rng.integers(2))
    nk = len(order)
    # j-th anomaly: class j mod 6, strength alternating both within a class (round j // 6) and
    # across the classes of a round, so strengths are balanced per class and overall (+-1).
    assigned = [(order[j % nk], STRENGTHS[(j // nk + j % nk + offset) % 2]) for j in range(n_anom)]
    slots = rng.choice(n, n_anom, replace=False) if n_anom else np.zeros(0, int)
    assigned = [assigned[i] for i in rng.permutation(n_anom)]
    plan_anom = {int(s): a for s, a in zip(slots, assigned)}

    b = BANDS[band]
    mjd0 = 60310.0 + (int(seed) % 3650) + 0.05
    moon = rng.uniform(0.0, 1.2)
    x = 0.18 * rng.standard_normal()
    out = []
    for i in range(n):
        x = 0.9 * x + math.sqrt(1 - 0.81) * 0.18 * rng.standard_normal()
        seeing = float(np.clip(0.95 * math.exp(x), 0.7, 1.4)) * b.seeing_factor
        sky = float(b.sky_dark - moon + 0.05 * rng.standard_normal())
        kind, strength = plan_anom.get(i, (None, None))
        out.append(dict(
            exposure_id=first_exposure_id + i,
            seed=int(np.random.SeedSequence([int(seed), 1, i]).generate_state(1)[0]),
            anomaly=kind, strength=strength, mjd=mjd0 + i * (exptime + 30.0) / 86400.0,
            seeing_arcsec=seeing, sky_mag=sky,
        ))
    return out


def exposure_filename(exposure_id: int) -> str:
    """File name of an exposure: ``exp_000123.fits``."""
    return f"exp_{exposure_id:06d}.fits"


def _simulate_one(task: dict) -> Label:
    from obsqc.sim.exposure import render_exposure, to_hdulist

    images, truth = render_exposure(
        task["size"], anomaly=task["anomaly"], strength=task["strength"], seed=task["seed"],
        exposure_id=task["exposure_id"], band=task["band"], exptime=task["exptime"], mjd=task["mjd"],
        seeing_arcsec=task["seeing_arcsec"], sky_mag=task["sky_mag"])
    hdul = to_hdulist(images, truth, dtype=task["dtype"], compress=task["compress"])
    name = exposure_filename(task["exposure_id"])
    path = Path(task["out_dir"]) / name
    tmp = path.with_name(path.name + ".tmp")
    hdul.writeto(tmp, overwrite=True)
    os.replace(tmp, path)
    return label_from_truth(truth, name)


def simulate_night(out_dir: str | os.PathLike, *, n: int, anomaly_fraction: float, seed: int,
                   size: str = "small", dtype: str = "float32", compress: bool = False,
                   progress: Callable[[Label], None] | None = None, workers: int = 1,
                   band: str = "r", first_exposure_id: int = 1) -> list[Label]:
    """Simulate ``n`` exposures into ``out_dir`` (``exp_NNNNNN.fits`` + ``labels.csv``).

    ``progress(label)`` is called after each exposure is written. ``workers > 1`` simulates in
    that many processes (files and labels are identical to ``workers=1``). ``labels.csv`` is
    written row by row in exposure order, so an interrupted night keeps its finished labels.
    """
    preset = get_preset(size)
    if dtype not in ("float32", "int16"):
        raise ValueError(f"dtype must be 'float32' or 'int16', not {dtype!r}")
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_night(n, anomaly_fraction, seed, band=band, exptime=preset.exptime,
                      first_exposure_id=first_exposure_id)
    tasks = [dict(p, size=preset.name, band=band, exptime=preset.exptime, dtype=dtype,
                  compress=compress, out_dir=str(out)) for p in plan]
    labels: list[Label] = []
    with open(out / LABELS_FILE, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LABEL_COLUMNS)
        writer.writeheader()
        fh.flush()

        def done(label: Label) -> None:
            labels.append(label)
            writer.writerow(asdict(label))
            fh.flush()
            if progress is not None:
                progress(label)

        if workers > 1 and len(tasks) > 1:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                for label in pool.map(_simulate_one, tasks):
                    done(label)
        else:
            for t in tasks:
                done(_simulate_one(t))
    return labels


def read_labels(path: str | os.PathLike) -> list[Label]:
    """Read ``labels.csv`` (a file or the directory holding it) back into :class:`Label` rows."""
    p = Path(path)
    if p.is_dir():
        p = p / LABELS_FILE
    types = {f.name: f.type for f in fields(Label)}
    conv = {"int": int, "float": float, "str": str}
    rows = []
    with open(p, newline="") as fh:
        for row in csv.DictReader(fh):
            rows.append(Label(**{k: conv[types[k]](row[k]) for k in LABEL_COLUMNS}))
    return rows
