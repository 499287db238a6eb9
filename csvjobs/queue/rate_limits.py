"""Rate limits kept in PostgreSQL (sql/rate_limits.sql), so that every worker on every machine obeys the same
requests-per-minute and images-per-minute, and a 429 seen by one pauses them all."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from csvjobs import db
from csvjobs.queue import queries

DatabaseCall = Callable[[Callable[[db.AsyncConnection], Awaitable[Any]]], Awaitable[Any]]


class DatabaseRateLimiter:
    """Rate limits kept in PostgreSQL (acquire_csv_rate_limit), shared by every worker on every machine."""

    def __init__(self, run: DatabaseCall) -> None:
        # run: the worker's way to run an operation on its connection, riding out database outages.
        self._run = run

    async def acquire(self, key: str, per_minute: float) -> None:
        """Reserve a slot and wait for it; a pause that began meanwhile (a 429 elsewhere) holds us too."""
        while True:
            wait = await self._run(functools.partial(queries.acquire_rate, key=key, per_minute=per_minute))
            if wait > 0:
                await asyncio.sleep(wait)
            paused = await self._run(functools.partial(queries.rate_pause_remaining, key=key))
            if paused <= 0:
                return
            await asyncio.sleep(paused)

    async def pause(self, key: str, seconds: float) -> None:
        """Hold every worker's calls on key."""
        await self._run(functools.partial(queries.pause_rate, key=key, seconds=seconds))
