"""deploy/prometheus, checked by Debian's promtool: the configuration, the rules, and the unit tests of
every alert (deploy/prometheus/tests/*.yml), which must each show the alert firing and not firing.

Also: every metric a rule reads is one obsqc exports (its definitions in obsqc/service/metrics.py and
obsqc/service/ops_metrics.py, or a recording rule), and every alert carries the labels and annotations
operators act on, with its runbook section present in deploy/README.md.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.deploy.conftest import (
    PROMETHEUS_CONFIG, PROMETHEUS_DIR, REPO, RULE_FILES, exported_metric_names, known_series_names,
    promql_metric_names,
)

UNIT_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
DEPLOY_README = REPO / "deploy" / "README.md"
SEVERITIES = {"page", "warn", "info"}
ANNOTATIONS = {"summary", "description", "runbook", "runbook_url"}


def _rules() -> list[dict]:
    return [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=PROMETHEUS_DIR)


def test_promtool_checks_the_config(promtool):
    result = _run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    # The rule files the config names are the ones in rules/, so the unit tests test what is deployed.
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert sorted((PROMETHEUS_DIR / f).resolve() for f in config["rule_files"]) == [p.resolve() for p in RULE_FILES]
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"obsqc-api", "obsqc-workers", "obsqc-gpu-workers"} <= jobs
    assert config["alerting"]["alertmanagers"]


def test_promtool_checks_the_rules(promtool):
    result = _run(promtool, "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(promtool):
    assert UNIT_TESTS
    result = _run(promtool, "test", "rules", *map(str, UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS), result.stdout


def test_promtool_unit_tests_can_fail(promtool, tmp_path):
    """The unit tests really compare: the bad-exposure test fails once the alert's expression is wrong."""
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules" / "alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ObsqcBadExposure":
                rule["expr"] = rule["expr"].replace('verdict="bad"', 'verdict="warn"')
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "rules" / "recording.yml").write_text((PROMETHEUS_DIR / "rules" / "recording.yml").read_text())
    (tmp_path / "tests").mkdir()
    test = tmp_path / "tests" / "exposures.yml"
    test.write_text((PROMETHEUS_DIR / "tests" / "exposures.yml").read_text())
    result = _run(promtool, "test", "rules", str(test))
    assert result.returncode != 0 and "ObsqcBadExposure" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing():
    firing, silent = set(), set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested silent"
    assert (firing | silent) - names == set(), "tests of alerts that do not exist"


def test_the_issue_s_alerts_are_all_there():
    names = {rule["alert"] for rule in _alerts()}
    assert {"ObsqcBadExposure", "ObsqcCCDFlaggedRepeatedly", "ObsqcScoreDrift", "ObsqcQueueBacklogGrowing",
            "ObsqcLatencyHigh", "ObsqcNoQCWorker", "ObsqcNoGPUWorker", "ObsqcGalaxyAnomalyBurst",
            "ObsqcCalibrationStale", "ObsqcCalibrationStuck", "ObsqcErrorVerdictsRising"} <= names
    bad = next(rule for rule in _alerts() if rule["alert"] == "ObsqcBadExposure")
    assert bad["for"] == "0s" and "obsqc_recent_exposure_verdict" in bad["expr"]
    assert bad["labels"]["severity"] == "page"
    for label in ("exposure_id", "ccds", "flags", "instrument", "band"):
        assert f"$labels.{label}" in bad["annotations"]["summary"] + bad["annotations"]["description"]


@pytest.mark.parametrize("rule", _alerts(), ids=lambda rule: rule["alert"])
def test_alert_labels_and_annotations(rule):
    assert re.fullmatch(r"Obsqc[A-Z][A-Za-z]+", rule["alert"])
    assert rule["labels"]["severity"] in SEVERITIES
    assert ANNOTATIONS <= set(rule["annotations"]), ANNOTATIONS - set(rule["annotations"])
    assert len(rule["annotations"]["runbook"].split()) >= 15, "the runbook says what to check and what to do"
    assert rule["annotations"]["runbook_url"] == f"deploy/README.md#{rule['alert'].lower()}"


def _github_anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_every_runbook_has_its_section_in_deploy_readme():
    assert DEPLOY_README.exists(), "deploy/README.md is missing"
    text = "\n" + DEPLOY_README.read_text()
    assert "\n## Alerts\n" in text
    section = text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    anchors = {_github_anchor(h) for h in re.findall(r"^#{3,4} (.+)$", section, flags=re.M)}
    for rule in _alerts():
        assert rule["annotations"]["runbook_url"].split("#", 1)[1] in anchors, rule["alert"]


def test_recording_rule_names_follow_the_convention():
    for rule in _rules():
        if "record" in rule:
            assert re.fullmatch(r"obsqc:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_rules_read_only_metrics_obsqc_exports():
    known = known_series_names()
    used = set()
    for rule in _rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule
        assert names <= known, (rule.get("alert") or rule.get("record"), names - known)
        used |= names
    # The scan is not vacuous: the store gauges and counters of both modules are read.
    assert {"obsqc_recent_exposure_verdict", "obsqc_ccd_consecutive_flags", "obsqc_exposures_judged_total",
            "obsqc_exposure_latency_seconds_bucket", "obsqc_queue_jobs", "obsqc_workers"} <= used


def test_the_metric_name_scan_rejects_unknown_names():
    assert promql_metric_names('sum by (ccd) (rate(obsqc_ccd_flags_total{flag="x"}[5m])) > bool obsqc_nope') == {
        "obsqc_ccd_flags_total", "obsqc_nope"}
    assert "obsqc_nope" not in known_series_names()
    exported = exported_metric_names()
    assert "obsqc_exposure_latency_seconds_bucket" in exported and "obsqc_exposure_latency_seconds" not in exported
    assert "obsqc_store_up" in exported and "obsqc_recent_galaxy_anomaly" in exported
