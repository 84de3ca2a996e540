"""Regenerate the README screenshots of the TUI (run by hand, not by the tests):

    python tui/screenshots.py [--out docs/screenshots] [--size 120x40]

Starts the demo network of ``citymesh demo`` (a relay and five city nodes with the sample
catalogue, in a temporary directory), opens the TUI on Lisbon's node and saves SVG screenshots
of the catalogue, a practice, the rating dialog, the network screen and the practice form.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from citymesh.node.demo import Demo
from citymesh.protocol import api
from citymesh.protocol.records import Attestation
from citymesh.tui.app import CitymeshApp, create_app
from citymesh.tui.client import NodeClient, NodeLocation
from citymesh.tui.screens.catalogue import CatalogueScreen
from citymesh.tui.screens.compose import ComposeScreen
from citymesh.tui.screens.indicators import IndicatorsScreen
from citymesh.tui.screens.network import NetworkScreen
from citymesh.tui.screens.practice import PracticeScreen
from citymesh.tui.screens.rate import RateDialog
from citymesh.tui.widgets.practice_table import PracticeTable

VIEWER = "Lisbon"
"""The city whose coordinator we look over the shoulder of."""
SHOWN = ("Mechelen", "welcome-desk")
"""The practice opened: rated and replicated by other cities in the sample activity."""
INDICATOR = "INFO_DESK_CONTACTS"
QUARTERS = ("2024-Q1", "2024-Q2", "2024-Q3", "2024-Q4", "2025-Q1", "2025-Q2")
DESK_CONTACTS = {
    # city: contacts per migratory status in the first quarter (small ones get suppressed)
    "Lisbon": {"REFUGEE": 310, "ASYLUM_SEEKER": 145, "FOREIGN_CITIZEN": 420, "STATELESS": 6},
    "Mechelen": {"REFUGEE": 120, "ASYLUM_SEEKER": 40, "FOREIGN_CITIZEN": 95, "IDP": 4},
    "Gdańsk": {"REFUGEE": 260, "FOREIGN_CITIZEN": 180, "MIGRANT_WORKER": 75},
    "Amman": {"REFUGEE": 540, "IDP": 60, "ASYLUM_SEEKER": 8},
}
"""Sample tables of one indicator: the first quarter's counts, growing a little each quarter."""


async def until(condition: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit("screenshots: the app did not get there in time")
        await asyncio.sleep(0.05)


async def settle(pilot: Pilot[None]) -> None:
    await pilot.pause(0.3)
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()


async def shoot(app: CitymeshApp, ref: str, out: Path, size: tuple[int, int]) -> list[Path]:
    saved: list[Path] = []

    def save(name: str) -> None:
        saved.append(Path(app.save_screenshot(f"{name}.svg", str(out))))

    async with app.run_test(size=size) as pilot:
        await until(
            lambda: (
                isinstance(app.screen, CatalogueScreen)
                and ref in app.screen.query_one(PracticeTable).items
            )
        )
        table = app.screen.query_one(PracticeTable)
        table.move_cursor(row=table.get_row_index(ref))
        await settle(pilot)
        save("catalogue")

        await pilot.press("enter")
        await until(lambda: isinstance(app.screen, PracticeScreen) and app.screen.detail)
        await settle(pilot)
        save("practice")

        await pilot.press("r")
        await until(lambda: isinstance(app.screen, RateDialog))
        await settle(pilot)
        save("rate-dialog")

        await pilot.press("escape", "c")
        await until(lambda: isinstance(app.screen, NetworkScreen) and app.screen.status)
        await settle(pilot)
        save("network")

        await pilot.press("escape", "escape", "n")
        await until(lambda: isinstance(app.screen, ComposeScreen))
        await settle(pilot)
        save("compose")

        await pilot.press("escape", "i")
        await until(lambda: isinstance(app.screen, IndicatorsScreen) and app.screen.loaded)
        screen = app.screen
        assert isinstance(screen, IndicatorsScreen)
        screen.choose(code=INDICATOR, breakdown="by:MIG_STATUS")
        await until(lambda: screen.code == INDICATOR and screen.loaded and screen.city_tables)
        await settle(pilot)
        save("indicators")

        await pilot.press("a")
        await settle(pilot)
        save("indicators-across")
    return saved


async def publish_indicators(demo: Demo) -> int:
    """Publish the sample tables through each city's HTTP API; returns how many."""
    published = 0
    for name, first in DESK_CONTACTS.items():
        if name not in demo.homes:
            continue
        async with NodeClient(NodeLocation.from_home(demo.homes[name].root)) as client:
            for n, period in enumerate(QUARTERS):
                rows = [
                    api.IndicatorRowIn(dims={"MIG_STATUS": code}, count=count + count * n // 8)
                    for code, count in first.items()
                ]
                await client.publish_indicators(
                    api.IndicatorPublishIn(
                        code=INDICATOR,
                        period=period,
                        rows=rows,
                        source_type="service_data",
                        attestation=Attestation(aggregate_only=True, officer_role="Data officer"),
                    )
                )
                published += 1
    return published


async def main(out: Path, size: tuple[int, int]) -> int:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="citymesh-screenshots-") as tmp:
        demo = Demo(Path(tmp), cities=5, base_port=0)
        try:
            await demo.start()
            await demo.load()
            await publish_indicators(demo)
            deadline = time.monotonic() + 120
            while not (await demo.converged())[0]:
                if time.monotonic() > deadline:
                    print("screenshots: the demo nodes did not converge", file=sys.stderr)
                    return 1
                await asyncio.sleep(0.2)
            ref = api.format_ref(demo.nodes[SHOWN[0]].identity, SHOWN[1])
            app = create_app(NodeLocation.from_home(demo.homes[VIEWER].root))
            for path in await shoot(app, ref, out, size):
                print(f"saved {path}")
        finally:
            await demo.stop()
    return 0


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--size", type=parse_size, default=(120, 40), help="WIDTHxHEIGHT")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.out, args.size)))
