"""The application factory: the one place the node and its HTTP API are wired together.

Each resource (the node with its store, links and embedded relay; the read-only connection) is a
cleanup context, started and stopped in order with the app.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

from aiohttp import web

from .catalogue_routes import add_catalogue_routes
from .config import Home, NodeConfig
from .daemon import Node
from .indicators import add_indicator_routes
from .keys import BODY_TIMEOUT, CURSOR_KEY, MAX_BODY, NODE, READER, TOKEN
from .middlewares import BODY_TIMEOUT_S, auth, body_deadline, errors
from .openapi import add_openapi
from .reader import Reader
from .routes import add_routes
from .sync_routes import add_sync_routes
from .trust_routes import add_trust_routes


def create_app(
    home: Home, config: NodeConfig, *, relays: list[str] | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[errors, auth, body_deadline], client_max_size=config.max_body_bytes
    )
    app[MAX_BODY] = config.max_body_bytes
    app[BODY_TIMEOUT] = BODY_TIMEOUT_S
    app[TOKEN] = home.load_token()
    app[CURSOR_KEY] = hashlib.sha256(b"citymesh/cursor-key\x00" + os.urandom(32)).digest()

    async def node_ctx(app: web.Application) -> AsyncIterator[None]:
        node = Node(home, config, relays=relays)
        await node.start()
        app[NODE] = node
        yield
        await node.stop()

    async def reader_ctx(app: web.Application) -> AsyncIterator[None]:
        reader = Reader(home.db_path)
        app[READER] = reader
        yield
        await reader.close()

    app.cleanup_ctx.append(node_ctx)
    app.cleanup_ctx.append(reader_ctx)
    add_routes(app)
    add_catalogue_routes(app)
    add_indicator_routes(app)
    add_trust_routes(app)
    add_sync_routes(app)
    add_openapi(app)
    return app
