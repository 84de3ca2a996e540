"""A relay's backlog read in batches from an ephemeral pull consumer, over one plain subscription.

nats-py's ``PullSubscription.fetch`` waits for every message with its own ``asyncio.wait_for``:
about 75 us of event-loop time per message, all of it holding the GIL that the writer thread
needs between its statements. Here the batch request goes to the consumer's next-message API
(``$JS.API.CONSUMER.MSG.NEXT``) and a callback collects the replies (about 25 us per message).
Each request is complete when it has its batch or the relay's status message ends it (404: nothing
more now, 408: the request expired); a request is never left open across two fetches. Only for a
link's own stream on its own connection (the default JetStream API prefix).
"""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

_V1_TOKENS = 9
"""``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``"""
_DONE = frozenset({"404", "408"})
"""Statuses that end a batch request: no messages (now), request timeout."""
_request = msgspec.json.Encoder()


class PullError(Exception):
    """The relay ended a batch request with an error status (consumer deleted, leader change)."""


def stream_seq(reply: str) -> int:
    """The stream sequence of a JetStream delivery, from its reply subject (both forms)."""
    tokens = reply.split(".")
    if len(tokens) == _V1_TOKENS:
        return int(tokens[5])
    return int(tokens[Msg.Ack.StreamSeq])


class BatchPull:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        stream: str,
        config: api.ConsumerConfig,
        *,
        pending_bytes_limit: int,
    ) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._config = config
        self._pending_bytes = pending_bytes_limit
        self._sub: Subscription | None = None
        self._consumer = ""
        self._got: list[tuple[bytes, int]] = []
        self._want = 0
        self._status: str | None = None
        self._done = asyncio.Event()

    async def start(self) -> None:
        info = await self._js.add_consumer(self._stream, self._config)
        self._consumer = info.name
        self._sub = await self._nc.subscribe(
            self._nc.new_inbox(), cb=self._on_msg, pending_bytes_limit=self._pending_bytes
        )

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers
        if headers is not None and not msg.data and "Status" in headers:
            status = headers["Status"]
            if status == "100":
                return  # an idle heartbeat (never asked for)
            self._status = status
            self._done.set()
            return
        if not msg.reply:
            return
        self._got.append((msg.data, stream_seq(msg.reply)))
        if len(self._got) >= self._want:
            self._done.set()

    async def fetch(self, batch: int, timeout: float) -> list[tuple[bytes, int]]:
        """Up to ``batch`` messages the relay holds now, as (data, stream seq); an empty list when
        it has none. Raises `PullError` on an error status, ``nats.errors.TimeoutError`` when the
        relay does not finish answering within ``timeout`` plus a second (the subscription is then
        unusable: close)."""
        assert self._sub is not None
        self._got, self._want, self._status = [], batch, None
        self._done.clear()
        # no_wait without expires: the relay sends what it holds now, then a 404 if that was
        # fewer than asked (with expires it would wait out the time for more).
        request = {"batch": batch, "no_wait": True}
        await self._nc.publish(
            f"{api.DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self._stream}.{self._consumer}",
            _request.encode(request),
            reply=self._sub.subject,
        )
        try:
            await asyncio.wait_for(self._done.wait(), timeout + 1.0)
        except TimeoutError as err:
            raise nats.errors.TimeoutError from err
        if self._status is not None and self._status not in _DONE:
            raise PullError(f"the relay ended a batch request with status {self._status}")
        return self._got

    async def close(self) -> None:
        """Stop listening. The consumer is left to the relay, which removes it once it has been
        unused for its ``inactive_threshold`` (a city's login on a governed relay may not delete
        consumers)."""
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
