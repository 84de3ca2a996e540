"""``citymesh demo``: a relay and several city nodes with sample practices, converging.

Everything runs in this process under a temporary directory that is removed at the end. The
sample catalogue (clearly marked ``sample``) lives in citymesh.practices' ``samples/`` data folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from citymesh.protocol import api
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import RatingBody, ReplicationBody

from .app import create_app
from .config import CityConfig, Home, NodeConfig
from .daemon import Node
from .keys import NODE
from .natsserver import NatsServer, ServerConfig
from .serve import MAX_REQUEST_LINE
from .setup import init_home

CONVERGE_TIMEOUT = 120.0


def load_samples() -> tuple[
    list[CityConfig], dict[str, list[dict[str, Any]]], list[dict[str, Any]]
]:
    folder = resources.files("citymesh.practices") / "samples"
    cities = msgspec.convert(
        json.loads((folder / "cities.json").read_text("utf-8")), list[CityConfig]
    )
    practices = json.loads((folder / "practices.json").read_text("utf-8"))
    activity = json.loads((folder / "activity.json").read_text("utf-8"))
    return cities, practices, activity


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(self, root: Path, cities: int, base_port: int) -> None:
        self.root = root
        self.count = cities
        self.base_port = base_port
        self.relay: NatsServer | None = None
        self.nodes: dict[str, Node] = {}
        self.runners: list[Any] = []
        self.ports: dict[str, int] = {}
        self.homes: dict[str, Home] = {}

    async def start(self) -> None:
        store = self.root / "relay"
        store.mkdir(parents=True)
        self.relay = NatsServer(ServerConfig(store_dir=store, server_name="citymesh-demo"))
        await asyncio.to_thread(self.relay.start)
        print(f"relay   {self.relay.client_url}  (store {store})", flush=True)
        cities, _, _ = load_samples()
        for i, city in enumerate(cities[: self.count]):
            home = Home(self.root / _slug(city.name))
            port = self.base_port + i if self.base_port else free_port()
            config = NodeConfig(
                city=city,
                network="demo",
                relays=[self.relay.client_url],
                listen=f"127.0.0.1:{port}",
            )
            init_home(home, config)
            app = create_app(home, config)
            runner = web.AppRunner(app, access_log=None, max_line_size=MAX_REQUEST_LINE)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.runners.append(runner)
            node = app[NODE]
            self.nodes[city.name] = node
            self.ports[city.name] = port
            self.homes[city.name] = home
            print(
                f"city    {city.name:<12} {identity_text(node.identity)}  http://127.0.0.1:{port}",
                flush=True,
            )

    async def load(self) -> int:
        """Publish every node's sample practices, then ratings and replications. Returns count."""
        _, practices, activity = load_samples()
        published = 0
        ident = {name: node.identity for name, node in self.nodes.items()}
        for name, node in self.nodes.items():
            for raw in practices.get(name, []):
                data = {k: v for k, v in raw.items() if not k.startswith("_")}
                source_city = raw.get("_adapted_from_city")
                if source_city in ident and raw.get("_adapted_from_addr"):
                    data["adapted_from"] = api.format_ref(
                        ident[source_city], raw["_adapted_from_addr"]
                    )
                practice = msgspec.convert(data, api.PracticeIn, strict=False)
                await node.publish(api.practice_body(practice), addr=practice.addr)
                published += 1
        for item in activity:
            by, of_city = item.get("by"), item.get("of_city")
            if by not in self.nodes or of_city not in ident:
                continue
            ref = api.format_ref(ident[of_city], item["of_addr"])
            fields = {
                k: v for k, v in item.items() if k not in ("kind", "by", "of_city", "of_addr")
            }
            body: RatingBody | ReplicationBody
            if item["kind"] == "rating":
                body = msgspec.convert(fields, RatingBody, strict=False)
            else:
                body = msgspec.convert(fields, ReplicationBody, strict=False)
            await self.nodes[by].publish(body, addr=ref)
            published += 1
        return published

    async def converged(self) -> tuple[bool, list[int]]:
        sets = []
        for node in self.nodes.values():
            assert node.writer.store is not None
            ids = await node.writer.run(_applied_ids, node)
            sets.append(ids)
        union = set().union(*sets)
        return all(s == union for s in sets), [len(s) for s in sets]

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        if self.relay is not None:
            await asyncio.to_thread(self.relay.stop)


def _applied_ids(node: Node) -> set[bytes]:
    assert node.writer.store is not None
    return {
        bytes(r[0])
        for r in node.writer.store.db.execute("SELECT id FROM records WHERE state = 'applied'")
    }


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "city"


async def run_demo(*, check: bool, cities: int, base_port: int) -> int:
    with tempfile.TemporaryDirectory(prefix="citymesh-demo-") as tmp:
        demo = Demo(Path(tmp), cities, 0 if check else base_port)
        try:
            await demo.start()
            started = time.monotonic()
            count = await demo.load()
            print(
                f"published {count} sample records (practices, ratings, replications)", flush=True
            )
            deadline = time.monotonic() + CONVERGE_TIMEOUT
            while True:
                ok, sizes = await demo.converged()
                if ok:
                    print(
                        f"converged: every node holds all {sizes[0]} records"
                        f" ({time.monotonic() - started:.1f} s)",
                        flush=True,
                    )
                    break
                if time.monotonic() > deadline:
                    print(f"not converged after {CONVERGE_TIMEOUT:.0f} s: {sizes}", flush=True)
                    return 1
                await asyncio.sleep(0.2)
            if check:
                return 0
            first = next(iter(demo.homes))
            print(
                "\nExplore it in the terminal UI (in another shell):\n"
                f"  citymesh tui --home {demo.homes[first].root}\n"
                f'or the API: curl -H "Authorization: Bearer $(cat {demo.homes[first].token_path})"'
                f" http://127.0.0.1:{demo.ports[first]}/v1/practices\n"
                "Ctrl-C stops the demo and removes its temporary files.",
                flush=True,
            )
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
            return 0
        finally:
            await demo.stop()
