"""Signature verification in a thread pool: libsodium releases the GIL, so N cores verify N-fold.

Relay ingest only checks signatures here (`Verifier.check`) and decodes on the writer thread
(`Store.ingest_signed`): decoding holds the GIL, and while the verify
threads held it the writer waited for it after every statement (in a catch-up the writer took
twice as long per record next to one thread decoding)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from citymesh.protocol.envelope import Signed, check_signature, decode_signed, open_envelope
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.records import Record

S = TypeVar("S")
T = TypeVar("T")
Verified = tuple[list[Record], Counter[str]]
Checked = tuple[list[Signed], Counter[str]]


def _each(open_one: Callable[[S], T], items: list[S]) -> tuple[list[T], Counter[str]]:
    """``open_one`` on every item: what it returns in input order, refusals counted by code."""
    ok: list[T] = []
    rejected: Counter[str] = Counter()
    for item in items:
        try:
            ok.append(open_one(item))
        except ProtocolError as err:
            rejected[err.code] += 1
    return ok, rejected


def verify_chunk(envelopes: list[bytes], now_ms: int) -> Verified:
    """Open every envelope (signature and payload)."""
    return _each(partial(open_envelope, now_ms=now_ms), envelopes)


def check_chunk(envelopes: list[bytes]) -> Checked:
    """Check every envelope's signature only."""
    return _each(check_signature, envelopes)


def decode_chunk(signed: list[Signed], now_ms: int) -> Verified:
    """Decode envelopes whose signatures were checked (on the writer's thread)."""
    return _each(partial(decode_signed, now_ms=now_ms), signed)


class Verifier:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 2
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="citymesh-verify")

    async def verify(self, envelopes: list[bytes], now_ms: int) -> Verified:
        """Signatures checked and payloads decoded, on the pool (repair; not relay ingest)."""
        return await self._spread(partial(verify_chunk, now_ms=now_ms), envelopes)

    async def check(self, envelopes: list[bytes]) -> Checked:
        """Signatures only, on the pool (see the module's doc)."""
        return await self._spread(check_chunk, envelopes)

    async def _spread(
        self, work: Callable[[list[bytes]], tuple[list[T], Counter[str]]], envelopes: list[bytes]
    ) -> tuple[list[T], Counter[str]]:
        """``work`` on one slice of the envelopes per worker; results in input order."""
        if not envelopes:
            return [], Counter()
        loop = asyncio.get_running_loop()
        size = max(1, -(-len(envelopes) // self.workers))
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self.pool, work, envelopes[i : i + size])
                for i in range(0, len(envelopes), size)
            )
        )
        out: list[T] = []
        rejected: Counter[str] = Counter()
        for ok, bad in parts:
            out.extend(ok)
            rejected.update(bad)
        return out, rejected

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
