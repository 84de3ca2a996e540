"""The rating dialog: 1-5 sets the overall score, Enter submits; the per-dimension scores,
comment, role and conflict of interest are optional."""

from __future__ import annotations

from typing import ClassVar, Final

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button, Checkbox, Footer, Input, Label, Select, Static

from citymesh.protocol import api
from citymesh.protocol.records import Scores

from .. import labels
from ..formatting import best_text, city_text
from ..widgets.score_input import ScoreInput
from .base import PublishDialog

DIMENSIONS: Final = (
    ("relevance", "Relevance"),
    ("evidence", "Evidence"),
    ("transferability", "Transferability"),
    ("clarity", "Clarity"),
)


class RateDialog(PublishDialog):
    """Dismissed with the `api.Published` answer, or None when cancelled."""

    notify_title = "Rated"

    AUTO_FOCUS = "#overall"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="cancel"),
        Binding("enter", "submit", "Submit", key_display="⏎", id="submit"),
        *(Binding(str(n), f"overall({n})", f"{n}★", show=False) for n in range(1, 6)),
    ]

    def __init__(self, detail: api.PracticeDetail) -> None:
        super().__init__()
        self.detail = detail

    def compose(self) -> ComposeResult:
        own = self.detail.own_rating
        with Vertical(id="dialog", classes="dialog") as box:
            box.border_title = "Change your rating" if own else "Rate this practice"
            yield Static(
                best_text(self.detail.practice.title), classes="dialog-title", markup=False
            )
            yield Static(
                city_text(self.detail.city, self.detail.country), classes="muted", markup=False
            )
            with Horizontal(classes="score-row"):
                yield Label("Overall", classes="score-label")
                yield ScoreInput(own.score if own else None, id="overall")
            yield Static(
                "1–5 sets the score · Enter submits · Esc cancels",
                classes="hint",
            )
            with Grid(id="dimensions"):
                for key, label in DIMENSIONS:
                    yield Label(label, classes="score-label")
                    value = getattr(own.scores, key) if own else None
                    yield ScoreInput(value, optional=True, id=f"score-{key}")
            with Horizontal(classes="score-row"):
                yield Label("Comment", classes="score-label")
                yield Input(
                    own.comment if own else "",
                    placeholder="optional: what would you tell another city?",
                    max_length=2000,
                    id="comment",
                    compact=True,
                )
            with Horizontal(classes="row"):
                yield Select(
                    [(text, code) for code, text in labels.RATER_ROLE.items()],
                    value=own.role if own else "peer",
                    allow_blank=False,
                    id="role",
                    compact=True,
                )
                yield Checkbox(
                    "Conflict of interest",
                    own.conflict_of_interest if own else False,
                    id="conflict",
                    compact=True,
                )
            yield Static("", id="error", classes="error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Submit", variant="primary", id="submit", compact=True)
                yield Button("Cancel", id="cancel", compact=True)
        yield Footer()

    # -- actions -------------------------------------------------------------------------------
    def action_overall(self, score: int) -> None:
        self.query_one("#overall", ScoreInput).value = score

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#submit")
    @on(Input.Submitted, "#comment")
    def _submit(self) -> None:
        self.action_submit()

    def action_submit(self) -> None:
        rating = self.rating()
        if rating is not None and not self.sending:
            self.send(rating)

    def rating(self) -> api.RatingIn | None:
        """The rating as entered, or None (and a message) if it is not complete."""
        overall = self.query_one("#overall", ScoreInput).value
        if overall is None:
            self.show_error("Give an overall score first: press a key from 1 to 5.")
            self.query_one("#overall").focus()
            return None
        scores = Scores(
            **{key: self.query_one(f"#score-{key}", ScoreInput).value for key, _ in DIMENSIONS}
        )
        role = self.query_one("#role", Select).value
        return api.RatingIn(
            score=overall,
            scores=scores,
            comment=self.query_one("#comment", Input).value.strip(),
            role=role if isinstance(role, str) else "peer",  # type: ignore[arg-type]
            conflict_of_interest=self.query_one("#conflict", Checkbox).value,
        )

    @work(exclusive=True, group="send")
    async def send(self, rating: api.RatingIn) -> None:
        await self.send_record(
            self.cm.client.rate(self.detail.ref, rating),
            unreachable="The node is unreachable; your rating is kept here. "
            "Press Enter again once it is back.",
            refused="The node refused the rating",
            done="Rating published",
        )
