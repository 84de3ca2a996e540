"""The facet filters of the catalogue: sector, target group, country, status, rating."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Final

from textual.binding import Binding, BindingType
from textual.content import Content
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from .. import labels

FACET_ORDER: Final = ("sector", "target_group", "country", "status", "rating")
RATING_STEPS: Final = ("4", "3", "2")
"""``rating`` facet values: practices whose (shrunk) mean is at least this many stars."""


@dataclass(frozen=True)
class FacetCounts:
    """What the facet list shows: counts by facet and code, and whether counts are partial."""

    counts: Mapping[str, Mapping[str, int]]
    partial: frozenset[str] = frozenset()
    """Facets counted over the loaded page(s) only ("12+")."""


class FacetList(OptionList):
    """One option per facet value with its count; selecting one toggles it as a filter (one
    value per facet, as the API takes)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select", "Filter", tooltip="Toggle this filter"),
        Binding("space", "select", "Filter", show=False),
        Binding("backspace", "clear", "Clear filters", tooltip="Remove every filter"),
    ]

    @dataclass
    class Changed(Message):
        """The chosen filters changed (facet → code)."""

        facet_list: FacetList
        selected: dict[str, str]

        @property
        def control(self) -> FacetList:
            return self.facet_list

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.selected: dict[str, str] = {}
        self._counts = FacetCounts({})

    def show_counts(self, counts: FacetCounts) -> None:
        """Rebuild the options, keeping the highlighted one where it was."""
        self._counts = counts
        self._rebuild()

    def _rebuild(self) -> None:
        highlighted = self.highlighted_option.id if self.highlighted_option else None
        options: list[Option | None] = []
        for facet in FACET_ORDER:
            values = dict(self._counts.counts.get(facet, {}))
            chosen = self.selected.get(facet)
            if chosen is not None and chosen not in values:
                values[chosen] = 0
            if not values:
                continue
            if options:
                options.append(None)
            options.append(
                Option(Content.styled(labels.FACETS[facet], "bold $accent"), disabled=True)
            )
            codes = list(values) if facet != "rating" else list(RATING_STEPS)
            for code in codes:
                options.append(self._option(facet, code, values.get(code, 0), chosen == code))
        self.set_options(options)
        if highlighted is not None:
            try:
                self.highlighted = self.get_option_index(highlighted)
            except LookupError:
                self.highlighted = None

    def _option(self, facet: str, code: str, count: int, chosen: bool) -> Option:
        label = f"{code}★ and up" if facet == "rating" else labels.facet_value(facet, code)
        more = "+" if facet in self._counts.partial else ""
        # The scrollbar's place is always kept (app.tcss: scrollbar-gutter stable), so the
        # width does not change when the list grows taller than the screen.
        width = max(12, (self.scrollable_content_region.width or 26) - 1)
        tail = f" {count}{more}"
        name = Content.styled(label, "bold" if chosen else "").truncate(
            width - 2 - len(tail), ellipsis=True
        )
        text = Content.assemble(
            ("● " if chosen else "○ ", "bold $success" if chosen else "dim"),
            name,
            (tail, "dim"),
        )
        return Option(text, id=f"{facet}:{code}")

    def on_resize(self) -> None:
        self._rebuild()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        facet, _, code = (event.option_id or "").partition(":")
        if not code:
            return
        if self.selected.get(facet) == code:
            del self.selected[facet]
        else:
            self.selected[facet] = code
        self._rebuild()
        self.post_message(self.Changed(self, dict(self.selected)))

    def action_clear(self) -> None:
        if self.selected:
            self.selected.clear()
            self._rebuild()
            self.post_message(self.Changed(self, {}))
