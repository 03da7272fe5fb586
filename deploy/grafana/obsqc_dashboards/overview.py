"""The overview dashboard: is obsqc keeping up, and what did it find?

Verdicts over time by instrument and band, the bad and warn exposures of the last 15 minutes with links
to their pages, end-to-end latency against the one-minute budget (DESIGN.md), queue backlog and
workers per queue, failures and error verdicts, the calibration state and the health of Redis, the
store and the scrape targets.

Gauges computed at scrape time (queues, workers, store) repeat on every scrape target when workers on
other machines are scraped too (deploy/prometheus/prometheus.yml), so they are read with ``max``;
counters are summed.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Row

from obsqc_dashboards.common import (
    JUDGED, SELECT, VERDICT_COLORS, dashboard, finish, grown, instrument_band_variables, query, ui_link,
    ui_url_variable,
)
from obsqc_dashboards.panels import bar_gauge, colored_text, row, stat_panel, table_panel, time_series, unit, value_text

UID = "obsqc-overview"

LATENCY_BUDGET_S = 60
"""End-to-end latency operators are promised (DESIGN.md): an alert within a minute of a bad exposure."""

def _verdicts():
    yield row("Verdicts")
    yield time_series(
        "Verdicts per minute", "Exposures judged per minute, stacked by instrument, band and verdict.",
        [query(f"sum by (instrument, band, verdict) (rate({JUDGED}{{{SELECT}}}[$__rate_interval])) * 60",
               "{{instrument}} {{band}} {{verdict}}")],
        unit="short", w=16, h=9, stacked=True, verdicts=True, axis_label="exposures / min")
    yield stat_panel(
        "Verdicts in the time range", "Exposures judged in the dashboard's time range, by verdict.",
        [query(f"sum by (verdict) ({grown(f'{JUDGED}{{{SELECT}}}')})", "{{verdict}}", instant=True)],
        w=8, h=9, decimals=0, verdicts=True)
    yield table_panel(
        "Bad and warn exposures (last 15 min)",
        "Every exposure judged bad or warn in the last 15 minutes (at most 50): its flags (indicators at or "
        "above the warn level) and the CCDs they name. Click an exposure for its page: focal-plane map, "
        "histograms against the reference, thumbnails of the flagged CCDs.",
        query("max by (instrument, band, exposure_id, verdict, flags, ccds) "
              f"(obsqc_recent_exposure_verdict{{{SELECT}}}) * 1000", instant=True, table=True),
        rename={"Value": "judged at"}, order=("exposure_id", "verdict", "instrument", "band", "flags", "ccds"),
        columns={"exposure_id": [ui_link(("Open the exposure's page", "/ui/exposures/${__data.fields.exposure_id}"))],
                 "verdict": colored_text({"bad": VERDICT_COLORS["bad"], "warn": VERDICT_COLORS["warn"]}),
                 "judged at": [unit("dateTimeAsIso")]},
        sort_by="judged at", w=24, h=9)


def _latency():
    yield row("Latency and throughput")
    yield time_series(
        "End-to-end latency", "Seconds from the API receiving an exposure to its verdict being stored, median "
        "and 95th percentile per instrument over 5-minute windows (the recorded series the latency alert "
        f"reads). The dashed line is the {LATENCY_BUDGET_S} s budget.",
        [query('obsqc:exposure_latency_seconds_p50:5m{instrument=~"$instrument"}', "p50 {{instrument}}"),
         query('obsqc:exposure_latency_seconds_p95:5m{instrument=~"$instrument"}', "p95 {{instrument}}")],
        unit="s", w=8, limits=((None, "transparent"), (LATENCY_BUDGET_S, "red")))
    yield time_series(
        "Exposures received and judged", "Exposures per minute accepted by the API and judged by the workers; "
        "judged below received for long means a growing backlog.",
        [query(f"sum(rate(obsqc_exposures_received_total{{{SELECT}}}[$__rate_interval])) * 60", "received"),
         query(f"sum(rate({JUDGED}{{{SELECT}}}[$__rate_interval])) * 60", "judged")],
        w=8, axis_label="exposures / min")
    yield time_series(
        "Worker steps (p95)", "95th percentile of the seconds a worker spends in each step of judging an "
        "exposure: which step makes the latency?",
        [query("histogram_quantile(0.95, sum by (le, step) (rate(obsqc_step_duration_seconds_bucket"
               "[$__rate_interval])))", "{{step}}")],
        unit="s", w=8)


def _queues():
    yield row("Queues and workers")
    yield time_series(
        "Queue backlog", "Jobs waiting (and running) per queue: qc judges exposures, gpu scores galaxies.",
        [query("obsqc:queue_depth:max", "{{queue}} waiting"),
         query('max by (queue) (obsqc_queue_jobs{state="started"})', "{{queue}} running")],
        w=8, axis_label="jobs")
    yield time_series(
        "Workers per queue", "RQ workers registered on each queue.",
        [query("max by (queue) (obsqc_workers)", "{{queue}}")], w=8, axis_label="workers")
    yield stat_panel(
        "Workers now", "Workers registered on each queue now; red when a queue has none.",
        [query("max by (queue) (obsqc_workers)", "{{queue}}", instant=True)],
        w=4, h=8, steps=((None, "red"), (1, "green")))
    yield stat_panel(
        "Error verdicts", "Exposures whose judging failed after every retry (verdict error) in the time range.",
        [query(f"""sum({grown(f'{JUDGED}{{{SELECT}, verdict="error"}}')}) or vector(0)""", "error", instant=True)],
        w=4, h=8, decimals=0, steps=((None, "green"), (1, "red")))
    yield time_series(
        "Failed job attempts", "Failed attempts of judging jobs per interval, by kind (exception, timeout, "
        "abandoned), and the attempts put back on the queue.",
        [query("sum by (kind) (increase(obsqc_job_failures_total[$__rate_interval]))", "{{kind}}"),
         query("sum(increase(obsqc_job_retries_total[$__rate_interval]))", "retried")],
        w=12, axis_label="attempts")
    yield time_series(
        "Error verdicts per minute", "Exposures per minute that got the verdict error, by instrument and band.",
        [query(f'sum by (instrument, band) (rate({JUDGED}{{{SELECT}, verdict="error"}}[$__rate_interval])) * 60',
               "{{instrument}} {{band}}")],
        w=12, axis_label="exposures / min")


def _calibration():
    yield row("Calibration")
    yield stat_panel(
        "Calibrating", "Whether each instrument and band is still building its reference (verdict calibrating) "
        "or judging.",
        [query(f"max by (instrument, band) (obsqc_calibrating{{{SELECT}}})", "{{instrument}} {{band}}",
               instant=True)],
        w=6, h=5, mappings=value_text({0: ("judging", "green"), 1: ("calibrating", "blue")}))
    yield stat_panel(
        "Calibrating for", "How long the current run of calibrating verdicts has lasted (empty when judging).",
        [query(f"time() - max by (instrument, band) (obsqc_calibrating_since_timestamp_seconds{{{SELECT}}})",
               "{{instrument}} {{band}}", instant=True)],
        unit="s", w=6, h=5, steps=((None, "blue"), (3600, "orange")))
    yield stat_panel(
        "Reference members", "Exposures the current reference of each instrument and band is built from.",
        [query(f"max by (instrument, band) (obsqc_reference_members{{{SELECT}}})", "{{instrument}} {{band}}",
               instant=True)],
        w=6, h=5, decimals=0)
    yield stat_panel(
        "Reference age", "Time since the reference of each instrument and band was last rebuilt.",
        [query(f"time() - max by (instrument, band) (obsqc_reference_updated_timestamp_seconds{{{SELECT}}})",
               "{{instrument}} {{band}}", instant=True)],
        unit="s", w=6, h=5, steps=((None, "green"), (7 * 86400, "orange")))


def _health():
    yield row("Health")
    updown = value_text({0: ("down", "red"), 1: ("up", "green")})
    yield stat_panel("Redis", "Whether the API could read the job queues from Redis at the last scrape.",
                     [query("max(obsqc_redis_up)", "redis", instant=True)], w=3, h=5, mappings=updown)
    yield stat_panel("Verdict store", "Whether the API could read the verdict store at the last scrape.",
                     [query("max(obsqc_store_up)", "store", instant=True)], w=3, h=5, mappings=updown)
    yield stat_panel("Scrape targets", "Whether Prometheus reaches each obsqc target (API, remote workers).",
                     [query('up{job=~"obsqc.*"}', "{{job}} {{instance}}", instant=True)],
                     w=6, h=5, mappings=updown)
    yield stat_panel(
        "Newest verdict", "Time since the newest verdict of each instrument and band: has judging stalled?",
        [query(f"time() - max by (instrument, band) (obsqc_last_verdict_timestamp_seconds{{{SELECT}}})",
               "{{instrument}} {{band}}", instant=True)],
        unit="s", w=6, h=5, steps=((None, "green"), (600, "orange"), (3600, "red")))
    yield bar_gauge(
        "API errors", "HTTP answers with status 5xx in the time range, by route.",
        [query(f"""sum by (route) ({grown('obsqc_http_requests_total{status=~"5.."}')}) or vector(0)""",
               "{{route}}", instant=True)],
        w=6, h=5, steps=((None, "green"), (1, "red")))
    yield time_series(
        "API requests", "HTTP requests per second answered by the API, by status code.",
        [query("sum by (status) (rate(obsqc_http_requests_total[$__rate_interval]))", "{{status}}")],
        unit="reqps", w=12)
    yield time_series(
        "API response time (p95)", "95th percentile of the API's answer time, by route.",
        [query("histogram_quantile(0.95, sum by (le, route) (rate(obsqc_http_request_duration_seconds_bucket"
               "[$__rate_interval])))", "{{route}}")],
        unit="s", w=12)


def build() -> dict:
    """The overview dashboard as JSON data."""
    d = (dashboard(UID, "obsqc: overview", "Verdicts, latency, queues, workers, calibration and health of obsqc.")
         .variables([*instrument_band_variables(), ui_url_variable()]))
    for section in (_verdicts, _latency, _queues, _calibration, _health):
        for item in section():
            d = d.with_row(item) if isinstance(item, Row) else d.with_panel(item)
    return finish(d)
