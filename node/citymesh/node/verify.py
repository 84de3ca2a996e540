"""Signature verification in a thread pool: libsodium releases the GIL, so N cores verify N-fold.

Relay ingest only checks signatures here (`Verifier.check`) and decodes on the writer thread
(`Store.ingest_signed`): decoding holds the GIL, and while the verify
threads held it the writer waited for it after every statement (in a catch-up the writer took
twice as long per record next to one thread decoding)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from citymesh.protocol.envelope import Signed, check_signature, open_envelope
from citymesh.protocol.errors import ProtocolError
from citymesh.protocol.records import Record

Verified = tuple[list[Record], Counter[str]]
Checked = tuple[list[Signed], Counter[str]]


def verify_chunk(envelopes: list[bytes], now_ms: int) -> Verified:
    """Open every envelope; valid records in input order, rejections counted by error code."""
    ok: list[Record] = []
    rejected: Counter[str] = Counter()
    for data in envelopes:
        try:
            ok.append(open_envelope(data, now_ms=now_ms))
        except ProtocolError as err:
            rejected[err.code] += 1
    return ok, rejected


def check_chunk(envelopes: list[bytes]) -> Checked:
    """Check every envelope's signature; the signed ones in input order, rejections counted."""
    ok: list[Signed] = []
    rejected: Counter[str] = Counter()
    for data in envelopes:
        try:
            ok.append(check_signature(data))
        except ProtocolError as err:
            rejected[err.code] += 1
    return ok, rejected


class Verifier:
    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 2
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="citymesh-verify")

    async def verify(self, envelopes: list[bytes], now_ms: int) -> Verified:
        if not envelopes:
            return [], Counter()
        loop = asyncio.get_running_loop()
        size = max(1, -(-len(envelopes) // self.workers))
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self.pool, verify_chunk, envelopes[i : i + size], now_ms)
                for i in range(0, len(envelopes), size)
            )
        )
        records: list[Record] = []
        rejected: Counter[str] = Counter()
        for ok, bad in parts:
            records.extend(ok)
            rejected.update(bad)
        return records, rejected

    async def check(self, envelopes: list[bytes]) -> Checked:
        """Signatures only, on the pool (see the module's doc)."""
        if not envelopes:
            return [], Counter()
        loop = asyncio.get_running_loop()
        size = max(1, -(-len(envelopes) // self.workers))
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(self.pool, check_chunk, envelopes[i : i + size])
                for i in range(0, len(envelopes), size)
            )
        )
        signed: list[Signed] = []
        rejected: Counter[str] = Counter()
        for ok, bad in parts:
            signed.extend(ok)
            rejected.update(bad)
        return signed, rejected

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
