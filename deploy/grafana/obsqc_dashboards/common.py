"""What the three dashboards share: the datasource, the template variables, query and panel helpers,
and :func:`finish`, which turns a built dashboard into the JSON Grafana provisions.

The dashboards are built with Grafana's own generator, grafana-foundation-sdk (its builders follow the
dashboard schema of the Grafana version it is pinned for), then :func:`finish` adds what every panel
needs and the builders leave to the caller: a unique ``id``, a ``refId`` per query and the datasource
on every panel and query.

PromQL conventions (``deploy/README.md`` and the dashboard test rely on them):

* template variables appear only as ``$name`` (never ``${name}``) inside label matchers: ``=~"$instrument"``
  (multi-value variables have the "All" value ``.*``), and Grafana's ``$__rate_interval`` and
  ``$__range`` as range durations;
* counts over the time range use :func:`grown`, not ``increase()``, so that new series count;
* an expression ending in ``or vector(0)`` shows 0 rather than "No data" when nothing happened (no
  error verdict yet); the test asks its left-hand side for data.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

DATASOURCE_UID = "obsqc-prometheus"
"""uid of the Prometheus datasource in provisioning/datasources/prometheus.yml; every panel names it."""

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)

ALL = ".*"
"""The value of a multi-value variable set to "All": a regex matching every label value."""

UI_URL_VARIABLE = "obsqc_url"
"""Text-box variable holding the address of the obsqc API as operators' browsers reach it; the data
links of the tables point at its ``/ui`` pages and ``/v1`` resources."""

UI_URL_DEFAULT = "http://localhost:8000"
"""Its default: the API of docker-compose (deploy/docker-compose.yml) published on the host."""

TAGS = ["obsqc"]
"""Tag of every obsqc dashboard; the dashboards' link menus list the others by it."""

JUDGED = "obsqc_exposures_judged_total"
SELECT = 'instrument=~"$instrument", band=~"$band"'
"""Label matchers of the instrument and band variables, for metrics that carry both labels."""

VERDICT_COLORS = {"ok": "green", "warn": "orange", "bad": "red", "error": "purple", "calibrating": "blue",
                  "rejected": "text"}
"""Colour of each verdict in every panel that splits by verdict."""


BUILTIN_ANNOTATIONS = {
    "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
    "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
}
"""Grafana's built-in annotation query, which every dashboard it saves carries."""


def query(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> prometheus.Dataquery:
    """A Prometheus query in code mode; ``instant`` for stat and table panels, ``table`` for table format."""
    q = prometheus.Dataquery().expr(expr).editor_mode(QueryEditorMode.CODE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    if table:
        q = q.format(PromQueryFormat.TABLE)
    return q


def grown(selector: str, window: str = "$__range") -> str:
    """PromQL of how much each counter series of ``selector`` grew over ``window``, a series born inside the
    window counted from zero.

    ``increase()`` cannot do the latter: it needs two samples of a series, and a labelled counter appears
    with its first count already in it, so the first flag ever naming a CCD (or the first error verdict of
    a band) would count 0. Here the value ``window`` ago is subtracted, or 0 when the series did not exist
    then; a counter reset inside the window (rare: obsqc keeps its counters across restarts) counts 0.
    """
    return f"clamp_min({selector} - ({selector} offset {window} or {selector} * 0), 0)"


def variable(name: str, label: str, selector: str, *, multi: bool = True) -> db.QueryVariable:
    """A query variable of the label ``name`` over the series of ``selector`` (``label_values``),
    multi-value with "All" (= ``.*``) unless ``multi`` is false."""
    v = (db.QueryVariable(name).label(label).datasource(DATASOURCE)
         .query(f"label_values({selector}, {name})")
         .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC))
    if multi:
        v = (v.multi(True).include_all(True).all_value(ALL)
             .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"])))
    return v


def instrument_band_variables() -> list[db.QueryVariable]:
    """The ``instrument`` and ``band`` variables (band values follow the chosen instruments)."""
    return [variable("instrument", "Instrument", JUDGED),
            variable("band", "Band", f'{JUDGED}{{instrument=~"$instrument"}}')]


def ui_url_variable() -> db.TextBoxVariable:
    """The text box of :data:`UI_URL_VARIABLE`."""
    return (db.TextBoxVariable(UI_URL_VARIABLE).label("obsqc API URL").default_value(UI_URL_DEFAULT)
            .description("Address of the obsqc API as your browser reaches it; table links open its /ui pages.")
            .current(dm.VariableOption(selected=True, text=UI_URL_DEFAULT, value=UI_URL_DEFAULT)))


def ui_link(*links: tuple[str, str]) -> dm.DynamicConfigValue:
    """A field override property making a table cell link to ``<obsqc API URL><path>`` for each
    ``(title, path)`` (several give a menu); ``path`` may use ``${__data.fields.<column>}`` (percent-encoded
    by Grafana), the base URL is taken raw."""
    return dm.DynamicConfigValue(id_val="links", value=[
        {"title": title, "url": f"${{{UI_URL_VARIABLE}:raw}}{path}", "targetBlank": True} for title, path in links])


def dashboard(uid: str, title: str, description: str) -> db.Dashboard:
    """A dashboard with the common settings: tags, refresh, last 6 hours, links to the other obsqc dashboards
    and to the obsqc pages."""
    return (db.Dashboard(title).uid(uid).description(description).tags(TAGS).refresh("30s")
            .time("now-6h", "now").timezone("utc").editable()
            .link(db.DashboardLink("obsqc dashboards").type(dm.DashboardLinkType.DASHBOARDS).tags(TAGS)
                  .as_dropdown(True).include_vars(True).keep_time(True))
            .link(db.DashboardLink("obsqc pages").type(dm.DashboardLinkType.LINK)
                  .url(f"${{{UI_URL_VARIABLE}:raw}}/ui/exposures").target_blank(True).icon("external link")))


def size(panel, w: int, h: int):
    """``panel`` with width ``w`` (of 24 grid columns) and height ``h`` (grid rows of 30 px), placed by the
    dashboard builder in reading order."""
    return panel.grid_pos(dm.GridPos(h=h, w=w, x=0, y=0))


def _panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def finish(built: db.Dashboard) -> dict[str, Any]:
    """The dashboard as plain JSON data: panels numbered 1, 2, ... in order (rows and the panels of
    collapsed rows included), queries lettered A, B, ... per panel, the datasource on every panel with
    queries and on each of its queries, and Grafana's built-in annotations."""
    data = json.loads(JSONEncoder(sort_keys=True).encode(built.build()))
    # Grafana expects the list of annotation queries, with its built-in one (alerts and manual notes).
    data["annotations"] = {"list": [BUILTIN_ANNOTATIONS]}
    source = {"type": "prometheus", "uid": DATASOURCE_UID}
    for number, panel in enumerate(_panels(data.get("panels", [])), start=1):
        panel["id"] = number
        if panel.get("type") == "row" or not panel.get("targets"):
            continue
        panel["datasource"] = dict(source)
        for index, target in enumerate(panel.get("targets", [])):
            target["refId"] = chr(ord("A") + index)
            target["datasource"] = dict(source)
    return data


def dumps(data: dict[str, Any]) -> str:
    """The committed form of a dashboard: sorted keys, two-space indents, a final newline."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
