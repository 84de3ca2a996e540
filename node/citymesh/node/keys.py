"""Typed application keys (aiohttp AppKey) shared by the app factory and the handlers."""

from __future__ import annotations

from aiohttp import web

from .daemon import Node
from .reader import Reader

NODE = web.AppKey("node", Node)
READER = web.AppKey("reader", Reader)
TOKEN = web.AppKey("token", str)
CURSOR_KEY = web.AppKey("cursor_key", bytes)
MAX_BODY = web.AppKey("max_body", int)
BODY_TIMEOUT = web.AppKey("body_timeout", float)
"""Seconds a client has to send a request body (a client sending a byte a second gets 408)."""
