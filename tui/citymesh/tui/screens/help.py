"""Keys and a short how-to, for a coordinator who has not read any manual."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Markdown

from .base import BaseScreen

HELP = """\
# citymesh: finding and sharing what works

Your city's node keeps a signed copy of every practice, rating and replication
your networks publish. This screen lists the keys; they are also at the bottom
of every screen and in the command palette (ctrl+p).

| key | what it does |
|---|---|
| `/` | search: type words, a city, a place; Enter jumps to the first result |
| `enter` | open the highlighted practice |
| `escape` | back (from a practice, a form, this help) |
| `r` | rate the practice: press 1–5, then Enter |
| `p` | replicate it in your city, or update how your replication goes |
| `n` | write a new practice of your city (`e` edits one of yours) |
| `c` | the network: cities, relays, lag, rejected records |
| `i` | indicators: a city's published tables over time, one indicator across cities |
| `?` | this help |
| `q` | quit |

**Filters.** The list at the left narrows the results by sector, target group,
country, status or rating; the numbers say how many practices each would leave.
Press `enter` on one to apply it, again to remove it, `backspace` to clear all.

**Ratings** are one per city and can be changed. The mean shows once enough
cities rated (the network decides how many); the bars show every score.

**Replications** tell other cities what you took over, how it is going and,
later, whether it worked. Update the same replication as it progresses.

**Your own practices**: `n` opens the form; ctrl+r previews how others will read
it; ctrl+s signs and publishes. Open one of yours and press `e` to edit it or to
retract it.

**Indicators** (`i`): pick a city (yours first), an indicator and which cells to
draw (the total, or one line per code of a dimension). The chart shows the published
values per period; a value suppressed by disclosure control is a gap, never a zero,
and the table under the chart says why (confidential, secondary, low base). Press
`a` to compare one period across every city that published it, `o` to go back.

**When the node is unreachable** a red line says so. Keep working: what you typed
stays, and the screens refresh by themselves when the node is back.
"""


class HelpScreen(BaseScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="help"):
            yield Markdown(HELP)
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "Help"

    def action_back(self) -> None:
        self.app.pop_screen()
