"""The rating summary of a practice: mean, count and a bar per score 5..1."""

from __future__ import annotations

from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from citymesh.protocol import api

SCORES = ("5", "4", "3", "2", "1")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


class RatingBar(Widget):
    """Renders an `api.RatingSummary` with the distribution as horizontal bars."""

    DEFAULT_CSS = """
    RatingBar { height: auto; }
    """

    summary: reactive[api.RatingSummary | None] = reactive(None, layout=True)
    own_score: reactive[int | None] = reactive(None, layout=True)

    def render(self) -> Content:
        summary = self.summary
        if summary is None:
            return Content.styled("loading…", "dim")
        parts: list[str | tuple[str, str]] = []
        if summary.count == 0:
            parts.append(("Not rated yet", "dim"))
        elif summary.mean is None:
            parts.append((plural(summary.count, "rating"), "bold"))
            parts.append((f", mean shown from {summary.min_count}", "dim"))
        else:
            parts.append((f"{summary.mean:.1f}★", "bold $text-warning"))
            parts.append(f"  {plural(summary.count, 'rating')}")
        distribution: dict[str, int] = {str(k): v for k, v in summary.distribution.items()}
        width = max(4, self.content_size.width - 6)
        top = max(distribution.values(), default=0)
        for score in SCORES:
            n = distribution.get(score, 0)
            length = round(width * n / top) if top else 0
            parts.append(f"\n{score} ")
            parts.append(("█" * length, "$text-warning"))
            parts.append(("░" * (width - length), "dim"))
            parts.append(f" {n}")
        if self.own_score is not None:
            parts.append((f"\nYour rating: {self.own_score}★", "italic"))
        return Content.assemble(*parts)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return 1 + len(SCORES) + (self.own_score is not None)
