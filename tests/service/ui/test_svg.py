"""Drawings of the exposure page: the colour scale, the focal-plane layout (DETSEC or grid), histograms."""

from __future__ import annotations

import math

from obsqc.service.ui.svg import MISSING_COLOUR, SIGMA_STOPS, colour, focal_plane, histogram, natural_key


def _ccd(name, bg=0.5, ls=None, **kw):
    return {"ccd": name, "background_sigma": bg, "large_scale_sigma": ls, "background_kl": 0.01, "line_z": None,
            "n_sources": 10, **kw}


def test_colour_hits_its_stops_and_clamps():
    for sigma, rgb in SIGMA_STOPS:
        assert colour(sigma) == "#" + "".join(f"{v:02x}" for v in rgb)
    assert colour(-4.0) == colour(0.0) and colour(99.0) == colour(10.0)
    assert colour(None) == colour(math.nan) == MISSING_COLOUR
    assert colour(4.0) not in (colour(3.0), colour(5.0))


def test_natural_order():
    assert sorted(["S10", "S2", "N1", "S1"], key=natural_key) == ["N1", "S1", "S2", "S10"]


def test_focal_plane_from_detsec_keeps_the_camera_layout_with_y_up():
    # two CCDs side by side on the bottom row, one above the left one (FITS y up)
    detsec = {"A": [1, 100, 1, 200], "B": [121, 220, 1, 200], "C": [1, 100, 221, 420]}
    flagged = {"A": ["background_gradient"]}
    f = focal_plane([_ccd("A", 7.0), _ccd("B", 1.0), _ccd("C", None, 4.0)], detsec, None, flagged)
    assert f.from_detsec
    boxes = {c.name: c for c in f.ccds}
    assert boxes["A"].y > boxes["C"].y  # C is above A on the sky: smaller SVG y
    assert boxes["B"].x > boxes["A"].x and math.isclose(boxes["A"].y, boxes["B"].y)
    assert math.isclose(boxes["A"].w, boxes["B"].w) and math.isclose(boxes["A"].h, 2 * boxes["A"].w, rel_tol=1e-3)
    assert all(0 <= c.x and c.x + c.w <= f.width + 1e-6 and 0 <= c.y and c.y + c.h <= f.height + 1e-6 for c in f.ccds)
    assert boxes["A"].flagged and not boxes["B"].flagged
    assert boxes["A"].fill == colour(7.0) and boxes["C"].fill == colour(4.0)  # the larger of the two sigmas
    assert "flagged: background_gradient" in boxes["A"].tooltip and "CCD A: 7.0 sigma" in boxes["A"].tooltip


def test_focal_plane_falls_back_to_a_grid_when_a_ccd_has_no_detsec():
    ccds = [_ccd(f"C{i}") for i in range(1, 6)]
    f = focal_plane(ccds, {"C1": [1, 10, 1, 10]}, {"C1": [10, 10]}, {})
    assert not f.from_detsec and len(f.ccds) == 5
    positions = {(c.x, c.y) for c in f.ccds}
    assert len(positions) == 5  # no two CCDs on top of each other
    first = {c.name: c for c in f.ccds}
    assert first["C1"].y < first["C4"].y  # first row drawn at the top


def test_focal_plane_tolerates_missing_values_and_malformed_detsec():
    f = focal_plane([_ccd("X", None, None, n_sources=None)], {"X": ["a", 2, 3, 4]}, None, {})
    assert not f.from_detsec and f.ccds[0].fill == MISSING_COLOUR and f.ccds[0].value == ""
    assert "sources: n/a" in f.ccds[0].tooltip


def test_histogram_bars_and_reference_step_line():
    h = histogram({"key": "source", "title": "t", "p": [0.1, 0.4, 0.5], "reference": [0.3, 0.3, 0.4],
                   "span": [-90, 90], "n": 50, "kl": 0.2, "sigma": 3.5})
    left, top, pw, ph = h.plot
    assert len(h.bars) == 3
    heights = [b[3] for b in h.bars]
    assert heights[1] > heights[0] and math.isclose(heights[2] / heights[0], 5.0, rel_tol=1e-3)
    assert h.reference_path.startswith(f"M{left:.2f},") and h.reference_path.count("H") == 3
    assert [label for _, label in h.x_ticks] == ["-90", "-45", "0", "45", "90"]
    assert h.kl == 0.2 and h.sigma == 3.5 and h.n == 50


def test_malformed_histograms_are_skipped():
    assert histogram({"p": [0.5, 0.5], "reference": [1.0]}) is None
    assert histogram({"p": [], "reference": []}) is None
    assert histogram({"p": [1.0], "reference": [float("nan")]}) is None
    assert histogram({"p": [1.0], "reference": [1.0], "span": [5, 5]}) is None
    assert histogram({"reference": [1.0]}) is None
