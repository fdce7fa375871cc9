"""The kinds of panel the dashboards use, each configured once, and the grid they are laid out on.

Every panel has a title, a description, a unit, absolute thresholds (a base colour, then a colour from each
step up) and at least one query; ``links`` show in its header, ``data_links`` on the series or value clicked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, TypeVar

from grafana_foundation_sdk.builders import bargauge, common, heatmap, logs, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm

from .queries import LOKI, PROMETHEUS, TEMPO, Target

Query = cogbuilder.Builder[cogvariants.Dataquery]
Link = cogbuilder.Builder[dm.DashboardLink]
Size = tuple[int, int]
"""A panel's width (of Grafana's 24 columns) and height (in grid rows)."""

GRID_WIDTH = 24

# --- thresholds and value mappings -------------------------------------------------------------------------------


def thresholds(base: str, *steps: tuple[float, str]) -> db.ThresholdsConfig:
    """Absolute thresholds: ``base`` colour below the first step, then each step's colour from its value up."""
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps(
            [dm.Threshold(value=None, color=base), *(dm.Threshold(value=value, color=color) for value, color in steps)]
        )
    )


def value_texts(**texts: tuple[str, str]) -> list[dm.ValueMapping]:
    """A value mapping: each value (the keyword, a number's text) shown as a text in a colour."""
    return [
        dm.ValueMap({value: dm.ValueMappingResult(text=text, color=color) for value, (text, color) in texts.items()})
    ]


def fixed_colour(colour: str) -> list[dm.DynamicConfigValue]:
    """The properties of a field override that draws a series in one colour."""
    return [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": colour})]


def neutral() -> db.ThresholdsConfig:
    """For panels where no value is good or bad in itself."""
    return thresholds("blue")


# --- the parts every panel shares --------------------------------------------------------------------------------


class PanelBuilder(Protocol):
    """What every panel builder of the SDK offers (each panel kind has its own class)."""

    def build(self) -> dm.Panel: ...
    def title(self, title: str) -> Self: ...
    def description(self, description: str) -> Self: ...
    def datasource(self, datasource: dm.DataSourceRef) -> Self: ...
    def targets(self, targets: list[Query]) -> Self: ...
    def span(self, w: int) -> Self: ...
    def height(self, h: int) -> Self: ...
    def unit(self, unit: str) -> Self: ...
    def thresholds(self, thresholds: cogbuilder.Builder[dm.ThresholdsConfig]) -> Self: ...
    def mappings(self, mappings: list[dm.ValueMapping]) -> Self: ...
    def links(self, links: list[Link]) -> Self: ...
    def data_links(self, links: list[Link]) -> Self: ...
    def decimals(self, decimals: float) -> Self: ...
    def min(self, min_val: float) -> Self: ...
    def max(self, max_val: float) -> Self: ...


P = TypeVar("P", bound=PanelBuilder)


def configure(
    builder: P,
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str,
    steps: db.ThresholdsConfig,
    size: Size,
    datasource: dm.DataSourceRef = PROMETHEUS,
    links: Sequence[Link] = (),
    data_links: Sequence[Link] = (),
    mappings: Sequence[dm.ValueMapping] = (),
    decimals: int | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
) -> P:
    """Sets what every panel has: texts, queries (lettered A, B, ... in order), unit, thresholds, links, size."""
    queries: list[Query] = [target.ref_id(chr(ord("A") + index)) for index, target in enumerate(targets)]
    builder = (
        builder.title(title)
        .description(description)
        .datasource(datasource)
        .targets(queries)
        .span(size[0])
        .height(size[1])
        .unit(unit)
        .thresholds(steps)
        .mappings(list(mappings))
        .links(list(links))
        .data_links(list(data_links))
    )
    if decimals is not None:
        builder = builder.decimals(decimals)
    if min_value is not None:
        builder = builder.min(min_value)
    if max_value is not None:
        builder = builder.max(max_value)
    return builder


# --- the panel kinds -------------------------------------------------------------------------------------------

LAST_VALUE = common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def timeseries_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str,
    steps: db.ThresholdsConfig | None = None,
    size: Size = (12, 8),
    show_thresholds: bool = False,
    links: Sequence[Link] = (),
    data_links: Sequence[Link] = (),
    decimals: int | None = None,
    max_value: float | None = None,
) -> timeseries.Panel:
    """A graph of lines from 0 up, with a table legend (mean, max); ``show_thresholds`` draws the threshold
    steps as dashed lines."""
    threshold_lines = cm.GraphThresholdsStyleMode.DASHED if show_thresholds else cm.GraphThresholdsStyleMode.OFF
    panel = (
        timeseries.Panel()
        .draw_style(cm.GraphDrawStyle.LINE)
        .line_interpolation(cm.LineInterpolation.LINEAR)
        .line_width(1)
        .fill_opacity(10)
        .show_points(cm.VisibilityMode.NEVER)
        .span_nulls(False)
        .axis_soft_min(0)
        .thresholds_style(common.GraphThresholdsStyleConfig().mode(threshold_lines))
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .calcs(["mean", "max"])
        )
        .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    return configure(
        panel,
        title,
        description,
        targets,
        unit=unit,
        steps=steps or neutral(),
        size=size,
        links=links,
        data_links=data_links,
        decimals=decimals,
        max_value=max_value,
    )


def stat_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str,
    steps: db.ThresholdsConfig,
    size: Size = (4, 5),
    links: Sequence[Link] = (),
    mappings: Sequence[dm.ValueMapping] = (),
    decimals: int | None = None,
) -> stat.Panel:
    """A big number on a background coloured by its thresholds, with a sparkline."""
    panel = (
        stat.Panel()
        .reduce_options(LAST_VALUE)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .text_mode(cm.BigValueTextMode.AUTO)
    )
    return configure(
        panel,
        title,
        description,
        targets,
        unit=unit,
        steps=steps,
        size=size,
        links=links,
        mappings=mappings,
        decimals=decimals,
    )


def bargauge_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str,
    steps: db.ThresholdsConfig,
    size: Size = (12, 8),
    links: Sequence[Link] = (),
    data_links: Sequence[Link] = (),
    decimals: int | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
) -> bargauge.Panel:
    """Horizontal bars, one per series, coloured by the thresholds."""
    panel = (
        bargauge.Panel()
        .reduce_options(LAST_VALUE)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
    )
    return configure(
        panel,
        title,
        description,
        targets,
        unit=unit,
        steps=steps,
        size=size,
        links=links,
        data_links=data_links,
        decimals=decimals,
        min_value=min_value,
        max_value=max_value,
    )


def state_timeline_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str,
    steps: db.ThresholdsConfig,
    mappings: Sequence[dm.ValueMapping],
    size: Size = (8, 8),
) -> statetimeline.Panel:
    """One band per series, coloured by its mapped value over time."""
    panel = (
        statetimeline.Panel()
        .fill_opacity(70)
        .line_width(0)
        .merge_values(True)
        .show_value(cm.VisibilityMode.AUTO)
        .align_value(cm.TimelineValueAlignment.LEFT)
        .row_height(0.9)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM)
        )
        .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.SINGLE).sort(cm.SortOrder.NONE))
    )
    return configure(panel, title, description, targets, unit=unit, steps=steps, size=size, mappings=mappings)


def heatmap_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str,
    steps: db.ThresholdsConfig,
    size: Size = (8, 8),
    links: Sequence[Link] = (),
) -> heatmap.Panel:
    """The buckets of a Prometheus histogram (queried ``heatmap=True``) over time: one row per bucket, darker
    where more observations fell, with the exemplars of the buckets as dots."""
    panel = (
        heatmap.Panel()
        .calculate(False)
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .fill("dark-orange")
            .scale(hm.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .reverse(False)
        )
        .y_axis(heatmap.YAxisConfig().unit(unit).decimals(1))
        .cell_values(heatmap.CellValues().unit("short"))
        .show_value(cm.VisibilityMode.NEVER)
        .show_legend()
        .mode(cm.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .exemplars_color("rgba(255,0,255,0.7)")
    )
    return configure(panel, title, description, targets, unit=unit, steps=steps, size=size, links=links)


def logs_panel(
    title: str, description: str, targets: Sequence[Target], *, size: Size = (24, 10), links: Sequence[Link] = ()
) -> logs.Panel:
    """Log lines from Loki, newest first, each expandable to its fields (and, through the Loki data source's
    derived field, to its trace)."""
    panel = (
        logs.Panel()
        .show_time(True)
        .show_labels(False)
        .show_common_labels(False)
        .wrap_log_message(True)
        .prettify_log_message(False)
        .enable_log_details(True)
        .dedup_strategy(cm.LogsDedupStrategy.NONE)
        .sort_order(cm.LogsSortOrder.DESCENDING)
    )
    return configure(
        panel, title, description, targets, unit="none", steps=neutral(), size=size, datasource=LOKI, links=links
    )


def trace_table_panel(title: str, description: str, targets: Sequence[Target], *, size: Size = (24, 8)) -> table.Panel:
    """Traces found by a TraceQL search in Tempo, one per row; a trace id opens the trace."""
    panel = table.Panel().show_header(True).cell_height(cm.TableCellHeight.SM)
    return configure(panel, title, description, targets, unit="none", steps=neutral(), size=size, datasource=TEMPO)


def table_panel(
    title: str,
    description: str,
    targets: Sequence[Target],
    *,
    unit: str,
    steps: db.ThresholdsConfig,
    size: Size = (12, 8),
    mappings: Sequence[dm.ValueMapping] = (),
    data_links: Sequence[Link] = (),
) -> table.Panel:
    """A table of a Prometheus instant query (queried ``table=True``): one row per series, its labels as columns."""
    panel = table.Panel().show_header(True).cell_height(cm.TableCellHeight.SM)
    return configure(
        panel,
        title,
        description,
        targets,
        unit=unit,
        steps=steps,
        size=size,
        mappings=mappings,
        data_links=data_links,
    )


# --- the grid --------------------------------------------------------------------------------------------------


def rows(*layout: Sequence[PanelBuilder]) -> list[dm.Panel | dm.RowPanel]:
    """Places the panels row by row, left to right, each row below the tallest panel of the one above, and
    numbers them 1, 2, ... in that order."""
    panels: list[dm.Panel | dm.RowPanel] = []
    y = 0
    for row in layout:
        built = [builder.build() for builder in row]
        x = 0
        for panel in built:
            position = panel.grid_pos or dm.GridPos()
            position.x, position.y = x, y
            panel.grid_pos = position
            panel.id_val = len(panels) + 1
            x += position.w
            panels.append(panel)
        if x > GRID_WIDTH:
            raise ValueError(f"row wider than Grafana's {GRID_WIDTH} columns: {[panel.title for panel in built]}")
        y += max(panel.grid_pos.h for panel in built if panel.grid_pos is not None)
    return panels
