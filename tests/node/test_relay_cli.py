"""``citymesh relay run`` as a real subprocess: starts, announces, creates streams, stops."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from click.testing import CliRunner

from citymesh.node.cli_relay import relay
from citymesh.node.relay import RelayConfig, RelayError, parse_hostport, parse_size, run_relay

READY = re.compile(
    r"^citymesh relay ready: (?P<url>nats://127\.0\.0\.1:\d+) monitor (?P<monitor>\S+) "
    r"networks (?P<networks>\S+) log (?P<log>.+)$"
)


@asynccontextmanager
async def relay_process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "citymesh.node.cli_relay",
        "run",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stream_names(url: str) -> list[str]:
    nc = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        return sorted(info.config.name or "" for info in await nc.jetstream().streams_info())
    finally:
        await nc.close()


async def test_relay_run_creates_streams_and_stops_on_sigterm(
    tmp_path: Path, free_port: int
) -> None:
    store = tmp_path / "relay"
    async with relay_process(
        "--store",
        str(store),
        "--listen",
        f"127.0.0.1:{free_port}",
        "--monitor",
        "127.0.0.1:0",
        "--network",
        "citymesh",
        "--network",
        "uclg-africa",
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        match = READY.match(line)
        assert match, line
        assert match["url"] == f"nats://127.0.0.1:{free_port}"
        assert match["monitor"].startswith("http://127.0.0.1:")
        assert match["networks"] == "citymesh,uclg-africa"
        assert await stream_names(match["url"]) == ["CM_CITYMESH", "CM_UCLG_AFRICA"]
        assert "sync_interval: always" in (store / "nats-server.conf").read_text()

        proc.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()
        assert b"Traceback" not in stderr
        assert stdout == b""
    log = (store / "nats-server.log").read_text()
    assert "Server Exiting" in log


async def test_relay_restart_keeps_the_stream(tmp_path: Path, free_port: int) -> None:
    store = tmp_path / "relay"
    for _ in range(2):
        async with relay_process(
            "--store", str(store), "--listen", f"127.0.0.1:{free_port}", "--monitor", "off"
        ) as proc:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
            match = READY.match(line)
            assert match and match["monitor"] == "off", line
            nc = await nats.connect(match["url"], allow_reconnect=False)
            try:
                await nc.jetstream().publish("cm.citymesh.abc.city", b"x")
                info = await nc.jetstream().stream_info("CM_CITYMESH")
            finally:
                await nc.close()
            proc.send_signal(signal.SIGINT)
            await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0
    assert info.state.messages == 2


async def test_relay_exits_non_zero_when_its_server_dies(tmp_path: Path) -> None:
    store = tmp_path / "relay"
    async with relay_process(
        "--store", str(store), "--listen", "127.0.0.1:0", "--monitor", "off"
    ) as proc:
        assert proc.stdout is not None
        assert READY.match((await asyncio.wait_for(proc.stdout.readline(), 60)).decode())
        first = (store / "nats-server.log").read_text().splitlines()[0]
        server_pid = int(first[1 : first.index("]")])
        os.kill(server_pid, signal.SIGKILL)
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    text = stderr.decode()
    assert "Traceback" not in text
    assert text.startswith("Error: nats-server exited unexpectedly, killed by SIGKILL")
    assert text.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--listen", "localhost"], "is not HOST:PORT"),
        (["--listen", "127.0.0.1:99999"], "port must be a number"),
        (["--listen", "127.0.0.1:abc"], "port must be a number"),
        (["--listen", "bad host!:4222"], "not an IP address or host name"),
        (["--listen", "::1:4222"], "IPv6 addresses in brackets"),
        (["--monitor", "nowhere"], "is not HOST:PORT"),
        (["--network", "Not.Valid"], "network name"),
        (["--max-store", "lots"], "is not a size"),
    ],
)
async def test_bad_options_exit_with_one_clear_line(
    tmp_path: Path, args: list[str], complaint: str
) -> None:
    async with relay_process("--store", str(tmp_path / "relay"), *args) as proc:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert stdout == b""
    text = stderr.decode()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and complaint in errors[0], text
    assert not (tmp_path / "relay").exists()


def test_port_in_use_is_one_error_line(tmp_path: Path, nats_url: str) -> None:
    port = nats_url.rsplit(":", 1)[1]
    result = CliRunner().invoke(
        relay,
        [
            "run",
            "--store",
            str(tmp_path / "r"),
            "--listen",
            f"127.0.0.1:{port}",
            "--monitor",
            "off",
        ],
    )
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.count("\n") == 1
    assert result.output.startswith("Error: nats-server exited with code 1 before it was ready")
    assert "address already in use" in result.output


async def test_run_relay_with_a_stop_event(tmp_path: Path) -> None:
    stop = asyncio.Event()
    lines: list[str] = []

    def announce(line: str) -> None:
        lines.append(line)
        stop.set()

    cfg = RelayConfig(store=tmp_path, port=0, monitor=None, networks=("a", "b", "a"))
    await run_relay(cfg, stop=stop, announce=announce)
    assert len(lines) == 1 and "networks a,b " in lines[0]

    with pytest.raises(RelayError, match="network name"):
        await run_relay(RelayConfig(store=tmp_path, networks=("A",)), stop=stop)


def test_parsers() -> None:
    assert parse_hostport("127.0.0.1:4222") == ("127.0.0.1", 4222)
    assert parse_hostport("[::1]:0") == ("::1", 0)
    assert parse_hostport("relay.example.org:4222") == ("relay.example.org", 4222)
    assert parse_size("10G") == 10 * 1024**3
    assert parse_size("512MiB") == 512 * 1024**2
    assert parse_size("4096") == 4096
