"""The science dashboard: what the indicators and the galaxy scorer see.

Calibrated scores (sigma units against each instrument and band's reference) over time, their
distribution, their hourly mean (optics or focus drifting over an hour), then the galaxies: scored per
minute, the anomaly rate (anomalies per scored galaxy, s_disc above 3 sigma), scoring time, and the most
anomalous galaxies of the last hour with links to them.

The score distributions are built from ``obsqc_last_score_sigma``, the scores of the newest exposure of
each instrument and band as sampled at every scrape: an exposure counts once per scrape while it is
the newest, so the distribution is weighted by time (close to one count per exposure when exposures
arrive about once per scrape interval).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import DashboardLink, Row
from grafana_foundation_sdk.models.dashboard import DashboardLinkType

from obsqc.service.settings import Settings
from obsqc_dashboards.common import (
    SELECT, UI_URL_VARIABLE, dashboard, finish, instrument_band_variables, query, ui_link, ui_url_variable, variable,
)
from obsqc_dashboards.panels import bar_gauge, heat_map, histogram_panel, row, stat_panel, table_panel, time_series
from obsqc_dashboards.panels import unit

UID = "obsqc-science"

WARN_SIGMA = Settings.model_fields["warn_sigma"].default
"""The service's default warn level (sigma), drawn as a line on the score panels."""

BAD_SIGMA = Settings.model_fields["bad_sigma"].default
"""The service's default bad level (sigma)."""

GALAXY_ANOMALY_SIGMA = Settings.model_fields["galaxy_anomaly_sigma"].default
"""The s_disc sigma above which a galaxy counts as an anomaly (the service's default)."""

SCORE = "obsqc_last_score_sigma"
SCORES = f'{SCORE}{{{SELECT}, indicator=~"$indicator"}}'
SCORED = "obsqc_galaxies_scored_total"
ANOMALIES = "obsqc_galaxy_anomalies_total"

_LEVELS = ((None, "transparent"), (WARN_SIGMA, "orange"), (BAD_SIGMA, "red"))


def _scores():
    yield row("Calibrated scores")
    yield time_series(
        "Calibrated scores", "Significance (sigma) of each indicator for the newest exposure of each instrument "
        f"and band. Dashed lines: warn at {WARN_SIGMA:g} sigma, bad at {BAD_SIGMA:g} sigma.",
        [query(f"max by (instrument, band, indicator) ({SCORES})", "{{instrument}} {{band}} {{indicator}}")],
        w=16, h=9, limits=_LEVELS, min_value=None, axis_label="sigma")
    yield bar_gauge(
        "Newest exposure", "Each indicator's sigma for the newest exposure (the highest over the chosen "
        "instruments and bands).",
        [query(f"max by (indicator) ({SCORES})", "{{indicator}}", instant=True)],
        w=8, h=9, steps=((None, "green"), (WARN_SIGMA, "orange"), (BAD_SIGMA, "red")), max_value=2 * BAD_SIGMA)
    yield heat_map(
        "Score distribution over time", "How the calibrated scores are spread in each time bucket (all chosen "
        "indicators together; time-weighted, see the dashboard description).",
        query(f"max by (instrument, band, indicator) ({SCORES})", "{{instrument}} {{band}} {{indicator}}"),
        w=12, h=9)
    yield histogram_panel(
        "Score distribution in the time range", "Histogram of the calibrated scores over the time range, "
        "0.5 sigma bins; a normal night centres near 0 with a tail below the warn level.",
        query(f"max by (instrument, band, indicator) ({SCORES})", "{{instrument}} {{band}} {{indicator}}"),
        w=12, h=9)
    yield time_series(
        "Hourly mean score (drift)", "Mean of each indicator's sigma over the past hour (the recorded series "
        "the drift alert reads): a slow rise is optics or focus drifting, not one bad exposure.",
        [query(f'max by (instrument, band, indicator) (obsqc:last_score_sigma_avg:1h{{{SELECT}, '
               'indicator=~"$indicator"})',
               "{{instrument}} {{band}} {{indicator}}")],
        w=24, h=8, limits=_LEVELS, min_value=None, axis_label="sigma")


def _galaxies():
    yield row("Galaxies")
    yield time_series(
        "Galaxy anomaly rate", f"Galaxies with s_disc above {GALAXY_ANOMALY_SIGMA:g} sigma per galaxy scored, by "
        "instrument and band. A burst is worth a look.",
        [query(f"sum by (instrument, band) (rate({ANOMALIES}{{{SELECT}}}[$__rate_interval])) / "
               f"sum by (instrument, band) (rate({SCORED}{{{SELECT}}}[$__rate_interval]))",
               "{{instrument}} {{band}}")],
        unit="percentunit", w=9)
    yield stat_panel(
        "Anomaly fraction (1 h)", "Anomalous galaxies per galaxy scored over the last hour, by instrument and "
        "band (the recorded series the anomaly-burst alert reads; it fires above 5 %).",
        [query(f"obsqc:galaxy_anomaly_fraction:1h{{{SELECT}}}", "{{instrument}} {{band}}", instant=True)],
        unit="percentunit", w=3, h=8, decimals=2, steps=((None, "green"), (0.02, "orange"), (0.05, "red")))
    yield time_series(
        "Galaxies scored", "Galaxies scored per minute by the WGAN scorer (gpu queue), and anomalies among them.",
        [query(f"sum by (instrument, band) (rate({SCORED}{{{SELECT}}}[$__rate_interval])) * 60",
               "scored {{instrument}} {{band}}"),
         query(f"sum by (instrument, band) (rate({ANOMALIES}{{{SELECT}}}[$__rate_interval])) * 60",
               "anomalies {{instrument}} {{band}}")],
        w=12, axis_label="galaxies / min")
    yield table_panel(
        "Most anomalous galaxies (last hour)",
        f"The 10 galaxies with the highest s_disc sigma (above {GALAXY_ANOMALY_SIGMA:g}) scored in the last hour. "
        "Click a galaxy for its scores and images, an exposure for its galaxies in the gallery or its page.",
        query("max by (instrument, band, exposure_id, galaxy_id) "
              f"(obsqc_recent_galaxy_anomaly{{{SELECT}}})", instant=True, table=True),
        rename={"Value": "s_disc sigma"}, order=("galaxy_id", "s_disc sigma", "exposure_id", "instrument", "band"),
        columns={"galaxy_id": [ui_link(("The galaxy's scores and images", "/v1/galaxies/${__data.fields.galaxy_id}"))],
                 "exposure_id": [ui_link(("The exposure's galaxies in the gallery",
                                          "/ui/galaxies?exposure_id=${__data.fields.exposure_id}"),
                                         ("The exposure's page", "/ui/exposures/${__data.fields.exposure_id}"))],
                 "s_disc sigma": [unit("none")]},
        sort_by="s_disc sigma", w=12, h=9)
    yield time_series(
        "Galaxy scoring time (p95)", "95th percentile of the seconds spent per exposure in each step of galaxy "
        "scoring (inference with latent refinement, store).",
        [query("histogram_quantile(0.95, sum by (le, step) (rate(obsqc_galaxy_scoring_seconds_bucket"
               "[$__rate_interval])))", "{{step}}")],
        unit="s", w=6, h=9)
    yield time_series(
        "Inference batch size (median)", "Median number of galaxies per inference batch of the scorer.",
        [query("histogram_quantile(0.5, sum by (le) (rate(obsqc_galaxy_batch_size_bucket[$__rate_interval])))",
               "median batch")],
        w=6, h=9, axis_label="galaxies")


def build() -> dict:
    """The science dashboard as JSON data."""
    indicator = variable("indicator", "Indicator", SCORE)
    d = (dashboard(UID, "obsqc: science", "Calibrated score distributions and drift, galaxy anomaly rate and the "
                   "most anomalous galaxies.")
         .variables([*instrument_band_variables(), indicator, ui_url_variable()])
         .link(DashboardLink("galaxy gallery").type(DashboardLinkType.LINK).target_blank(True).icon("external link")
               .url(f"${{{UI_URL_VARIABLE}:raw}}/ui/galaxies?min_sigma={GALAXY_ANOMALY_SIGMA:g}")))
    for section in (_scores, _galaxies):
        for item in section():
            d = d.with_row(item) if isinstance(item, Row) else d.with_panel(item)
    return finish(d)
