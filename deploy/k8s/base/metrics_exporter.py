"""Serve the metrics of this pod's obsqc workers: every prometheus-client multiprocess file in
``OBSQC_METRICS_DIR`` merged (counters summed, "mostrecent" gauges by write time), at
``http://<pod>:OBSQC_EXPORTER_PORT/metrics`` (default 9108).

Runs as a sidecar of the worker pods with the obsqc image (prometheus-client is one of obsqc's
dependencies) and the worker's metrics directory shared through an ``emptyDir``. It serves only what the
workers write; the queue and store gauges come from the API pods (README.md, "Metrics";
deploy/prometheus/prometheus.yml). Tested by tests/deploy/test_k8s.py.
"""

from __future__ import annotations

import os
import signal
import sys

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector


def main() -> None:
    path = os.environ["OBSQC_METRICS_DIR"]
    port = int(os.environ.get("OBSQC_EXPORTER_PORT", "9108"))
    os.makedirs(path, exist_ok=True)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    start_http_server(port, addr="0.0.0.0", registry=registry)  # a daemon thread answers every scrape
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 in its container: exit on SIGTERM
    print(f"serving the metrics of {path} on port {port}", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
