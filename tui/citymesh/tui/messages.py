"""Application-wide messages (small dataclasses, as in Textualize/toolong)."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from citymesh.protocol import api


@dataclass
class NodeStateChanged(Message):
    """The node became reachable (``online``) or stopped answering (``reason`` says why)."""

    online: bool
    reason: str = ""


@dataclass
class RecordsChanged(Message):
    """New records reached the node (batched); posted to the screen on top."""

    events: list[api.Event]

    def refs(self) -> set[str]:
        """Practice refs the records concern (practices, ratings, replications, and
        retractions of practices, whose address is ``practice/<slug>``)."""
        refs = {e.ref for e in self.events if e.ref}
        refs.update(
            f"{e.author}/{e.addr.removeprefix('practice/')}"
            for e in self.events
            if e.kind == "retraction" and e.addr.startswith("practice/")
        )
        return refs

    def kinds(self) -> set[str]:
        return {e.kind for e in self.events}
