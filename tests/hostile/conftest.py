"""Hostile-input fixtures: a node served by the real `serve()` on a 127.0.0.1 socket (so slow
clients, raw bytes and many connections meet aiohttp's real server), its store read back
through SQLite, and a relay to publish raw bytes onto."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from citymesh.node.config import Home
from citymesh.node.natsserver import NatsServer
from citymesh.node.serve import serve

from ..faults.cluster import make_home, wait_for

HEADER_TIMEOUT_S = 3.0
BODY_TIMEOUT_S = 3.0
MAX_BODY = 16 * 1024


@dataclass
class Served:
    """A node under `serve()` with short header and body deadlines and a 16 KiB body limit."""

    home: Home
    url: str
    host: str
    port: int
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=30)
        headers = {**self.auth, **kwargs.pop("headers", {})}
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.url + path, headers=headers, **kwargs) as resp,
        ):
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.read()

    def practices(self) -> tuple[int, int]:
        """Practice records stored, and practices in the catalogue."""
        uri = f"file:{self.home.db_path}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            (records,) = db.execute(
                "SELECT count(*) FROM records WHERE kind = 'practice'"
            ).fetchone()
            (current,) = db.execute("SELECT count(*) FROM practices").fetchone()
            return int(records), int(current)


@pytest.fixture
async def served(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Served]:
    home = make_home(tmp_path, "Mechelen", relays=[nats_server.client_url])
    config = msgspec.structs.replace(home.load_config(), max_body_bytes=MAX_BODY)
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve(
            home,
            config,
            "127.0.0.1",
            0,
            ready=ready,
            stop=stop,
            quiet=True,
            header_timeout_s=HEADER_TIMEOUT_S,
            body_timeout_s=BODY_TIMEOUT_S,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 60)
        url = home.running_url()
        assert url is not None
        host, port = url.removeprefix("http://").rsplit(":", 1)
        node = Served(home, url, host, int(port), home.load_token())

        async def ready_to_publish() -> bool:
            status, body = await node.request("GET", "/v1/status")
            return status == 200 and bool(body["ready_to_publish"])

        await wait_for(ready_to_publish, 60)
        yield node
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
