"""The Grafana dashboards (deploy/grafana): generated from their definition, well formed, laid out
without overlaps, every PromQL expression valid for ``promtool``, naming only metrics obsqc exports, and
returning data from a real Prometheus scraping a running obsqc (``observed_service``, conftest.py).

Template variables are replaced by concrete values before any check (:func:`concrete`): multi-value
variables by their "All" regex ``.*``, Grafana's ``$__rate_interval`` and ``$__range`` by durations.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import promql_parser
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD_DIR = GRAFANA / "dashboards"
DASHBOARD_FILES = sorted(DASHBOARD_DIR.glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "obsqc.yml"
RULES = sorted((REPO / "deploy" / "prometheus" / "rules").glob("*.yml"))
METRIC_MODULES = [REPO / "obsqc" / "service" / "metrics.py", REPO / "obsqc" / "service" / "ops_metrics.py"]

GRAFANA_VALUES = {"$__rate_interval": "5m", "$__interval": "15s", "$__range": "1h"}
"""Grafana's built-in variables and what they become in the checks (5 min covers the test's night)."""

PROMETHEUS_SERIES = {
    "up": "Prometheus writes it for every scrape target; the overview shows whether obsqc's targets are reached.",
}
"""Series a dashboard may name that Prometheus makes rather than obsqc, with the reason."""

NO_DATA_EXPECTED = {
    ("obsqc-overview.json", "Failed job attempts [A]"):
        "no judging job fails in the test service, and a labelled counter appears only at its first failure",
    ("obsqc-overview.json", "Error verdicts [A]"):
        "no exposure gets the verdict error in the test (the panel shows 0 through `or vector(0)`)",
    ("obsqc-overview.json", "Error verdicts per minute [A]"):
        "no exposure gets the verdict error in the test",
    ("obsqc-overview.json", "API errors [A]"):
        "the API answers no request with a 5xx status in the test (the panel shows 0 through `or vector(0)`)",
    ("obsqc-overview.json", "Calibrating for [A]"):
        "the series exists only while an instrument and band calibrate; the fixture's night is past calibration",
}
"""Queries, as (dashboard file, panel title [refId]), allowed to return no data from the test service, with
the reason. Any other query without data fails the test."""

SPOILED = ("readout_stripes", 78)
"""The spoiled exposure this test posts: readout stripes are per-CCD gradients, so the flags name CCDs."""


# --- reading the dashboards -------------------------------------------------------------------------------

def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, rows and the panels inside collapsed rows included."""
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def variables(dashboard: dict) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def concrete(expr: str, dashboard: dict) -> str:
    """``expr`` with Grafana's variables and the dashboard's own replaced by concrete values."""
    for name, value in GRAFANA_VALUES.items():
        expr = expr.replace(name, value)
    for name, var in sorted(variables(dashboard).items(), key=lambda item: -len(item[0])):
        value = var.get("allValue") if var.get("includeAll") else var.get("query")
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unknown variable left in {expr!r}"
    return expr


def expressions() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, concrete PromQL) of every query of every panel."""
    out = []
    for path in DASHBOARD_FILES:
        dashboard = load(path)
        for panel in all_panels(dashboard):
            title = panel.get("title") or panel.get("fieldConfig", {}).get("defaults", {}).get("displayName", "")
            for target in panel.get("targets", []):
                out.append((path.name, f"{title} [{target['refId']}]", concrete(target["expr"], dashboard)))
    return out


def variable_selectors() -> list[tuple[str, str, str, str]]:
    """(dashboard file, variable, concrete series selector, label) of every ``label_values`` variable."""
    out = []
    for path in DASHBOARD_FILES:
        dashboard = load(path)
        for name, var in variables(dashboard).items():
            if var["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"])
            assert match, f"{path.name}: variable {name} is not label_values(selector, label): {var['query']}"
            out.append((path.name, name, concrete(match.group(1), dashboard), match.group(2)))
    return out


def zero_fallback_lhs(expr: str) -> str:
    """The left-hand side of ``<expr> or vector(0)``, else ``expr`` itself."""
    tree = promql_parser.parse(expr)
    if (isinstance(tree, promql_parser.BinaryExpr) and str(tree.op) == "or"
            and isinstance(tree.rhs, promql_parser.Call) and tree.rhs.func.name == "vector"):
        lhs, _, _ = expr.rpartition(" or ")
        return lhs
    return expr


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects, read by a PromQL parser."""
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def exported_metric_names() -> set[str]:
    """Series names obsqc exports, read from the metric definitions in its code: prometheus-client's
    Counter/Gauge/Histogram and the scrape-time ``*MetricFamily`` collectors (histograms as their
    ``_bucket``, ``_sum`` and ``_count`` series, counters with ``_total``)."""
    names = set()
    for module in METRIC_MODULES:
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            kind = getattr(node.func, "id", getattr(node.func, "attr", ""))
            name = node.args[0].value
            if kind in ("Histogram", "HistogramMetricFamily"):
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind in ("Counter", "CounterMetricFamily"):
                names.add(name if name.endswith("_total") else f"{name}_total")
            elif kind in ("Gauge", "GaugeMetricFamily"):
                names.add(name)
    return names


def recorded_names() -> set[str]:
    """Names recorded by the rules in deploy/prometheus/rules."""
    return {rule["record"] for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


def unknown_names(expr: str) -> set[str]:
    """Series an expression names that neither obsqc, its recording rules nor Prometheus make."""
    return metric_names(expr) - exported_metric_names() - recorded_names() - set(PROMETHEUS_SERIES)


def _generator():
    spec = importlib.util.spec_from_file_location("obsqc_grafana_generate", GRAFANA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- generated, not edited ------------------------------------------------------------------------------

def test_the_committed_dashboards_are_what_the_generator_writes(tmp_path):
    out = tmp_path / "dashboards"
    run = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    written = sorted(p.name for p in out.glob("*.json"))
    assert written == [p.name for p in DASHBOARD_FILES] == ["obsqc-focal-plane.json", "obsqc-overview.json",
                                                            "obsqc-science.json"]
    for name in written:
        assert (out / name).read_text() == (DASHBOARD_DIR / name).read_text(), (
            f"deploy/grafana/dashboards/{name} differs from its definition: run python deploy/grafana/generate.py")


def test_the_drift_check_notices_an_edit_and_a_stray_file(tmp_path):
    generate = _generator()
    files = generate.rendered()
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert generate.drift(tmp_path, files) == []
    (tmp_path / "obsqc-overview.json").write_text(files["obsqc-overview.json"].replace("Verdicts", "Verdikts", 1))
    (tmp_path / "old.json").write_text("{}")
    assert generate.drift(tmp_path, files) == ["obsqc-overview.json", "old.json"]
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1


# --- well formed ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_a_dashboard_is_well_formed(path):
    dashboard = load(path)
    assert re.fullmatch(r"[a-z0-9-]{8,40}", dashboard["uid"]) and dashboard["uid"] == path.stem
    assert dashboard["title"] and dashboard["schemaVersion"] >= 38  # Grafana 10 and later
    assert dashboard["annotations"]["list"][0]["builtIn"] == 1
    names = variables(dashboard)
    assert {"instrument", "band"} <= set(names)
    for name in ("instrument", "band"):
        assert names[name]["datasource"]["uid"] == datasource_uid()
        assert names[name]["multi"] and names[name]["includeAll"] and names[name]["allValue"] == ".*"
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert all(isinstance(pos[k], int) for k in "hwxy"), panel
        assert pos["w"] >= 1 and pos["h"] >= 1 and pos["x"] >= 0 and pos["y"] >= 0 and pos["x"] + pos["w"] <= 24
        if panel["type"] == "row":
            assert pos["w"] == 24 and pos["h"] == 1
            continue
        assert panel.get("title") or panel["fieldConfig"]["defaults"].get("displayName"), panel["id"]
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel.get("targets", []):
            assert target["expr"].strip() and target["datasource"]["uid"] == datasource_uid()
        if panel.get("targets"):
            assert panel["datasource"]["uid"] == datasource_uid()


def _overlaps(panels: list[dict]) -> list[tuple[int, int]]:
    cells: dict[tuple[int, int], int] = {}
    clashes = []
    for panel in panels:
        pos = panel["gridPos"]
        for y in range(pos["y"], pos["y"] + pos["h"]):
            for x in range(pos["x"], pos["x"] + pos["w"]):
                if (x, y) in cells:
                    clashes.append((cells[(x, y)], panel["id"]))
                cells[(x, y)] = panel["id"]
    return sorted(set(clashes))


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_no_two_panels_overlap(path):
    """Top-level panels (rows and the panels of open rows) share no grid cell; the panels of a collapsed
    row, which Grafana places below its header when it is opened, share none among themselves."""
    top = load(path)["panels"]
    assert _overlaps(top) == []
    for row in (p for p in top if p["type"] == "row" and p.get("collapsed")):
        assert row["panels"] and _overlaps(row["panels"]) == []
        assert min(p["gridPos"]["y"] for p in row["panels"]) == row["gridPos"]["y"] + 1
    assert _overlaps([{"id": 1, "gridPos": {"x": 0, "y": 0, "w": 4, "h": 2}},
                      {"id": 2, "gridPos": {"x": 3, "y": 1, "w": 4, "h": 2}}]) == [(1, 2)]


def camera_panels(focal: dict, title_start: str) -> dict[str, dict]:
    """CCD name -> panel of the camera whose row title starts with ``title_start``: the panels inside the
    row when it is collapsed, else the top-level panels between its header and the next row's."""
    top = focal["panels"]
    row = next(p for p in top if p["type"] == "row" and p["title"].startswith(title_start))
    inside = row["panels"]
    if not inside:
        below = min((p["gridPos"]["y"] for p in top if p["type"] == "row" and p["gridPos"]["y"] > row["gridPos"]["y"]),
                    default=10**6)
        inside = [p for p in top if p["type"] != "row" and row["gridPos"]["y"] < p["gridPos"]["y"] < below]
    return {p["fieldConfig"]["defaults"]["displayName"]: p for p in inside}


def test_the_focal_plane_draws_the_cameras_as_they_are():
    """DECam in its 12 rows (3,4,5,6,6,7 | 7,6,6,5,4,3 CCDs, S29-S31 on top, numbers rising to the right,
    S1 above N1) and the simulator's small preset as a 2 x 2 image (S1 bottom left)."""
    focal = load(DASHBOARD_DIR / "obsqc-focal-plane.json")
    decam = {name: p["gridPos"] for name, p in camera_panels(focal, "DECam").items()}
    assert sorted(decam) == sorted([f"S{i}" for i in range(1, 32)] + [f"N{i}" for i in range(1, 32)])
    by_row: dict[int, list[str]] = {}
    for name, pos in sorted(decam.items(), key=lambda item: item[1]["x"]):
        by_row.setdefault(pos["y"], []).append(name)
    lines = [by_row[y] for y in sorted(by_row)]
    assert [len(line) for line in lines] == [3, 4, 5, 6, 6, 7, 7, 6, 6, 5, 4, 3]
    assert lines[0] == ["S29", "S30", "S31"] and lines[-1] == ["N29", "N30", "N31"]
    assert lines[5] == [f"S{i}" for i in range(1, 8)] and lines[6] == [f"N{i}" for i in range(1, 8)]
    assert all(decam[f"S{i}"]["x"] == decam[f"N{i}"]["x"] for i in range(1, 32))
    small = {name: p["gridPos"] for name, p in camera_panels(focal, "Simulator camera (SIMCAM), preset small").items()}
    assert sorted(small) == ["S1", "S2", "S3", "S4"]
    assert small["S1"]["y"] == small["S2"]["y"] > small["S3"]["y"] == small["S4"]["y"]
    assert small["S1"]["x"] == small["S3"]["x"] < small["S2"]["x"] == small["S4"]["x"]
    for name, panel in camera_panels(focal, "DECam").items():  # each panel asks for its own CCD
        assert f'ccd="{name}"' in panel["targets"][0]["expr"]


# --- provisioning -----------------------------------------------------------------------------------------

def datasource_uid() -> str:
    (source,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    return source["uid"]


def test_provisioning_names_the_datasource_and_the_dashboard_folder():
    config = yaml.safe_load(DATASOURCES.read_text())
    assert config["apiVersion"] == 1
    (source,) = config["datasources"]
    assert (source["type"], source["url"], source["access"]) == ("prometheus", "http://prometheus:9090", "proxy")
    assert source["isDefault"] is True
    providers = yaml.safe_load(PROVIDERS.read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    uids = {panel_source["uid"] for path in DASHBOARD_FILES for panel in all_panels(load(path))
            for panel_source in [panel.get("datasource")] if panel_source}
    assert uids == {source["uid"]}


# --- PromQL: valid, and only obsqc's metrics ---------------------------------------------------------------

def _rule_file(exprs: list[str], path: Path) -> Path:
    rules = [{"record": f"dashboard:query_{i}:check", "expr": expr} for i, expr in enumerate(exprs)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, sort_keys=False))
    return path


def test_every_expression_is_valid_promql_for_promtool(promtool, tmp_path):
    exprs = [expr for _, _, expr in expressions()] + [selector for _, _, selector, _ in variable_selectors()]
    assert len(exprs) > 100  # the focal plane alone has one query per CCD
    run = subprocess.run([promtool, "check", "rules", str(_rule_file(exprs, tmp_path / "dashboards.yml"))],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    # The check can fail: one unbalanced parenthesis is reported.
    broken = _rule_file([exprs[0], "sum(rate(obsqc_exposures_judged_total[5m])"], tmp_path / "broken.yml")
    run = subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "query_1" in run.stdout + run.stderr


def test_every_metric_named_is_one_obsqc_exports():
    exported = exported_metric_names()
    # The definitions were read: a counter, a histogram's buckets, a scrape-time gauge of the store.
    assert {"obsqc_exposures_judged_total", "obsqc_exposure_latency_seconds_bucket",
            "obsqc_recent_exposure_verdict", "obsqc_workers"} <= exported
    assert "obsqc:exposure_latency_seconds_p95:5m" in recorded_names()
    unknown = {(name, panel): sorted(unknown_names(expr)) for name, panel, expr in expressions()
               if unknown_names(expr)}
    unknown |= {(name, f"variable {var}"): sorted(unknown_names(selector))
                for name, var, selector, _ in variable_selectors() if unknown_names(selector)}
    assert unknown == {}
    # The check can fail: a name obsqc does not export is reported.
    assert unknown_names('sum(rate(obsqc_exposures_judgd_total{verdict="bad"}[5m]))') == {
        "obsqc_exposures_judgd_total"}


def test_every_exported_metric_is_on_a_dashboard():
    """A metric obsqc exports and no dashboard shows is a gap in what operators see (recording rules that
    read it count)."""
    shown = set().union(*(metric_names(expr) for _, _, expr in expressions()))
    rules = [rule for path in RULES for group in yaml.safe_load(path.read_text())["groups"]
             for rule in group["rules"] if rule.get("record") in shown]
    shown |= set().union(*(metric_names(rule["expr"]) for rule in rules))
    histograms = {name.removesuffix("_bucket") for name in exported_metric_names() if name.endswith("_bucket")}
    missing = {name for name in exported_metric_names() - shown
               if not (name.endswith(("_sum", "_count")) and name.rsplit("_", 1)[0] in histograms)}
    assert missing == set()


def test_the_no_data_allowlist_names_queries_that_exist():
    assert set(NO_DATA_EXPECTED) <= {(name, panel) for name, panel, _ in expressions()}


# --- with a real Prometheus scraping a running obsqc -------------------------------------------------------

def link_urls(panel: dict, labels: dict[str, str], base_url: str) -> list[str]:
    """The data links of a table panel's columns for one row (its labels), as Grafana makes them: the obsqc
    URL variable taken raw, ``${__data.fields.<column>}`` percent-encoded."""
    urls = []
    for override in panel["fieldConfig"]["overrides"]:
        for prop in override["properties"]:
            for link in prop["value"] if prop["id"] == "links" else []:
                url = link["url"].replace("${obsqc_url:raw}", base_url)
                urls.append(re.sub(r"\$\{__data\.fields\.(\w+)\}", lambda m: quote(labels[m.group(1)], safe=""), url))
    return urls


def _finite(result: list) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.mark.slow
def test_every_expression_returns_data_from_prometheus_scraping_obsqc(observed_service):
    kind, seed = SPOILED
    exposure_id = observed_service.post(observed_service.make_exposure(kind, seed=seed))
    record = observed_service.wait_verdict(exposure_id)
    ccds = sorted({c for flag in record["flags"] for c in flag["ccds"]})
    assert record["verdict"] in ("bad", "warn") and ccds, record
    # Prometheus (1 s scrapes and rule evaluations) has the verdict, and a few evaluations after it.
    observed_service.wait_query(f'obsqc_recent_exposure_verdict{{exposure_id="{exposure_id}"}}', 30)
    time.sleep(3)

    empty = {}
    for name, panel, expr in expressions():
        asked = zero_fallback_lhs(expr)
        if not _finite(observed_service.query(asked)) and (name, panel) not in NO_DATA_EXPECTED:
            empty[(name, panel)] = asked
    for name, var, selector, label in variable_selectors():
        values = {series["metric"].get(label) for series in observed_service.query(selector)}
        if not values - {None}:
            empty[(name, f"variable {var}")] = selector
    assert empty == {}, observed_service.log_tails()


    # The focal plane lights the CCDs the flags named, and only those of this camera's layout.
    focal = load(DASHBOARD_DIR / "obsqc-focal-plane.json")
    rates = {}
    for name, panel in camera_panels(focal, "Simulator camera (SIMCAM), preset small").items():
        (sample,) = observed_service.query(concrete(panel["targets"][0]["expr"], focal))
        rates[name] = float(sample["value"][1])
    assert sorted(rates) == ["S1", "S2", "S3", "S4"]
    assert {name for name, rate in rates.items() if rate > 0} >= set(ccds), (rates, ccds)

    # The bad-exposure table lists it, and its link opens the exposure's page.
    overview = load(DASHBOARD_DIR / "obsqc-overview.json")
    table = next(p for p in all_panels(overview) if p["type"] == "table")
    rows = observed_service.query(concrete(table["targets"][0]["expr"], overview))
    mine = [r["metric"] for r in rows if r["metric"].get("exposure_id") == exposure_id]
    assert mine and mine[0]["ccds"] == ",".join(ccds), rows
    urls = link_urls(table, mine[0], observed_service.api_url)
    assert urls == [f"{observed_service.api_url}/ui/exposures/{quote(exposure_id, safe='')}"]
    # ... and the galaxy table's links open a galaxy, the exposure's galaxies and its page.
    science = load(DASHBOARD_DIR / "obsqc-science.json")
    table = next(p for p in all_panels(science) if p["type"] == "table")
    (first, *_) = observed_service.query(concrete(table["targets"][0]["expr"], science))
    urls += link_urls(table, first["metric"], observed_service.api_url)
    assert len(urls) == 4
    with observed_service.client() as client:
        for url in urls:
            answer = client.get(url)
            assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
            kind = "application/json" if "/v1/" in url else "text/html"
            assert answer.headers["content-type"].startswith(kind), url
