"""Cutouts for the learned scorers, cut while each CCD's pixels are in memory (obsqc/service/measure.py)."""

from __future__ import annotations

import numpy as np
import pytest

from obsqc.service.measure import CutoutRequest, measure_file
from obsqc.sim import simulate_exposure


@pytest.fixture(scope="module")
def exposure(tmp_path_factory):
    path = tmp_path_factory.mktemp("cut") / "e.fits"
    simulate_exposure(size="small", seed=3, exposure_id=5).writeto(path)
    return path


def test_cutouts_come_with_the_measurement_and_respect_the_caps(exposure):
    plain = measure_file(str(exposure), threads=2)
    assert plain.cutouts is None
    m = measure_file(str(exposure), threads=2,
                     cutouts=CutoutRequest(max_stamps=2000, stamp_size=64, max_galaxies=300, galaxy_size=48))
    c = m.cutouts
    names = {ccd.name for ccd in m.stats.ccds}
    assert c.stamps.shape[1:] == (64, 64) and c.stamps.dtype == np.float32
    assert 0 < len(c.stamps) <= m.stats.n_sources + sum(len(ccd.sources) for ccd in m.stats.ccds)
    assert c.galaxies.shape[1:] == (1, 48, 48) and 0 < len(c.galaxies) < len(c.stamps)
    assert float(c.galaxies.min()) >= 0.0 and float(c.galaxies.max()) <= 1.0
    assert len(c.galaxy_ccd) == len(c.galaxy_x) == len(c.galaxy_y) == len(c.galaxies)
    assert set(c.galaxy_ccd) <= names
    shapes = {ccd.name: ccd.shape for ccd in m.stats.ccds}
    for ccd, x, y in zip(c.galaxy_ccd, c.galaxy_x, c.galaxy_y):
        ny, nx = shapes[ccd]
        assert 0 <= x < nx and 0 <= y < ny
    # the same detector statistics with or without cutouts
    assert np.array_equal(plain.stats.source_counts, m.stats.source_counts)

    few = measure_file(str(exposure), threads=2,
                       cutouts=CutoutRequest(max_stamps=8, stamp_size=64, max_galaxies=0, galaxy_size=48)).cutouts
    n_ccds = len(m.stats.ccds)
    assert 0 < len(few.stamps) <= 8 + n_ccds  # the cap is spread over the CCDs, rounded up per CCD
    assert len(few.galaxies) == 0 and few.galaxies.shape[1:] == (1, 48, 48)
