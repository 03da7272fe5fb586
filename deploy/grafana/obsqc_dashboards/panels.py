"""Panel makers shared by the dashboards: a time series, a stat, a bar gauge, a table, a heat map and a
histogram, each from a title, a description and its queries, with obsqc's colours and units.

They only choose visual options; every query is a :func:`obsqc_dashboards.common.query`.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, common as cb, dashboard as db, heatmap, histogram, stat, table
from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.heatmap import HeatmapColorMode

from obsqc_dashboards.common import VERDICT_COLORS, size


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    """Absolute thresholds: ``(None, base colour), (value, colour), ...``."""
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=v, color=c) for v, c in steps])


def fixed_color(color: str) -> dm.DynamicConfigValue:
    """Override property: one fixed colour."""
    return dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": color})


def unit(name: str) -> dm.DynamicConfigValue:
    """Override property: the unit of a column or series."""
    return dm.DynamicConfigValue(id_val="unit", value=name)


def colored_text(colors: dict[str, str]) -> list[dm.DynamicConfigValue]:
    """Override properties: table cells whose text is a key of ``colors`` get that background colour."""
    options = {text: {"color": color, "index": i} for i, (text, color) in enumerate(colors.items())}
    return [dm.DynamicConfigValue(id_val="mappings", value=[{"type": "value", "options": options}]),
            dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})]


def value_text(texts: dict[float, tuple[str, str]]) -> list[dm.ValueMap]:
    """Value mappings of a stat: number -> (text, colour), e.g. ``{0: ("down", "red"), 1: ("up", "green")}``."""
    return [dm.ValueMap(options={f"{value:g}": dm.ValueMappingResult(text=text, color=color, index=i)
                                 for i, (value, (text, color)) in enumerate(texts.items())})]


def _verdict_colors(panel):
    """Series whose name ends in a verdict get that verdict's colour."""
    for verdict, color in VERDICT_COLORS.items():
        panel = panel.override_by_regexp(f"^(.* )?{verdict}$", [fixed_color(color)])
    return panel


def time_series(title: str, description: str, targets, *, unit: str = "short", w: int = 12, h: int = 8,
                stacked: bool = False, verdicts: bool = False, limits: tuple[tuple[float | None, str], ...] = (),
                min_value: float | None = 0, axis_label: str = ""):
    """A time series panel; ``limits`` draws dashed threshold lines (e.g. the 60 s latency budget);
    ``verdicts`` colours series by verdict; ``stacked`` stacks them (bars of counts per interval)."""
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
                     .placement(cm.LegendPlacement.BOTTOM).show_legend(True))
             .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)))
    if min_value is not None:
        panel = panel.min(min_value)
    if axis_label:
        panel = panel.axis_label(axis_label)
    if stacked:
        panel = (panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
                 .fill_opacity(60).line_width(1))
    else:
        panel = panel.fill_opacity(10)
    if limits:
        panel = (panel.thresholds(thresholds(*limits))
                 .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)))
    if verdicts:
        panel = _verdict_colors(panel)
    for target in targets:
        panel = panel.with_target(target)
    return size(panel, w, h)


def stat_panel(title: str, description: str, targets, *, unit: str = "short", w: int = 4, h: int = 4,
               steps: tuple[tuple[float | None, str], ...] = ((None, "blue"),), mappings=None, decimals=None,
               verdicts: bool = False):
    """A stat panel: one big number per series, coloured by ``steps`` (or by verdict, see
    :func:`time_series`)."""
    panel = (stat.Panel().title(title).description(description).unit(unit)
             .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.NONE)
             .text_mode(cm.BigValueTextMode.AUTO)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .thresholds(thresholds(*steps)))
    if mappings:
        panel = panel.mappings(mappings)
    if decimals is not None:
        panel = panel.decimals(decimals)
    if verdicts:
        panel = _verdict_colors(panel)
    for target in targets:
        panel = panel.with_target(target)
    return size(panel, w, h)


def bar_gauge(title: str, description: str, targets, *, unit: str = "short", w: int = 8, h: int = 8,
              steps: tuple[tuple[float | None, str], ...] = ((None, "green"),), max_value: float | None = None):
    """A horizontal bar gauge (one bar per series), coloured by ``steps``."""
    panel = (bargauge.Panel().title(title).description(description).unit(unit).min(0)
             .orientation(cm.VizOrientation.HORIZONTAL).display_mode(cm.BarGaugeDisplayMode.GRADIENT)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
             .thresholds(thresholds(*steps)))
    if max_value is not None:
        panel = panel.max(max_value)
    for target in targets:
        panel = panel.with_target(target)
    return size(panel, w, h)


def table_panel(title: str, description: str, target, *, hide: tuple[str, ...] = (), rename: dict | None = None,
                order: tuple[str, ...] = (), columns: dict | None = None, sort_by: str = "", w: int = 24, h: int = 8):
    """A table of one instant query in table format: columns ``hide``-den, renamed by ``rename``, in
    ``order``; ``columns`` maps a column (its name after renaming) to override properties (a link, a unit,
    colours)."""
    exclude = {name: True for name in ("Time", "__name__", "job", "instance", "role", "service", *hide)}
    organize = dm.DataTransformerConfig(id_val="organize", options={
        "excludeByName": exclude, "renameByName": rename or {},
        "indexByName": {name: i for i, name in enumerate(order)}})
    panel = (table.Panel().title(title).description(description).with_target(target)
             .with_transformation(organize).cell_height(cm.TableCellHeight.SM).filterable(True))
    if sort_by:
        panel = panel.sort_by([cb.TableSortByFieldState().display_name(sort_by).desc(True)])
    for column, properties in (columns or {}).items():
        panel = panel.override_by_name(column, list(properties))
    return size(panel, w, h)


def heat_map(title: str, description: str, target, *, unit: str = "short", w: int = 12, h: int = 8,
             bucket_size: float = 0.5):
    """A heat map that bins the values of the query's series over time (Grafana calculates the buckets:
    ``bucket_size`` wide in the value's unit)."""
    panel = (heatmap.Panel().title(title).description(description).with_target(target)
             .calculate(True)
             .calculation(cb.HeatmapCalculationOptions().y_buckets(
                 cb.HeatmapCalculationBucketConfig().mode(cm.HeatmapCalculationMode.SIZE).value(str(bucket_size))))
             .color(heatmap.HeatmapColorOptions().mode(HeatmapColorMode.SCHEME).scheme("Oranges")
                    .fill("dark-orange").steps(64))
             .y_axis(heatmap.YAxisConfig().unit(unit))
             .cell_gap(1))
    return size(panel, w, h)


def histogram_panel(title: str, description: str, target, *, unit: str = "short", w: int = 12, h: int = 8,
                    bucket_size: float = 0.5):
    """A histogram of every value of the query's series in the time range."""
    panel = (histogram.Panel().title(title).description(description).with_target(target).unit(unit)
             .bucket_size(bucket_size).combine(True).fill_opacity(60))
    return size(panel, w, h)


def row(title: str, *, collapsed: bool = False) -> db.Row:
    """A dashboard row header."""
    return db.Row(title).collapsed(collapsed)
