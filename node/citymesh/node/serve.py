"""Running the node with its HTTP API until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from aiohttp import web

from citymesh.protocol.identity import identity_text

from .app import create_app
from .config import Home, NodeConfig
from .keys import BODY_TIMEOUT, NODE
from .middlewares import BODY_TIMEOUT_S

MAX_REQUEST_LINE = 16_384
"""Bytes of a request line the server reads (aiohttp's default is 8,190): the longest value the
document admits in a query, a retraction reason of 1,000 characters, is 12,000 bytes
percent-encoded when every character takes four bytes of UTF-8. Past this aiohttp answers a
plain-text 400 before any handler runs."""
HEADER_TIMEOUT_S = 20.0
"""Seconds a new connection has to send a complete request head; idle keep-alive limit too."""


async def serve(
    home: Home,
    config: NodeConfig,
    host: str,
    port: int,
    *,
    relays: list[str] | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    quiet: bool = False,
    header_timeout_s: float = HEADER_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
) -> None:
    """Start node and API; print where they are; run until a signal (or ``stop`` is set)."""
    app = create_app(home, config, relays=relays)
    app[BODY_TIMEOUT] = body_timeout_s
    runner = web.AppRunner(
        app,
        access_log=None,
        handler_cancellation=True,
        # aiohttp runs the keep-alive timer from the moment a connection opens and closes it if
        # no complete request head has arrived by then: this is the slowloris deadline, and the
        # idle time of a kept-alive connection (above aiohttp clients' own 15 s).
        keepalive_timeout=header_timeout_s,
        lingering_time=2.0,
        max_line_size=MAX_REQUEST_LINE,
    )
    await runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    url = None
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        url = _local_url(host, runner.addresses[0][1])
        home.url_path.write_text(url + "\n", encoding="utf-8")  # so `citymesh status` finds it
        node = app[NODE]
        if not quiet:
            relays_text = ", ".join(
                f"{link.url} (embedded)" if name == "embedded" else link.url
                for name, link in node.links.items()
            )
            print(
                f"citymesh node {config.city.name} {identity_text(node.identity)}\n"
                f"  api    {url}  (token in {home.token_path})\n"
                f"  relays {relays_text}",
                flush=True,
            )
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        if url is not None and home.running_url() == url:
            home.url_path.unlink(missing_ok=True)
        await runner.cleanup()


def _local_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches the API at."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
