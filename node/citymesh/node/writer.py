"""The single writer: every store call runs on one dedicated thread, off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from .store import Store

P = ParamSpec("P")
T = TypeVar("T")


class Writer:
    def __init__(self, path: Path) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="citymesh-writer")
        self._path = path
        self.store: Store | None = None

    async def open(self) -> Store:
        loop = asyncio.get_running_loop()
        self.store = await loop.run_in_executor(self._pool, Store, self._path)
        return self.store

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        if self.store is not None:
            await self.run(self.store.close)
            self.store = None
        self._pool.shutdown(wait=True)
