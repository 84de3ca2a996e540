"""What the app knows about its node connection (shown by every screen's banner)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Connection = Literal["connecting", "online", "offline"]


@dataclass(frozen=True)
class NodeState:
    connection: Connection
    url: str
    reason: str = ""
    city: str = ""
    refused: bool = False
    """The node answered but refused the connection (e.g. a wrong API token)."""

    @property
    def online(self) -> bool:
        return self.connection == "online"
