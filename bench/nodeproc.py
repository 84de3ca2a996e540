"""Real node processes for the benchmarks (not a script): ``citymesh node run`` in a child.

from nodeproc import NodeProcess, make_home, percentiles, proc_memory_mb
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from citymesh.node.config import CityConfig, Home, NodeConfig
from citymesh.node.setup import init_home

START_TIMEOUT = 120.0


def citymesh_command() -> list[str]:
    script = Path(sys.executable).parent / "citymesh"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "from citymesh.node.cli import main; main()"]


def make_home(root: Path, name: str, network: str, relays: list[str]) -> Home:
    home = Home(root)
    init_home(
        home,
        NodeConfig(
            city=CityConfig(name=name, country="BEL"),
            network=network,
            relays=relays,
            listen="127.0.0.1:0",
        ),
    )
    return home


class NodeProcess:
    """``citymesh node run --home H --listen 127.0.0.1:0 [--relay URL]``, until stopped.

    The API URL is read from ``<home>/api.url`` (the node writes it once it serves)."""

    def __init__(self, home: Home, relays: list[str] | None = None) -> None:
        self.home = home
        self.relays = relays or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.token = home.load_token()

    def start(self) -> Self:
        self.home.url_path.unlink(missing_ok=True)
        cmd = [*citymesh_command(), "node", "run", "--home", str(self.home.root)]
        cmd += ["--listen", "127.0.0.1:0"]
        for relay in self.relays:
            cmd += ["--relay", relay]
        log = (self.home.root / "bench-node.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                tail = (self.home.root / "bench-node.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"node {self.home.root} exited on start:\n{tail}")
            with contextlib.suppress(OSError):
                text = self.home.url_path.read_text().strip()
                if text:
                    self.url = text
                    return self
            if time.monotonic() > deadline:
                raise SystemExit(f"node {self.home.root} did not start in {START_TIMEOUT} s")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM (peak), RssAnon and RssFile of a process, MiB (Linux /proc)."""
    out: dict[str, float] = {}
    wanted = {"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb", "RssAnon": "anon_mb", "RssFile": "file_mb"}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in wanted:
                out[wanted[key]] = round(int(line.split()[1]) / 1024, 1)
    return out


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentiles(values: list[float], digits: int = 2) -> dict[str, float]:
    if not values:
        return {}
    qs = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {
        "n": len(values),
        "p50": round(qs[49], digits),
        "p90": round(qs[89], digits),
        "p99": round(qs[98], digits),
        "max": round(max(values), digits),
        "mean": round(statistics.fmean(values), digits),
    }
