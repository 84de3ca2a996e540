"""The catalogue against real nodes: search as you type, Enter to the first result, facet
filters with counts, opening a practice, live records, keys in the footer and the palette."""

from __future__ import annotations

import asyncio

import msgspec
from textual.command import CommandPalette
from textual.widgets import Input

from citymesh.protocol import api
from citymesh.tui.app import CitymeshApp
from citymesh.tui.screens.catalogue import CatalogueScreen
from citymesh.tui.screens.practice import PracticeScreen
from citymesh.tui.widgets.facets import FacetList
from citymesh.tui.widgets.lineage import LineageTree
from citymesh.tui.widgets.practice_table import PracticeTable
from citymesh.tui.widgets.rating_bar import RatingBar

from .conftest import City, MakeCity, screen_text, tui, wait_for, wait_text


async def two_cities(make_city: MakeCity) -> tuple[City, City, dict[str, str]]:
    """Mechelen (the TUI's node) and Lisbon, with practices in two sectors and countries."""
    here = await make_city("Mechelen", "BEL")
    there = await make_city("Lisbon", "PRT")
    refs = {
        "desk": await there.publish(
            "welcome-desk",
            title="Welcome desk for newcomers",
            summary="One door for registration, housing advice and language classes.",
            sectors=["HOUSING", "RIGHTS_INFO"],
            target_groups=["REFUGEE", "NEWCOMER"],
            description="## How it works\n\nA *single* desk in the city hall.",
        ),
        "cafe": await there.publish(
            "language-cafe",
            title="Language café with volunteers",
            sectors=["EDUCATION"],
            target_groups=["NEWCOMER"],
        ),
        "mentors": await here.publish(
            "job-mentors", title="Job mentors for refugees", sectors=["WORK"], status="pilot"
        ),
    }
    for ref in refs.values():
        await wait_for(lambda ref=ref: here.has(ref))
    return here, there, refs


def table(app: CitymeshApp) -> PracticeTable:
    screen = app.screen
    assert isinstance(screen, CatalogueScreen)
    return screen.query_one(PracticeTable)


async def test_search_as_you_type_enter_goes_to_the_first_result(make_city: MakeCity) -> None:
    here, _, refs = await two_cities(make_city)
    app = tui(here)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_text(pilot, "Welcome desk", "Language café", "Job mentors", "3 practices")
        await pilot.press("slash")
        search = app.screen.query_one("#search", Input)
        assert search.has_focus
        await pilot.press(*"langu")
        # Each keystroke is handled at once; the search follows in a worker.
        assert search.value == "langu"
        # Words are prefixes: the café, and the desk whose summary mentions language classes.
        await wait_for(lambda: set(table(app).items) == {refs["cafe"], refs["desk"]})
        await wait_text(pilot, "2 practices")
        await pilot.press(*"age caf")
        await wait_for(lambda: list(table(app).items) == [refs["cafe"]])
        await wait_text(pilot, "1 practice")
        await pilot.press("enter")
        assert table(app).has_focus
        assert table(app).cursor_row == 0
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, PracticeScreen))
        assert isinstance(app.screen, PracticeScreen)
        assert app.screen.ref == refs["cafe"]
        await pilot.press("escape")
        assert isinstance(app.screen, CatalogueScreen)
        assert app.screen.query_one("#search", Input).value == "language caf"
        # A search that matches nothing says so, and clearing it brings everything back.
        await pilot.press("slash", *"zzzz")
        await wait_text(pilot, "0 practices")
        search.value = ""
        await wait_text(pilot, "3 practices")


async def test_facets_filter_with_counts(make_city: MakeCity) -> None:
    here, _, refs = await two_cities(make_city)
    app = tui(here)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_text(pilot, "3 practices")
        text = screen_text(app)
        for line in ("Housing, shelter 1", "Newcomers 2", "PRT 2", "BEL 1", "Pilot 1", "Active 2"):
            assert line in text, line
        facets = app.screen.query_one(FacetList)
        facets.focus()
        facets.highlighted = facets.get_option_index("target_group:NEWCOMER")
        await pilot.press("enter")
        await wait_for(lambda: set(table(app).items) == {refs["desk"], refs["cafe"]})
        await wait_text(pilot, "● Newcomers 2", "2 practices")
        # Counts of the other facets follow the filter; the filter's own facet does not shrink.
        facets.highlighted = facets.get_option_index("sector:EDUCATION")
        await pilot.press("enter")
        await wait_for(lambda: set(table(app).items) == {refs["cafe"]})
        await wait_text(pilot, "● Education, language 1", "● Newcomers 1", "1 practice")
        assert "Refugees" not in screen_text(app)
        # Selecting a chosen value again removes it; backspace clears every filter.
        await pilot.press("enter")
        await wait_for(lambda: len(table(app).items) == 2)
        await pilot.press("backspace")
        await wait_for(lambda: len(table(app).items) == 3)
        assert facets.selected == {}


async def test_open_a_practice_reads_it_all(make_city: MakeCity) -> None:
    here, there, refs = await two_cities(make_city)
    gdansk = await make_city("Gdańsk", "POL")
    await wait_for(lambda: gdansk.has(refs["desk"]))
    await gdansk.client().rate(refs["desk"], _rating(5))
    await gdansk.client().replicate(refs["desk"], _replication("running", worked="partly"))
    # An update gives the practice a second version.
    await there.publish(
        "welcome-desk",
        title="Welcome desk for newcomers",
        summary="Now also on Saturdays.",
        sectors=["HOUSING", "RIGHTS_INFO"],
        target_groups=["REFUGEE", "NEWCOMER"],
        description="## How it works\n\nA *single* desk in the city hall.",
    )
    await wait_for(
        lambda: here.has(refs["desk"], lambda d: len(d.replications) == 1 and len(d.history) == 2)
    )
    app = tui(here)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_text(pilot, "Welcome desk")
        table(app).move_cursor(row=table(app).get_row_index(refs["desk"]))
        await wait_text(pilot, "Now also on Saturdays.")  # the preview pane
        await pilot.press("enter")
        await wait_text(
            pilot,
            "How it works",
            "Lisbon (PRT)",
            "Gdańsk · running · ◐ partly",
            "v2 today · summary",
            "v1 today · first published",
            "welcome-desk@city.example.org",
            "1 rating, mean shown from 3",
        )
        screen = app.screen
        assert isinstance(screen, PracticeScreen)
        bar = screen.query_one(RatingBar)
        assert bar.summary is not None
        assert bar.summary.distribution["5"] == 1
        assert "A single desk in the city hall." in screen_text(app)
        tree = screen.query_one(LineageTree)
        labels = [str(node.label) for node in tree.root.children]
        assert labels == ["Gdańsk · running · ◐ partly"]
        # Own practice: r and p are not offered, e is.
        await pilot.press("escape")
        table(app).move_cursor(row=table(app).get_row_index(refs["mentors"]))
        await pilot.press("enter")
        await wait_text(pilot, "Job mentors for refugees", "e Edit")
        assert "r Rate" not in screen_text(app)


async def test_records_arriving_refresh_the_screen(make_city: MakeCity) -> None:
    here, there, refs = await two_cities(make_city)
    app = tui(here)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_text(pilot, "3 practices")
        await there.publish("night-shelter", title="Night shelter network", sectors=["HOUSING"])
        await wait_text(pilot, "Night shelter network", "4 practices")
        # On the practice screen, a rating from another city updates the summary by itself.
        table(app).move_cursor(row=table(app).get_row_index(refs["desk"]))
        await pilot.press("enter")
        await wait_text(pilot, "Not rated yet")
        gdansk = await make_city("Gdańsk", "POL")
        await wait_for(lambda: gdansk.has(refs["desk"]))
        await gdansk.client().rate(refs["desk"], _rating(3))
        await wait_text(pilot, "1 rating, mean shown from 3")
        # Its city withdraws it: the screen says so, and the catalogue no longer lists it.
        await there.client().retract_practice(refs["desk"])
        await wait_text(pilot, "retracted by its city")
        await pilot.press("escape")
        await wait_text(pilot, "3 practices")
        assert "Welcome desk" not in screen_text(app)
        assert app.events_seen >= 3


async def test_keys_are_in_the_footer_and_the_command_palette(make_city: MakeCity) -> None:
    here, _, refs = await two_cities(make_city)
    app = tui(here)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_text(pilot, "3 practices")
        table(app).move_cursor(row=table(app).get_row_index(refs["desk"]))
        await pilot.pause()
        footer = screen_text(app).splitlines()[-1]
        for key in ("⏎ Open", "r Rate", "p Replicate", "/ Search", "n New", "c Network"):
            assert key in footer, footer
        for key in ("? Help", "q Quit"):
            assert key in footer, footer
        await pilot.press("slash")
        await pilot.pause()
        assert "esc Results" in screen_text(app).splitlines()[-1]
        await pilot.press("escape")
        await pilot.press("ctrl+p")
        await wait_for(lambda: isinstance(app.screen, CommandPalette))
        await pilot.pause(0.3)
        palette = screen_text(app)
        for title in ("Search practices", "Rate this practice", "Replicate this practice"):
            assert title in palette, palette
        for title in ("New practice", "Network status", "Help", "Quit"):
            assert title in palette, palette
        await pilot.press(*"network")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_text(pilot, "Relays", "Cities", "Rejected records")
        await pilot.press("escape", "question_mark")
        await wait_text(pilot, "finding and sharing what works")
        await pilot.press("escape")
        assert isinstance(app.screen, CatalogueScreen)
        await pilot.press("q")
        await asyncio.sleep(0.1)
    assert app.return_code == 0


def _rating(score: int) -> api.RatingIn:
    return api.RatingIn(score=score)


def _replication(status: str, worked: str | None = None) -> api.ReplicationIn:
    data: dict[str, object] = {"relation": "adapted", "status": status}
    if worked:
        data["outcome"] = {"worked": worked}
    return msgspec.convert(data, api.ReplicationIn)
