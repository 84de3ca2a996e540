"""The node going away and coming back, and a large batch arriving while the coordinator types."""

from __future__ import annotations

import asyncio
import time

from textual.widgets import Input

from citymesh.tui.screens.catalogue import CatalogueScreen
from citymesh.tui.screens.rate import RateDialog
from citymesh.tui.widgets.practice_table import PracticeTable

from .conftest import MakeCity, free_port, screen_text, tui, wait_for, wait_text


async def test_node_unreachable_then_back_keeps_what_was_typed(make_city: MakeCity) -> None:
    here = await make_city("Mechelen", "BEL")
    there = await make_city("Lisbon", "PRT")
    desk = await there.publish("welcome-desk", title="Welcome desk for newcomers")
    cafe = await there.publish("language-cafe", title="Language café")
    await wait_for(lambda: here.has(desk))
    await wait_for(lambda: here.has(cafe))
    app = tui(here)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_text(pilot, "2 practices")
        assert "unreachable" not in screen_text(app)
        await here.stop()
        await wait_text(pilot, "Node unreachable", "what you typed is kept")
        assert app.sub_title == "node unreachable"
        # The coordinator keeps typing a search while the node is down.
        await pilot.press("slash", *"café")
        await pilot.pause(0.5)
        assert app.screen.query_one("#search", Input).value == "café"
        await wait_text(pilot, "Node unreachable")
        # Meanwhile another city rates a practice; the node will catch up when it is back.
        await there.publish("night-shelter", title="Night shelter network")
        await here.start()
        await wait_for(lambda: "Node unreachable" not in screen_text(app))
        screen = app.screen
        assert isinstance(screen, CatalogueScreen)
        table = screen.query_one(PracticeTable)
        # Back by itself: the search that was typed runs, and nothing typed was lost.
        await wait_for(lambda: list(table.items) == [cafe])
        assert screen.query_one("#search", Input).value == "café"
        await wait_text(pilot, "Language café", "1 practice")
        screen.query_one("#search", Input).value = ""
        await wait_text(pilot, "Night shelter network", "3 practices")


async def test_follows_a_node_that_comes_back_elsewhere(make_city: MakeCity) -> None:
    here = await make_city("Mechelen", "BEL")
    await here.publish("job-mentors", title="Job mentors")
    app = tui(here)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_text(pilot, "1 practice")
        old_url = app.location.url
        await here.stop()
        await wait_text(pilot, "Node unreachable")
        # Restarted like `citymesh node run --listen 127.0.0.1:<other port>`: api.url says so.
        await here.start(port=free_port())
        await wait_for(lambda: app.node_state.online)
        assert app.location.url != old_url
        assert app.location.url == here.home.url_path.read_text(encoding="utf-8").strip()
        await here.publish("language-cafe", title="Language café")
        await wait_text(pilot, "Language café", "2 practices")


async def test_a_dialog_keeps_its_input_while_the_node_is_away(make_city: MakeCity) -> None:
    here = await make_city("Mechelen", "BEL")
    there = await make_city("Lisbon", "PRT")
    desk = await there.publish("welcome-desk", title="Welcome desk for newcomers")
    await wait_for(lambda: here.has(desk))
    app = tui(here)
    async with app.run_test(size=(100, 32)) as pilot:
        await wait_text(pilot, "1 practice")
        await pilot.press("r")
        await wait_for(lambda: isinstance(app.screen, RateDialog))
        await pilot.press("5")
        await here.stop()
        await pilot.press("enter")
        await wait_text(pilot, "your rating is kept here")
        dialog = app.screen
        assert isinstance(dialog, RateDialog)
        await here.start()
        await wait_for(lambda: app.node_state.online)
        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, CatalogueScreen))
        await wait_for(lambda: there.has(desk, lambda d: [r.score for r in d.ratings] == [5]))


async def test_stays_responsive_while_the_node_ingests_a_large_batch(make_city: MakeCity) -> None:
    here = await make_city("Mechelen", "BEL")
    there = await make_city("Lisbon", "PRT")
    app = tui(here)
    count = 120
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_text(pilot, "0 practices")

        typing = asyncio.Event()

        async def flood() -> None:
            for n in range(count):
                if n == 20:
                    await typing.wait()  # the rest arrives while the coordinator types
                await there.publish(f"practice-{n}", title=f"Batch practice {n}")

        started = time.monotonic()
        task = asyncio.create_task(flood())
        await wait_for(lambda: app.events_seen > 10)
        # While records pour in, every key is handled in turn (Pilot waits for the app to be
        # idle after each), and the search answers once the typing pauses.
        typing.set()
        await pilot.press("slash")
        search = app.screen.query_one("#search", Input)
        typed_during_flood = 0
        for n, key in enumerate("batch practice 7", start=1):
            await pilot.press(key)
            assert search.value == "batch practice 7"[:n]
            # during the flood: still publishing on the other node, or its records still
            # arriving here (on a loaded machine either can finish first)
            typed_during_flood += not task.done() or app.events_seen < count
        assert typed_during_flood > 0
        await task
        await wait_for(lambda: app.events_seen >= count)
        await pilot.pause(app.batch_delay * 2)
        elapsed = time.monotonic() - started
        screen = app.screen
        assert isinstance(screen, CatalogueScreen)
        # "7" is a prefix: 7 and 70-79 of the batch.
        await wait_for(lambda: len(screen.query_one(PracticeTable).items) == 11)
        # The screen refreshed in batches, at most one per batch delay, not once per record.
        assert app.batches_sent <= elapsed / app.batch_delay + 2, (app.batches_sent, elapsed)
        screen.query_one("#search", Input).value = ""
        await wait_text(pilot, f"100 of {count} practices")
        # Scrolling to the end of the first page loads the next one.
        table = screen.query_one(PracticeTable)
        table.focus()
        await pilot.press("end")
        await wait_for(lambda: len(table.items) == count)
        await wait_text(pilot, f"{count} practices")
