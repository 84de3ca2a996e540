"""The replication lineage of a practice as a tree: where it came from, which cities took it up
(city, status, outcome; the details one level down) and which practices were adapted from it."""

from __future__ import annotations

from collections.abc import Mapping

from rich.text import Text
from textual.widgets import Tree

from citymesh.protocol import api

from .. import labels
from ..formatting import best_text, city_text

# Tree labels are Rich Text (plain strings would be read as markup); Rich styles, not tokens.
WORKED_STYLE = {"yes": "green", "partly": "yellow", "no": "red", "too_early": "dim"}


def practice_label(ref: str, detail: api.PracticeDetail | None) -> str:
    if detail is None:
        return ref.partition("/")[2]
    return f"{best_text(detail.practice.title)} — {city_text(detail.city, detail.country)}"


def replication_label(rep: api.ReplicationItem, *, own: bool = False) -> Text:
    """City, status and outcome in a line short enough for the side panel."""
    text = Text.assemble((rep.city or "unknown city", "bold"))
    if own:
        text.append(" (you)", "italic")
    if rep.unverified:
        text.append(" (unverified)", "yellow")
    text.append(f" · {rep.status}")
    if rep.outcome is not None:
        worked = rep.outcome.worked
        text.append(" · ")
        text.append(labels.WORKED_SHORT.get(worked, worked), WORKED_STYLE.get(worked, ""))
    return text


class LineageTree(Tree[str | None]):
    """Node data is the practice ref to open (None for plain information)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("Lineage", id=id)
        self.show_root = False
        self.guide_depth = 2

    def show_lineage(
        self,
        detail: api.PracticeDetail,
        *,
        related: Mapping[str, api.PracticeDetail | None],
        own_identity: str | None = None,
    ) -> None:
        """``related`` holds the details of ``adapted_from`` and ``adapted_into`` practices
        (None where the node does not hold them)."""
        self.clear()
        root = self.root
        if detail.adapted_from:
            root.add_leaf(
                Text.assemble(
                    ("↑ adapted from ", "dim"),
                    practice_label(detail.adapted_from, related.get(detail.adapted_from)),
                ),
                data=detail.adapted_from,
            )
        this = root
        if not detail.replications:
            this.add_leaf(Text("no other city reported one yet", "dim"))
        for rep in detail.replications:
            own = own_identity is not None and rep.author == own_identity
            node = this.add(replication_label(rep, own=own), data=None, expand=False)
            node.add_leaf(Text(labels.RELATION.get(rep.relation, rep.relation)))
            if rep.unverified:
                node.add_leaf(Text("unverified city: not counted as evidence", "yellow"))
            elif rep.revoked:
                node.add_leaf(Text("membership since revoked", "yellow"))
            if rep.outcome is not None:
                node.add_leaf(Text(f"outcome: {labels.WORKED.get(rep.outcome.worked, '?')}"))
            if rep.start:
                node.add_leaf(Text(f"started {rep.start.isoformat()}"))
            if rep.adaptations:
                node.add_leaf(Text(f"changes: {rep.adaptations}"))
            if rep.outcome is not None and rep.outcome.lessons:
                node.add_leaf(Text(f"lessons: {rep.outcome.lessons}"))
        for ref in detail.adapted_into:
            this.add_leaf(
                Text.assemble(("↓ adapted into ", "dim"), practice_label(ref, related.get(ref))),
                data=ref,
            )
        root.expand()
