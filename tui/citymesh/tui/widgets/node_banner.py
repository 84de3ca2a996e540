"""A line that appears when the node is not reachable, on every screen."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from ..state import NodeState


class NodeBanner(Static):
    """Hidden while the node answers; says what is wrong (and that nothing typed is lost)
    while it does not. Follows the app's ``node_state`` reactive.

    Not docked: it sits in the flow just above the (docked) footer, and the screen's main
    part (height 1fr) gives it room; two widgets docked at one edge would overlap.
    """

    DEFAULT_CSS = """
    NodeBanner {
        height: auto;
        display: none;
        padding: 0 1;
        background: $error;
        color: $text;
        &.-connecting { background: $warning; color: $text; }
        &.-visible { display: block; }
    }
    """

    def on_mount(self) -> None:
        self.watch(self.app, "node_state", self.show_state, init=True)

    def show_state(self, state: NodeState | None) -> None:
        if state is None or state.online:
            self.remove_class("-visible", "-connecting")
            return
        self.add_class("-visible")
        self.set_class(state.connection == "connecting", "-connecting")
        if state.connection == "connecting":
            self.update(Content(f"Connecting to the node at {state.url}…"))
        elif state.refused:
            self.update(
                Content.assemble(
                    ("Node refuses the connection", "bold"),
                    f" at {state.url}: {state.reason}. Retrying; what you typed is kept.",
                )
            )
        else:
            self.update(
                Content.assemble(
                    ("Node unreachable", "bold"),
                    f" at {state.url} ({state.reason}). Retrying by itself; what you typed"
                    " is kept.",
                )
            )
