"""Start this city's replication of a practice, and later update its status and report the
outcome (one current replication per city and practice: sending again replaces it)."""

from __future__ import annotations

import datetime
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static, TextArea

from citymesh.protocol import api
from citymesh.protocol.records import Outcome

from .. import labels
from ..formatting import best_text, city_text
from .base import PublishDialog

RELATIONS = [(f"we {text}", code) for code, text in labels.RELATION.items()]
STATUSES = [(text, code) for code, text in labels.REPLICATION_STATUS.items()]
WORKED = [("not yet reported", ""), *((text, code) for code, text in labels.WORKED.items())]


def row(label: str, widget: Widget) -> ComposeResult:
    with Horizontal(classes="form-row"):
        yield Label(label, classes="form-label")
        yield widget


class ReplicateDialog(PublishDialog):
    """Dismissed with the `api.Published` answer, or None when cancelled."""

    notify_title = "Replication"

    AUTO_FOCUS = "#relation"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("ctrl+s", "submit", "Save", id="submit"),
    ]

    def __init__(self, detail: api.PracticeDetail) -> None:
        super().__init__()
        self.detail = detail

    def compose(self) -> ComposeResult:
        own = self.detail.own_replication
        outcome = own.outcome if own else None
        with Vertical(id="dialog", classes="dialog wide") as box:
            box.border_title = "Update your replication" if own else "Replicate in your city"
            yield Static(
                best_text(self.detail.practice.title), classes="dialog-title", markup=False
            )
            yield Static(
                f"from {city_text(self.detail.city, self.detail.country)}",
                classes="muted",
                markup=False,
            )
            with VerticalScroll(id="form"):
                yield from row(
                    "How",
                    Select(
                        RELATIONS,
                        value=own.relation if own else "adapted",
                        allow_blank=False,
                        id="relation",
                        compact=True,
                    ),
                )
                yield from row(
                    "Status",
                    Select(
                        STATUSES,
                        value=own.status if own else "planned",
                        allow_blank=False,
                        id="status",
                        compact=True,
                    ),
                )
                yield from row(
                    "Start",
                    Input(
                        own.start.isoformat() if own and own.start else "",
                        placeholder="YYYY-MM-DD (optional)",
                        id="start",
                        compact=True,
                    ),
                )
                yield from row(
                    "Adapting",
                    TextArea(
                        own.adaptations if own else "",
                        id="adaptations",
                        compact=True,
                        placeholder="What you will change for your city (optional)",
                    ),
                )
                yield from row(
                    "Mentor",
                    Checkbox(
                        Content(f"{self.detail.city or 'the author city'} mentors us"),
                        bool(own and own.mentor == self.detail.author),
                        id="mentor",
                        compact=True,
                    ),
                )
                yield from row(
                    "Outcome",
                    Select(
                        WORKED,
                        value=outcome.worked if outcome else "",
                        allow_blank=False,
                        id="worked",
                        compact=True,
                    ),
                )
                yield from row(
                    "Lessons",
                    TextArea(
                        outcome.lessons if outcome else "",
                        id="lessons",
                        compact=True,
                        placeholder="What worked, what did not (with the outcome)",
                    ),
                )
            yield Static("", id="error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="submit", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer()

    # -- actions -------------------------------------------------------------------------------
    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#submit")
    @on(Input.Submitted, "#start")
    def _submit(self) -> None:
        self.action_submit()

    def action_submit(self) -> None:
        replication = self.replication()
        if replication is not None and not self.sending:
            self.send(replication)

    def replication(self) -> api.ReplicationIn | None:
        """The form as a request, or None (with a message on the bad field)."""
        start_text = self.query_one("#start", Input).value.strip()
        start = None
        if start_text:
            try:
                start = datetime.date.fromisoformat(start_text)
            except ValueError:
                return self.invalid("#start", "Start must be a date like 2025-03-01.")
        worked = self.query_one("#worked", Select).value
        lessons = self.query_one("#lessons", TextArea).text.strip()
        if lessons and not worked:
            return self.invalid("#worked", "Say how it went (Outcome) to report lessons.")
        adaptations = self.query_one("#adaptations", TextArea).text.strip()
        if len(adaptations) > 8000 or len(lessons) > 8000:
            return self.invalid("#adaptations", "Keep each text under 8000 characters.")
        outcome = Outcome(worked=worked, lessons=lessons) if worked else None  # type: ignore[arg-type]
        mentor = self.detail.author if self.query_one("#mentor", Checkbox).value else None
        return api.ReplicationIn(
            relation=self.query_one("#relation", Select).value,  # type: ignore[arg-type]
            status=self.query_one("#status", Select).value,  # type: ignore[arg-type]
            start=start,
            adaptations=adaptations,
            mentor=mentor,
            outcome=outcome,
        )

    def invalid(self, selector: str, message: str) -> api.ReplicationIn | None:
        """Say what is wrong, put the cursor there; the form is not sent (None)."""
        self.show_error(message)
        self.query_one(selector).focus()
        return None

    @work(exclusive=True, group="send")
    async def send(self, replication: api.ReplicationIn) -> None:
        await self.send_record(
            self.cm.client.replicate(self.detail.ref, replication),
            unreachable="The node is unreachable; the form is kept. Save again once it is back.",
            refused="The node refused it",
            done="Replication saved",
        )
