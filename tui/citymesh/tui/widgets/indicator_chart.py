"""One city's indicator over time: a Plotext line chart (one line per cell of the breakdown)
and, beneath it, the same numbers as a table that says why a value is missing.

A suppressed value breaks its line (a gap), it is never drawn as zero; the table marks it.
"""

from __future__ import annotations

from typing import Final

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from ..indicator_data import Point, Series, format_value

MAX_LINES: Final = 8
"""Lines drawn at most (the table below lists them all)."""
COLORS: Final = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "white")
SUPPRESSED_STYLE: Final = "bold red"


def segments(points: list[Point]) -> list[list[tuple[int, float]]]:
    """Runs of published values as (x, y) with x counted from 1; suppressed points split runs."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for x, point in enumerate(points, start=1):
        if point.value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((x, point.value))
    if current:
        runs.append(current)
    return runs


def point_text(point: Point, measure: str) -> Text:
    if point.value is None:
        return Text(f"✕ {point.flag or 'suppressed'}", SUPPRESSED_STYLE)
    text = Text(format_value(point.value, measure))
    if point.flag:
        text.append(f" ({point.flag})", "dim")
    return text


class IndicatorChart(Vertical):
    """The chart, an empty-state line, and the values per period."""

    DEFAULT_CSS = """
    IndicatorChart {
        height: 1fr;
        & PlotextPlot { height: 1fr; min-height: 8; }
        & #chart-empty { height: auto; padding: 1 2; color: $text-muted; display: none; }
        & DataTable { height: auto; max-height: 12; }
        &.-empty PlotextPlot { display: none; }
        &.-empty #chart-empty { display: block; }
    }
    """

    def compose(self) -> ComposeResult:
        yield PlotextPlot(id="chart-plot")
        yield Static("", id="chart-empty")
        yield DataTable[Text](id="chart-values", cursor_type="row", zebra_stripes=True)

    def show_empty(self, message: str) -> None:
        self.add_class("-empty")
        self.query_one("#chart-empty", Static).update(message)
        table = self.query_one("#chart-values", DataTable)
        table.clear(columns=True)

    def show_series(
        self, title: str, unit: str, periods: list[str], lines: list[Series], measure: str
    ) -> None:
        drawn = [line for line in lines if line.published][:MAX_LINES]
        if not drawn:
            self.show_empty(
                "Every value of this indicator is suppressed for this city: nothing to draw. "
                "The table below says why."
            )
        else:
            self.remove_class("-empty")
            gaps = any(p.value is None for line in lines for p in line.points)
            self._plot(title, unit, periods, drawn, gaps=gaps)
        self._fill_table(periods, lines, measure)

    def _plot(
        self, title: str, unit: str, periods: list[str], lines: list[Series], *, gaps: bool
    ) -> None:
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"{title} ({unit})" + ("   gaps: suppressed" if gaps else ""))
        top = max(p.value for line in lines for p in line.published if p.value is not None)
        bottom = min(p.value for line in lines for p in line.published if p.value is not None)
        plt.ylim(min(0.0, bottom), top * 1.1 if top > 0 else 1.0)
        plt.xlim(0.5, len(periods) + 0.5)
        plt.xticks(list(range(1, len(periods) + 1)), periods)
        for n, line in enumerate(lines):
            color = COLORS[n % len(COLORS)]
            for m, run in enumerate(segments(line.points)):
                xs = [x for x, _ in run]
                ys = [y for _, y in run]
                label = line.label if m == 0 else None
                if len(run) == 1:
                    plt.scatter(xs, ys, color=color, label=label, marker="●")
                else:
                    plt.plot(xs, ys, color=color, label=label, marker="braille")
        plot.refresh()

    def _fill_table(self, periods: list[str], lines: list[Series], measure: str) -> None:
        table = self.query_one("#chart-values", DataTable)
        table.clear(columns=True)
        table.add_column("Line", key="line")
        for period in periods:
            table.add_column(period, key=period)
        for line in lines:
            table.add_row(Text(line.label), *(point_text(p, measure) for p in line.points))
