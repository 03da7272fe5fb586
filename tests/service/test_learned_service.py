"""The learned scorers inside the service, against real parts: exposures judged by `obsqc worker` (queue qc)
get the autoencoder indicator in their record; their galaxies are scored afterwards by `obsqc worker
--queue gpu` and stored with sigma units. The models are tiny untrained networks exported by obsqc's own
code (what is tested here is the plumbing, not the models' quality: see BENCHMARKS.md for that)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from sqlalchemy import func, select

from rq.registry import FailedJobRegistry

from obsqc.service.metrics import render_metrics
from obsqc.service.queue import GPU_QUEUE_NAME, galaxy_job_id_for, make_queue
from obsqc.service.store import GalaxyRow
from tests.service.test_worker import Service, _env

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from obsqc.models.autoencoder import DenseAutoencoder
    from obsqc.models.config import preset
    from obsqc.models.export import export_autoencoder, export_galaxy_scorer
    from obsqc.models.wgan import build_networks

    out = tmp_path_factory.mktemp("models")
    config = preset("wgan", "small", size=32)
    export_galaxy_scorer(*build_networks(config, seed=0), config, out / "galaxy_scorer.onnx")
    export_autoencoder(DenseAutoencoder(preset("ae", "small")), out / "autoencoder.onnx")
    return out


def _burst(svc: Service, models, *extra: str) -> None:
    env = _env(svc.settings) | {"OBSQC_MODELS_DIR": str(models)}
    run = subprocess.run([sys.executable, "-m", "obsqc", "worker", "--burst", "-n", "1", *extra], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no autoencoder scorer" not in run.stdout + run.stderr


@pytest.mark.slow
def test_exposures_get_the_autoencoder_indicator_and_their_galaxies_scores(tmp_path, redis_url, tiny_models):
    svc = Service(tmp_path, redis_url, f"sqlite:///{tmp_path / 'obsqc.db'}", write_plots=False)
    try:
        ids = [f"e{seed}" for seed in range(4)]
        for seed, eid in enumerate(ids):
            svc.submit(eid, svc.exposure(seed, size="small"))
        _burst(svc, tiny_models)

        rows = [svc.row(eid) for eid in ids]
        assert all(r.status == "done" for r in rows)
        assert all(r.autoencoder_mse is not None and r.autoencoder_mse > 0 and r.n_stamps > 0 for r in rows)
        # the first three calibrate the reference (min_reference_exposures = 3); the fourth is judged
        # against it, the autoencoder indicator included
        assert math.isfinite(rows[-1].autoencoder_sigma)
        assert all(r.galaxies_status == "pending" for r in rows)
        gpu = make_queue(svc.redis, GPU_QUEUE_NAME)
        assert sorted(gpu.job_ids) == sorted(galaxy_job_id_for(eid) for eid in ids)

        _burst(svc, tiny_models, "--queue", "gpu")
        assert FailedJobRegistry(queue=gpu).count == 0 and gpu.finished_job_registry.count == len(ids)
        metrics, _ = render_metrics(svc.settings.metrics_dir, None)
        assert b'obsqc_galaxies_scored_total{' in metrics and b'obsqc_galaxy_anomalies_total{' in metrics
        assert b"obsqc_galaxy_batch_size_count" in metrics
        rows = [svc.row(eid) for eid in ids]
        assert all(r.galaxies_status == "done" and r.n_galaxies > 0 for r in rows)
        with svc.sessions() as session:
            stored = session.execute(select(func.count()).select_from(GalaxyRow)).scalar_one()
            first = session.execute(select(GalaxyRow).where(GalaxyRow.exposure_id == "e0")).scalars().all()
        assert stored == sum(r.n_galaxies for r in rows)
        assert all(math.isfinite(g.s_disc) and math.isfinite(g.s_disc_sigma) for g in first)
        artifact = svc.settings.home / "artifacts" / f"qc-{galaxy_job_id_for('e0')[4:]}" / "galaxies.npz"
        with np.load(artifact) as data:
            assert data["reconstructions"].shape == data["cutouts"].shape == (len(first), 1, 32, 32)

        # a galaxy job run again (a retry after its commit) changes nothing: scores are counted once
        _burst(svc, tiny_models, "--queue", "gpu")  # the queue is empty: nothing runs
        from obsqc.service.queue import enqueue_galaxies

        enqueue_galaxies(gpu, "e0", str(artifact), svc.settings)
        _burst(svc, tiny_models, "--queue", "gpu")
        with svc.sessions() as session:
            again = session.execute(select(func.count()).select_from(GalaxyRow)).scalar_one()
        assert again == stored
    finally:
        svc.close()
