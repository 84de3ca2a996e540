"""The catalogue's preview pane: the highlighted practice in a few lines."""

from __future__ import annotations

import datetime

from textual.content import Content
from textual.widgets import Static

from citymesh.protocol import api

from .. import labels
from ..formatting import city_text, rating_text, when


class PracticePreview(Static):
    """Title, place, status, rating, replications, summary, sectors and target groups."""

    def show_item(self, item: api.PracticeItem | None, today: datetime.date) -> None:
        if item is None:
            self.update(Content.styled("No practice selected.", "dim"))
            return
        facts = [
            city_text(item.city, item.country),
            labels.practice_status(item.status),
            f"rating {rating_text(item.rating)}",
            f"{item.replications} replication{'s' * (item.replications != 1)}",
            f"updated {when(item.updated, today)}",
        ]
        parts: list[str | tuple[str, str]] = [
            (item.title, "bold"),
            "\n",
            (" · ".join(facts), "$text-muted"),
        ]
        if item.unverified:
            parts.append(("\nUnverified: the author is not a member of your networks.", "$warning"))
        elif item.revoked:
            parts.append(("\nThe author's membership was revoked since.", "$warning"))
        if item.summary:
            parts += ["\n", item.summary]
        parts += [
            "\n",
            ("Sectors: ", "bold"),
            ", ".join(labels.sector(s) for s in item.sectors),
        ]
        if item.target_groups:
            parts += [
                "\n",
                ("For: ", "bold"),
                ", ".join(labels.target_group(t) for t in item.target_groups),
            ]
        self.update(Content.assemble(*parts))
