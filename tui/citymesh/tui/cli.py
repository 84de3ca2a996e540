"""Starting the TUI from the command line (``citymesh tui``): find the node, run the app."""

from __future__ import annotations

import sys

from .app import create_app
from .client import HomeError, NodeLocation


def run_tui(home: str | None) -> None:
    """Open the TUI on the node of ``home`` (else $CITYMESH_HOME, else the user data dir).

    A home without a node is one line on stderr and exit status 1. The node need not be running
    yet: the app says it is unreachable and connects once it is up.
    """
    try:
        location = NodeLocation.from_home(home)
    except HomeError as err:
        print(f"citymesh: {err}", file=sys.stderr)
        sys.exit(1)
    create_app(location).run()
