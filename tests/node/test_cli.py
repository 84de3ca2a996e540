"""The ``citymesh`` command line as real subprocesses: help, init, bad arguments and configs,
verify, and a node run end to end (embedded relay, HTTP on 127.0.0.1) driven by other commands.

Errors must be one clear line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from citymesh.node.config import Home
from citymesh.protocol import api
from citymesh.protocol.identity import identity_text

from .conftest import MakeHome

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "practices" / "citymesh" / "practices" / "samples"


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment without CITYMESH_HOME; the platform data dir points into tmp_path."""
    env = {k: v for k, v in os.environ.items() if k != "CITYMESH_HOME"}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "citymesh.node.cli", *map(str, args)]


def run(
    tmp_path: Path, *args: str | Path, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or cli_env(tmp_path),
        check=False,
    )


def run_many(
    tmp_path: Path, commands: list[list[str | Path]], timeout: float = 60
) -> list[subprocess.CompletedProcess[str]]:
    """Run several CLI invocations at once (each is an independent process)."""
    env = cli_env(tmp_path)
    procs = [
        subprocess.Popen(
            command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for args in commands
    ]
    results = []
    for args, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(command(*args), proc.returncode, out, err))
    return results


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Non-zero exit, exactly one line on stderr, no traceback; returns that line."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def init(tmp_path: Path, home: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    result = run(tmp_path, "init", "--home", home, "--city", "Mechelen", "--country", "BEL", *extra)
    assert result.returncode == 0, result.stderr
    return result


# -- help ----------------------------------------------------------------------------------------
HELP_COMMANDS: list[list[str]] = [
    [],
    ["init"],
    ["node"],
    ["node", "run"],
    ["relay"],
    ["relay", "run"],
    ["status"],
    ["practice"],
    ["practice", "add"],
    ["practice", "list"],
    ["practice", "show"],
    ["verify"],
    ["demo"],
]


def test_every_command_and_group_has_help(tmp_path: Path) -> None:
    results = run_many(tmp_path, [[*args, "--help"] for args in HELP_COMMANDS])
    for args, result in zip(HELP_COMMANDS, results, strict=True):
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.startswith("Usage:"), (args, result.stdout)
        assert result.stderr == "", (args, result.stderr)
        assert "--help" in result.stdout
    by_command = {" ".join(args): r.stdout for args, r in zip(HELP_COMMANDS, results, strict=True)}
    for name in ("init", "node", "relay", "status", "practice", "verify", "demo"):
        assert name in by_command[""], name
    for option in ("--home", "--city", "--country", "--network", "--listen"):
        assert option in by_command["init"], option
    for option in ("--home", "--relay", "--listen"):
        assert option in by_command["node run"], option
    for name in ("add", "list", "show"):
        assert name in by_command["practice"], name
    # Listing commands have --json.
    for name in ("status", "practice list", "practice show", "verify"):
        assert "--json" in by_command[name], name


# -- init ----------------------------------------------------------------------------------------
def test_init_creates_a_private_home_and_never_prints_the_secret(tmp_path: Path) -> None:
    home = tmp_path / "mechelen"
    result = init(tmp_path, home, "--network", "uclg-europe")
    for name in ("city.key", "api.token", "transport.key"):
        mode = stat.S_IMODE((home / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    for name in ("config.toml", "identity.toml", "node.db"):
        assert (home / name).is_file(), name
    h = Home(home)
    config = h.load_config()
    assert (config.city.name, config.city.country, config.network) == (
        "Mechelen",
        "BEL",
        "uclg-europe",
    )
    ident = identity_text(h.identity())
    assert ident in result.stdout
    assert "cmpk1" in result.stdout
    output = result.stdout + result.stderr
    for secret_file in ("city.key", "transport.key"):
        secret = (home / secret_file).read_text().strip()
        assert secret and secret not in output, secret_file
        # Not even the part after a prefix.
        assert secret[-20:] not in output, secret_file
    token = (home / "api.token").read_text().strip()
    assert token not in output

    # A second init into the same home refuses, and leaves the identity alone.
    key_before = (home / "city.key").read_bytes()
    again = run(tmp_path, "init", "--home", home, "--city", "Other", "--country", "PRT")
    assert_one_line_error(again, str(home))
    assert "refus" in again.stderr or "already" in again.stderr
    assert (home / "city.key").read_bytes() == key_before
    assert Home(home).load_config().city.name == "Mechelen"


def test_init_bad_arguments_are_one_line_and_write_nothing(tmp_path: Path) -> None:
    cases: list[tuple[list[str], str]] = [
        (["--country", "BE1"], "country"),
        (["--network", "Bad Name"], "network"),
        (["--listen", "nonsense"], "--listen"),
        (["--listen", "127.0.0.1:99999"], "--listen"),
        (["--city", ""], "name"),
        (["--city", "x" * 200], "name"),
    ]
    commands: list[list[str | Path]] = []
    for i, (args, _) in enumerate(cases):
        defaults = {"--city": "Mechelen", "--country": "BEL"}
        for option, value in zip(args[::2], args[1::2], strict=True):
            defaults[option] = value
        flat = [part for option, value in defaults.items() for part in (option, value)]
        commands.append(["init", "--home", tmp_path / f"home{i}", *flat])
    results = run_many(tmp_path, commands)
    for i, ((args, needle), result) in enumerate(zip(cases, results, strict=True)):
        line = assert_one_line_error(result)
        assert needle in line.lower(), (args, line)
        assert not (tmp_path / f"home{i}" / "city.key").exists(), args
    # A missing required option is a usage error, not a traceback.
    missing = run(tmp_path, "init", "--home", tmp_path / "missing", "--country", "BEL")
    assert missing.returncode != 0
    assert "Traceback" not in missing.stderr
    assert "--city" in missing.stderr


def test_citymesh_home_is_honoured_without_home(tmp_path: Path) -> None:
    env_home = tmp_path / "from-env"
    env = cli_env(tmp_path, CITYMESH_HOME=str(env_home))
    result = run(tmp_path, "init", "--city", "Mechelen", "--country", "BEL", env=env)
    assert result.returncode == 0, result.stderr
    assert (env_home / "city.key").is_file()
    assert identity_text(Home(env_home).identity()) in result.stdout
    verified = run(tmp_path, "verify", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "1 of 1 records verify" in verified.stdout
    # --home wins over the environment.
    other = tmp_path / "explicit"
    result = run(tmp_path, "init", "--home", other, "--city", "Ghent", "--country", "BEL", env=env)
    assert result.returncode == 0, result.stderr
    assert (other / "city.key").is_file()
    assert Home(env_home).load_config().city.name == "Mechelen"
    # Without either, the platform data dir is used (here redirected into tmp_path).
    result = run(tmp_path, "init", "--city", "Leuven", "--country", "BEL")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "xdg-data" / "citymesh" / "city.key").is_file()


# -- bad configuration ---------------------------------------------------------------------------
def test_node_run_refuses_bad_homes(tmp_path: Path, free_port: int, make_home: MakeHome) -> None:
    """Missing, corrupt or invalid config; a signing key readable by others; a bad --listen."""
    empty = tmp_path / "empty"
    empty.mkdir()
    garbage = make_home("Garbage").root
    (garbage / "config.toml").write_text("this is [[ not toml at all\n\x00")
    invalid = make_home("Invalid").root
    (invalid / "config.toml").write_text(
        'network = "citymesh"\n[city]\nname = ""\ncountry = "BEL"\n'
    )
    unknown = make_home("Unknown").root
    with (unknown / "config.toml").open("a") as f:
        f.write('colour = "blue"\n')
    open_key = make_home("Open").root
    (open_key / "city.key").chmod(0o644)
    fine = make_home("Fine").root
    listen = ["--listen", f"127.0.0.1:{free_port}"]
    cases: list[tuple[list[str | Path], tuple[str, ...]]] = [
        (["node", "run", "--home", empty, *listen], (str(empty / "config.toml"), "citymesh init")),
        (["node", "run", "--home", garbage, *listen], (str(garbage / "config.toml"), "TOML")),
        (["node", "run", "--home", invalid, *listen], (str(invalid / "config.toml"),)),
        (["node", "run", "--home", unknown, *listen], (str(unknown / "config.toml"), "colour")),
        (["node", "run", "--home", open_key, *listen], (str(open_key / "city.key"), "chmod 600")),
        (["node", "run", "--home", fine, "--listen", "nonsense"], ("--listen",)),
        (["status", "--home", empty], (str(empty / "config.toml"),)),
        (["status", "--home", garbage], (str(garbage / "config.toml"),)),
        (["practice", "list", "--home", empty], (str(empty / "config.toml"),)),
    ]
    results = run_many(tmp_path, [args for args, _ in cases])
    for (args, needles), result in zip(cases, results, strict=True):
        try:
            assert_one_line_error(result, *needles)
        except AssertionError as err:
            raise AssertionError(f"{args}: {err}") from err
    assert not (empty / "city.key").exists()  # nothing was created in the empty home
    assert not (open_key / "relay").exists()  # refused before starting anything


# -- verify --------------------------------------------------------------------------------------
def test_verify_finds_a_corrupted_envelope(tmp_path: Path, make_home: MakeHome) -> None:
    home = make_home().root
    result = run(tmp_path, "verify", "--home", home)
    assert result.returncode == 0, result.stderr
    assert "1 of 1 records verify" in result.stdout
    assert "Traceback" not in result.stderr

    db = sqlite3.connect(home / "node.db")
    try:
        rid, envelope = db.execute("SELECT id, envelope FROM records").fetchone()
        damaged = bytearray(envelope)
        damaged[len(damaged) // 2] ^= 0x01
        db.execute("UPDATE records SET envelope = ? WHERE id = ?", (bytes(damaged), rid))
        db.commit()
    finally:
        db.close()
    garbage = make_home("Garbage").root
    (garbage / "node.db").write_bytes(b"this is not a database" * 100)
    result, as_json, missing, not_a_db = run_many(
        tmp_path,
        [
            ["verify", "--home", home],
            ["verify", "--home", home, "--json"],
            ["verify", "--home", tmp_path / "nowhere"],
            ["verify", "--home", garbage],
        ],
    )
    assert result.returncode == 1, result
    assert "0 of 1 records verify" in result.stdout
    assert "bad" in result.stdout
    assert "Traceback" not in result.stderr
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert report["records"] == 1 and report["ok"] == 0
    (reason,) = report["bad"]
    assert reason in result.stdout  # the text output names the same reason
    assert_one_line_error(missing, "node.db")
    assert_one_line_error(not_a_db, str(garbage / "node.db"))


# -- end to end ----------------------------------------------------------------------------------
PRACTICE_TOML = """\
addr = "welcome-desk"
status = "active"
sectors = ["HOUSING"]
target_groups = ["REFUGEE"]
description = "One desk in the city hall for housing, language classes and registration."
licence = "CC-BY-4.0"

[title]
en = "Welcome desk for newcomers"
nl = "Onthaalbalie voor nieuwkomers"

[summary]
en = "One door for everything a newcomer needs in the first month."

[period]
start = 2021-03-01

[contact]
role_mailbox = "welcome@mechelen.example.org"
"""

PRACTICE_JSON = {
    "addr": "language-cafe",
    "title": {"en": "Language café"},
    "summary": {"en": "Weekly conversation tables run by volunteers."},
    "status": "pilot",
    "sectors": ["EDUCATION", "COHESION"],
    "target_groups": ["NEWCOMER"],
    "contact": {"role_mailbox": "cafe@mechelen.example.org"},
}


@pytest.fixture
def node_process(
    tmp_path: Path, free_port: int, make_home: MakeHome
) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """``citymesh node run`` with the embedded relay, as a subprocess; killed if still running.

    The config names another port than ``--listen``: `status` must find the running node anyway.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        config_port = sock.getsockname()[1]
    home = make_home("Mechelen", "BEL", listen=f"127.0.0.1:{config_port}").root
    out = (tmp_path / "node.out").open("wb")
    err = (tmp_path / "node.err").open("wb")
    proc = subprocess.Popen(
        command("node", "run", "--home", home, "--listen", f"127.0.0.1:{free_port}"),
        stdout=out,
        stderr=err,
        env=cli_env(tmp_path),
    )
    try:
        yield home, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        out.close()
        err.close()


def _wait_until_ready(tmp_path: Path, home: Path, proc: subprocess.Popen[bytes]) -> api.Status:
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "node.err").read_text()
        last = run(tmp_path, "status", "--home", home, "--json")
        if last.returncode == 0:
            st = msgspec.json.decode(last.stdout, type=api.Status)
            if st.ready_to_publish:
                return st
        time.sleep(0.2)
    raise AssertionError(f"node never became ready: {last}")


def test_node_run_end_to_end(
    tmp_path: Path, node_process: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    home, proc = node_process
    st = _wait_until_ready(tmp_path, home, proc)
    ident = identity_text(Home(home).identity())
    assert st.identity == ident
    assert st.city == "Mechelen"
    assert [r.embedded for r in st.relays] == [True]
    assert st.relays[0].connected

    toml_file = tmp_path / "welcome.toml"
    toml_file.write_text(PRACTICE_TOML)
    json_file = tmp_path / "cafe.json"
    json_file.write_text(json.dumps(PRACTICE_JSON))
    text, added_toml, added_json = run_many(
        tmp_path,
        [
            ["status", "--home", home],
            ["practice", "add", "--home", home, toml_file],
            ["practice", "add", "--home", home, json_file],
        ],
    )
    assert text.returncode == 0, text.stderr
    assert "Mechelen (BEL)" in text.stdout
    assert ident in text.stdout
    assert "ready to publish: yes" in text.stdout
    assert "connected" in text.stdout
    assert added_toml.returncode == 0, added_toml.stderr
    assert f"{ident}/welcome-desk" in added_toml.stdout
    assert added_json.returncode == 0, added_json.stderr
    assert f"{ident}/language-cafe" in added_json.stdout

    # Reads, and bad input (one line each, nothing stored), all at once.
    bad_sector = tmp_path / "bad.json"
    bad_sector.write_text(json.dumps({**PRACTICE_JSON, "addr": "bad", "sectors": ["HOUSNG"]}))
    bad_toml_sector = tmp_path / "bad.toml"
    bad_toml_sector.write_text(PRACTICE_TOML.replace('["HOUSING"]', '["HOUSNG"]'))
    unknown_field = tmp_path / "unknown.json"
    unknown_field.write_text(json.dumps({**PRACTICE_JSON, "colour": "blue"}))
    broken_toml = tmp_path / "broken.toml"
    broken_toml.write_text("addr = \n[[[")
    broken_json = tmp_path / "broken.json"
    broken_json.write_text("{")
    not_utf8 = tmp_path / "latin1.json"
    not_utf8.write_bytes('{"addr": "café"}'.encode("latin-1"))
    bad_slug = tmp_path / "slug.json"
    bad_slug.write_text(json.dumps({**PRACTICE_JSON, "addr": "Bad Slug"}))
    reads: list[list[str | Path]] = [
        ["practice", "list", "--home", home, "--json"],
        ["practice", "list", "--home", home, "--json", "--sector", "EDUCATION"],
        ["practice", "list", "--home", home],
        ["practice", "list", "--home", home, "--sector", "CRISIS"],
        ["practice", "show", "--home", home, f"{ident}/welcome-desk"],
        ["practice", "show", "--home", home, "--json", f"{ident}/language-cafe"],
    ]
    cases: list[tuple[list[str | Path], tuple[str, ...]]] = [
        (["practice", "add", "--home", home, bad_sector], ("sectors[0]", "unknown_sector")),
        (["practice", "add", "--home", home, bad_toml_sector], ("sectors[0]", "unknown_sector")),
        (["practice", "add", "--home", home, unknown_field], ("colour",)),
        (["practice", "add", "--home", home, broken_toml], (str(broken_toml), "TOML")),
        (["practice", "add", "--home", home, broken_json], (str(broken_json),)),
        (["practice", "add", "--home", home, not_utf8], (str(not_utf8), "JSON")),
        (["practice", "add", "--home", home, bad_slug], ("addr",)),
        (["practice", "add", "--home", home, tmp_path / "missing.toml"], ("missing.toml",)),
        (["practice", "show", "--home", home, "not-a-ref"], ("ref",)),
        (["practice", "show", "--home", home, f"{ident}/Bad_Slug"], ("ref",)),
        (["practice", "show", "--home", home, f"{ident}/no-such-practice"], ("not_found",)),
        (["practice", "list", "--home", home, "--sector", "HOUSNG"], ("sector",)),
        (["practice", "list", "--home", home, "--country", "be"], ("country",)),
    ]
    results = run_many(tmp_path, reads + [args for args, _ in cases])
    listed, filtered, plain, none, shown, shown_json = results[: len(reads)]
    for (args, needles), result in zip(cases, results[len(reads) :], strict=True):
        try:
            assert_one_line_error(result, *needles)
        except AssertionError as err:
            raise AssertionError(f"{args}: {err}") from err

    assert listed.returncode == 0, listed.stderr
    listing = msgspec.json.decode(listed.stdout, type=api.PracticeList)
    assert {item.ref: item.title for item in listing.items} == {
        f"{ident}/welcome-desk": "Welcome desk for newcomers",
        f"{ident}/language-cafe": "Language café",
    }
    assert [i.ref for i in msgspec.json.decode(filtered.stdout, type=api.PracticeList).items] == [
        f"{ident}/language-cafe"
    ]
    assert plain.returncode == 0, plain.stderr
    assert "Welcome desk for newcomers" in plain.stdout and "Language café" in plain.stdout
    assert none.returncode == 0 and "no practices match" in none.stdout
    assert shown.returncode == 0, shown.stderr
    assert "Welcome desk for newcomers" in shown.stdout
    assert "welcome@mechelen.example.org" in shown.stdout
    assert shown_json.returncode == 0, shown_json.stderr
    detail = msgspec.json.decode(shown_json.stdout, type=api.PracticeDetail)
    assert detail.practice.sectors == ["EDUCATION", "COHESION"]
    # The bad files stored nothing.
    listed = run(tmp_path, "practice", "list", "--home", home, "--json")
    assert len(msgspec.json.decode(listed.stdout, type=api.PracticeList).items) == 2

    # SIGTERM stops the node cleanly and promptly, even with a live event stream open (the TUI
    # keeps one).
    url = (home / "api.url").read_text().strip()
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sse:
        token = (home / "api.token").read_text().strip()
        sse.sendall(
            f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}"
            "\r\n\r\n".encode()
        )
        received = b""
        while b": citymesh events" not in received:
            chunk = sse.recv(4096)
            assert chunk, received
            received += chunk
        assert received.startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "node.err").read_text()
    assert not (home / "api.url").exists()
    assert "Traceback" not in (tmp_path / "node.err").read_text()
    out = (tmp_path / "node.out").read_text()
    assert ident in out and url in out

    stopped, verified = run_many(
        tmp_path, [["status", "--home", home], ["verify", "--home", home, "--json"]]
    )
    assert_one_line_error(stopped, "cannot reach the node")
    # Every record the node signed verifies offline.
    assert verified.returncode == 0, verified.stdout
    report = json.loads(verified.stdout)
    assert report["records"] >= 4 and report["ok"] == report["records"]


# -- demo ----------------------------------------------------------------------------------------
def test_demo_check_converges(tmp_path: Path) -> None:
    if not sorted(SAMPLES.glob("*.json")):
        pytest.skip(f"no sample data yet in {SAMPLES.relative_to(REPO)}/*.json")
    result = run(tmp_path, "demo", "--check", "--cities", "3", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "converged" in result.stdout
    assert "Traceback" not in result.stderr
