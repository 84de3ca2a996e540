"""An async client of a node's HTTP API (contract v1), returning the Structs of
``citymesh.protocol.api``.

Two errors only: `NodeUnavailable` (the node cannot be reached, or stopped answering) and
`ApiError` (the node answered with a JSON error). `NodeLocation` finds the node of a home
directory without importing ``citymesh.node``: it reads ``api.url`` (written by a running
``node run``, which may listen elsewhere than configured), else ``listen`` in ``config.toml``,
and the bearer token in ``api.token``.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar
from urllib.parse import quote

import aiohttp
import msgspec
import platformdirs

from citymesh.protocol import api

ENV_HOME: Final = "CITYMESH_HOME"
DEFAULT_LISTEN: Final = "127.0.0.1:8470"
REQUEST_TIMEOUT: Final = 15.0
CONNECT_TIMEOUT: Final = 3.0
EVENTS_READ_TIMEOUT: Final = 45.0
"""The node pings the event stream every 15 s; three missed pings mean it is gone."""

T = TypeVar("T")


class ClientError(Exception):
    """Base of the client's errors; the message is one line for a person."""


class HomeError(ClientError):
    """The node home is missing or unreadable (no config, no token, bad listen address)."""


class NodeUnavailable(ClientError):  # noqa: N818 (the name the UI and tests use)
    """The node cannot be reached (not running, wrong address) or the connection dropped."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"cannot reach the node at {url} ({cause})")
        self.url = url
        self.cause = cause


class ApiError(ClientError):
    """The node refused a request: ``{"error": {"code", "message", "field"}}``."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.message}{where}"


# -- where the node is ---------------------------------------------------------------------------
def resolve_home(home: str | os.PathLike[str] | None) -> Path:
    """``--home``, else ``$CITYMESH_HOME``, else the platform's user data directory."""
    if home:
        return Path(home).expanduser()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("citymesh", appauthor=False))


def url_from_listen(listen: str) -> str:
    """``HOST:PORT`` from config.toml → the URL to reach it locally (0.0.0.0 → 127.0.0.1)."""
    value = listen.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{listen!r} is not [ADDRESS]:PORT")
        host = "::1" if host in ("::", "") else host
        host = f"[{host}]"
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f"{listen!r} is not HOST:PORT")
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{listen!r}: the port must be a number from 1 to 65535")
    return f"http://{host}:{int(port)}"


def running_url(root: Path) -> str | None:
    """The URL in ``<root>/api.url``, where a running node says its API listens (or None)."""
    try:
        url = (root / "api.url").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return url if url.startswith("http://") and len(url) < 300 and url.isprintable() else None


@dataclass(frozen=True)
class NodeLocation:
    """How to reach a node: its API URL and bearer token."""

    url: str
    token: str
    home: Path | None = None

    @classmethod
    def from_home(cls, home: str | os.PathLike[str] | None = None) -> NodeLocation:
        """Read ``<home>/api.url`` if the node wrote one, else ``listen`` from
        ``<home>/config.toml``, and ``<home>/api.token``; `HomeError` if the config or token is
        missing or unusable. ``home`` is resolved with `resolve_home`."""
        root = resolve_home(home)
        config_path = root / "config.toml"
        token_path = root / "api.token"
        try:
            config = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise HomeError(
                f"no node here: {config_path} is missing "
                f"(create one with `citymesh init --home {root}`)"
            ) from None
        except OSError as err:
            raise HomeError(f"cannot read {config_path}: {err.strerror}") from err
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise HomeError(f"{config_path} is not valid TOML: {err}") from err
        listen = config.get("listen", DEFAULT_LISTEN)
        if not isinstance(listen, str):
            raise HomeError(f"{config_path}: listen must be a string HOST:PORT")
        try:
            url = running_url(root) or url_from_listen(listen)
        except ValueError as err:
            raise HomeError(f"{config_path}: listen {err}") from None
        try:
            token = token_path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise HomeError(f"cannot read the API token {token_path}: {err.strerror}") from err
        if len(token) < 16:
            raise HomeError(f"{token_path} holds no usable token")
        return cls(url=url, token=token, home=root)


# -- the client ----------------------------------------------------------------------------------
_error_decoder = msgspec.json.Decoder(api.ErrorResponse)
_event_decoder = msgspec.json.Decoder(api.Event)
_decoders: dict[object, msgspec.json.Decoder[object]] = {}


def _decode(data: bytes, type_: type[T]) -> T:
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    return decoder.decode(data)  # type: ignore[return-value]


def query_params(query: msgspec.Struct) -> dict[str, str]:
    """A query Struct as URL parameters, leaving out unset (None) fields."""
    params: dict[str, str] = {}
    for name, value in msgspec.structs.asdict(query).items():
        if value is None:
            continue
        if isinstance(value, bool):
            params[name] = "true" if value else "false"
        else:
            params[name] = str(value)
    return params


def ref_path(ref: str) -> str:
    """``/v1/practices/<author>/<addr>`` for a practice ref (each part URL-quoted)."""
    author, _, addr = ref.partition("/")
    return f"/v1/practices/{quote(author, safe='')}/{quote(addr, safe='')}"


class NodeClient:
    """One aiohttp session to one node; create and close it on the same event loop."""

    def __init__(self, location: NodeLocation, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=CONNECT_TIMEOUT)
        self._session: aiohttp.ClientSession | None = None
        self.relocate(location)

    def relocate(self, location: NodeLocation) -> None:
        """Talk to the node at another address or with another token from the next request on
        (requests under way finish where they started)."""
        self.location = location
        self.url = location.url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {location.token}"}

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _unavailable(self, err: BaseException) -> NodeUnavailable:
        if isinstance(err, TimeoutError):
            cause = "no answer in time"
        elif isinstance(err, aiohttp.ClientConnectorError):
            cause = err.strerror or "connection refused"
        elif isinstance(err, aiohttp.ServerDisconnectedError):
            cause = "the node closed the connection"
        else:
            cause = str(err) or type(err).__name__
        return NodeUnavailable(self.url, cause)

    async def request(
        self,
        method: str,
        path: str,
        type_: type[T],
        *,
        params: Mapping[str, str] | None = None,
        body: msgspec.Struct | None = None,
    ) -> T:
        """One request; the JSON answer decoded into ``type_``."""
        data = msgspec.json.encode(body) if body is not None else None
        headers = dict(self._auth)
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self.session.request(
                method, self.url + path, params=params, data=data, headers=headers
            ) as resp:
                payload = await resp.read()
                status = resp.status
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as err:
            raise self._unavailable(err) from err
        if status >= 400:
            raise _api_error(status, payload)
        try:
            return _decode(payload, type_)
        except msgspec.DecodeError as err:
            raise ApiError(
                status, "bad_response", f"the node's answer to {path} does not decode: {err}"
            ) from err

    # -- the API ---------------------------------------------------------------------------------
    async def health(self) -> api.Health:
        return await self.request("GET", "/healthz", api.Health)

    async def status(self) -> api.Status:
        return await self.request("GET", "/v1/status", api.Status)

    async def practices(self, query: api.PracticeQuery) -> api.PracticeList:
        return await self.request(
            "GET", "/v1/practices", api.PracticeList, params=query_params(query)
        )

    async def practice(self, ref: str) -> api.PracticeDetail:
        return await self.request("GET", ref_path(ref), api.PracticeDetail)

    async def publish_practice(self, practice: api.PracticeIn) -> api.Published:
        return await self.request("POST", "/v1/practices", api.Published, body=practice)

    async def retract_practice(self, ref: str, reason: str = "") -> api.Published:
        params = {"reason": reason} if reason else None
        return await self.request("DELETE", ref_path(ref), api.Published, params=params)

    async def rate(self, ref: str, rating: api.RatingIn) -> api.Published:
        return await self.request("POST", ref_path(ref) + "/ratings", api.Published, body=rating)

    async def replicate(self, ref: str, replication: api.ReplicationIn) -> api.Published:
        return await self.request(
            "POST", ref_path(ref) + "/replications", api.Published, body=replication
        )

    async def cities(self) -> api.CityList:
        return await self.request("GET", "/v1/cities", api.CityList)

    async def indicator_definitions(self) -> list[api.IndicatorDefinition]:
        return await self.request(
            "GET", "/v1/indicators/definitions", list[api.IndicatorDefinition]
        )

    async def indicators(self, query: api.IndicatorQuery) -> api.IndicatorList:
        """One page of published tables."""
        return await self.request(
            "GET", "/v1/indicators", api.IndicatorList, params=query_params(query)
        )

    async def all_indicators(
        self, query: api.IndicatorQuery, *, max_pages: int = 20
    ) -> api.IndicatorList:
        """Every page of published tables (``next`` set only if ``max_pages`` were not enough)."""
        page = await self.indicators(query)
        items = list(page.items)
        for _ in range(max_pages - 1):
            if page.next is None:
                break
            page = await self.indicators(msgspec.structs.replace(query, cursor=page.next))
            items += page.items
        return api.IndicatorList(items=items, next=page.next)

    async def preview_indicators(self, table: api.IndicatorPreviewIn) -> api.IndicatorPreview:
        return await self.request(
            "POST", "/v1/indicators/preview", api.IndicatorPreview, body=table
        )

    async def publish_indicators(self, table: api.IndicatorPublishIn) -> api.Published:
        return await self.request("POST", "/v1/indicators", api.Published, body=table)

    @contextlib.asynccontextmanager
    async def events(self) -> AsyncIterator[AsyncIterator[api.Event]]:
        """Open the SSE stream GET /v1/events; yields an async iterator of `api.Event`.

        Raises `NodeUnavailable` when the stream cannot be opened or breaks off (also when the
        node closes it: a node never ends it by itself), `ApiError` if the node refuses it.
        """
        timeout = aiohttp.ClientTimeout(
            total=None, connect=CONNECT_TIMEOUT, sock_read=EVENTS_READ_TIMEOUT
        )
        try:
            resp = await self.session.get(
                self.url + "/v1/events",
                timeout=timeout,
                headers={**self._auth, "Accept": "text/event-stream"},
            )
        except (aiohttp.ClientConnectionError, TimeoutError) as err:
            raise self._unavailable(err) from err
        try:
            if resp.status >= 400:
                raise _api_error(resp.status, await resp.read())
            yield self._read_events(resp)
        finally:
            resp.close()

    async def _read_events(self, resp: aiohttp.ClientResponse) -> AsyncIterator[api.Event]:
        event_type = "message"
        data: list[bytes] = []
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    raise NodeUnavailable(self.url, "the node closed the event stream")
                line = line.rstrip(b"\r\n")
                if not line:
                    if event_type == "record" and data:
                        try:
                            event: api.Event | None = _event_decoder.decode(b"\n".join(data))
                        except msgspec.DecodeError:
                            event = None  # a newer node's event this client cannot read
                        if event is not None:
                            yield event
                    event_type, data = "message", []
                elif line.startswith(b":"):
                    continue
                else:
                    name, _, value = line.partition(b":")
                    value = value.removeprefix(b" ")
                    if name == b"event":
                        event_type = value.decode("utf-8", "replace")
                    elif name == b"data":
                        data.append(value)
        except (
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
            TimeoutError,
            ValueError,  # a line longer than the reader's limit
        ) as err:
            raise self._unavailable(err) from err


def _api_error(status: int, payload: bytes) -> ApiError:
    try:
        detail = _error_decoder.decode(payload).error
    except msgspec.DecodeError:
        text = payload[:200].decode("utf-8", "replace").strip() or "no details"
        return ApiError(status, "http_error", f"the node answered {status}: {text}")
    return ApiError(status, detail.code, detail.message, detail.field)
