"""Flags in words: every flag the verdict can raise has a sentence, CCDs are named, odd flags survive."""

from __future__ import annotations

import pytest

from obsqc.service.errors import INVALID_EXPOSURE_REASONS
from obsqc.service.ui.explain import ERROR_KINDS, FLAG_TEXT, explain, join_names
from obsqc.service.verdict import FLAG_NAMES, LEARNED_FLAG_NAMES


@pytest.mark.parametrize("name", [*FLAG_NAMES.values(), *LEARNED_FLAG_NAMES.values(), "rejected", "error"])
def test_every_flag_the_service_raises_is_explained(name):
    text = FLAG_TEXT[name]
    assert text.title and text.meaning.endswith(".") and text.check.endswith(".")


def test_background_gradient_names_its_ccds():
    e = explain({"name": "background_gradient", "sigma": 7.31, "ccds": ["S1", "S3"], "reason": "..."})
    assert e.meaning == ("The sky level of S1 and S3 varies across the CCD in a direction unlike normal "
                         "exposures: readout stripes, scattered light or a bad amplifier.")
    assert e.sigma == pytest.approx(7.31) and e.ccds == ("S1", "S3")
    assert "amplifier" in e.check


def test_exposure_level_flags_read_without_ccds():
    assert "crosses the focal plane" in explain({"name": "linear_feature", "sigma": 4.0}).meaning
    assert "{" not in explain("source_orientation").meaning


def test_rejected_and_error_flags_say_why_in_words():
    assert INVALID_EXPOSURE_REASONS["not_fits"] in explain({"name": "rejected", "reason": "not_fits"}).meaning
    assert ERROR_KINDS["killed"] in explain({"name": "error", "reason": "killed"}).meaning
    assert "not recorded" in explain({"name": "error"}).meaning


def test_unknown_flags_and_odd_values_fall_back_to_what_is_stored():
    e = explain({"name": "new_indicator", "sigma": "nan", "ccds": ["N4", None], "reason": "it went up"})
    assert e.meaning == "it went up" and e.sigma is None and e.ccds == ("N4",)
    assert explain({"name": "x", "sigma": "bogus"}).sigma is None


def test_join_names():
    assert join_names([]) == "" and join_names(["S1"]) == "S1"
    assert join_names(["S1", "S3", "N4"]) == "S1, S3 and N4"
    assert join_names([f"S{i}" for i in range(1, 10)], limit=3) == "S1, S2, S3 and 6 more"
