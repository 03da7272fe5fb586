"""The galaxy job (queue ``gpu``): score the galaxies of one judged exposure with the WGAN scorer.

``score_galaxies(exposure_id, artifact)`` is queued by :func:`obsqc.service.jobs.process_exposure`
after the exposure's verdict is stored, so a verdict never waits for galaxy scores; they arrive after it
and update the record (``galaxies.status`` goes from ``pending`` to ``done``). ``artifact`` is the
exposure's ``galaxies.npz`` (cutouts, CCD names, positions), written by the qc job.

Scores (Storey-Fisher et al. 2021, sec. 3.2): for each cutout the exported scorer
(:class:`obsqc.models.onnx_scoring.GalaxyScorer`, onnxruntime only; CUDA when present) finds the
generator's best reconstruction by refining the encoder's latent guess, and returns s_gen (pixel
residual, eq. 5), s_disc (critic-feature residual, eq. 6) and s_anom = 0.7 s_gen + 0.3 s_disc.
Sec. 4.1 reports each "by their number of standard deviations from the mean" of the sample: here the
sample is the survey's running distribution per (instrument, band), stored in the database and
merged batch by batch (:func:`obsqc.service.store.update_score_stats`), started from the model's own
distribution on held-out normal galaxies with ``OBSQC_GALAXY_PRIOR_WEIGHT`` galaxies of weight. An
anomaly is s_disc above ``OBSQC_GALAXY_ANOMALY_SIGMA`` (3) sigma, the paper's high-anomaly selection.

Exactly once: the scores, the running distribution and ``galaxies.status = done`` are committed in one
transaction, and a job finding ``done`` does nothing, so a retried job never counts a galaxy twice.
The reconstructions are added to the artifact (atomically) before that commit, so the API can draw a
galaxy's reconstruction and residual as soon as the galaxy is listed.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from obsqc.service.jobs import UNKNOWN, worker_context, write_artifact
from obsqc.service.store import ExposureRow, record_galaxies, set_galaxies_status, update_score_stats

__all__ = ["SCORE_NAMES", "on_galaxy_failure", "score_galaxies"]

logger = logging.getLogger(__name__)

SCORE_NAMES = ("s_gen", "s_disc", "s_anom")


def score_galaxies(exposure_id: str, artifact: str) -> dict:
    """Score the galaxies of ``exposure_id`` from ``artifact`` and store them; returns a small summary.

    Raises (so that RQ retries) when the scorer or the artifact is missing or inference fails."""
    ctx = worker_context()
    sessions = ctx.sessions()
    with sessions() as session:
        row = session.get(ExposureRow, exposure_id)
        if row is None:
            raise LookupError(f"exposure {exposure_id!r} is not in the store")
        if row.galaxies_status == "done":
            logger.info("galaxies of %s already scored; nothing to do", exposure_id)
            return {"exposure_id": exposure_id, "duplicate": True}
        instrument, band = row.instrument or UNKNOWN, row.band or UNKNOWN
    scorer = ctx.scorer("galaxy")
    if scorer is None:
        raise RuntimeError("no galaxy scorer: OBSQC_LEARNED_SCORERS is off or the model files are missing")
    t0 = time.perf_counter()
    with np.load(artifact, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    cutouts = arrays["cutouts"]
    t1 = time.perf_counter()
    batch = ctx.settings.galaxy_batch_size
    scores = scorer.score(cutouts, batch_size=batch)
    t2 = time.perf_counter()
    arrays["reconstructions"] = np.asarray(scores.reconstruction, np.float32)
    write_artifact(Path(artifact), **arrays)
    raw = {name: np.asarray(getattr(scores, name), float) for name in SCORE_NAMES}
    with sessions() as session, session.begin():
        stats = update_score_stats(session, instrument, band, raw, prior=scorer.reference,
                                   prior_weight=ctx.settings.galaxy_prior_weight)
        sigma = {name: (raw[name] - stats[name][0]) / stats[name][1] if stats[name][1] > 0
                 else np.full(len(cutouts), np.nan) for name in SCORE_NAMES}
        galaxies = [
            {"idx": i, "ccd": str(arrays["ccd"][i]), "x": float(arrays["x"][i]), "y": float(arrays["y"][i]),
             **{name: float(raw[name][i]) for name in SCORE_NAMES},
             **{f"{name}_sigma": float(sigma[name][i]) for name in SCORE_NAMES}}
            for i in range(len(cutouts))
        ]
        anomalies = record_galaxies(session, exposure_id, galaxies, anomaly_sigma=ctx.settings.galaxy_anomaly_sigma)
    t3 = time.perf_counter()
    if ctx.metrics is not None:
        n = len(cutouts)
        ctx.metrics.galaxies_scored(
            instrument=instrument, band=band, n=n, anomalies=anomalies,
            step_s={"load": t1 - t0, "inference": t2 - t1, "store": t3 - t2},
            batch_sizes=[min(batch, n - k) for k in range(0, n, batch)],
        )
    logger.info("exposure %s: %d galaxies scored (%d anomalies) in %.2f s", exposure_id, len(cutouts), anomalies,
                t3 - t0)
    return {"exposure_id": exposure_id, "galaxies": len(cutouts), "anomalies": anomalies}


def on_galaxy_failure(job, connection, exc_type, exc_value, traceback) -> None:
    """RQ failure callback: after the last retry the exposure's galaxies are marked ``error``."""
    if job.should_retry or not job.args:
        return
    ctx = worker_context()
    try:
        with ctx.sessions()() as session, session.begin():
            set_galaxies_status(session, job.args[0], "error",
                                reason=f"{getattr(exc_type, '__name__', 'failure')}: {exc_value}")
    except Exception:  # a failure callback must never raise
        logger.exception("could not record the galaxy-scoring failure of %s", job.args[0])
