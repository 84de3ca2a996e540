"""`BatchPull` against a real nats-server: whole batches, a short last batch, nothing left, stream
sequences from both reply-subject forms, an error status (the consumer gone), and a relay that stops answering."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from nats.js import api

from citymesh.node.natsserver import NatsServer
from citymesh.node.pull import BatchPull, PullError, stream_seq

STREAM = "PULLTEST"


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.client_url, connect_timeout=5)
    js = client.jetstream(timeout=10)
    await js.add_stream(name=STREAM, subjects=["pt.>"])
    yield client
    await client.close()


def _config(start: int = 1) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start,
        ack_policy=api.AckPolicy.NONE,
        inactive_threshold=60.0,
        filter_subject="pt.>",
    )


async def _publish(nc: Client, n: int, prefix: str = "m") -> None:
    js = nc.jetstream(timeout=10)
    for i in range(n):
        await js.publish(f"pt.{i % 3}", f"{prefix}{i}".encode())


async def _pull(nc: Client, start: int = 1) -> BatchPull:
    pull = BatchPull(
        nc, nc.jetstream(timeout=10), STREAM, _config(start), pending_bytes_limit=1 << 20
    )
    await pull.start()
    return pull


async def test_batches_then_a_short_one_then_nothing(nc: Client) -> None:
    await _publish(nc, 25)
    pull = await _pull(nc)
    try:
        first = await pull.fetch(10, timeout=2)
        second = await pull.fetch(10, timeout=2)
        third = await pull.fetch(10, timeout=2)  # 5 left: the relay sends them, then a 404
        fourth = await pull.fetch(10, timeout=2)
    finally:
        await pull.close()
    got = first + second + third
    assert [len(first), len(second), len(third), len(fourth)] == [10, 10, 5, 0]
    assert [data for data, _ in got] == [f"m{i}".encode() for i in range(25)]
    assert [seq for _, seq in got] == list(range(1, 26))


async def test_starts_at_a_stream_seq_and_sees_what_arrives_later(nc: Client) -> None:
    await _publish(nc, 8)
    pull = await _pull(nc, start=6)
    try:
        assert [seq for _, seq in await pull.fetch(10, timeout=2)] == [6, 7, 8]
        assert await pull.fetch(10, timeout=2) == []
        await _publish(nc, 2, prefix="late")
        later = await pull.fetch(10, timeout=2)
    finally:
        await pull.close()
    assert later == [(b"late0", 9), (b"late1", 10)]


async def test_the_consumer_is_left_to_expire_on_the_relay(nc: Client) -> None:
    js = nc.jetstream(timeout=10)
    pull = await _pull(nc)
    infos = await js.consumers_info(STREAM)
    assert [i.config.inactive_threshold for i in infos] == [60.0]
    await pull.close()
    await pull.close()  # twice is harmless


async def test_an_error_status_is_raised_not_taken_for_the_end(nc: Client) -> None:
    js = nc.jetstream(timeout=10)
    await _publish(nc, 3)
    pull = await _pull(nc)
    try:
        # The consumer is gone (deleted, or expired while the link was away): nobody answers
        # the request, and the server says so (503), which is not "nothing more" (404).
        await js.delete_consumer(STREAM, pull._consumer)
        with pytest.raises(PullError, match="503"):
            await pull.fetch(10, timeout=1)
    finally:
        await pull.close()


async def test_a_relay_that_stops_answering_times_out(nats_server: NatsServer) -> None:
    client = await nats.connect(nats_server.client_url, connect_timeout=5, allow_reconnect=False)
    try:
        js = client.jetstream(timeout=10)
        await js.add_stream(name=STREAM, subjects=["pt.>"])
        await _publish(client, 3)
        pull = await _pull(client)
        # Paused, not stopped: the connection stays up and nothing answers.
        nats_server.pause()
        try:
            with pytest.raises(nats.errors.TimeoutError):
                await pull.fetch(10, timeout=0.3)
        finally:
            nats_server.resume()
            await pull.close()
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("reply", "seq"),
    [
        ("$JS.ACK.CM_X.cons.1.4217.17.1700000000000000000.3", 4217),
        ("$JS.ACK._.acchash.CM_X.cons.1.99.5.1700000000000000000.0.tok", 99),
        ("$JS.ACK.dom.acchash.CM_X.cons.2.123456789.8.1700000000000000000.12", 123456789),
    ],
)
def test_stream_seq_from_both_reply_forms(reply: str, seq: int) -> None:
    assert stream_seq(reply) == seq
