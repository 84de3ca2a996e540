"""The node home: where it lives, what it holds, and its TOML configuration.

Home resolution: ``--home``, else ``$CITYMESH_HOME``, else the platform's user data dir.
Layout::

    <home>/config.toml      city profile, network, relays, HTTP listen address
    <home>/city.key         record-signing seed (cmsk…, mode 0600)
    <home>/transport.key    relay login seed (cmsk…, mode 0600), never the record-signing key
    <home>/identity.toml    the genesis the city's identity is derived from
    <home>/api.token        bearer token for the HTTP API (mode 0600)
    <home>/node.db          SQLite store
    <home>/relay/           embedded nats-server store (when no relay is configured)
    <home>/api.url          where the running node's HTTP API listens (written by `node run`)
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated

import msgspec
import platformdirs
import tomli_w

from citymesh.protocol.codes import PopulationBand
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.identity import Genesis, SecretKey, identity_of, parse_identity
from citymesh.protocol.records import Country, Lang, Mailbox, Name, NetworkName

DEFAULT_NETWORK = "citymesh"
DEFAULT_LISTEN = "127.0.0.1:8470"
ENV_HOME = "CITYMESH_HOME"


class ConfigError(Exception):
    """A missing, unreadable or invalid configuration; the message says what and where."""


class CityConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: Name
    country: Country
    admin_code: Annotated[str, msgspec.Meta(max_length=32)] = ""
    population_band: PopulationBand | None = None
    languages: list[Lang] = []
    role_mailbox: Mailbox | None = None
    description: Annotated[str, msgspec.Meta(max_length=8000)] = ""


class Follow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A network this node follows, and the steward identities it trusts for it (anchors)."""

    network: NetworkName
    stewards: Annotated[list[str], msgspec.Meta(min_length=1, max_length=16)]


class NodeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    city: CityConfig
    network: NetworkName = DEFAULT_NETWORK
    relays: list[str] = []
    """NATS URLs; empty means: start the embedded relay under the home."""
    listen: str = DEFAULT_LISTEN
    max_body_bytes: int = 256 * 1024
    peers: list[str] = []
    """HTTP base URLs of peer nodes for omission repair and anti-entropy (their /v1/sync routes)."""
    follow: list[Follow] = []
    """Networks whose membership decides whose records count; empty: an open network."""

    def trust_anchors(self) -> dict[str, list[bytes]]:
        """network -> steward identities; raises ConfigError naming a malformed identity."""
        out: dict[str, list[bytes]] = {}
        for i, follow in enumerate(self.follow):
            for text in follow.stewards:
                try:
                    steward = parse_identity(text)
                except ProtocolError as err:
                    raise ConfigError(
                        f"follow[{i}].stewards: {text[:80]!r} is not a city identity: {err}"
                    ) from err
                out.setdefault(follow.network, [])
                if steward not in out[follow.network]:
                    out[follow.network].append(steward)
        return out


class IdentityFile(msgspec.Struct, frozen=True, kw_only=True):
    genesis_key: str
    recovery: list[str] = []
    next_key: str | None = None
    salt: str = ""


def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    if home:
        return Path(home).expanduser()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("citymesh", appauthor=False))


class Home:
    """Paths inside one node home, and reading/writing what lives there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config_path = root / "config.toml"
        self.key_path = root / "city.key"
        self.transport_key_path = root / "transport.key"
        self.identity_path = root / "identity.toml"
        self.token_path = root / "api.token"
        self.db_path = root / "node.db"
        self.relay_dir = root / "relay"
        self.url_path = root / "api.url"

    def exists(self) -> bool:
        return self.key_path.exists() or self.config_path.exists()

    def load_config(self) -> NodeConfig:
        try:
            raw = self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"no node here: {self.config_path} is missing (run `citymesh init --home {self.root}`)"
            ) from None
        except OSError as err:
            raise ConfigError(f"cannot read {self.config_path}: {err.strerror}") from err
        try:
            data = tomllib.loads(raw)
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{self.config_path} is not valid TOML: {err}") from err
        try:
            config = msgspec.convert(data, NodeConfig)
        except msgspec.ValidationError as err:
            raise ConfigError(f"{self.config_path}: {err}") from err
        try:
            config.trust_anchors()
        except ConfigError as err:
            raise ConfigError(f"{self.config_path}: {err}") from err
        return config

    def save_config(self, config: NodeConfig) -> None:
        data = _drop_none(msgspec.to_builtins(config))
        assert isinstance(data, dict)
        _write_private(self.config_path, tomli_w.dumps(data), mode=0o644)

    def load_key(self) -> SecretKey:
        return _read_key(self.key_path, "city signing key")

    def load_key_file(self, path: Path) -> SecretKey:
        return _read_key(path, "staged signing key")

    def load_transport_key(self) -> SecretKey:
        return _read_key(self.transport_key_path, "transport key")

    def load_genesis(self) -> Genesis:
        try:
            data = tomllib.loads(self.identity_path.read_text(encoding="utf-8"))
            ident = msgspec.convert(data, IdentityFile)
            return Genesis(
                key=bytes.fromhex(ident.genesis_key),
                recovery=[bytes.fromhex(k) for k in ident.recovery],
                next_key=bytes.fromhex(ident.next_key) if ident.next_key else None,
                salt=bytes.fromhex(ident.salt),
            )
        except FileNotFoundError:
            raise ConfigError(f"{self.identity_path} is missing") from None
        except (tomllib.TOMLDecodeError, msgspec.ValidationError, ValueError) as err:
            raise ConfigError(f"{self.identity_path} is corrupt: {err}") from err

    def running_url(self) -> str | None:
        """The API URL the running node wrote (``node run --listen`` may differ from config)."""
        try:
            url = self.url_path.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return url if url.startswith("http://") and len(url) < 300 else None

    def load_token(self) -> str:
        try:
            token = self.token_path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"cannot read {self.token_path}: {err.strerror}") from err
        if len(token) < 16:
            raise ConfigError(f"{self.token_path} holds no usable token")
        return token

    def create(
        self,
        config: NodeConfig,
        *,
        seed: bytes,
        transport_seed: bytes,
        salt: bytes,
        token: str,
        recovery: list[bytes] | None = None,
    ) -> Genesis:
        """Write a new identity. Refuses to overwrite an existing one.

        ``recovery``: public keys of offline recovery keys the genesis names (they can take the
        identity back after a theft; their seeds never live in the home)."""
        if self.key_path.exists() or self.identity_path.exists():
            raise ConfigError(
                f"{self.root} already holds a city identity; refusing to overwrite it"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        key = SecretKey(seed)
        genesis = Genesis(key=key.public_key, recovery=list(recovery or []), salt=salt)
        _write_private(self.key_path, key.to_text() + "\n", mode=0o600)
        _write_private(
            self.transport_key_path, SecretKey(transport_seed).to_text() + "\n", mode=0o600
        )
        ident = IdentityFile(
            genesis_key=key.public_key.hex(),
            recovery=[k.hex() for k in genesis.recovery],
            salt=salt.hex(),
        )
        ident_data = _drop_none(msgspec.to_builtins(ident))
        assert isinstance(ident_data, dict)
        _write_private(self.identity_path, tomli_w.dumps(ident_data), mode=0o644)
        _write_private(self.token_path, token + "\n", mode=0o600)
        self.save_config(config)
        return genesis

    def identity(self) -> bytes:
        return identity_of(self.load_genesis())

    @property
    def next_key_path(self) -> Path:
        return self.root / "city.key.next"

    def stage_next_key(self, key: SecretKey) -> None:
        """Write a key a rotation is about to introduce (finished by `commit_next_key`)."""
        _write_private(self.next_key_path, key.to_text() + "\n", mode=0o600)

    def commit_next_key(self) -> None:
        """Make the staged key the signing key; the old one is kept as city.key.<n>.old."""
        n = 1
        while (self.root / f"city.key.{n}.old").exists():
            n += 1
        os.replace(self.key_path, self.root / f"city.key.{n}.old")
        os.replace(self.next_key_path, self.key_path)

    def disclosure_key(self) -> bytes:
        """The secret that keys this city's rounding coins (created on first use, 0600).

        Kept stable so an unchanged release is byte-identical; never leaves the node.
        """
        path = self.root / "disclosure.key"
        if not path.exists():
            _write_private(path, os.urandom(32).hex() + "\n", mode=0o600)
        try:
            return bytes.fromhex(path.read_text(encoding="utf-8").strip())
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path} is unreadable or corrupt: {err}") from err


def _drop_none(value: object) -> object:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def write_secret(path: Path, text: str) -> None:
    """Write a secret file (mode 0600, parent made 0700 if new), atomically."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    _write_private(path, text, mode=0o600)


def _write_private(path: Path, text: str, *, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _read_key(path: Path, what: str) -> SecretKey:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"the {what} {path} is missing") from None
    except OSError as err:
        raise ConfigError(f"cannot read the {what} {path}: {err.strerror}") from err
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(f"the {what} {path} is readable by others (mode {mode:o}); chmod 600 it")
    try:
        return SecretKey.from_text(text)
    except ProtocolError as err:
        raise ConfigError(f"the {what} {path} is corrupt: {err}") from err
