"""The focal-plane dashboard: which CCDs keep getting flagged, drawn where they sit in the camera.

Each CCD is one stat panel at its place on the focal plane (:mod:`obsqc_dashboards.layouts`), coloured
from green to red by its flag rate: the flags naming that CCD (``obsqc_ccd_flags_total``, filtered by
the ``flag`` variable) per exposure judged ok, warn or bad in the time range. A CCD flagged in every
exposure reads 100 %; the scale saturates at :data:`RATE_SATURATION`. One dashboard row per camera
layout: the simulator's presets and DECam; pick the instrument with the ``instrument`` variable.

Above the cameras: how many consecutive exposures name each CCD now (a CCD flagged again and again is
hardware, not sky), and the flags over time.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, text
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.text import TextMode

from obsqc_dashboards.common import (
    JUDGED, SELECT, dashboard, finish, grown, instrument_band_variables, query, ui_url_variable, variable,
)
from obsqc_dashboards.layouts import CameraLayout, Cell, camera_layouts
from obsqc_dashboards.panels import bar_gauge, row, time_series

UID = "obsqc-focal-plane"

RATE_SATURATION = 0.25
"""Flag rate at which a CCD's colour reaches full red (a quarter of the exposures name it)."""

EXPANDED = ("sim-small", "decam")
"""Camera rows open when the dashboard loads (``obsqc up`` simulates the small preset); the others are
collapsed, and their queries run only once opened."""

CONSECUTIVE_WARN = 3
"""Consecutive flagged exposures at which a CCD's bar turns red (hardware suspected)."""

FLAGS = "obsqc_ccd_flags_total"

_INTRO = """Each box is a CCD at its place on the focal plane. **Value and colour: flags naming the CCD per
exposure judged (ok, warn or bad) in the time range**, green at 0, red at {saturation:.0%} and above. Choose the
instrument and the flags above; open a camera's row below. A CCD red in every time range is hardware; a
patch of neighbours red together is light (scattered light, a satellite trail)."""


def ccd_rate_expr(ccd: str) -> str:
    """PromQL of one CCD's flag rate (0 when the CCD was never flagged, 0 when nothing was judged)."""
    flags = grown(f'{FLAGS}{{instrument=~"$instrument", ccd="{ccd}", flag=~"$flag"}}')
    judged = grown(f'{JUDGED}{{instrument=~"$instrument", verdict=~"ok|warn|bad"}}')
    return f"(sum({flags}) or vector(0)) / clamp_min(sum({judged}), 1)"


def _ccd_panel(cell: Cell, top: int) -> stat.Panel:
    return (stat.Panel().display_name(cell.ccd)
            .description(f"CCD {cell.ccd}: flags naming it per exposure judged in the time range.")
            .with_target(query(ccd_rate_expr(cell.ccd), cell.ccd, instant=True))
            .unit("percentunit").decimals(0).min(0).max(RATE_SATURATION)
            .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.CONTINUOUS_GR_YL_RD))
            .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.NONE)
            .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .grid_pos(dm.GridPos(h=cell.h, w=cell.w, x=cell.x, y=top + cell.y)))


def _camera(layout: CameraLayout, top: int) -> tuple[db.Row, list[stat.Panel]]:
    """The row header at grid row ``top`` and the CCD panels below it (inside the row when collapsed)."""
    header = row(layout.title).grid_pos(dm.GridPos(h=1, w=24, x=0, y=top))
    panels = [_ccd_panel(cell, top + 1) for cell in layout.cells]
    if layout.key in EXPANDED:
        return header, panels
    for panel in panels:
        header = header.with_panel(panel)
    return header, []


def _hardware() -> list:
    intro = (text.Panel().title("How to read this dashboard").mode(TextMode.MARKDOWN)
             .content(_INTRO.format(saturation=RATE_SATURATION).replace("\n", " "))
             .grid_pos(dm.GridPos(h=8, w=6, x=0, y=1)))
    streaks = bar_gauge(
        "Consecutive flagged exposures", "For each CCD the newest exposure of an instrument and band names: "
        "how many of the newest exposures, without a gap, name it too. Red from "
        f"{CONSECUTIVE_WARN}: the same CCD again and again is hardware.",
        [query(f"max by (instrument, band, ccd) (obsqc_ccd_consecutive_flags{{{SELECT}}})",
               "{{instrument}} {{band}} {{ccd}}", instant=True)],
        steps=((None, "green"), (2, "orange"), (CONSECUTIVE_WARN, "red"))).grid_pos(dm.GridPos(h=8, w=6, x=6, y=1))
    over_time = time_series(
        "Flags by CCD", "Flags naming each CCD per interval, by flag.",
        [query(f'sum by (ccd, flag) (increase({FLAGS}{{instrument=~"$instrument", flag=~"$flag"}}'
               '[$__rate_interval]))', "{{ccd}} {{flag}}")],
        stacked=True, axis_label="flags").grid_pos(dm.GridPos(h=8, w=12, x=12, y=1))
    return [intro, streaks, over_time]


def build() -> dict:
    """The focal-plane dashboard as JSON data."""
    instrument, band = instrument_band_variables()
    flag = variable("flag", "Flag", FLAGS)
    d = (dashboard(UID, "obsqc: focal plane", "Per-CCD flag rates laid out like the cameras, and "
                   "consecutive flags of the same CCD.")
         .variables([instrument, band, flag, ui_url_variable()]))
    d = d.with_row(row("Hardware or sky?").grid_pos(dm.GridPos(h=1, w=24, x=0, y=0)))
    for panel in _hardware():
        d = d.with_panel(panel)
    top = 9
    for layout in camera_layouts():
        header, panels = _camera(layout, top)
        d = d.with_row(header)
        for panel in panels:
            d = d.with_panel(panel)
        top += 1 + (layout.height if panels else 0)
    return finish(d)
