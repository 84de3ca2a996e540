"""The command palette (ctrl+p): every key's action by name, and the practices on screen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import CitymeshApp


@dataclass(frozen=True)
class Command:
    title: str
    key: str
    help: str
    run: Callable[[], Any]


class CitymeshCommands(Provider):
    """Commands for what the keys do (with the key in the help line), enabled as on screen."""

    def commands(self) -> list[Command]:
        app: CitymeshApp = self.app  # type: ignore[assignment]
        screen = self.screen
        out: list[Command] = []

        def screen_action(action: str, title: str, key: str, help_text: str) -> None:
            if screen.check_action(action, ()) and hasattr(screen, f"action_{action}"):
                out.append(Command(title, key, help_text, partial(screen.run_action, action)))

        out.append(Command("Search practices", "/", "Jump to the search box", app.action_search))
        screen_action("rate", "Rate this practice", "r", "Give it 1-5 stars")
        screen_action(
            "replicate", "Replicate this practice", "p", "Start or update your replication"
        )
        screen_action("edit", "Edit this practice", "e", "Change your city's practice")
        screen_action("over_time", "Indicator over time", "o", "The chosen city's chart")
        screen_action(
            "across_cities", "Indicator across cities", "a", "One period, every city's value"
        )
        screen_action("back", "Back", "escape", "Back to the previous screen")
        out += [
            Command("New practice", "n", "Write a practice of your city", app.action_new_practice),
            Command(
                "Network status", "c", "Cities, relays, lag, rejected records", app.action_network
            ),
            Command(
                "Indicators",
                "i",
                "A city's indicators over time; one indicator across cities",
                app.action_indicators,
            ),
            Command("Help", "?", "Keys and a short how-to", app.action_help),
            Command("Quit", "q", "Leave citymesh", partial(app.run_action, "quit")),
        ]
        catalogue = app.catalogue()
        if catalogue is not None and catalogue.result is not None:
            for item in catalogue.result.items[:50]:
                out.append(
                    Command(
                        f"Open: {item.title}",
                        "enter",
                        f"{item.city or '?'} ({item.country or '?'})",
                        partial(app.open_practice, item.ref),
                    )
                )
        return out

    async def discover(self) -> Hits:
        for command in self.commands():
            yield DiscoveryHit(
                command.title, command.run, help=f"{command.help} · key {command.key}"
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self.commands():
            score = matcher.match(command.title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(command.title),
                    command.run,
                    text=command.title,
                    help=f"{command.help} · key {command.key}",
                )
