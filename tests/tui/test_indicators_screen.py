"""The indicators screen (key ``i``) against two real nodes on a real relay: one city's
indicator over time, and one period compared across cities, with suppressed cells shown as
suppressed (never as zero). Also the pure reshaping in ``indicator_data``."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from syrupy.assertion import SnapshotAssertion
from textual.pilot import Pilot
from textual.widgets import DataTable, Select

from citymesh.protocol import api
from citymesh.protocol.records import Cell
from citymesh.tui.app import CitymeshApp
from citymesh.tui.indicator_data import Point, bar, cell_flag, format_value, in_breakdown
from citymesh.tui.screens.indicators import IndicatorsScreen
from citymesh.tui.widgets.indicator_chart import IndicatorChart, segments
from citymesh.tui.widgets.indicator_compare import IndicatorComparison

from .conftest import City, MakeCity, screen_text, tui, wait_for, wait_text
from .test_snapshots import StableSVG, settle

CODE = "INFO_DESK_CONTACTS"
TABLES: dict[str, dict[str, dict[str, int]]] = {
    # Counts that are multiples of 5 stay as they are under rounding to base 5; 5 < 10 is
    # suppressed (primary), and a line with one suppressed cell gets a second (secondary).
    "Mechelen": {
        "2024-Q1": {"REFUGEE": 120, "ASYLUM_SEEKER": 5, "IDP": 30},
        "2024-Q2": {"REFUGEE": 140, "ASYLUM_SEEKER": 20, "IDP": 35},
    },
    # Lisbon's second quarter is all small: even its total (8) is suppressed.
    "Lisbon": {
        "2024-Q1": {"REFUGEE": 60, "FOREIGN_CITIZEN": 45},
        "2024-Q2": {"REFUGEE": 5, "FOREIGN_CITIZEN": 3},
    },
}


async def publish_table(city: City, period: str, counts: dict[str, int]) -> api.Published:
    body: dict[str, Any] = {
        "code": CODE,
        "period": period,
        "rows": [{"dims": {"MIG_STATUS": k}, "count": v} for k, v in counts.items()],
        "source_type": "service_data",
        "attestation": {"aggregate_only": True, "officer_role": "Data officer"},
    }
    return await city.client().publish_indicators(msgspec.convert(body, api.IndicatorPublishIn))


async def two_cities(make_city: MakeCity) -> tuple[City, City]:
    """Mechelen and Lisbon, each with two quarters of one indicator; both nodes hold all four."""
    mechelen = await make_city("Mechelen", "BEL")
    lisbon = await make_city("Lisbon", "PRT")
    for city in (mechelen, lisbon):
        for period, counts in TABLES[city.name].items():
            await publish_table(city, period, counts)

    async def converged() -> bool:
        for city in (mechelen, lisbon):
            held = await city.client().indicators(api.IndicatorQuery(code=CODE))
            if len(held.items) != 4:
                return False
        return True

    await wait_for(converged)
    return mechelen, lisbon


async def open_indicators(pilot: Pilot[None]) -> IndicatorsScreen:
    app = pilot.app
    assert isinstance(app, CitymeshApp)
    await wait_text(pilot, "practice")  # the catalogue is up and the node answered
    await pilot.press("i")
    await wait_for(lambda: isinstance(app.screen, IndicatorsScreen) and app.screen.loaded)
    screen = app.screen
    assert isinstance(screen, IndicatorsScreen)
    return screen


def select(screen: IndicatorsScreen, select_id: str, value: str) -> None:
    """What choosing an entry of a select does."""
    screen.query_one(f"#{select_id}", Select).value = value


def comparison_rows(screen: IndicatorsScreen) -> list[list[str]]:
    table = screen.query_one(IndicatorComparison)
    return [[cell.plain for cell in table.get_row_at(n)] for n in range(table.row_count)]


def chart_rows(screen: IndicatorsScreen) -> list[list[str]]:
    table = screen.query_one(IndicatorChart).query_one("#chart-values", DataTable)
    return [[cell.plain for cell in table.get_row_at(n)] for n in range(table.row_count)]


async def test_over_time_and_across_cities(make_city: MakeCity) -> None:
    mechelen, lisbon = await two_cities(make_city)
    app = tui(mechelen)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_indicators(pilot)
        # Over time: this node's own city, the indicator it published, the total line.
        assert screen.city == mechelen.identity
        assert screen.code == CODE
        assert screen.breakdown == "total"
        await wait_text(pilot, "Mechelen · INFO_DESK_CONTACTS", "2024-Q1", "2024-Q2")
        assert chart_rows(screen) == [["Total", "155", "195"]]

        # One line per migratory status: the suppressed cells are marked, not zero.
        select(screen, "ind-breakdown", "by:MIG_STATUS")
        await wait_for(lambda: len(chart_rows(screen)) == 3)
        rows = {r[0]: r[1:] for r in chart_rows(screen)}
        assert rows["Refugee"] == ["120", "140"]
        assert rows["Asylum seeker"] == [
            "✕ suppressed · confidential",
            "✕ suppressed · confidential",  # carried from the first quarter
        ]
        assert rows["Internally displaced"] == [
            "✕ suppressed · secondary",
            "✕ suppressed · confidential",
        ]
        await wait_text(pilot, "gaps: suppressed")

        # Across cities, latest quarter: Lisbon's total is suppressed, shown as such.
        await pilot.press("a")
        select(screen, "ind-breakdown", "total")
        await wait_text(pilot, "INFO_DESK_CONTACTS in 2024-Q2: 2 cities")
        assert comparison_rows(screen) == [
            ["Lisbon", "PRT", "Total", "✕", "", "NR (number)", "suppressed · confidential"],
            ["Mechelen (this node)", "BEL", "Total", "195", "█" * 12, "NR (number)", "published"],
        ]
        assert "0" not in comparison_rows(screen)[0][3]

        # The first quarter: both published.
        select(screen, "ind-period", "2024-Q1")
        await wait_text(pilot, "INFO_DESK_CONTACTS in 2024-Q1")
        values = {r[0]: (r[3], r[6]) for r in comparison_rows(screen)}
        assert values == {
            "Lisbon": ("105", "published"),
            "Mechelen (this node)": ("155", "published"),
        }

        # Lisbon over time, through the city picker.
        await pilot.press("o")
        select(screen, "ind-city", lisbon.identity)
        await wait_text(pilot, "Lisbon · INFO_DESK_CONTACTS")
        assert chart_rows(screen) == [["Total", "105", "✕ suppressed · confidential"]]

        # An indicator nobody published: empty states, not an empty chart.
        select(screen, "ind-code", "NATURALISATIONS")
        await wait_text(pilot, "No tables published yet for this indicator by Lisbon")
        await pilot.press("a")
        await wait_text(pilot, "No tables published yet for this indicator.")
        assert comparison_rows(screen) == []

        await pilot.press("escape")
        await wait_for(lambda: not isinstance(app.screen, IndicatorsScreen))


async def test_live_refresh_and_unreachable_node(make_city: MakeCity) -> None:
    mechelen, lisbon = await two_cities(make_city)
    app = tui(mechelen)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_indicators(pilot)
        await pilot.press("a")
        await wait_text(pilot, "2024-Q2: 2 cities")

        # Lisbon republishes its second quarter with more contacts: the screen follows.
        await publish_table(lisbon, "2024-Q2", {"REFUGEE": 50, "FOREIGN_CITIZEN": 40})
        await wait_for(
            lambda: any(
                r[0] == "Lisbon" and r[6] != "suppressed · confidential"
                for r in comparison_rows(screen)
            )
        )

        await mechelen.stop()
        await wait_text(pilot, "Node unreachable")
        assert comparison_rows(screen)  # what was shown stays
        await mechelen.start()
        await wait_for(lambda: app.node_state.online)
        assert "Node unreachable" not in screen_text(app)


async def test_command_palette_lists_indicators(make_city: MakeCity) -> None:
    mechelen = await make_city("Mechelen", "BEL")
    app = tui(mechelen)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_text(pilot, "practice")
        await pilot.press("ctrl+p")
        await pilot.press(*"indicators")
        await wait_text(pilot, "key i")
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, IndicatorsScreen) and app.screen.loaded)
        await wait_text(pilot, "No tables published yet for this indicator by Mechelen")
        await pilot.press("question_mark")
        await wait_text(pilot, "indicators: a city's published tables over time")


@pytest.fixture
def svg_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(StableSVG)


async def test_snapshots(make_city: MakeCity, svg_snapshot: SnapshotAssertion) -> None:
    mechelen, _ = await two_cities(make_city)
    app = tui(mechelen)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_indicators(pilot)
        select(screen, "ind-breakdown", "by:MIG_STATUS")
        await wait_for(lambda: len(chart_rows(screen)) == 3)
        await settle(pilot)
        assert app.export_screenshot() == svg_snapshot(name="indicators-over-time")

        await pilot.press("a")
        await wait_text(pilot, "2 cities")
        await settle(pilot)
        assert app.export_screenshot() == svg_snapshot(name="indicators-across")


# -- the pure part --------------------------------------------------------------------------------
def test_suppressed_cells_are_never_zero() -> None:
    assert cell_flag(Cell(dims={}, value=None, obs_status="O", conf_status="C")) == (
        "suppressed · confidential"
    )
    assert cell_flag(Cell(dims={}, value=None, obs_status="O", conf_status="C"), "rate") == (
        "suppressed · low base"
    )
    assert cell_flag(Cell(dims={}, value=None, obs_status="O", conf_status="D")) == (
        "suppressed · secondary"
    )
    assert cell_flag(Cell(dims={}, value=12.0)) == ""
    assert format_value(None) == "—"
    assert bar(None, 100) == ""
    assert bar(50, 100, 10) == "█" * 5
    points = [Point("1", 5), Point("2", None), Point("3", 7), Point("4", 8)]
    assert segments(points) == [[(1, 5)], [(3, 7), (4, 8)]]


def test_breakdowns() -> None:
    assert in_breakdown({"SEX": "_T", "AGE": "_T"}, "total")
    assert in_breakdown({}, "total")
    assert in_breakdown({"SEX": "F", "AGE": "_T"}, "by:SEX")
    assert not in_breakdown({"SEX": "F", "AGE": "Y0-17"}, "by:SEX")
    assert in_breakdown({"SEX": "F", "AGE": "Y0-17"}, "all")
    assert not in_breakdown({"SEX": "_T", "AGE": "Y0-17"}, "all")
