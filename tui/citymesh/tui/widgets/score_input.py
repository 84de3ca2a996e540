"""A 1-5 star score you set with the digit keys (or left/right; backspace clears)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from ..formatting import stars


class ScoreInput(Widget, can_focus=True):
    """``value`` is 1..5, or None while unset (allowed for optional scores)."""

    DEFAULT_CSS = """
    ScoreInput {
        height: 1;
        width: auto;
        padding: 0 1;
        &:focus { background: $surface-lighten-1; text-style: bold; }
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(str(n), f"set({n})", f"{n}★", show=False) for n in range(1, 6)),
        Binding("right,plus", "step(1)", "More", show=False),
        Binding("left,minus", "step(-1)", "Less", show=False),
        Binding("backspace,delete,0", "set(0)", "Clear", show=False),
    ]

    value: reactive[int | None] = reactive(None)

    @dataclass
    class Changed(Message):
        score_input: ScoreInput
        value: int | None

        @property
        def control(self) -> ScoreInput:
            return self.score_input

    def __init__(
        self, value: int | None = None, *, optional: bool = False, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.optional = optional
        self.set_reactive(ScoreInput.value, value)

    def render(self) -> Content:
        if self.value is None:
            hint = "not rated" if self.optional else "press 1–5"
            return Content.assemble((stars(0), "dim"), "  ", (hint, "dim italic"))
        return Content.assemble((stars(self.value), "$text-warning"), f"  {self.value}/5")

    def watch_value(self, value: int | None) -> None:
        self.post_message(self.Changed(self, value))

    def action_set(self, score: int) -> None:
        self.value = score if 1 <= score <= 5 else None

    def action_step(self, delta: int) -> None:
        self.value = min(5, max(1, (self.value or 0) + delta))
