"""One practice: the text as Markdown; beside it the rating summary, the replication lineage,
the version history and the contact mailbox."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.widgets import Footer, Header, Label, Markdown, Static, Tree

from citymesh.protocol import api

from ..client import ApiError
from ..formatting import best_text, practice_markdown, when
from ..messages import RecordsChanged
from ..widgets.lineage import LineageTree
from ..widgets.node_banner import NodeBanner
from ..widgets.rating_bar import RatingBar
from .base import BaseScreen
from .compose import ComposeScreen
from .rate import RateDialog
from .replicate import ReplicateDialog


class PracticeScreen(BaseScreen[None]):
    """Read a practice and act on it: rate, replicate, or (your city's own) edit."""

    AUTO_FOCUS = "#document"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="back", tooltip="Back to the catalogue"),
        Binding("r", "rate", "Rate", id="rate", tooltip="Rate this practice (1-5)"),
        Binding(
            "p",
            "replicate",
            "Replicate",
            id="replicate",
            tooltip="Start or update your city's replication of it",
        ),
        Binding("e", "edit", "Edit", id="edit", tooltip="Edit your city's practice"),
    ]

    def __init__(self, ref: str) -> None:
        super().__init__()
        self.ref = ref
        self.detail: api.PracticeDetail | None = None
        self.related: dict[str, api.PracticeDetail | None] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="practice"):
            with VerticalScroll(id="document"):
                yield Markdown("", id="markdown")
            with VerticalScroll(id="side"):
                yield Label("Rating", classes="side-title")
                yield RatingBar(id="rating")
                yield Label("Replications", classes="side-title")
                yield LineageTree(id="lineage")
                yield Label("Versions", classes="side-title")
                yield Static("", id="versions")
                yield Label("Contact", classes="side-title")
                yield Static("", id="contact")
        yield NodeBanner()
        yield Footer()

    def reload(self) -> None:
        self.load()

    def concerns(self, message: RecordsChanged) -> bool:
        refs = message.refs()
        return self.ref in refs or bool(refs & set(self.related))

    @work(exclusive=True, group="load")
    async def load(self) -> None:
        with self.cm.reporting():
            try:
                detail = await self.cm.client.practice(self.ref)
            except ApiError as err:
                if err.status != 404:
                    raise
                await self.query_one("#markdown", Markdown).update(
                    "# Not here\n\nThis practice was retracted by its city, or this node does "
                    "not hold it (yet).\n"
                )
                self.mark_loaded()
                return
            related_refs = [r for r in [detail.adapted_from, *detail.adapted_into] if r]
            related = await asyncio.gather(*(self._related(r) for r in related_refs))
            self.related = dict(zip(related_refs, related, strict=True))
            await self.show(detail)
            self.mark_loaded()

    async def _related(self, ref: str) -> api.PracticeDetail | None:
        try:
            return await self.cm.client.practice(ref)
        except ApiError:
            return None  # retracted or not held here: the tree shows the bare ref

    async def show(self, detail: api.PracticeDetail) -> None:
        first = self.detail is None
        self.detail = detail
        today = self.cm.today
        self.sub_title = best_text(detail.practice.title)
        await self.query_one("#markdown", Markdown).update(
            practice_markdown(
                detail.practice,
                city=detail.city,
                country=detail.country,
                today=today,
                updated=detail.updated,
            )
        )
        bar = self.query_one(RatingBar)
        bar.summary = detail.rating
        bar.own_score = detail.own_rating.score if detail.own_rating else None
        self.query_one(LineageTree).show_lineage(
            detail, related=self.related, own_identity=self.cm.own_identity
        )
        versions: list[str | tuple[str, str]] = []
        total = len(detail.history)
        for i, item in enumerate(detail.history):
            if i:
                versions.append("\n")
            versions.append((f"v{total - i}", "bold"))
            versions.append(f" {when(item.created, today)}")
            if item.changed and i < total - 1:
                versions.append((" · " + ", ".join(item.changed), "$text-muted"))
            elif i == total - 1:
                versions.append((" · first published", "$text-muted"))
        self.query_one("#versions", Static).update(Content.assemble(*versions))
        contact = detail.practice.contact
        text: list[str | tuple[str, str]] = [(contact.role_mailbox, "bold")]
        if detail.unverified:
            text.append(("\nunverified: not a member of your networks", "$warning"))
        elif detail.revoked:
            text.append(("\nmembership since revoked", "$warning"))
        if contact.role:
            text.append(f"\n{contact.role}")
        if contact.languages:
            text.append(f"\nlanguages: {', '.join(contact.languages)}")
        self.query_one("#contact", Static).update(Content.assemble(*text))
        if first:
            self.query_one("#document").scroll_home(animate=False)
        self.refresh_bindings()

    # -- actions -------------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("rate", "replicate", "edit"):
            if self.detail is None:
                return None
            return self.detail.own == (action == "edit")
        return True

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_rate(self) -> None:
        if self.detail is not None and not self.detail.own:
            self.app.push_screen(RateDialog(self.detail), self._published)

    def action_replicate(self) -> None:
        if self.detail is not None and not self.detail.own:
            self.app.push_screen(ReplicateDialog(self.detail), self._published)

    def action_edit(self) -> None:
        if self.detail is not None and self.detail.own:
            self.app.push_screen(ComposeScreen(self.detail))

    def _published(self, published: api.Published | None) -> None:
        if published is not None:
            self.load()

    @on(Tree.NodeSelected, "#lineage")
    def _open_related(self, event: Tree.NodeSelected[str | None]) -> None:
        ref = event.node.data
        if ref and ref != self.ref:
            self.app.push_screen(PracticeScreen(ref))
