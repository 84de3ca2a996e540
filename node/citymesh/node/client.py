"""A small synchronous client of a node's HTTP API, for the CLI (the TUI has its own, async)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TypeVar

import msgspec

from citymesh.protocol import api

from .config import Home, NodeConfig

T = TypeVar("T")


class ClientError(Exception):
    """The node refused a request or cannot be reached; the message is one line for a person."""

    def __init__(self, message: str, *, code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def base_url(config: NodeConfig) -> str:
    host, _, port = config.listen.rpartition(":")
    if host in ("0.0.0.0", "::", "[::]", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


class NodeClient:
    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def for_home(cls, home: Home) -> NodeClient:
        config = home.load_config()
        return cls(home.running_url() or base_url(config), home.load_token())

    def request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        req = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                **({"Content-Type": "application/json"} if body is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                detail = msgspec.json.decode(raw, type=api.ErrorResponse).error
            except msgspec.DecodeError:
                raise ClientError(
                    f"node answered {err.code}: {raw[:200]!r}", status=err.code
                ) from None
            where = f" ({detail.field})" if detail.field else ""
            raise ClientError(
                f"{detail.code}: {detail.message}{where}", code=detail.code, status=err.code
            ) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            raise ClientError(
                f"cannot reach the node at {self.url} ({reason}); is `citymesh node run` running?"
            ) from None

    def get(self, path: str, type_: type[T], params: dict[str, Any] | None = None) -> T:
        if params:
            clean = {k: v for k, v in params.items() if v not in (None, "")}
            if clean:
                path += "?" + urllib.parse.urlencode(clean)
        return msgspec.json.decode(self.request("GET", path), type=type_)

    def post(self, path: str, body: object, type_: type[T]) -> T:
        payload = body if isinstance(body, bytes) else msgspec.json.encode(body)
        return msgspec.json.decode(self.request("POST", path, payload), type=type_)


def pretty(value: object) -> str:
    return json.dumps(msgspec.to_builtins(value), indent=2, ensure_ascii=False)
