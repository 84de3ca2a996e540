"""A small asyncio TCP proxy for fault tests: cut, blackhole, delay and reset links on demand.

Nodes reach a relay through ``Proxy.url`` instead of the relay's own URL. The proxy runs its own
event loop in a daemon thread, so it keeps forwarding (or holding) bytes while the test's loop is
busy or blocked, and its controls are plain synchronous calls:

- ``cut()``: close every connection and the listening socket, so new connections are refused
  (ECONNREFUSED); ``restore()`` listens again on the same port.
- ``blackhole(seconds)``: connections stay open and new ones are accepted, but no byte moves in
  either direction until the blackhole ends (what a partition looks like to TCP: the bytes wait in
  kernel buffers and flow again, in order, once it heals). ``None`` holds until ``heal()``.
- ``delay(seconds)``: every chunk waits that long before it is forwarded (per direction, in order).
- ``reset()``: abort every open connection with an RST (``SO_LINGER`` 0) on both sides.

It counts bytes in each direction, connections accepted and connections reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

CHUNK = 64 * 1024


@dataclass
class ProxyStats:
    up: int = 0
    """Bytes forwarded from clients to the target."""
    down: int = 0
    """Bytes forwarded from the target to clients."""
    accepted: int = 0
    resets: int = 0
    """Connections aborted with an RST by ``reset()``."""
    refused_upstream: int = 0
    """Connections closed because the target could not be reached."""


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _rst(writer: asyncio.StreamWriter) -> None:
    """Abort a connection so the peer sees ECONNRESET rather than an orderly EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class Proxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``; see the module docstring."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.stats = ProxyStats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._open = asyncio.Event()  # set: bytes flow; clear: blackholed
        self._heal_handle: asyncio.TimerHandle | None = None
        self._delay = 0.0

    @classmethod
    def to_url(cls, url: str) -> Proxy:
        """A started proxy in front of ``nats://host:port``."""
        host, _, port = url.split("://", 1)[-1].rpartition(":")
        proxy = cls(host, int(port))
        proxy.start()
        return proxy

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    # -- running the loop thread ---------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> None:
        self._open.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns):
            self._close(conn)

    # -- controls --------------------------------------------------------------------------------
    def cut(self) -> None:
        """Close every connection and stop listening: new connections are refused."""
        self._call(self._shutdown())

    def restore(self) -> None:
        """Listen again (same port) after ``cut()``."""
        self._call(self._listen())

    def blackhole(self, seconds: float | None = None) -> None:
        """Hold every byte (open and new connections) for ``seconds``, or until ``heal()``."""

        async def go() -> None:
            self._open.clear()
            if self._heal_handle is not None:
                self._heal_handle.cancel()
                self._heal_handle = None
            if seconds is not None:
                self._heal_handle = self._loop.call_later(seconds, self._open.set)

        self._call(go())

    def heal(self) -> None:
        async def go() -> None:
            if self._heal_handle is not None:
                self._heal_handle.cancel()
                self._heal_handle = None
            self._open.set()

        self._call(go())

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    def delay(self, seconds: float) -> None:
        self._delay = seconds

    def reset(self) -> int:
        """RST every open connection (both sides); returns how many were reset."""

        async def go() -> int:
            conns = list(self._conns)
            for conn in conns:
                _rst(conn.client)
                if conn.upstream is not None:
                    _rst(conn.upstream)
                self._close(conn)
            self.stats.resets += len(conns)
            return len(conns)

        return self._call(go())

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- forwarding ------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats.accepted += 1
        conn = _Conn(writer)
        self._conns.add(conn)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.stats.refused_upstream += 1
            self._close(conn)
            return
        if conn not in self._conns:  # reset or cut while connecting
            up_writer.transport.abort()
            return
        conn.upstream = up_writer
        conn.tasks = [
            asyncio.create_task(self._pump(conn, reader, up_writer, up=True)),
            asyncio.create_task(self._pump(conn, up_reader, writer, up=False)),
        ]

    async def _pump(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                # Blackholed: stop reading, so bytes wait in the kernel's buffers (and the
                # sender's writes eventually block), exactly as they would behind a partition.
                await self._open.wait()
                if self._delay:
                    await asyncio.sleep(self._delay)
                    await self._open.wait()
                writer.write(data)
                await writer.drain()
                if up:
                    self.stats.up += len(data)
                else:
                    self.stats.down += len(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._conns.discard(conn)
        for w in (conn.client, conn.upstream):
            if w is not None and not w.transport.is_closing():
                w.transport.close()
        current = asyncio.current_task()
        for task in conn.tasks:
            if task is not current:
                task.cancel()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
