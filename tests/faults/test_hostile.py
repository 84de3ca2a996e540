"""Hostile or unlucky input from other cities and relays: a clock 2 hours ahead, two relays that
deliver the same records out of order with duplicates, one author equivocating across two relays,
and one author flooding the network.

Each test ends with the convergence check and ``PRAGMA integrity_check`` on every node database.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from citymesh.node import link as link_module
from citymesh.protocol.envelope import open_envelope
from citymesh.protocol.identity import identity_text
from citymesh.protocol.records import MAX_FUTURE_MS, CityBody, HeadBody

from ..conftest import NatsServerFactory
from .cluster import (
    NETWORK,
    Chain,
    Local,
    RelayMsg,
    applied_seq,
    city_chains,
    db_rows,
    flat,
    now_ms,
    practice,
    publish_raw,
    rejections,
    relay_messages,
    wait_for,
)
from .conftest import MakeHome, MakeProc, MemoryRelays, StartLocal
from .convergence import assert_converged, prebuild

pytestmark = pytest.mark.faults

HOURS_2 = 2 * 3600


# -- a clock 2 hours ahead -------------------------------------------------------------------------
async def test_clock_two_hours_ahead_is_rejected_as_future_and_counted(
    nats_server_factory: NatsServerFactory,
    homes: MakeHome,
    procs: MakeProc,
    local_nodes: StartLocal,
    tmp_path: Path,
) -> None:
    relay = nats_server_factory()
    url = relay.client_url
    a = await local_nodes("A", homes("Mechelen"), [url])
    b = await local_nodes("B", homes("Ghent"), [url])
    # K runs `citymesh node run` with time.time() 2 h ahead: everything it signs after init
    # (its start-up head, its practices) carries `created` 2 h in the future.
    k = procs("K", homes("Lisbon", "PRT"), [url], clock_offset_s=HOURS_2)
    await k.wait_ready()
    for i in range(5):
        await k.publish(i)
    # X: records sealed by hand with created = now + 2 h, published raw.
    x = Chain.new("skewed-x")
    ahead = now_ms() + HOURS_2 * 1000
    x.add(CityBody(name="Skewed", country="BEL", networks=[NETWORK]), created=ahead)
    for i in range(4):
        x.add(practice(i), f"x-{i}", created=ahead)
    await publish_raw(url, x.records)
    await a.publish(100)
    await b.publish(101)

    def future_on_relay(messages: list[RelayMsg]) -> int:
        limit = now_ms() + MAX_FUTURE_MS
        return sum(open_envelope(m.data, now_ms=2**62).header.created > limit for m in messages)

    future = future_on_relay(await relay_messages(url))
    assert future >= 1 + 5 + len(x.records)  # K's head and practices, X's records

    async def counted() -> bool:
        return all(rejections(m.db_path).get("future", 0) >= future for m in (a, b))

    await wait_for(counted, timeout=30)
    await assert_converged([a, b, k], extra=x.records, workdir=tmp_path)
    counts = {m.name: rejections(m.db_path) for m in (a, b, k)}
    print(f"\n{future} future records on the relay; rejections: {counts}")
    assert "future" not in counts["K"]  # on K's own clock its records are not in the future
    # K's own view: its whole chain applied, X accepted too (on K's clock X is not ahead).
    k_seq = int(
        db_rows(k.db_path, "SELECT max(seq) FROM records WHERE author = ?", k.identity)[0][0]
    )
    assert applied_seq(k.db_path, k.identity) == k_seq >= 7
    assert applied_seq(k.db_path, x.author) == len(x.records)
    # Honest nodes hold K's chain up to its genesis (signed at init, before the skew) only, and
    # nothing of X: the rejected records are not stored.
    for m in (a, b):
        assert applied_seq(m.db_path, k.identity) == 1
        assert applied_seq(m.db_path, x.author) == 0
        assert not db_rows(m.db_path, "SELECT 1 FROM records WHERE author = ?", x.author)


async def test_records_rejected_as_future_are_read_again_once_valid(
    nats_server_factory: NatsServerFactory,
    homes: MakeHome,
    procs: MakeProc,
    local_nodes: StartLocal,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    relay = nats_server_factory()
    url = relay.client_url
    a = await local_nodes("A", homes("Mechelen"), [url])
    k = procs("K", homes("Lisbon", "PRT"), [url], clock_offset_s=HOURS_2)
    await k.wait_ready()
    for i in range(3):
        await k.publish(i)
    await wait_for(lambda: _rejected_future(a, 4), timeout=30)

    # Two hours pass for A (its verification clock jumps): K's records are valid now.
    monkeypatch.setattr(link_module, "now_ms", lambda: now_ms() + HOURS_2 * 1000)
    a.clock_offset_ms = HOURS_2 * 1000
    await k.publish(3)
    try:
        await assert_converged([a, k], workdir=tmp_path, timeout=10)
    finally:
        held = db_rows(a.db_path, "SELECT seq, state FROM records WHERE author = ?", k.identity)
        print(f"\nA holds of K's chain: {sorted(held)}")


async def _rejected_future(m: Local, n: int) -> bool:
    return rejections(m.db_path).get("future", 0) >= n


# -- two relays, out of order, with duplicates -----------------------------------------------------
async def test_two_relays_out_of_order_with_duplicates_converge(
    nats_server_factory: NatsServerFactory,
    homes: MakeHome,
    local_nodes: StartLocal,
    procs: MakeProc,
    tmp_path: Path,
) -> None:
    r1, r2 = nats_server_factory(), nats_server_factory()
    chains = city_chains("order", authors=4, per_author=50)
    records = flat(chains)
    rng = random.Random(20251126)
    shuffled = records + rng.sample(records, 60)
    rng.shuffle(shuffled)
    await publish_raw(r1.client_url, sorted(records, key=lambda r: r.header.seq))
    await publish_raw(r2.client_url, shuffled, msg_id=False)  # R2 keeps the duplicates
    assert len(await relay_messages(r2.client_url)) == len(shuffled)

    both = await local_nodes("N", homes("Mechelen"), [r1.client_url, r2.client_url])
    only_r2 = procs("O", homes("Ghent"), [r2.client_url])
    await only_r2.wait_ready()
    await assert_converged([both, only_r2], extra=records, workdir=tmp_path, timeout=60)
    for m in (both, only_r2):
        assert rejections(m.db_path) == {}, m.name
        states = dict(db_rows(m.db_path, "SELECT state, count(*) FROM records GROUP BY state"))
        assert states == {"applied": states["applied"]}, (m.name, states)
        assert not db_rows(m.db_path, "SELECT 1 FROM equivocations")


# -- equivocation across two relays ----------------------------------------------------------------
async def test_equivocation_across_relays_is_kept_as_evidence_and_frozen_everywhere(
    nats_server_factory: NatsServerFactory,
    homes: MakeHome,
    local_nodes: StartLocal,
    procs: MakeProc,
    tmp_path: Path,
) -> None:
    r1, r2 = nats_server_factory(), nats_server_factory()
    e = Chain.new("equivocator")
    e.add(CityBody(name="Two-faced", country="BEL", networks=[NETWORK]))
    for i in range(2, 5):
        e.add(practice(i), f"p-{i}")
    five_a = e.add(practice(5, title="Story told on R1"), "p-5")
    six_a = e.add(practice(6), "p-6")
    five_b = e.seal(practice(5, title="Story told on R2"), "p-5", seq=5)
    await publish_raw(r1.client_url, [*e.records[:4], five_a, six_a])
    await publish_raw(r2.client_url, [*e.records[:4], five_b])

    n1 = await local_nodes("N1", homes("Mechelen"), [r1.client_url])
    n2 = await local_nodes("N2", homes("Ghent"), [r2.client_url])
    bridge = procs("N3", homes("Lisbon", "PRT"), [r1.client_url, r2.client_url])
    await bridge.wait_ready()
    pair = (e.author, 5, min(five_a.id, five_b.id), max(five_a.id, five_b.id))

    async def frozen_everywhere() -> bool:
        for m in (n1, n2, bridge):
            rows = db_rows(m.db_path, "SELECT author, seq, id_a, id_b FROM equivocations")
            if pair not in rows:
                return False
        return True

    await wait_for(frozen_everywhere, timeout=45)
    extra = [*e.records, five_b]
    result = await assert_converged([n1, n2, bridge], extra=extra, workdir=tmp_path)
    for m in (n1, n2, bridge):
        evidence = dict(
            db_rows(m.db_path, "SELECT id, state FROM records WHERE author = ?", e.author)
        )
        assert evidence[five_a.id] == evidence[five_b.id] == "evidence", m.name
        assert evidence.get(six_a.id, "evidence") == "evidence", m.name  # refused if after
        row = db_rows(
            m.db_path,
            "SELECT applied_seq, last_id, frozen_seq FROM authors WHERE author = ?",
            e.author,
        )
        assert row == [(4, e.records[3].id, 5)], m.name
        assert rejections(m.db_path).get("equivocation", 0) >= 1, m.name
        titles = {t for (t,) in db_rows(m.db_path, "SELECT title FROM practices")}
        assert not titles & {"Story told on R1", "Story told on R2"}, m.name
    print(f"\nequivocation frozen at seq 5 on 3 nodes; converged in {result.seconds:.1f} s")


# -- one author flooding ---------------------------------------------------------------------------
FLOOD = 10_000
HONEST = 50


def flood_chain() -> Chain:
    f = Chain.new("flood")
    f.add(CityBody(name="Flood", country="BEL", networks=[NETWORK]))
    for seq in range(2, FLOOD + 1):
        f.add(HeadBody(latest_seq=seq - 1, latest_id=f.records[-1].id))
    return f


async def test_one_author_flooding_does_not_starve_another(
    memory_relays: MemoryRelays,
    homes: MakeHome,
    local_nodes: StartLocal,
    procs: MakeProc,
    tmp_path: Path,
) -> None:
    """F publishes 10,000 records as fast as the relay takes them while A (a node process)
    publishes 50; O (in this process) records the order in which it applies them."""
    relay = memory_relays()  # tmpfs: a relay on this VM's disk takes only ~400 messages/s
    url = relay.client_url
    a = procs("A", homes("Mechelen"), [url])
    o = await local_nodes("O", homes("Ghent"), [url])
    f = await asyncio.to_thread(flood_chain)
    base = asyncio.create_task(asyncio.to_thread(prebuild, f.records, tmp_path))
    await a.wait_ready()
    await o.node.wait_ready()
    await wait_for(lambda: _knows(o, a.identity, 2))

    arrivals: list[tuple[float, bytes, int]] = []

    async def watch() -> None:
        async with o.node.events(maxsize=4 * FLOOD) as queue:
            while True:
                rec = await queue.get()
                arrivals.append((time.monotonic(), rec.header.author, rec.header.seq))

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.1)
    flooding = asyncio.create_task(publish_raw(url, f.records))
    published: dict[int, float] = {}
    while not flooding.done() or len(published) < HONEST:
        if len(published) < HONEST:
            seq = (await a.publish(len(published)))["seq"]
            published[seq] = time.monotonic()
        await asyncio.sleep(0.05)
    await flooding
    await wait_for(lambda: _knows(o, f.author, FLOOD), timeout=120)
    await wait_for(lambda: _knows(o, a.identity, max(published)), timeout=30)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)

    # Stream order on the relay: how many flood records precede each of A's records.
    f_token = identity_text(f.author)
    flood_before: dict[int, int] = {}
    n_flood = 0
    for m in await relay_messages(url):
        if m.subject.split(".")[2] == f_token:  # cm.<network>.<author>.<kind>
            n_flood += 1
            continue
        h = open_envelope(m.data, now_ms=2**62).header
        if h.author == a.identity:
            flood_before[h.seq] = n_flood
    # Apply order on O.
    applied_before: dict[int, int] = {}
    arrived: dict[int, float] = {}
    n_flood = 0
    for at, author, seq in arrivals:
        if author == f.author:
            n_flood += 1
        elif author == a.identity and seq in published:
            applied_before[seq] = n_flood
            arrived[seq] = at
    assert set(applied_before) == set(published), "events missed some of A's records"
    late = {s: (applied_before[s], flood_before[s]) for s in published}
    # O applies in stream order: none of A's records waits behind flood records the relay
    # received after it.
    assert all(applied <= before for applied, before in late.values()), late
    during = sorted(s for s in published if 0 < flood_before[s] < FLOOD)
    assert during, "none of A's records was published during the flood"
    delays = sorted(arrived[s] - published[s] for s in during)
    print(
        f"\nflood {FLOOD} records; {len(during)} of A's {HONEST} between flood records on the "
        f"relay; publish->applied on O for those: median {delays[len(delays) // 2]:.2f} s, max "
        f"{delays[-1]:.2f} s; flood records ahead of each: "
        f"{[flood_before[s] for s in during][:: max(1, len(during) // 8)]}"
    )
    await assert_converged([a, o], extra=f.records, base=await base, workdir=tmp_path)
    assert rejections(o.db_path) == {}


async def _knows(m: Local, author: bytes, seq: int) -> bool:
    return applied_seq(m.db_path, author) >= seq
