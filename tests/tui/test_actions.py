"""Acting on practices from the TUI, checked on another node: rating, starting and updating a
replication, writing, publishing, editing and retracting this city's own practice."""

from __future__ import annotations

from textual.widgets import Input, Select, SelectionList, Static, TextArea

from citymesh.tui.app import CitymeshApp
from citymesh.tui.screens.catalogue import CatalogueScreen
from citymesh.tui.screens.compose import ComposeScreen
from citymesh.tui.screens.confirm import ConfirmDialog
from citymesh.tui.screens.practice import PracticeScreen
from citymesh.tui.screens.rate import RateDialog
from citymesh.tui.screens.replicate import ReplicateDialog
from citymesh.tui.widgets.lineage import LineageTree
from citymesh.tui.widgets.practice_table import PracticeTable
from citymesh.tui.widgets.rating_bar import RatingBar

from .conftest import City, MakeCity, screen_text, tui, wait_for, wait_text


async def open_practice(app: CitymeshApp, pilot: object, ref: str) -> PracticeScreen:
    screen = app.screen
    assert isinstance(screen, CatalogueScreen)
    table = screen.query_one(PracticeTable)
    await wait_for(lambda: ref in table.items)
    table.focus()
    table.move_cursor(row=table.get_row_index(ref))
    await pilot.press("enter")  # type: ignore[attr-defined]
    await wait_for(lambda: isinstance(app.screen, PracticeScreen) and app.screen.detail is not None)
    assert isinstance(app.screen, PracticeScreen)
    return app.screen


async def lisbon_practice(make_city: MakeCity) -> tuple[City, City, str]:
    here = await make_city("Mechelen", "BEL")
    there = await make_city("Lisbon", "PRT")
    ref = await there.publish("welcome-desk", title="Welcome desk for newcomers")
    await wait_for(lambda: here.has(ref))
    return here, there, ref


async def test_rate_a_practice_and_the_rating_reaches_the_other_node(make_city: MakeCity) -> None:
    here, there, ref = await lisbon_practice(make_city)
    app = tui(here)
    async with app.run_test(size=(100, 32)) as pilot:
        await wait_text(pilot, "Welcome desk")
        screen = await open_practice(app, pilot, ref)
        await wait_text(pilot, "Not rated yet")
        await pilot.press("r")
        await wait_for(lambda: isinstance(app.screen, RateDialog))
        await wait_text(pilot, "Rate this practice", "press 1–5")
        # Enter without a score says what is missing and sends nothing.
        await pilot.press("enter")
        await wait_text(pilot, "Give an overall score first")
        await pilot.press("4")
        await wait_text(pilot, "★★★★☆")
        # The optional parts: one dimension and a comment (typing "q" here does not quit).
        await pilot.press("tab", "5", "tab", "tab", "tab", "tab")
        assert app.screen.focused is app.screen.query_one("#comment", Input)
        await pilot.press(*"quick to set up")
        await pilot.press("enter")
        await wait_for(lambda: app.screen is screen)
        await wait_text(pilot, "1 rating, mean shown from 3", "Your rating: 4★")
        bar = screen.query_one(RatingBar)
        assert bar.summary is not None and bar.summary.distribution["4"] == 1

        async def rated_there() -> bool:
            detail = await there.client().practice(ref)
            return any(
                r.city == "Mechelen"
                and r.score == 4
                and r.scores.relevance == 5
                and r.comment == "quick to set up"
                for r in detail.ratings
            )

        await wait_for(rated_there)
        # Changing one's mind: the dialog opens with the current rating, one rating per city.
        await pilot.press("r")
        await wait_text(pilot, "Change your rating", "★★★★☆")
        await pilot.press("2", "enter")
        await wait_text(pilot, "Your rating: 2★")
        await wait_for(lambda: there.has(ref, lambda d: [r.score for r in d.ratings] == [2]))


async def test_start_and_update_a_replication(make_city: MakeCity) -> None:
    here, there, ref = await lisbon_practice(make_city)
    app = tui(here)
    async with app.run_test(size=(100, 32)) as pilot:
        await wait_text(pilot, "Welcome desk")
        screen = await open_practice(app, pilot, ref)
        await pilot.press("p")
        await wait_for(lambda: isinstance(app.screen, ReplicateDialog))
        await wait_text(pilot, "Replicate in your city", "from Lisbon (PRT)")
        dialog = app.screen
        dialog.query_one("#status", Select).value = "piloting"
        dialog.query_one("#start", Input).value = "2025-02-30"
        dialog.query_one("#adaptations", TextArea).text = "Run by an NGO, two mornings a week"
        await pilot.press("ctrl+s")
        await wait_text(pilot, "Start must be a date like 2025-03-01.")
        dialog.query_one("#start", Input).value = "2025-03-01"
        await pilot.press("ctrl+s")
        await wait_for(lambda: app.screen is screen)
        await wait_text(pilot, "Mechelen (you) · piloting")

        async def replicated_there(status: str, worked: str | None) -> bool:
            detail = await there.client().practice(ref)
            return any(
                r.city == "Mechelen"
                and r.status == status
                and (r.outcome.worked if r.outcome else None) == worked
                for r in detail.replications
            )

        await wait_for(lambda: replicated_there("piloting", None))
        # Later: update its status and report how it went.
        await pilot.press("p")
        await wait_text(pilot, "Update your replication")
        dialog = app.screen
        assert dialog.query_one("#adaptations", TextArea).text.startswith("Run by an NGO")
        assert dialog.query_one("#start", Input).value == "2025-03-01"
        dialog.query_one("#status", Select).value = "running"
        dialog.query_one("#lessons", TextArea).text = "Needs a full-time coordinator"
        await pilot.press("ctrl+s")
        await wait_text(pilot, "Say how it went (Outcome) to report lessons.")
        dialog.query_one("#worked", Select).value = "partly"
        await pilot.press("ctrl+s")
        await wait_for(lambda: app.screen is screen)
        await wait_text(pilot, "Mechelen (you) · running · ◐ partly")
        tree = screen.query_one(LineageTree)
        (mine,) = tree.root.children
        assert [str(n.label) for n in mine.children] == [
            "adapted it",
            "outcome: partly worked",
            "started 2025-03-01",
            "changes: Run by an NGO, two mornings a week",
            "lessons: Needs a full-time coordinator",
        ]
        await wait_for(lambda: replicated_there("running", "partly"))


async def test_compose_publish_edit_and_retract_a_practice(make_city: MakeCity) -> None:
    here = await make_city("Mechelen", "BEL")
    there = await make_city("Lisbon", "PRT")
    app = tui(here)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_text(pilot, "0 practices")
        await pilot.press("n")
        await wait_for(lambda: isinstance(app.screen, ComposeScreen))
        form = app.screen
        assert isinstance(form, ComposeScreen)
        # Publishing an empty form names what is missing, under each field.
        await pilot.press("ctrl+s")
        await wait_text(pilot, "4 things to fix before publishing.", "A title is needed.")
        assert field_errors(form) == {
            "title": "A title is needed.",
            "addr": "Use lowercase letters, digits and inner hyphens, at most 64 (e.g. welcome-desk).",
            "sectors": "Choose between 1 and 8 sectors (space selects).",
            "mailbox": "A mailbox like integration@city.example.org is needed.",
        }
        assert form.focused is form.query_one("#title")
        await pilot.press(*"Night shelter")
        assert form.query_one("#addr", Input).value == "night-shelter"
        form.query_one("#title", Input).value = "Night shelter network"
        await pilot.pause()
        assert form.query_one("#addr", Input).value == "night-shelter-network"
        form.query_one("#sectors", SelectionList).select("HOUSING")
        form.query_one("#target_groups", SelectionList).select("IRREGULAR")
        form.query_one("#summary", TextArea).text = "Beds for everyone, whatever their papers."
        form.query_one("#description", TextArea).text = "## How\n\nThree shelters, one phone line."
        form.query_one("#mailbox", Input).value = "shelter@mechelen"
        form.query_one("#review_by", Input).value = "next year"
        await pilot.press("ctrl+s")
        await wait_text(pilot, "1 thing to fix before publishing.")
        assert field_errors(form) == {"review_by": "A date like 2025-03-01, or empty."}
        form.query_one("#review_by", Input).value = "2030-01-01"
        # The preview shows the practice as others will read it.
        await pilot.press("ctrl+r")
        await wait_text(pilot, "Three shelters, one phone line.", "Mechelen (BEL)")
        await pilot.press("ctrl+r", "ctrl+s")
        # Published: the practice opens, and the other node has it.
        await wait_for(lambda: isinstance(app.screen, PracticeScreen))
        await wait_text(pilot, "Night shelter network", "shelter@mechelen", "e Edit")
        screen = app.screen
        assert isinstance(screen, PracticeScreen)
        ref = screen.ref
        await wait_for(lambda: there.has(ref, lambda d: d.practice.target_groups == ["IRREGULAR"]))
        # Edit: the form opens filled in; a change becomes version 2 everywhere.
        await pilot.press("e")
        await wait_for(lambda: isinstance(app.screen, ComposeScreen))
        form = app.screen
        assert isinstance(form, ComposeScreen)
        assert form.query_one("#title", Input).value == "Night shelter network"
        assert form.query_one("#addr", Input).disabled
        form.query_one("#title", Input).value = "Night shelter network (3 sites)"
        await pilot.press("ctrl+s")
        await wait_for(lambda: app.screen is screen)
        await wait_text(pilot, "Night shelter network (3 sites)", "v2 today · title")
        await wait_for(lambda: there.has(ref, lambda d: len(d.history) == 2))
        # Retract, with confirmation: "keep it" changes nothing, "retract" withdraws it.
        await pilot.press("e")
        await wait_for(lambda: isinstance(app.screen, ComposeScreen))
        await wait_text(pilot, "^t Retract")
        await pilot.press("ctrl+t")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")
        assert isinstance(app.screen, ComposeScreen)
        await pilot.press("ctrl+t")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog))
        await wait_text(pilot, "Retract this practice?")
        await pilot.press("y")
        await wait_for(lambda: isinstance(app.screen, CatalogueScreen))
        await wait_text(pilot, "0 practices")
        await wait_for(lambda: _gone(there, ref))
        assert "Night shelter" not in screen_text(app)


def field_errors(form: ComposeScreen) -> dict[str, str]:
    """The messages shown under the form's fields (on screen or scrolled away)."""
    return {
        str(error.id).removesuffix("-error"): str(error.render())
        for error in form.query(".field-error.-shown").results(Static)
    }


async def _gone(city: City, ref: str) -> bool:
    return not await city.has(ref)


async def test_leaving_a_form_with_changes_asks_first(make_city: MakeCity) -> None:
    here = await make_city("Mechelen", "BEL")
    app = tui(here)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_text(pilot, "0 practices")
        # Nothing written yet: escape just goes back.
        await pilot.press("n")
        await wait_for(lambda: isinstance(app.screen, ComposeScreen))
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, CatalogueScreen))
        await pilot.press("n")
        await wait_for(lambda: isinstance(app.screen, ComposeScreen))
        await pilot.press(*"Draft")
        await pilot.press("escape")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")
        assert isinstance(app.screen, ComposeScreen)
        assert app.screen.query_one("#title", Input).value == "Draft"
        await pilot.press("escape", "y")
        await wait_for(lambda: isinstance(app.screen, CatalogueScreen))
