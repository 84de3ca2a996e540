"""The catalogue commands end to end: two `citymesh node run` processes on one relay."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from citymesh.node.config import Home
from citymesh.node.natsserver import NatsServer

from .conftest import MakeHome

CLI = [sys.executable, "-m", "citymesh.node.cli"]
PRACTICE = """
addr = "language-cafe"
status = "active"
sectors = ["EDUCATION", "COHESION"]
target_groups = ["NEWCOMER", "HOST"]
[title]
en = "Language café in the library"
[contact]
role_mailbox = "cafe@mechelen.example.org"
"""


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CITYMESH_HOME"}
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"{args} failed: {done.stderr}")
    return done


def wait_until(fn, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


@pytest.fixture
def two_nodes(
    nats_server: NatsServer, make_home: MakeHome, tmp_path: Path
) -> Iterator[tuple[Home, Home]]:
    def port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    homes = [
        make_home("Mechelen", "BEL", relays=[nats_server.client_url], listen=f"127.0.0.1:{port()}"),
        make_home("Lisbon", "PRT", relays=[nats_server.client_url], listen=f"127.0.0.1:{port()}"),
    ]
    logs = [(tmp_path / f"node{i}.log").open("w") for i in range(2)]
    procs = [
        subprocess.Popen([*CLI, "node", "run", "--home", str(h.root)], stdout=log, stderr=log)
        for h, log in zip(homes, logs, strict=True)
    ]
    try:
        for h in homes:
            wait_until(
                lambda h=h: run("status", "--home", str(h.root), check=False).returncode == 0
            )
        yield homes[0], homes[1]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in procs]
        for log in logs:
            log.close()
        assert codes == [0, 0], [(tmp_path / f"node{i}.log").read_text() for i in range(2)]


@pytest.mark.slow
def test_rate_replicate_export(two_nodes: tuple[Home, Home], tmp_path: Path) -> None:
    a, b = two_nodes
    file = tmp_path / "cafe.toml"
    file.write_text(PRACTICE, encoding="utf-8")
    out = run("practice", "add", str(file), "--home", str(a.root)).stdout
    ref = out.split()[1]

    def b_holds_it() -> bool:
        return run("practice", "show", ref, "--home", str(b.root), check=False).returncode == 0

    wait_until(b_holds_it)
    own = run("rate", ref, "--score", "5", "--home", str(a.root), check=False)
    assert own.returncode == 1 and "own_practice" in own.stderr and "Traceback" not in own.stderr
    bad = run("rate", ref, "--score", "9", "--home", str(b.root), check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert (
        "rated"
        in run(
            "rate",
            ref,
            "--score",
            "4",
            "--evidence",
            "3",
            "--comment",
            "Works",
            "--home",
            str(b.root),
        ).stdout
    )
    run(
        "replicate",
        ref,
        "--status",
        "running",
        "--relation",
        "adapted",
        "--start",
        "2025-01-10",
        "--worked",
        "partly",
        "--lessons",
        "Needs volunteers",
        "--home",
        str(b.root),
    )

    def a_sees_both() -> dict[str, object] | None:
        detail = json.loads(run("practice", "show", ref, "--json", "--home", str(a.root)).stdout)
        ok = detail["rating"]["count"] == 1 and len(detail["replications"]) == 1
        return detail if ok else None

    detail = wait_until(a_sees_both)
    assert detail["replications"][0]["outcome"]["worked"] == "partly"  # type: ignore[index]
    rows = list(
        csv.DictReader(io.StringIO(run("export", "--format", "csv", "--home", str(a.root)).stdout))
    )
    assert [r["ref"] for r in rows] == [ref]
    assert rows[0]["replications"] == "1" and rows[0]["city"] == "Mechelen"
    exported = json.loads(run("export", "--home", str(b.root)).stdout)
    assert exported[0]["ref"] == ref and exported[0]["practice"]["sectors"] == [
        "EDUCATION",
        "COHESION",
    ]
    listed = json.loads(
        run(
            "practice", "list", "--json", "--has-replications", "--q", "cafe", "--home", str(b.root)
        ).stdout
    )
    assert [i["ref"] for i in listed["items"]] == [ref]
    assert run("practice", "retract", ref, "--yes", "--home", str(a.root)).returncode == 0
    gone = run("practice", "retract", ref, "--yes", "--home", str(b.root), check=False)
    assert gone.returncode == 1 and "Traceback" not in gone.stderr
