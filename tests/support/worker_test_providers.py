"""Providers that misbehave on purpose, loaded by the worker pool as --provider worker_test_providers:NAME."""

from __future__ import annotations

import asyncio
from typing import Any

from csvjobs.providers.contract import PermanentError, RowContext, RowOutcome, TransientError
from csvjobs.providers.noop import NoopProvider


class _Scripted(NoopProvider):
    def __init__(self, behaviour: Any) -> None:
        super().__init__(0.0)
        self.behaviour = behaviour
        self.calls: dict[int, int] = {}

    async def process(self, ctx: RowContext) -> RowOutcome:
        n = self.calls[ctx.job.job_id] = self.calls.get(ctx.job.job_id, 0) + 1
        self.behaviour(ctx.job.row_number, n)
        await asyncio.sleep(0)
        return await super().process(ctx)


def _explode(row: int, _call: int) -> None:
    if row % 2 == 0:
        raise PermanentError(f"content policy violation on row {row}")
    raise RuntimeError(f"kaboom on row {row}")


def exploding(settings: Any) -> _Scripted:
    """Even rows fail permanently; odd rows raise an unexpected error every time."""
    return _Scripted(_explode)


def _flaky(_row: int, call: int) -> None:
    if call <= 2:
        raise TransientError("HTTP 503 from the provider", retry_after=0.05)


def flaky(settings: Any) -> _Scripted:
    """Every row fails twice with a transient error, then succeeds."""
    return _Scripted(_flaky)


class _Counting(NoopProvider):
    """Sleeps like noop:0.1 and keeps, in files named by CSVJOBS_TEST_COUNT_FILE, how many rows every worker
    process of the pool is processing at this moment and the most there ever were (under an exclusive lock)."""

    def __init__(self, path: str) -> None:
        super().__init__(0.1)
        self.path = path

    def _add(self, delta: int) -> None:
        import fcntl
        import os

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            text = os.read(fd, 100).decode() or "0 0"
            now, peak = (int(v) for v in text.split())
            now += delta
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{now} {max(now, peak)}".encode())
        finally:
            os.close(fd)

    async def process(self, ctx: RowContext) -> RowOutcome:
        self._add(1)
        try:
            return await super().process(ctx)
        finally:
            self._add(-1)


def counting(settings: Any) -> _Counting:
    """noop:0.1 that counts the rows being processed at once across the pool's processes."""
    import os

    return _Counting(os.environ["CSVJOBS_TEST_COUNT_FILE"])
