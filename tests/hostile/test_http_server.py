"""The HTTP server against slow, oversized and numerous clients, over real loopback sockets.

- slowloris: a client sending its request head a byte a second neither blocks anyone else nor
  keeps its connection: the server cuts it off at the header deadline;
- a body sent a byte a second gets 408 (JSON) at the body deadline, and nothing is stored;
- a body over ``max_body_bytes`` gets 413 (JSON) whether its length is declared, lied about or
  chunked, and nothing is stored;
- a huge header line or too many headers are refused, and the server keeps serving;
- hundreds of idle connections at once do not stop other clients, and are closed at the deadline.

No test asserts a duration: each checks what the server did before the slow client finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from .conftest import MAX_BODY, Served

pytestmark = pytest.mark.slow

PRACTICE = {
    "addr": "welcome-desk",
    "title": {"en": "Welcome desk"},
    "summary": {"en": "One door."},
    "status": "active",
    "sectors": ["HOUSING"],
    "contact": {"role_mailbox": "welcome@mechelen.example.org"},
}


async def _open(served: Served) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(served.host, served.port)


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> int:
    """Send ``data`` a byte at a time; return how many bytes went out before the peer closed."""
    sent = 0
    try:
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            sent += 1
            await asyncio.sleep(every)
    except (ConnectionResetError, BrokenPipeError):
        pass
    return sent


async def _read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent before it closed, even if the close was a reset (the server
    resets a connection that keeps sending after its answer; what arrived first still counts)."""
    chunks: list[bytes] = []
    try:
        while chunk := await reader.read(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _head(served: Served, method: str, path: str, extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: {served.host}\r\n"
        f"Authorization: Bearer {served.token}\r\n{extra}"
    ).encode()


async def test_slowloris_head_is_cut_off_and_blocks_no_one(served: Served) -> None:
    head = _head(served, "GET", "/v1/status", "X-Padding: " + "a" * 60 + "\r\n") + b"\r\n"
    reader, writer = await _open(served)
    trickle = asyncio.create_task(_trickle(writer, head, every=1.0))
    # Meanwhile other clients are served, one after another and together.
    for _ in range(3):
        status, _ = await served.request("GET", "/healthz")
        assert status == 200
    results = await asyncio.gather(*(served.request("GET", "/v1/status") for _ in range(20)))
    assert all(status == 200 for status, _ in results)
    # The server closes the connection before the head is complete, answering nothing (or
    # a 408 at most): the slow client never got its request served.
    answer = await asyncio.wait_for(_read_all(reader), 60)
    sent = await asyncio.wait_for(trickle, 60)
    writer.close()
    assert sent < len(head), "the server waited for the whole slow head"
    assert b"200 OK" not in answer
    status, _ = await served.request("GET", "/healthz")
    assert status == 200


async def test_slow_body_gets_408_and_nothing_is_stored(served: Served) -> None:
    before = served.practices()
    data = json.dumps(PRACTICE).encode()
    head = _head(
        served,
        "POST",
        "/v1/practices",
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n",
    )
    reader, writer = await _open(served)
    writer.write(head)
    await writer.drain()
    trickle = asyncio.create_task(_trickle(writer, data, every=1.0))
    status, _ = await served.request("GET", "/healthz")  # not blocked by the slow body
    assert status == 200
    answer = await asyncio.wait_for(_read_all(reader), 60)
    trickle.cancel()
    await asyncio.gather(trickle, return_exceptions=True)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["message"]
    assert served.practices() == before
    status, payload = await served.request("POST", "/v1/practices", json=PRACTICE)
    assert status == 201, payload


@pytest.mark.parametrize("how", ["declared", "lying-length", "chunked"])
async def test_oversize_body_is_413_json_and_nothing_stored(served: Served, how: str) -> None:
    before = served.practices()
    big = json.dumps({**PRACTICE, "description": "x" * (MAX_BODY * 2)}).encode()
    if how == "declared":
        status, payload = await served.request(
            "POST", "/v1/practices", data=big, headers={"Content-Type": "application/json"}
        )
    elif how == "chunked":

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        status, payload = await served.request(
            "POST", "/v1/practices", data=chunks(), headers={"Content-Type": "application/json"}
        )
    else:
        # Declares 10 GB and sends a few bytes: refused on the declared length, without waiting.
        head = _head(
            served,
            "POST",
            "/v1/practices",
            "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
        )
        reader, writer = await _open(served)
        writer.write(head + b"{}")
        await writer.drain()
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        rest = await asyncio.wait_for(reader.read(4096), 30)
        writer.close()
        status = int(answer.split(b" ", 2)[1])
        payload = json.loads(rest)
    assert status == 413, payload
    assert payload["error"]["code"] == "too_large"
    assert served.practices() == before


async def test_huge_header_and_too_many_headers_are_refused(served: Served) -> None:
    for extra in (
        "X-Huge: " + "a" * 100_000 + "\r\n",
        "".join(f"X-{i}: v\r\n" for i in range(500)),
    ):
        reader, writer = await _open(served)
        writer.write(_head(served, "GET", "/v1/status", extra) + b"\r\n")
        with contextlib.suppress(ConnectionResetError):
            await writer.drain()
        answer = await asyncio.wait_for(_read_all(reader), 30)
        writer.close()
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
        if answer:
            assert answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:200]
    status, _ = await served.request("GET", "/v1/status")
    assert status == 200


async def test_many_idle_connections_do_not_stop_the_server(served: Served) -> None:
    idle = await asyncio.gather(*(_open(served) for _ in range(300)))
    # Every idle one is half-way through a request head.
    for _, writer in idle:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    results = await asyncio.gather(*(served.request("GET", "/v1/status") for _ in range(50)))
    assert all(status == 200 for status, _ in results)
    # The server closes every idle connection at the header deadline (none gets an answer).
    answers = await asyncio.wait_for(asyncio.gather(*(_read_all(reader) for reader, _ in idle)), 60)
    assert all(b"200 OK" not in a for a in answers)
    for _, writer in idle:
        writer.close()
    status, _ = await served.request("GET", "/healthz")
    assert status == 200


async def test_a_documented_query_of_full_length_reaches_the_api(served: Served) -> None:
    """A retraction reason of 1,000 four-byte characters (the document's maxLength) is 12,000
    bytes percent-encoded: over aiohttp's default request line (8,190), which it refused with a
    plain-text 400 before any handler ran (found by schemathesis' stateful phase). It reaches
    the API now, and the answer is JSON. One character more is refused by the API, in JSON."""
    status, payload = await served.request("POST", "/v1/practices", json=PRACTICE)
    assert status == 201, payload
    ref = payload["ref"]
    for reason, expected in (("\U0001f3e0" * 1001, 400), ("\U0001f3e0" * 1000, 200)):
        status, payload = await served.request(
            "DELETE", f"/v1/practices/{ref}", params={"reason": reason}
        )
        assert status == expected, payload
        assert isinstance(payload, dict), payload  # JSON, not aiohttp's plain text
    assert payload["kind"] == "retraction"
    status, payload = await served.request("GET", f"/v1/practices/{ref}")
    assert status == 404, payload
