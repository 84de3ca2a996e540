"""Pieces the fault tests are built from: nodes in-process and in subprocesses, sealed chains
published raw, and reading a relay's stream back."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import nats
import nats.js.errors
from nats.js import api

from citymesh.node.config import CityConfig, Home, NodeConfig
from citymesh.node.daemon import Node
from citymesh.node.setup import init_home
from citymesh.node.streams import ensure_stream
from citymesh.protocol.envelope import open_envelope, seal
from citymesh.protocol.identity import Genesis, SecretKey, identity_of, identity_text
from citymesh.protocol.records import (
    Body,
    CityBody,
    Contact,
    HeadBody,
    PracticeBody,
    RatingBody,
    Record,
    ReplicationBody,
)
from citymesh.protocol.subjects import author_filter, network_filter, stream_name, subject

from .convergence import read_only

NETWORK = "citymesh"
STREAM = stream_name(NETWORK)


def now_ms() -> int:
    return int(time.time() * 1000)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.1
) -> float:
    """Poll until true; returns the seconds it took; fails on timeout."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout:g} s")
        await asyncio.sleep(interval)
    return time.monotonic() - start


def practice(n: int, *, title: str | None = None) -> PracticeBody:
    return PracticeBody(
        title={"en": title or f"Practice {n}"},
        summary={"en": f"Summary of practice {n}"},
        status="active",
        sectors=["HOUSING"],
        contact=Contact(role_mailbox="desk@city.example.org"),
    )


def practice_json(n: int, addr: str) -> dict[str, Any]:
    return {
        "addr": addr,
        "title": {"en": f"Practice {n}"},
        "summary": {"en": f"Summary of practice {n}"},
        "status": "active",
        "sectors": ["HOUSING"],
        "contact": {"role_mailbox": "desk@city.example.org"},
    }


def make_home(root: Path, name: str, country: str = "BEL", relays: list[str] | None = None) -> Home:
    home = Home(root / f"home-{name.lower()}")
    init_home(
        home,
        NodeConfig(
            city=CityConfig(name=name, country=country),
            network=NETWORK,
            relays=relays or [],
            listen="127.0.0.1:0",
        ),
    )
    return home


def db_scalar(path: Path, sql: str, *args: Any) -> Any:
    if not path.exists():
        return None
    try:
        with contextlib.closing(read_only(path)) as db:
            row = db.execute(sql, args).fetchone()
            return None if row is None else row[0]
    except sqlite3.OperationalError:  # not created or not migrated yet
        return None


def db_rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with contextlib.closing(read_only(path)) as db:
        return db.execute(sql, args).fetchall()


# -- nodes -----------------------------------------------------------------------------------------
@dataclass
class Local:
    """A node running in the test's own process and event loop."""

    name: str
    node: Node
    clock_offset_ms: int = 0
    """Set by a test that moves this process' verification clock (``link.now_ms``)."""

    @property
    def db_path(self) -> Path:
        return self.node.home.db_path

    @property
    def identity(self) -> bytes:
        return self.node.identity

    def now_ms(self) -> int:
        return now_ms() + self.clock_offset_ms

    async def publish(self, n: int, addr: str | None = None) -> Record:
        return await self.node.publish(practice(n), addr=addr or f"p-{n}")

    async def outbox(self) -> int:
        store = self.node.writer.store
        assert store is not None
        return sum([await self.node.writer.run(store.outbox_size, r) for r in self.node.links])


@dataclass
class NodeProc:
    """``citymesh node run`` in a subprocess, driven over its HTTP API and signals."""

    name: str
    home: Home
    relays: list[str]
    log: Path
    clock_offset_s: float = 0.0
    """Run the node with ``time.time()`` shifted (a clock that is ahead)."""
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def db_path(self) -> Path:
        return self.home.db_path

    @property
    def identity(self) -> bytes:
        return identity_of(self.home.load_genesis())

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def now_ms(self) -> int:
        return now_ms() + int(self.clock_offset_s * 1000)

    def start(self) -> None:
        args = ["node", "run", "--home", str(self.home.root), "--listen", f"127.0.0.1:{self.port}"]
        for url in self.relays:
            args += ["--relay", url]
        if self.clock_offset_s:
            code = (
                "import sys, time\n"
                f"_time = time.time\ntime.time = lambda: _time() + {self.clock_offset_s!r}\n"
                "from citymesh.node.cli import main\n"
                "sys.argv = ['citymesh', *sys.argv[1:]]\nmain()\n"
            )
            cmd = [sys.executable, "-c", code, *args]
        else:
            cmd = [sys.executable, "-m", "citymesh.node.cli", *args]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        assert self.alive(), f"{self.name} exited: {self.log.read_text()[-3000:]}"

    async def request(self, method: str, path: str, json: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.home.load_token()}"}
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.base + path, json=json, headers=headers) as resp,
        ):
            return resp.status, await resp.json()

    async def status(self) -> dict[str, Any]:
        code, body = await self.request("GET", "/v1/status")
        assert code == 200, body
        result: dict[str, Any] = body
        return result

    async def wait_ready(self, timeout: float = 60.0) -> None:
        async def ready() -> bool:
            self.check_alive()
            try:
                return bool((await self.status())["ready_to_publish"])
            except aiohttp.ClientError:
                return False

        await wait_for(ready, timeout, 0.2)

    async def publish(self, n: int, addr: str | None = None) -> dict[str, Any]:
        code, body = await self.request("POST", "/v1/practices", practice_json(n, addr or f"p-{n}"))
        assert code == 201, body
        result: dict[str, Any] = body
        return result

    async def outbox(self) -> int:
        return sum(int(r["outbox_pending"]) for r in (await self.status())["relays"])

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """kill -9, and reap."""
        self.signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(30)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def rss_kib(self) -> int:
        """Resident set size of the node process (VmRSS in /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


# -- sealed chains, published raw ------------------------------------------------------------------
@dataclass
class Chain:
    """An author whose key the test holds: seals records that follow its chain."""

    key: SecretKey
    genesis: Genesis
    records: list[Record] = field(default_factory=list)
    _text: str | None = None

    @classmethod
    def new(cls, label: str) -> Chain:
        key = SecretKey(hashlib.sha256(b"citymesh-faults/" + label.encode()).digest())
        return cls(key, Genesis(key=key.public_key))

    @property
    def author(self) -> bytes:
        return identity_of(self.genesis)

    def ref(self, addr: str) -> str:
        if self._text is None:
            self._text = identity_text(self.author)
        return f"{self._text}/{addr}"

    def seal(
        self,
        body: Body,
        addr: str = "",
        *,
        seq: int | None = None,
        prev: bytes | None = None,
        created: int | None = None,
    ) -> Record:
        """The record at ``seq`` (default: next), not appended."""
        seq = len(self.records) + 1 if seq is None else seq
        if prev is None and seq > 1:
            prev = self.records[seq - 2].id
        return seal(
            self.key,
            body=body,
            network=NETWORK,
            author=self.author,
            seq=seq,
            prev=prev,
            created=now_ms() if created is None else created,
            addr=addr,
            genesis=self.genesis if seq == 1 else None,
        )

    def add(self, body: Body, addr: str = "", *, created: int | None = None) -> Record:
        rec = self.seal(body, addr, created=created)
        self.records.append(rec)
        return rec


def city_chains(label: str, authors: int, per_author: int) -> list[Chain]:
    """``authors`` cities, ``per_author`` records each: a profile, then practices (20 addresses,
    so later ones are updates), ratings and replications of each other's practices, heads."""
    chains = [Chain.new(f"{label}-{n}") for n in range(authors)]
    created = now_ms()
    for n, c in enumerate(chains):
        c.add(
            CityBody(name=f"City {label} {n}", country="BEL", networks=[NETWORK]), created=created
        )
    for seq in range(2, per_author + 1):
        for n, c in enumerate(chains):
            other = chains[(n + 1) % authors]
            body: Body
            addr = ""
            match seq % 7:
                case 3 if authors > 1:
                    body, addr = RatingBody(score=1 + seq % 5), other.ref(f"p-{seq % 20}")
                case 5 if authors > 1:
                    body = ReplicationBody(relation="adapted", status="piloting")
                    addr = other.ref(f"p-{seq % 20}")
                case 6:
                    body = HeadBody(latest_seq=seq - 1, latest_id=c.records[-1].id)
                case _:
                    body, addr = practice(seq, title=f"Practice {n}-{seq}"), f"p-{seq % 20}"
            c.add(body, addr, created=created)
    return chains


def flat(chains: Iterable[Chain]) -> list[Record]:
    return [r for c in chains for r in c.records]


async def publish_raw(
    url: str, records: list[Record], *, msg_id: bool = True, chunk: int = 256
) -> None:
    """Publish envelopes straight onto the relay, in the given order (as another relay or a
    hostile carrier would deliver them); ``msg_id=False`` lets the relay keep duplicates."""
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=30)
        await ensure_stream(js, NETWORK)
        for i in range(0, len(records), chunk):
            await asyncio.gather(
                *(
                    js.publish(
                        subject(NETWORK, r.header.author, r.header.kind),
                        r.envelope,
                        stream=STREAM,
                        headers={"Nats-Msg-Id": r.id.hex()} if msg_id else None,
                    )
                    for r in records[i : i + chunk]
                )
            )
    finally:
        await nc.close()


class RelayMsg(NamedTuple):
    seq: int
    subject: str
    data: bytes


async def relay_messages(url: str, author: bytes | None = None) -> list[RelayMsg]:
    """Every message of the network's stream (or one author's) in stream order, read with an
    ordered consumer (deleted or lost sequences are simply absent)."""
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        try:
            info = await js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            return []
        out: list[RelayMsg] = []
        expected = info.state.messages
        if author is not None:
            filtered = await js.stream_info(STREAM, subjects_filter=author_filter(NETWORK, author))
            expected = sum((filtered.state.subjects or {}).values())
        if expected == 0:
            return out
        sub = await js.subscribe(
            network_filter(NETWORK) if author is None else author_filter(NETWORK, author),
            stream=STREAM,
            ordered_consumer=True,
            config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL),
        )
        try:
            while len(out) < expected:
                msg = await sub.next_msg(timeout=10)
                out.append(RelayMsg(msg.metadata.sequence.stream, msg.subject, msg.data))
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def relay_ids(url: str, author: bytes | None = None) -> list[bytes]:
    """Record ids of every message on the relay (or one author's; repeats included), in stream
    order."""
    return [open_envelope(m.data, now_ms=2**62).id for m in await relay_messages(url, author)]


def rejections(path: Path) -> dict[str, int]:
    return {str(k): int(v) for k, v in db_rows(path, "SELECT reason, count FROM rejections")}


def applied_seq(path: Path, author: bytes) -> int:
    value = db_scalar(path, "SELECT applied_seq FROM authors WHERE author = ?", author)
    return int(value or 0)


def env_seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, default))
