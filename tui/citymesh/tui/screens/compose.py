"""Write or edit this city's own practice: a form with a message under each bad field, a
preview of how others will read it, publish (ctrl+s), and retract with confirmation.

Editing keeps every field the form does not show (results, actors, frameworks…): the form's
values are laid over the current body, and the schema of ``citymesh.protocol.api.PracticeIn``
is the final check, on this side as on the node's.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, ClassVar, Final

import msgspec
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widget import Widget
from textual.widgets import (
    Button,
    Footer,
    Header,
    Input,
    Label,
    Markdown,
    Select,
    SelectionList,
    Static,
    TabbedContent,
    TabPane,
    TextArea,
)

from citymesh.protocol import api
from citymesh.protocol.codes import SECTORS, TARGET_GROUPS
from citymesh.protocol.records import PracticeBody

from .. import labels
from ..client import ApiError, NodeUnavailable
from ..formatting import best_text, practice_markdown
from ..widgets.node_banner import NodeBanner
from .base import BaseScreen
from .confirm import ConfirmDialog

SLUG: Final = re.compile(r"\A[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?\Z")
MAILBOX: Final = re.compile(r"\A[^@\s]{1,64}@[^@\s]{1,188}\Z")
LANG: Final = re.compile(r"\A[a-z]{2,3}(-[A-Za-z0-9]{2,8})?\Z")
SPDX: Final = re.compile(r"\A[A-Za-z0-9.+()-]{1,64}( (AND|OR|WITH) [A-Za-z0-9.+()-]{1,64}){0,3}\Z")

FIELD_OF_PATH: Final = {
    "addr": "addr",
    "title": "title",
    "summary": "summary",
    "description": "description",
    "status": "status",
    "sectors": "sectors",
    "target_groups": "target_groups",
    "period": "start",
    "lessons": "lessons",
    "contact.role_mailbox": "mailbox",
    "contact.role": "role",
    "contact": "mailbox",
    "licence": "licence",
    "review_by": "review_by",
}
"""Field path of an error (msgspec's or the node's) → the form field that shows it."""


def slugify(text: str) -> str:
    words = re.findall(r"[a-z0-9]+", text.lower().encode("ascii", "ignore").decode())
    return "-".join(words)[:64].strip("-")


def field_for(path: str | None) -> str | None:
    if not path:
        return None
    for prefix in sorted(FIELD_OF_PATH, key=len, reverse=True):
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return FIELD_OF_PATH[prefix]
    return None


class ComposeScreen(BaseScreen[None]):
    """New practice (no ``detail``) or an edit of this city's practice ``detail``."""

    AUTO_FOCUS = "#title"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "publish", "Publish", id="publish", tooltip="Sign and publish"),
        Binding("ctrl+r", "preview", "Preview", id="preview", tooltip="Edit / preview"),
        Binding("escape", "leave", "Back", id="back", tooltip="Leave (asks if unsaved)"),
        Binding("ctrl+t", "retract", "Retract", id="retract", tooltip="Withdraw this practice"),
    ]

    def __init__(self, detail: api.PracticeDetail | None = None) -> None:
        super().__init__()
        self.detail = detail
        self.base: PracticeBody | None = detail.practice if detail else None
        self.language = (
            next(iter(self.base.title), "en") if self.base and "en" not in self.base.title else "en"
        )
        self.slug_edited = detail is not None
        self.sending = False
        self.saved_form: dict[str, Any] | None = None

    # -- layout --------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        b = self.base
        yield Header()
        with TabbedContent(id="tabs"):
            with TabPane("Edit", id="edit"), VerticalScroll(id="compose-form"):
                yield from self.field(
                    "Title",
                    "title",
                    Input(
                        b.title.get(self.language, "") if b else "",
                        max_length=200,
                        id="title",
                        compact=True,
                    ),
                    "What it is, in a few words.",
                )
                yield from self.field(
                    "Address",
                    "addr",
                    Input(
                        self.detail.addr if self.detail else "",
                        placeholder="filled in from the title, e.g. welcome-desk",
                        id="addr",
                        disabled=self.detail is not None,
                        compact=True,
                    ),
                    "Its short name in your city's list: lowercase letters, digits, hyphens.",
                )
                yield from self.field(
                    "Summary",
                    "summary",
                    TextArea(
                        b.summary.get(self.language, "") if b else "", id="summary", compact=True
                    ),
                    "Two or three sentences another city reads first.",
                )
                yield from self.field(
                    "Status",
                    "status",
                    Select(
                        [(text, code) for code, text in labels.PRACTICE_STATUS.items()],
                        value=b.status if b else "active",
                        allow_blank=False,
                        id="status",
                        compact=True,
                    ),
                )
                with Horizontal(classes="lists"):
                    with Vertical():
                        yield Label("Sectors (1–8)", classes="field-label")
                        yield SelectionList[str](
                            *(
                                (labels.sector(code), code, bool(b and code in b.sectors))
                                for code in SECTORS
                            ),
                            id="sectors",
                            compact=True,
                        )
                        yield Static("", id="sectors-error", classes="field-error", markup=False)
                    with Vertical():
                        yield Label("Target groups", classes="field-label")
                        yield SelectionList[str](
                            *(
                                (
                                    labels.target_group(code),
                                    code,
                                    bool(b and code in b.target_groups),
                                )
                                for code in TARGET_GROUPS
                            ),
                            id="target_groups",
                            compact=True,
                        )
                        yield Static(
                            "", id="target_groups-error", classes="field-error", markup=False
                        )
                yield from self.field(
                    "Started",
                    "start",
                    Input(
                        b.period.start.isoformat() if b and b.period.start else "",
                        placeholder="YYYY-MM-DD",
                        id="start",
                        compact=True,
                    ),
                )
                yield from self.field(
                    "Description",
                    "description",
                    TextArea(
                        b.description if b else "",
                        id="description",
                        language="markdown",
                        compact=True,
                    ),
                    "How it works, who is involved: Markdown (ctrl+r shows the preview).",
                )
                yield from self.field(
                    "Lessons",
                    "lessons",
                    TextArea(b.lessons if b else "", id="lessons", compact=True),
                    "What worked, and what failed.",
                )
                yield from self.field(
                    "Contact mailbox",
                    "mailbox",
                    Input(
                        b.contact.role_mailbox if b else "",
                        placeholder="integration@city.example.org",
                        id="mailbox",
                        compact=True,
                    ),
                    "A role mailbox, not a person's address.",
                )
                yield from self.field(
                    "Contact role",
                    "role",
                    Input(
                        b.contact.role if b else "",
                        placeholder="Integration coordinator",
                        id="role",
                        compact=True,
                    ),
                )
                yield from self.field(
                    "Review by",
                    "review_by",
                    Input(
                        b.review_by.isoformat() if b and b.review_by else "",
                        placeholder="YYYY-MM-DD: when you will check it is still current",
                        id="review_by",
                        compact=True,
                    ),
                )
                yield from self.field(
                    "Licence",
                    "licence",
                    Input(b.licence if b else "CC-BY-4.0", id="licence", compact=True),
                )
                with Horizontal(classes="buttons"):
                    yield Button("Publish (ctrl+s)", variant="primary", id="publish", compact=True)
                    yield Button("Preview (ctrl+r)", id="show-preview", compact=True)
                    if self.detail is not None:
                        yield Button(
                            "Retract… (ctrl+t)", variant="error", id="retract", compact=True
                        )
            with TabPane("Preview", id="preview"), VerticalScroll(id="preview-scroll"):
                yield Markdown("", id="preview-markdown")
        yield Static("", id="form-error", classes="error", markup=False)
        yield NodeBanner()
        yield Footer()

    def field(self, label: str, name: str, widget: Widget, help_text: str = "") -> ComposeResult:
        with Vertical(classes="field", id=f"{name}-field"):
            with Horizontal(classes="field-row"):
                yield Label(label, classes="field-label")
                yield widget
            if help_text:
                yield Static(help_text, classes="field-help")
            yield Static("", id=f"{name}-error", classes="field-error", markup=False)

    def on_mount(self) -> None:
        self.sub_title = (
            f"Editing {best_text(self.detail.practice.title)}" if self.detail else "New practice"
        )
        self.saved_form = self.form_values()

    # -- reading the form ----------------------------------------------------------------------
    def form_values(self) -> dict[str, Any]:
        return {
            "title": self.query_one("#title", Input).value.strip(),
            "addr": self.query_one("#addr", Input).value.strip(),
            "summary": self.query_one("#summary", TextArea).text.strip(),
            "status": self.query_one("#status", Select).value,
            "sectors": list(self.query_one("#sectors", SelectionList).selected),
            "target_groups": list(self.query_one("#target_groups", SelectionList).selected),
            "start": self.query_one("#start", Input).value.strip(),
            "description": self.query_one("#description", TextArea).text.strip(),
            "lessons": self.query_one("#lessons", TextArea).text.strip(),
            "mailbox": self.query_one("#mailbox", Input).value.strip(),
            "role": self.query_one("#role", Input).value.strip(),
            "review_by": self.query_one("#review_by", Input).value.strip(),
            "licence": self.query_one("#licence", Input).value.strip(),
        }

    def check(self, form: dict[str, Any]) -> dict[str, str]:
        """Messages by field, in words a coordinator understands."""
        problems: dict[str, str] = {}
        if not form["title"]:
            problems["title"] = "A title is needed."
        if not SLUG.match(form["addr"]):
            problems["addr"] = (
                "Use lowercase letters, digits and inner hyphens, at most 64 (e.g. welcome-desk)."
            )
        if len(form["summary"]) > 2000:
            problems["summary"] = f"At most 2000 characters ({len(form['summary'])} now)."
        if not 1 <= len(form["sectors"]) <= 8:
            problems["sectors"] = "Choose between 1 and 8 sectors (space selects)."
        for name in ("start", "review_by"):
            if form[name]:
                try:
                    datetime.date.fromisoformat(form[name])
                except ValueError:
                    problems[name] = "A date like 2025-03-01, or empty."
        if not MAILBOX.match(form["mailbox"]):
            problems["mailbox"] = "A mailbox like integration@city.example.org is needed."
        if len(form["description"]) > 40000:
            problems["description"] = "At most 40000 characters."
        if len(form["lessons"]) > 8000:
            problems["lessons"] = "At most 8000 characters."
        if len(form["role"]) > 200:
            problems["role"] = "At most 200 characters."
        if not SPDX.match(form["licence"]):
            problems["licence"] = "An SPDX licence id, e.g. CC-BY-4.0."
        return problems

    def request_data(self, form: dict[str, Any]) -> dict[str, Any]:
        """The request body as plain data: the current body with the form laid over it."""
        data: dict[str, Any] = msgspec.to_builtins(self.base) if self.base else {}
        title = dict(data.get("title", {}))
        title[self.language] = form["title"]
        summary = dict(data.get("summary", {}))
        if form["summary"]:
            summary[self.language] = form["summary"]
        else:
            summary.pop(self.language, None)
        period = dict(data.get("period", {}))
        if form["start"]:
            period["start"] = form["start"]
        else:
            period.pop("start", None)
        contact = dict(data.get("contact", {}))
        contact["role_mailbox"] = form["mailbox"]
        contact["role"] = form["role"]
        data.update(
            addr=form["addr"],
            title=title,
            summary=summary,
            description=form["description"],
            status=form["status"],
            sectors=form["sectors"],
            target_groups=form["target_groups"],
            period=period,
            lessons=form["lessons"],
            contact=contact,
            licence=form["licence"],
            review_by=form["review_by"] or None,
        )
        return data

    def practice_in(self) -> api.PracticeIn | None:
        """The form as a valid request, or None with messages under the bad fields."""
        form = self.form_values()
        problems = self.check(form)
        if not problems:
            try:
                return msgspec.convert(self.request_data(form), api.PracticeIn)
            except msgspec.ValidationError as err:
                detail = api.error_detail(err)
                problems[field_for(detail.field) or "form"] = detail.message
        self.show_problems(problems)
        return None

    def show_problems(self, problems: dict[str, str]) -> None:
        for error in self.query(".field-error").results(Static):
            error.update("")
            error.remove_class("-shown")
        first: str | None = None
        for name, message in problems.items():
            try:
                error = self.query_one(f"#{name}-error", Static)
            except LookupError:
                continue
            error.update(message)
            error.add_class("-shown")
            first = first or name
        count = len(problems)
        general = problems.get("form", "")
        summary = f"{count} thing{'s' * (count != 1)} to fix before publishing. {general}"
        self.say(summary.strip() if problems else "")
        if first is not None:
            self.query_one("#tabs", TabbedContent).active = "edit"
            self.query_one(f"#{first}").focus()

    def say(self, text: str) -> None:
        """The status line above the footer: progress, or what stops publishing."""
        line = self.query_one("#form-error", Static)
        line.update(text)
        line.set_class(bool(text), "-shown")

    # -- events --------------------------------------------------------------------------------
    @on(Input.Changed, "#title")
    def _title_changed(self, event: Input.Changed) -> None:
        if not self.slug_edited:
            addr = self.query_one("#addr", Input)
            addr.value = slugify(event.value)

    @on(Input.Changed, "#addr")
    def _addr_changed(self, event: Input.Changed) -> None:
        if self.query_one("#addr", Input).has_focus:
            self.slug_edited = True

    @on(TabbedContent.TabActivated, "#tabs")
    async def _tab(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "preview":
            await self.render_preview()

    async def render_preview(self) -> None:
        form = self.form_values()
        data = self.request_data(form)
        data.pop("addr")
        markdown = self.query_one("#preview-markdown", Markdown)
        try:
            body = msgspec.convert(data, PracticeBody)
        except msgspec.ValidationError as err:
            problem = api.error_detail(err)
            where = f" ({problem.field})" if problem.field else ""
            await markdown.update(
                f"*Not publishable yet: {problem.message}{where}. Publish (ctrl+s) says what "
                f"to fix.*\n\n# {form['title'] or '(no title)'}\n\n{form['description']}\n"
            )
            return
        city = self.cm.status.city if self.cm.status else None
        country = self.cm.status.country if self.cm.status else None
        await markdown.update(
            practice_markdown(body, city=city, country=country, today=self.cm.today)
        )

    @on(Button.Pressed, "#publish")
    def _publish_pressed(self) -> None:
        self.action_publish()

    @on(Button.Pressed, "#show-preview")
    def _preview_pressed(self) -> None:
        self.action_preview()

    @on(Button.Pressed, "#retract")
    def _retract_pressed(self) -> None:
        self.action_retract()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "retract":
            return self.detail is not None
        return True

    # -- actions -------------------------------------------------------------------------------
    def action_preview(self) -> None:
        tabs = self.query_one("#tabs", TabbedContent)
        tabs.active = "edit" if tabs.active == "preview" else "preview"

    def action_publish(self) -> None:
        practice = self.practice_in()
        if practice is not None and not self.sending:
            self.publish(practice)

    @work(exclusive=True, group="publish")
    async def publish(self, practice: api.PracticeIn) -> None:
        self.sending = True
        self.say("Publishing…")
        try:
            published = await self.cm.client.publish_practice(practice)
        except NodeUnavailable as err:
            self.cm.node_lost(err.cause)
            self.say("The node is unreachable; your text is kept. Publish again once it is back.")
        except ApiError as err:
            name = field_for(err.field) or "form"
            self.show_problems({name: f"The node refused it: {err.message}"})
        else:
            self.saved_form = self.form_values()
            self.notify(
                f"Published {published.ref} (seq {published.seq}).", title="Published", markup=False
            )
            self.app.pop_screen()
            if self.detail is None:
                self.cm.open_practice(published.ref)
        finally:
            self.sending = False

    def action_leave(self) -> None:
        if self.form_values() == self.saved_form:
            self.app.pop_screen()
            return

        def answered(discard: bool | None) -> None:
            if discard:
                self.app.pop_screen()

        self.app.push_screen(
            ConfirmDialog(
                "Unsaved changes",
                "Leave without publishing? What you wrote here will be lost.",
                yes="Leave",
                no="Keep writing",
            ),
            answered,
        )

    def action_retract(self) -> None:
        if self.detail is None:
            return
        title = best_text(self.detail.practice.title)

        def answered(retract: bool | None) -> None:
            if retract:
                self.retract()

        self.app.push_screen(
            ConfirmDialog(
                "Retract this practice?",
                f"“{title}” will be withdrawn: other cities stop seeing it once their nodes "
                "receive the retraction. Its earlier versions stay in the signed log.",
                yes="Retract",
                no="Keep it",
            ),
            answered,
        )

    @work(exclusive=True, group="publish")
    async def retract(self) -> None:
        assert self.detail is not None
        try:
            published = await self.cm.client.retract_practice(self.detail.ref)
        except NodeUnavailable as err:
            self.cm.node_lost(err.cause)
            self.say("The node is unreachable; nothing was retracted. Try again later.")
        except ApiError as err:
            self.say(f"The node refused: {err}")
        else:
            self.notify(f"Retracted (seq {published.seq}).", title="Retracted")
            self.cm.back_to_catalogue()
