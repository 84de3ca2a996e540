"""``citymesh tui`` as a real command: a home without a node is one line and exit 1; with a
node it opens the app in a terminal (a pseudo-terminal here), which ``q`` closes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import MakeCity, wait_for

CLI = [sys.executable, "-m", "citymesh.node.cli"]


def env_without_home(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CITYMESH_HOME"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")
    return env


def test_help_names_the_home_option(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "tui", "--help"],
        capture_output=True,
        text=True,
        env=env_without_home(tmp_path),
        check=False,
    )
    assert result.returncode == 0
    assert "--home" in result.stdout
    assert "terminal UI" in result.stdout


@pytest.mark.parametrize("how", ["flag", "env", "default"])
def test_no_node_in_the_home_is_one_line(tmp_path: Path, how: str) -> None:
    env = env_without_home(tmp_path)
    args = [*CLI, "tui"]
    if how == "flag":
        args += ["--home", str(tmp_path / "nowhere")]
    elif how == "env":
        env["CITYMESH_HOME"] = str(tmp_path / "from-env")
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("citymesh: no node here: ")
    expected = {"flag": "nowhere", "env": "from-env", "default": "xdg-data"}[how]
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


async def test_opens_on_the_node_and_quits_with_q(make_city: MakeCity, tmp_path: Path) -> None:
    here = await make_city("Mechelen", "BEL")
    await here.publish("welcome-desk", title="Welcome desk for newcomers")
    master, slave = pty.openpty()
    env = env_without_home(tmp_path) | {"TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "tui",
        "--home",
        str(here.home.root),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    output = bytearray()

    def read_some() -> None:
        with contextlib.suppress(OSError):  # the child closed the terminal
            output.extend(os.read(master, 65536))

    loop = asyncio.get_running_loop()
    loop.add_reader(master, read_some)
    try:
        # The app draws and reaches the node (the practice title comes from the API).
        await wait_for(lambda: b"Welcome desk" in output, timeout=30)
        deadline = time.monotonic() + 30
        while process.returncode is None and time.monotonic() < deadline:
            os.write(master, b"q")
            try:
                await asyncio.wait_for(process.wait(), 1)
            except TimeoutError:
                continue
        assert process.returncode == 0, output[-2000:]
    finally:
        loop.remove_reader(master)
        os.close(master)
        if process.returncode is None:
            process.kill()
            await process.wait()
