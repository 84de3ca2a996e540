"""Relay faults: kill -9 of the relay in the middle of publishing, a relay whose message block
file was truncated while it was down, a relay whose store was wiped, and a node restored from an
old backup (its relay holds newer own records).

Each test ends with the convergence check (every node's derived state equals the state computed
from the union of origin logs) and ``PRAGMA integrity_check`` on every node database.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from citymesh.protocol.envelope import open_envelope

from ..conftest import NatsServerFactory
from .cluster import Local, db_rows, relay_ids, relay_messages, wait_for
from .conftest import MakeHome, StartLocal
from .convergence import assert_converged

pytestmark = pytest.mark.faults


def stored_ids(member: Local) -> set[bytes]:
    return {bytes(r[0]) for r in db_rows(member.db_path, "SELECT id FROM records")}


async def drained(*members: Local) -> bool:
    return all([await m.outbox() == 0 for m in members])


# -- kill -9 of the relay mid-publish ----------------------------------------------------------------
async def test_relay_killed_mid_publish_loses_nothing_and_keeps_each_record_once(
    nats_server_factory: NatsServerFactory,
    homes: MakeHome,
    local_nodes: StartLocal,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay = nats_server_factory()
    url = relay.client_url
    a = await local_nodes("A", homes("Mechelen"), [url])
    b = await local_nodes("B", homes("Ghent"), [url])
    await a.node.wait_ready()
    await wait_for(lambda: drained(a, b))
    link = a.node.links[url]
    total = 300
    # Instrumentation only: publish attempts per record id, and how many await their ack.
    attempts: Counter[bytes] = Counter()
    in_flight = Counter[str]()
    publish_once = link._publish

    async def counted(record_id: bytes, envelope: bytes, subj: str) -> None:
        attempts[record_id] += 1
        in_flight["now"] += 1
        try:
            await publish_once(record_id, envelope, subj)
        finally:
            in_flight["now"] -= 1

    monkeypatch.setattr(link, "_publish", counted)

    async def publish_all() -> None:
        for i in range(total):
            await a.publish(i)

    publishing = asyncio.create_task(publish_all())

    async def mid_publish() -> bool:
        return link.state.published >= 60 and in_flight["now"] > 0

    await wait_for(mid_publish, interval=0.001)
    sent_at_kill, unknown = link.state.published, in_flight["now"]
    relay.kill()  # SIGKILL, from the loop thread: no ack is read between the check and the kill
    await asyncio.sleep(1.0)  # publishing goes on into the outbox
    pending_while_down = await a.outbox()
    await asyncio.to_thread(relay.start)  # same port, same store
    await publishing
    took = await wait_for(lambda: drained(a, b), timeout=60)

    on_relay = Counter(await relay_ids(url))
    mine = stored_ids(a)
    missing = mine - set(on_relay)
    repeated = {i: n for i, n in on_relay.items() if n > 1}
    print(
        f"\nrelay kill -9 after {sent_at_kill} acks with {unknown} publishes awaiting their "
        f"ack; {pending_while_down} queued while down; "
        f"drained {took:.1f} s after restart; relay holds {sum(on_relay.values())} messages "
        f"for {len(mine)} stored records; {sum(n > 1 for n in attempts.values())} records "
        f"published more than once (same Nats-Msg-Id); last link error: {link.state.last_error}"
    )
    assert not missing, f"{len(missing)} acknowledged or stored records missing on the relay"
    assert not repeated, f"{len(repeated)} records stored more than once on the relay"
    assert set(on_relay) == mine
    await assert_converged([a, b], workdir=tmp_path)


# -- a truncated message block ---------------------------------------------------------------------
@pytest.mark.parametrize("how", ["stopped", "killed"])
async def test_relay_file_truncated_is_repaired_by_the_origins(
    nats_server_factory: NatsServerFactory,
    homes: MakeHome,
    local_nodes: StartLocal,
    tmp_path: Path,
    how: str,
) -> None:
    """The last message block loses its second half while the relay is down. ``stopped``: a
    clean shutdown left the stream's index (last seq) behind, so the relay comes back with the
    same last seq and the lost range marked deleted; ``killed``: no index, the stream's last seq
    goes back."""
    relay = nats_server_factory()
    url = relay.client_url
    a = await local_nodes("A", homes("Mechelen"), [url])
    b = await local_nodes("B", homes("Ghent"), [url])
    await a.node.wait_ready()
    await b.node.wait_ready()
    for i in range(40):
        await a.publish(i)
        if i % 4 == 0:
            await b.publish(i)
    await wait_for(lambda: drained(a, b))
    before = await relay_messages(url)

    await asyncio.to_thread(relay.stop if how == "stopped" else relay.kill)
    blocks = sorted(relay.store_dir.rglob("*.blk"), key=lambda p: int(p.stem))
    last = blocks[-1]
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    await asyncio.to_thread(relay.start)
    after = await relay_messages(url)
    lost = len(before) - len(after)
    assert lost > 10, "the truncation did not lose records"
    print(f"\ntruncated {last.name}: {len(before)} -> {len(after)} messages ({how})")

    started = time.monotonic()
    # A node that arrives later reads only what the relay holds: the origins must have refilled it.
    c = await local_nodes("C", homes("Turin", "ITA"), [url])
    await assert_converged([a, b, c], workdir=tmp_path, timeout=45)
    assert stored_ids(a) <= set(await relay_ids(url))
    print(f"repaired and converged in {time.monotonic() - started:.1f} s")


# -- a wiped relay store ---------------------------------------------------------------------------
async def test_relay_store_wiped_is_refilled_by_the_nodes(
    nats_server_factory: NatsServerFactory,
    homes: MakeHome,
    local_nodes: StartLocal,
    tmp_path: Path,
) -> None:
    relay = nats_server_factory()
    url = relay.client_url
    a = await local_nodes("A", homes("Mechelen"), [url])
    b = await local_nodes("B", homes("Ghent"), [url])
    await a.node.wait_ready()
    await b.node.wait_ready()
    for i in range(20):
        await a.publish(i)
        await b.publish(100 + i)
    await wait_for(lambda: drained(a, b))

    await asyncio.to_thread(relay.stop)
    shutil.rmtree(relay.store_dir / "jetstream")
    await asyncio.to_thread(relay.start)
    c = await local_nodes("C", homes("Turin", "ITA"), [url])
    await assert_converged([a, b, c], workdir=tmp_path, timeout=45)
    on_relay = set(await relay_ids(url))
    assert stored_ids(a) <= on_relay


# -- an old backup restored ------------------------------------------------------------------------
def _backup(src: Path, dst: Path) -> None:
    with (
        contextlib.closing(sqlite3.connect(f"file:{src}?mode=ro", uri=True)) as s,
        contextlib.closing(sqlite3.connect(dst)) as d,
    ):
        s.backup(d)


async def test_old_backup_restored_does_not_fork_the_feed(
    nats_server_factory: NatsServerFactory,
    homes: MakeHome,
    local_nodes: StartLocal,
    tmp_path: Path,
) -> None:
    relay = nats_server_factory()
    url = relay.client_url
    home = homes("Mechelen")
    a = await local_nodes("A", home, [url])
    b = await local_nodes("B", homes("Ghent"), [url])
    for i in range(3):
        await a.publish(i)
    await wait_for(lambda: drained(a))
    backup = tmp_path / "backup.db"
    await asyncio.to_thread(_backup, home.db_path, backup)
    for i in range(3, 8):
        await a.publish(i)
    await wait_for(lambda: drained(a))
    await a.node.stop()
    highest = max(
        open_envelope(m.data, now_ms=2**62).header.seq
        for m in await relay_messages(url, a.identity)
    )

    for suffix in ("", "-wal", "-shm"):
        Path(f"{home.db_path}{suffix}").unlink(missing_ok=True)
    await asyncio.to_thread(_backup, backup, home.db_path)
    a = await local_nodes("A", home, [url])
    after = await a.publish(99)  # only once the relay's newer own records are back
    await wait_for(lambda: drained(a))

    own = [
        open_envelope(m.data, now_ms=2**62).header for m in await relay_messages(url, a.identity)
    ]
    seqs = sorted({h.seq for h in own})
    assert len(seqs) == len({(h.seq, h.prev) for h in own}), "two records with one seq"
    assert seqs == list(range(1, max(seqs) + 1))
    assert after.header.seq > highest
    await assert_converged([a, b], workdir=tmp_path)
    for m in (a, b):
        assert not db_rows(m.db_path, "SELECT 1 FROM equivocations"), m.name
