"""Sync under faults: offline nodes, relays that go down or lose their store, bridging between
relays, a node restored from an old backup, and kill -9 in the middle of a large catch-up.

Everything is real: nats-server processes on random loopback ports, SQLite files, and (for the
crash test) the `citymesh node run` command in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest

from citymesh.node.config import Home
from citymesh.node.daemon import EMBEDDED, Node
from citymesh.node.natsserver import NatsServer
from citymesh.node.streams import ensure_stream
from citymesh.protocol.envelope import open_envelope, seal
from citymesh.protocol.identity import Genesis, SecretKey, identity_of
from citymesh.protocol.records import CityBody, Contact, HeadBody, PracticeBody, Record
from citymesh.protocol.subjects import stream_name, subject

from ..conftest import NatsServerFactory
from .conftest import MakeHome, StartNode, practice, wait_for

NETWORK = "citymesh"
"""The network make_home puts every node in."""
STREAM = stream_name(NETWORK)


# -- helpers ---------------------------------------------------------------------------------------
async def query(node: Node, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run a read on the node's writer thread (the one thread that uses its connection)."""
    store = node.writer.store
    assert store is not None
    return await node.writer.run(lambda: store.db.execute(sql, args).fetchall())


async def scalar(node: Node, sql: str, *args: Any) -> Any:
    rows = await query(node, sql, *args)
    return rows[0][0]


async def applied_seq(node: Node, author: bytes) -> int:
    rows = await query(node, "SELECT applied_seq FROM authors WHERE author = ?", author)
    return int(rows[0][0]) if rows else 0


async def has_ids(node: Node, ids: set[bytes]) -> bool:
    rows = await query(node, "SELECT id FROM records WHERE state = 'applied'")
    return ids <= {bytes(r[0]) for r in rows}


async def outbox_size(node: Node, relay: str) -> int:
    store = node.writer.store
    assert store is not None
    return await node.writer.run(store.outbox_size, relay)


async def relay_records(url: str) -> list[Record]:
    """Every message of the network's stream on the relay at ``url``, opened (all must verify)."""
    nc = await nats.connect(url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        try:
            info = await js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            return []
        out = []
        if info.state.messages == 0:
            return out
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(STREAM, seq)
            except nats.js.errors.NotFoundError:
                continue
            assert msg.data is not None
            out.append(open_envelope(msg.data, now_ms=2**62))
        return out
    finally:
        await nc.close()


def own_seqs(records: list[Record], author: bytes) -> list[int]:
    return sorted(r.header.seq for r in records if r.header.author == author)


def assert_no_fork(records: list[Record], author: bytes) -> None:
    """On the relay: one record per (author, seq), seqs 1..n without a gap, each prev linked."""
    mine = {r.id: r for r in records if r.header.author == author}  # Nats-Msg-Id may repeat
    by_seq: dict[int, list[Record]] = {}
    for rec in mine.values():
        by_seq.setdefault(rec.header.seq, []).append(rec)
    forks = {seq: len(recs) for seq, recs in by_seq.items() if len(recs) > 1}
    assert not forks, f"two different records with the same seq on the relay: {forks}"
    assert sorted(by_seq) == list(range(1, len(by_seq) + 1))
    for seq in range(2, len(by_seq) + 1):
        assert by_seq[seq][0].header.prev == by_seq[seq - 1][0].id


def node_identity(home: Home) -> bytes:
    return identity_of(home.load_genesis())


# -- 1. an offline node catches up -----------------------------------------------------------------
@pytest.mark.slow
async def test_stopped_node_catches_up_after_restart(
    nats_server: NatsServer, make_home: MakeHome, start_node: StartNode
) -> None:
    url = nats_server.client_url
    a = await start_node(make_home("Mechelen", "BEL"), relays=[url])
    b_home = make_home("Lisbon", "PRT")
    b = await start_node(b_home, relays=[url])
    await wait_for(lambda: _a_known(a, b))
    await b.stop()

    published = [await a.publish(practice(i), addr=f"p-{i}") for i in range(200)]
    await wait_for(lambda: _outbox_empty(a, url))

    b2 = await start_node(b_home, relays=[url])
    ids = {rec.id for rec in published}
    await wait_for(lambda: has_ids(b2, ids), timeout=60)
    assert await applied_seq(b2, a.identity) == await applied_seq(a, a.identity)
    count = await scalar(b2, "SELECT count(*) FROM practices WHERE author = ?", a.identity)
    assert count == 200
    assert await scalar(b2, "SELECT count(*) FROM equivocations") == 0


async def _a_known(a: Node, b: Node) -> bool:
    return await applied_seq(b, a.identity) >= 2  # a's profile and first head


async def _outbox_empty(node: Node, relay: str) -> bool:
    return await outbox_size(node, relay) == 0


# -- 2. a relay that is down loses nothing ---------------------------------------------------------
async def test_relay_down_while_publishing_loses_nothing(
    nats_server: NatsServer, make_home: MakeHome, start_node: StartNode
) -> None:
    url = nats_server.client_url
    a = await start_node(make_home("Mechelen", "BEL"), relays=[url])
    b = await start_node(make_home("Lisbon", "PRT"), relays=[url])
    await a.wait_ready()
    await wait_for(lambda: _outbox_empty(a, url))

    await asyncio.to_thread(nats_server.stop)
    await wait_for(lambda: _disconnected(a, url))
    published = [await a.publish(practice(i), addr=f"offline-{i}") for i in range(20)]
    assert await outbox_size(a, url) >= 20
    assert await has_ids(a, {rec.id for rec in published})

    await asyncio.to_thread(nats_server.start)
    await wait_for(lambda: _outbox_empty(a, url))
    await wait_for(lambda: has_ids(b, {rec.id for rec in published}))
    on_relay = {rec.id for rec in await relay_records(url)}
    assert {rec.id for rec in published} <= on_relay
    assert a.links[url].state.connected


async def _disconnected(node: Node, relay: str) -> bool:
    return not node.links[relay].state.connected


# -- 3. the embedded relay -------------------------------------------------------------------------
async def test_embedded_relay_without_configuration(
    make_home: MakeHome, start_node: StartNode
) -> None:
    home = make_home("Mechelen", "BEL")
    node = await start_node(home)
    rec = await node.publish(practice(1), addr="solo")

    rows = await query(node, "SELECT envelope, state FROM records WHERE id = ?", rec.id)
    assert rows == [(rec.envelope, "applied")]
    title = await scalar(node, "SELECT title FROM practices WHERE addr = 'solo'")
    assert title == "Practice 1"

    assert list(node.links) == [EMBEDDED]
    link = node.links[EMBEDDED]
    await wait_for(lambda: _connected(node, EMBEDDED))
    server = node.embedded
    assert server is not None and server.running
    relay_dir = home.relay_dir.resolve()
    assert server.store_dir.resolve() == relay_dir
    pid = server.pid
    assert pid is not None
    assert Path(f"/proc/{pid}/cwd").resolve() == relay_dir
    assert (relay_dir / "jetstream").is_dir()
    await wait_for(lambda: _outbox_empty(node, EMBEDDED))
    assert rec.id in {r.id for r in await relay_records(link.url)}

    await node.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def _connected(node: Node, relay: str) -> bool:
    return node.links[relay].state.connected


# -- 4. bridging between relays --------------------------------------------------------------------
async def test_node_on_two_relays_bridges_records(
    nats_server_factory: NatsServerFactory, make_home: MakeHome, start_node: StartNode
) -> None:
    r1, r2 = nats_server_factory(), nats_server_factory()
    await start_node(make_home("Mechelen", "BEL"), relays=[r1.client_url, r2.client_url])
    b = await start_node(make_home("Lisbon", "PRT"), relays=[r1.client_url])
    c = await start_node(make_home("Turin", "ITA"), relays=[r2.client_url])

    published = [await b.publish(practice(i), addr=f"bridged-{i}") for i in range(5)]
    await wait_for(lambda: has_ids(c, {rec.id for rec in published}))
    b_ids = {
        bytes(r[0]) for r in await query(b, "SELECT id FROM records WHERE author = ?", b.identity)
    }
    await wait_for(lambda: has_ids(c, b_ids))
    assert await applied_seq(c, b.identity) == await applied_seq(b, b.identity)
    assert {rec.id for rec in published} <= {r.id for r in await relay_records(r2.client_url)}


# -- 5. a node restored from an old backup does not fork its chain ---------------------------------
def _backup(src: Path, dst: Path) -> None:
    """Copy a SQLite database with the online backup API (WAL content included)."""
    with (
        contextlib.closing(sqlite3.connect(src)) as s,
        contextlib.closing(sqlite3.connect(dst)) as d,
    ):
        s.backup(d)


async def test_restored_backup_learns_newer_own_records_before_signing(
    nats_server: NatsServer, make_home: MakeHome, start_node: StartNode, tmp_path: Path
) -> None:
    url = nats_server.client_url
    home = make_home("Mechelen", "BEL", relays=[url])
    me = node_identity(home)

    node = await start_node(home)
    for i in range(3):
        await node.publish(practice(i), addr=f"p-{i}")
    await wait_for(lambda: _outbox_empty(node, url))
    await node.stop()
    backup = tmp_path / "backup.db"
    _backup(home.db_path, backup)
    old_head = await asyncio.to_thread(_db_applied_seq, backup, me)

    node = await start_node(home)
    for i in range(3, 8):
        await node.publish(practice(i), addr=f"p-{i}")
    await wait_for(lambda: _outbox_empty(node, url))
    await node.stop()
    relay_highest = max(own_seqs(await relay_records(url), me))
    assert relay_highest >= old_head + 5

    for suffix in ("", "-wal", "-shm"):
        Path(f"{home.db_path}{suffix}").unlink(missing_ok=True)
    _backup(backup, home.db_path)
    assert await asyncio.to_thread(_db_applied_seq, home.db_path, me) == old_head

    node = await start_node(home)
    rec = await node.publish(practice(99), addr="after-restore")
    assert rec.header.seq > relay_highest
    await wait_for(lambda: _outbox_empty(node, url))

    records = await relay_records(url)
    assert_no_fork(records, me)
    # Signed after the relay's highest: the only own records between are what this start signed
    # before it (the head checkpoint the node publishes at every start).
    between = [
        r
        for r in records
        if r.header.author == me and relay_highest < r.header.seq < rec.header.seq
    ]
    assert [r.header.kind for r in between] in ([], ["head"])
    assert rec.header.seq == relay_highest + 1 + len(between)
    assert await scalar(node, "SELECT count(*) FROM equivocations") == 0
    assert await scalar(node, "SELECT frozen_seq FROM authors WHERE author = ?", me) is None
    assert await scalar(node, "SELECT count(*) FROM practices WHERE author = ?", me) == 9


def _db_applied_seq(path: Path, author: bytes) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT applied_seq FROM authors WHERE author = ?", (author,)).fetchone()
        return int(row[0]) if row else 0


# -- 6. kill -9 in the middle of a large catch-up --------------------------------------------------
AUTHORS = 10
PER_AUTHOR = 500
TOTAL = AUTHORS * PER_AUTHOR


def other_cities(authors: int = AUTHORS, per_author: int = PER_AUTHOR) -> list[Record]:
    """``authors`` chains of ``per_author`` small records each: a city profile, then head
    checkpoints with every fifth record a practice (40 addresses per city, so later ones are
    updates)."""
    out: list[Record] = []
    created = int(time.time() * 1000)
    contact = Contact(role_mailbox="desk@city.example.org")
    for n in range(authors):
        key = SecretKey(hashlib.sha256(b"citymesh-sync-test-%d" % n).digest())
        genesis = Genesis(key=key.public_key)
        author = identity_of(genesis)
        prev: bytes | None = None
        for seq in range(1, per_author + 1):
            body: CityBody | PracticeBody | HeadBody
            addr = ""
            if seq == 1:
                body = CityBody(name=f"City {n}", country="BEL")
            elif seq % 5 == 0:
                title = {"en": f"Practice {n}-{seq}"}
                body = PracticeBody(
                    title=title, status="active", sectors=["HOUSING"], contact=contact
                )
                addr = f"p-{seq // 5 % 40}"
            else:
                body = HeadBody(latest_seq=seq - 1, latest_id=prev)
            rec = seal(
                key,
                body=body,
                network=NETWORK,
                author=author,
                seq=seq,
                prev=prev,
                created=created,
                addr=addr,
                genesis=genesis if seq == 1 else None,
            )
            out.append(rec)
            prev = rec.id
    return out


async def publish_raw(url: str, records: list[Record], chunk: int = 250) -> None:
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
                        headers={"Nats-Msg-Id": r.id.hex()},
                    )
                    for r in records[i : i + chunk]
                )
            )
    finally:
        await nc.close()


def _foreign_count(db_path: Path, me: bytes) -> int:
    """Records of other authors in the node's database (0 while it does not exist yet)."""
    if not db_path.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            db.execute("PRAGMA busy_timeout = 5000")
            row = db.execute("SELECT count(*) FROM records WHERE author != ?", (me,)).fetchone()
            return int(row[0])
    except sqlite3.OperationalError:  # created but not migrated yet
        return 0


def _run_node(home: Home, url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "citymesh.node.cli",
                "node",
                "run",
                "--home",
                str(home.root),
                "--relay",
                url,
                "--listen",
                f"127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
async def test_kill_9_during_catch_up_then_restart(
    nats_server: NatsServer, make_home: MakeHome, free_port: int, tmp_path: Path
) -> None:
    url = nats_server.client_url
    records = other_cities()
    await publish_raw(url, records)
    home = make_home("Mechelen", "BEL")
    me = node_identity(home)
    log = tmp_path / "node.log"

    proc = _run_node(home, url, free_port, log)
    try:
        seen = 0
        deadline = time.monotonic() + 120
        while not 0 < seen < TOTAL - 1000:
            assert proc.poll() is None, log.read_text()
            assert seen < TOTAL - 1000, "the catch-up finished before it could be interrupted"
            assert time.monotonic() < deadline, "the catch-up did not start"
            await asyncio.sleep(0.005)
            seen = _foreign_count(home.db_path, me)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        assert 0 < _foreign_count(home.db_path, me) < TOTAL

        proc = _run_node(home, url, free_port, log)

        async def caught_up() -> bool:
            assert proc.poll() is None, log.read_text()
            return _foreign_count(home.db_path, me) == TOTAL

        await wait_for(caught_up, timeout=120, interval=0.1)
        await wait_for(lambda: _own_records_present(home.db_path, me), timeout=30)

        with contextlib.closing(sqlite3.connect(f"file:{home.db_path}?mode=ro", uri=True)) as db:
            ids = [
                bytes(r[0]) for r in db.execute("SELECT id FROM records WHERE author != ?", (me,))
            ]
            assert len(ids) == len(set(ids)) == TOTAL
            assert set(ids) == {r.id for r in records}
            dupes = db.execute("SELECT id FROM records GROUP BY id HAVING count(*) > 1").fetchall()
            assert dupes == []
            states = dict(
                db.execute("SELECT state, count(*) FROM records GROUP BY state").fetchall()
            )
            assert set(states) == {"applied"}, states
            heads = db.execute(
                "SELECT applied_seq FROM authors WHERE author != ?", (me,)
            ).fetchall()
            assert sorted(h[0] for h in heads) == [PER_AUTHOR] * AUTHORS
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            cursor = db.execute(
                "SELECT stream, seq FROM cursors WHERE relay = ?", (url,)
            ).fetchone()
            assert cursor is not None and cursor[0] == STREAM and cursor[1] >= TOTAL
            assert db.execute("SELECT count(*) FROM equivocations").fetchone()[0] == 0

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _own_records_present(db_path: Path, me: bytes) -> bool:
    """The node's own chain (profile and head at least) is stored, whole and applied."""
    with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT applied_seq FROM authors WHERE author = ?", (me,)).fetchone()
        count = db.execute("SELECT count(*) FROM records WHERE author = ?", (me,)).fetchone()[0]
    return row is not None and row[0] >= 2 and count == row[0]


# -- 7. a relay that lost its store is refilled ----------------------------------------------------
async def test_relay_store_wiped_is_refilled(
    nats_server: NatsServer, make_home: MakeHome, start_node: StartNode
) -> None:
    url = nats_server.client_url
    node = await start_node(make_home("Mechelen", "BEL"), relays=[url])
    for i in range(3):
        await node.publish(practice(i), addr=f"p-{i}")
    await wait_for(lambda: _outbox_empty(node, url))
    mine = {
        bytes(r[0])
        for r in await query(node, "SELECT id FROM records WHERE author = ?", node.identity)
    }
    assert mine <= {r.id for r in await relay_records(url)}
    old_created = node.links[url].state.stream_created

    await asyncio.to_thread(nats_server.stop)
    shutil.rmtree(nats_server.store_dir)
    await asyncio.to_thread(nats_server.start)

    async def refilled() -> bool:
        return mine <= {r.id for r in await relay_records(url)}

    await wait_for(refilled, timeout=60)
    assert node.links[url].state.stream_created != old_created
    assert_no_fork(await relay_records(url), node.identity)
    # and the node keeps publishing on the fresh stream
    rec = await node.publish(practice(9), addr="after-wipe")
    await wait_for(lambda: _outbox_empty(node, url))
    assert rec.id in {r.id for r in await relay_records(url)}
