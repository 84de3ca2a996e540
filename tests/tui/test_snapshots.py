"""Snapshot tests (pytest-textual-snapshot's SVG format, compared by syrupy) of the main screens
at 80×24 and 120×40, against real nodes.

What differs between runs is made equal before comparing: city identities and key
fingerprints (new keys every run) and the relay's port. Dates show as "today". Update the
snapshots after an intended change with ``pytest tests/tui --snapshot-update`` and look at them.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest
from pytest_textual_snapshot import SVGImageExtension
from syrupy.assertion import SnapshotAssertion
from textual.pilot import Pilot
from textual.widgets import Input

from citymesh.protocol import api
from citymesh.tui.app import CitymeshApp
from citymesh.tui.screens.compose import ComposeScreen
from citymesh.tui.screens.network import NetworkScreen
from citymesh.tui.screens.practice import PracticeScreen
from citymesh.tui.screens.rate import RateDialog
from citymesh.tui.widgets.practice_table import PracticeTable

from .conftest import City, MakeCity, tui, wait_for, wait_text

_BECH32 = "[02-9ac-hj-np-z]"
_VARIABLE = [
    (re.compile(rf"cmid1{_BECH32}{{38}}"), "cmid1" + "q" * 38),
    (re.compile(rf"\b{_BECH32}{{4}}-{_BECH32}{{4}}\b"), "xxxx-xxxx"),
    (re.compile(r"127\.0\.0\.1:\d+"), lambda m: "127.0.0.1:" + "0" * (len(m[0]) - 10)),
]


class StableSVG(SVGImageExtension):
    """The plugin's SVG snapshots, with identities, fingerprints and ports made equal."""

    def serialize(self, data: Any, **kwargs: Any) -> Any:
        text = super().serialize(data, **kwargs)
        for pattern, replacement in _VARIABLE:
            text = pattern.sub(replacement, text)  # type: ignore[arg-type]
        return text


@pytest.fixture
def svg_snapshot(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(StableSVG)


DESK_DESCRIPTION = """\
## What it is

One municipal desk where newcomers register, get their first appointments for housing,
health insurance and school enrolment, and leave with a personal **welcome plan**.

## How it works

1. Walk-in mornings, appointments in the afternoon.
2. Interpreters by phone or video; no children interpret.
3. A follow-up call after six weeks.
"""


async def network(make_city: MakeCity) -> tuple[City, dict[str, str]]:
    """Four cities; what Mechelen's node holds once they converged."""
    mechelen = await make_city("Mechelen", "BEL")
    lisbon = await make_city("Lisbon", "PRT")
    gdansk = await make_city("Gdańsk", "POL")
    amman = await make_city("Amman", "JOR")
    refs: dict[str, str] = {}
    refs["desk"] = await lisbon.publish(
        "welcome-desk",
        title="One-stop welcome desk for newcomers",
        summary="A single desk where newcomers register and leave with a welcome plan.",
        description=DESK_DESCRIPTION,
        sectors=["RIGHTS_INFO", "GOVERNANCE"],
        target_groups=["NEWCOMER", "REFUGEE"],
        status="regular_service",
        lessons="Start with walk-in hours from day one.",
        contact={"role_mailbox": "welcome@lisboa.example.org", "role": "Welcome desk lead"},
    )
    refs["cafe"] = await gdansk.publish(
        "language-cafe",
        title="Language café run by volunteers",
        sectors=["EDUCATION", "COHESION"],
        target_groups=["NEWCOMER", "HOST"],
    )
    refs["mentors"] = await mechelen.publish(
        "job-mentors",
        title="Job mentors for refugees",
        sectors=["WORK"],
        target_groups=["REFUGEE"],
        status="pilot",
    )
    refs["shelter"] = await amman.publish(
        "night-shelter",
        title="Night shelter network",
        sectors=["HOUSING", "CRISIS"],
        target_groups=["IDP", "REFUGEE"],
    )
    everyone = (mechelen, lisbon, gdansk, amman)
    for city in everyone:
        for ref in refs.values():
            await wait_for(lambda city=city, ref=ref: city.has(ref))
    for city, score in ((gdansk, 5), (amman, 4), (mechelen, 4)):
        await city.client().rate(refs["desk"], api.RatingIn(score=score))
    await lisbon.client().rate(refs["cafe"], api.RatingIn(score=3))
    await gdansk.client().replicate(
        refs["desk"],
        msgspec.convert(
            {
                "relation": "adapted",
                "status": "running",
                "start": "2024-02-01",
                "adaptations": "Run by an NGO in the old post office",
                "outcome": {"worked": "partly", "lessons": "Needs a full-time coordinator"},
            },
            api.ReplicationIn,
        ),
    )

    async def converged() -> bool:
        counts = []
        for city in everyone:
            status = await city.client().status()
            if any(r.lag or r.outbox_pending for r in status.relays):
                return False
            counts.append(status.records)
        return all(c == counts[0] for c in counts) and counts[0].get("replication") == 1

    await wait_for(converged)
    detail = await mechelen.client().practice(refs["desk"])
    assert detail.rating.count == 3
    return mechelen, refs


async def settle(pilot: Pilot[None]) -> None:
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


def still_cursors(app: CitymeshApp) -> None:
    """A blinking text cursor would make two screenshots differ."""
    for field in app.screen.query(Input):
        field.cursor_blink = False


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_main_screens(
    make_city: MakeCity, svg_snapshot: SnapshotAssertion, size: tuple[int, int]
) -> None:
    here, refs = await network(make_city)
    app = tui(here)
    async with app.run_test(size=size) as pilot:
        await wait_text(pilot, "4 practices")
        table = app.screen.query_one(PracticeTable)
        table.move_cursor(row=table.get_row_index(refs["desk"]))
        await wait_text(pilot, "welcome plan")
        await settle(pilot)
        assert app.export_screenshot() == svg_snapshot(name="catalogue")

        await pilot.press("enter")
        await wait_for(lambda: isinstance(app.screen, PracticeScreen) and app.screen.detail)
        await wait_text(pilot, "Your rating: 4★", "Gdańsk")
        await settle(pilot)
        assert app.export_screenshot() == svg_snapshot(name="practice")

        await pilot.press("r")
        await wait_for(lambda: isinstance(app.screen, RateDialog))
        await pilot.press("5")
        await settle(pilot)
        assert app.export_screenshot() == svg_snapshot(name="rate-dialog")

        await pilot.press("escape", "c")
        await wait_for(lambda: isinstance(app.screen, NetworkScreen) and app.screen.status)
        await wait_text(pilot, "Amman", "Lisbon", "Gdańsk")
        await settle(pilot)
        assert app.export_screenshot() == svg_snapshot(name="network")

        await pilot.press("escape", "escape", "n")
        await wait_for(lambda: isinstance(app.screen, ComposeScreen))
        still_cursors(app)
        await settle(pilot)
        assert app.export_screenshot() == svg_snapshot(name="compose")
