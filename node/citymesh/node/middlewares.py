"""Authentication and error translation, once, for every route.

Every error leaves as ``{"error": {"code", "message", "field"}}`` with a 4xx status for bad input.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from citymesh.protocol import api
from citymesh.protocol.errors import ProtocolError

from .daemon import NotReadyError, RateLimitedError
from .errors import ApiError
from .keys import BODY_TIMEOUT, MAX_BODY, TOKEN
from .sync_routes import SYNC_PATHS

log = logging.getLogger("citymesh.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PATHS = frozenset({"/healthz"}) | SYNC_PATHS
"""No token: liveness, and the read-only sync routes for peers (signed public records)."""
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = api.ErrorResponse(error=api.ErrorDetail(code=code, message=message, field=field))
    return web.Response(
        status=status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProtocolError as err:
        # Input that matches the OpenAPI document but breaks a rule it can only state in words
        # (an identity's checksum, a cursor this node did not issue for the query, a record the
        # protocol refuses once encoded): 422. What the document states is checked first (400).
        detail = api.error_detail(err)
        return error_response(422, detail.code, detail.message, detail.field)
    except msgspec.DecodeError as err:
        detail = api.error_detail(err)
        return error_response(400, detail.code, detail.message, detail.field)
    except ApiError as err:
        return error_response(err.status, err.code, err.message, err.field)
    except NotReadyError as err:
        return error_response(503, "not_ready", str(err), headers={"Retry-After": "5"})
    except RateLimitedError as err:
        return error_response(
            429, "rate_limited", str(err), headers={"Retry-After": str(err.retry_after_s)}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _STATUS_CODES.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason, headers=_keep_headers(exc))
    except Exception:
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; see the node log")


def _keep_headers(exc: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}


BODY_TIMEOUT_S = 30.0


@web.middleware
async def body_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Read the whole body, within the size limit and a deadline, before any handler runs.

    A declared length over the limit is refused before reading (413); a body that does not
    arrive within `BODY_TIMEOUT` seconds (a client sending a byte a second) gets 408 and the
    connection is closed. Handlers then read the buffered body.
    """
    if not request.body_exists:
        return await handler(request)
    if (request.content_length or 0) > request.app[MAX_BODY]:
        raise web.HTTPRequestEntityTooLarge(
            max_size=request.app[MAX_BODY], actual_size=request.content_length or 0
        )
    try:
        async with asyncio.timeout(request.app[BODY_TIMEOUT]):
            await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            reason="the request body did not arrive in time", headers={"Connection": "close"}
        ) from None
    return await handler(request)


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    expected = request.app[TOKEN]
    # Compare bytes: compare_digest refuses str with non-ASCII characters (a 500, not a 401).
    given = token.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected.encode()):
        return error_response(
            401,
            "unauthorized",
            "missing or wrong bearer token (see <home>/api.token)",
            headers={"WWW-Authenticate": 'Bearer realm="citymesh"'},
        )
    return await handler(request)
