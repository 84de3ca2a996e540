"""What every screen shares: typed access to the app, and reloading when the node's data
changed (live records, or the node coming back) while the screen was on top or below."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar, cast

from textual.screen import ModalScreen, Screen
from textual.widgets import Static

from citymesh.protocol import api

from ..client import ApiError, NodeUnavailable
from ..messages import NodeStateChanged, RecordsChanged

if TYPE_CHECKING:
    from ..app import CitymeshApp

ResultT = TypeVar("ResultT")


class BaseScreen(Screen[ResultT]):
    """A full screen that shows node data; `reload` fetches it again (in a worker)."""

    loaded_version = -1

    @property
    def cm(self) -> CitymeshApp:
        return cast("CitymeshApp", self.app)

    def reload(self) -> None:
        """Fetch what the screen shows; subclasses start their worker here."""

    def mark_loaded(self) -> None:
        self.loaded_version = self.cm.data_version

    def on_screen_resume(self) -> None:
        if self.loaded_version != self.cm.data_version:
            self.reload()

    def on_node_state_changed(self, message: NodeStateChanged) -> None:
        if message.online:
            self.reload()

    def on_records_changed(self, message: RecordsChanged) -> None:
        if self.concerns(message):
            self.reload()
        else:
            self.mark_loaded()

    def concerns(self, message: RecordsChanged) -> bool:
        """Whether these new records change what this screen shows (indicator tables only
        matter to the indicators screen)."""
        return bool(message.kinds() - {"indicators"})


class BaseDialog(ModalScreen[ResultT]):
    """A dialog over a screen; records arriving meanwhile are for the screen below, which
    reloads when it is back on top."""

    @property
    def cm(self) -> CitymeshApp:
        return cast("CitymeshApp", self.app)


class PublishDialog(BaseDialog[api.Published | None]):
    """A form in a dialog that signs one record: its ``#error`` line, and sending that keeps
    the form when the node is away or refuses it."""

    sending = False
    notify_title = ""
    """Title of the notification once the record is signed."""

    def show_error(self, text: str, *, error: bool = True) -> None:
        line = self.query_one("#error", Static)
        line.update(text)
        line.set_class(not error, "-info")
        line.set_class(bool(text), "-shown")

    async def send_record(
        self, sending: Awaitable[api.Published], *, unreachable: str, refused: str, done: str
    ) -> None:
        """Await the node's answer; on success say ``done`` (with the seq) and close."""
        self.sending = True
        self.show_error("Sending…", error=False)
        try:
            published = await sending
        except NodeUnavailable as err:
            self.cm.node_lost(err.cause)
            self.show_error(unreachable)
        except ApiError as err:
            self.show_error(f"{refused}: {err}")
        else:
            self.notify(f"{done} (seq {published.seq}).", title=self.notify_title)
            self.dismiss(published)
        finally:
            self.sending = False
