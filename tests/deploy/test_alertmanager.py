"""The Alertmanager example (deploy/alertmanager/alertmanager.yml), checked by the real tools.

``amtool check-config`` validates it; ``amtool config routes test`` shows that every alert of
deploy/prometheus/rules/alerts.yml lands on the pager when its severity is ``page`` and on the chat
otherwise, whatever the instrument. Then a real Alertmanager (Debian's ``prometheus-alertmanager``)
runs the same file with its webhook URLs pointed at a local receiver: a bad exposure reaches the pager
within seconds, grouped by instrument, and the warn exposure of the same instrument and band is
inhibited while a warn of another band still reaches the chat.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import yaml

from obsqc.service.redis_embedded import free_tcp_port
from tests.deploy.conftest import ALERTMANAGER_CONFIG, PROMETHEUS_DIR

ALERT_RULES = PROMETHEUS_DIR / "rules" / "alerts.yml"


def _alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _route(amtool: str, *labels: str) -> str:
    result = subprocess.run([amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def test_amtool_accepts_the_config(amtool):
    result = subprocess.run([amtool, "check-config", str(ALERTMANAGER_CONFIG)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("instrument", ["DECam", "LSSTCam"])
def test_every_alert_routes_by_its_severity(amtool, instrument):
    rules = _alert_rules()
    assert len(rules) >= 10
    for rule in rules:
        severity = rule["labels"]["severity"]
        receiver = _route(amtool, f"alertname={rule['alert']}", f"severity={severity}", f"instrument={instrument}",
                          "band=r")
        expected = "obsqc-pager" if severity == "page" else "obsqc-chat"
        assert receiver == expected, (rule["alert"], severity, receiver)


def test_an_unknown_severity_still_reaches_someone(amtool):
    assert _route(amtool, "alertname=Something", "severity=critical") == "obsqc-chat"


# ---- a real Alertmanager --------------------------------------------------------------------------


class _Hooks(ThreadingHTTPServer):
    """A webhook receiver: records (path, JSON body) of every POST."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def alerts_at(self, path: str) -> list[dict]:
        return [alert for hook, body in list(self.received) if hook == path for alert in body["alerts"]]


def _local_config(port: int) -> dict:
    """The repository's config with each receiver's webhook sent to ``127.0.0.1:port/<receiver>``."""
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{port}/{receiver['name']}"
    return config


@pytest.fixture()
def alertmanager(tmp_path):
    """A real Alertmanager with the repository's routes and inhibitions, notifying a local receiver."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        message = "Alertmanager is not installed (apt-get install prometheus-alertmanager)"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this check must run)")
        pytest.skip(message)
    hooks = _Hooks()
    threading.Thread(target=hooks.serve_forever, daemon=True).start()
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(_local_config(hooks.server_address[1])))
    port = free_tcp_port()
    log = (tmp_path / "alertmanager.log").open("w")
    process = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "alertmanager.log").read_text()
            assert time.monotonic() < deadline, "Alertmanager did not become ready"
            time.sleep(0.2)
        yield url, hooks
    finally:
        process.terminate()
        process.wait(30)
        log.close()
        hooks.shutdown()
        hooks.server_close()


def _exposure_alert(alertname: str, severity: str, band: str, exposure_id: str) -> dict:
    return {"labels": {"alertname": alertname, "severity": severity, "instrument": "DECam", "band": band,
                       "exposure_id": exposure_id, "verdict": "bad" if severity == "page" else "warn",
                       "flags": "background_gradient", "ccds": "N4"},
            "annotations": {"summary": f"exposure {exposure_id}"}}


def test_pages_the_bad_exposure_and_inhibits_its_warn_duplicates(alertmanager):
    url, hooks = alertmanager
    alerts = [
        _exposure_alert("ObsqcBadExposure", "page", "r", "DECam_001"),
        _exposure_alert("ObsqcWarnExposure", "warn", "r", "DECam_002"),   # inhibited: same instrument and band
        _exposure_alert("ObsqcWarnExposure", "warn", "g", "DECam_003"),   # another band: notified
    ]
    answer = httpx.post(f"{url}/api/v2/alerts", json=alerts, timeout=10)
    assert answer.status_code == 200, answer.text

    deadline = time.monotonic() + 40
    while not (hooks.alerts_at("/obsqc-pager") and hooks.alerts_at("/obsqc-chat")):
        assert time.monotonic() < deadline, f"notifications so far: {hooks.received}"
        time.sleep(0.2)
    time.sleep(1)
    paged = hooks.alerts_at("/obsqc-pager")
    assert [a["labels"]["exposure_id"] for a in paged] == ["DECam_001"]
    assert paged[0]["labels"]["ccds"] == "N4"
    chatted = {a["labels"]["exposure_id"] for a in hooks.alerts_at("/obsqc-chat")}
    assert chatted == {"DECam_003"}

    state = {a["labels"]["exposure_id"]: a["status"] for a in httpx.get(f"{url}/api/v2/alerts", timeout=10).json()}
    assert state["DECam_002"]["state"] == "suppressed" and state["DECam_002"]["inhibitedBy"]
    assert state["DECam_001"]["state"] == "active"

    # Grouping: one notification per alert name, instrument and band.
    groups = {(body["groupLabels"].get("alertname"), body["groupLabels"].get("instrument"))
              for _, body in hooks.received}
    assert ("ObsqcBadExposure", "DECam") in groups
