"""What a worker process's two loops share (the synchronous loop, worker.py, and the Batch API submission loop,
submission_loop.py): its database connections and db_call, the buffers of results and log lines and the side
tasks that write them, heartbeats, wake-ups on new jobs, the stop state, redaction of secrets, and a monitor
that stops the worker when a side task dies. Neither loop knows of the other; both know this."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from csvjobs import db, metrics, tracing
from csvjobs.config import Settings
from csvjobs.errors import DatabaseError
from csvjobs.models import ClaimedRow, LogLevel, RowResult, RowStatus, WorkerStatus
from csvjobs.queue import queries
from csvjobs.redact import redact, redact_json
from csvjobs.storage.contract import Storage
from csvjobs.storage.registry import open_storage

T = TypeVar("T")
# A worker's exit code when the whole pool must stop (the provider refused the account, key or model; the database
# is newer than this code): the supervisor stops every worker and says why, once, instead of restarting them.
EXIT_POOL_STOPS = 4


class WorkerConfig(BaseModel):
    """What one worker process is to do (its timings and limits come from settings); pickled to the child."""

    database_url: str
    settings: Settings
    worker_id: str = ""
    worker_suffix: str = ""
    concurrency: int = 1
    batch_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    until_done: bool = False
    provider: str = "offline"
    parent_pid: int | None = None


def make_worker_id(pid: int | None = None, suffix: str | None = None) -> str:
    """host-pid-random: unique across machines, and readable in `csvjobs workers`."""
    return f"{socket.gethostname()}-{pid or os.getpid()}-{suffix or uuid.uuid4().hex[:6]}"


def say(message: str) -> None:
    """One line on stderr (the supervisor's terminal)."""
    print(message, file=sys.stderr, flush=True)


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins when it asks for longer."""
    delay = random.uniform(0, min(cap, base * 2**attempt))
    return max(delay, retry_after) if retry_after is not None else delay


class SchemaNewerError(Exception):
    """The database has moved on from this code (a function it calls is gone): stop, do not restart."""


@dataclass
class Stats:
    """What this worker did, for its heartbeats (and how many round trips it took, for tests and benchmarks)."""

    processed: int = 0
    failed: int = 0
    lost: int = 0
    claims: int = 0  # claims that got rows
    reports: int = 0  # reports of finished rows that landed


@dataclass
class _Lane:
    """One database connection of a worker, used by one operation at a time."""

    conn: db.AsyncConnection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_OUTCOMES = {RowStatus.COMPLETED: "completed", RowStatus.FAILED: "failed", RowStatus.PENDING: "retried"}


def outcome(result: RowResult) -> str:
    """What a result does to its row, as metrics and traces name it: completed, failed or retried."""
    return _OUTCOMES.get(result.status, str(result.status))


def _count_landed(results: list[RowResult], rows: list[queries.ReportedRow]) -> None:
    """The reported rows whose results the database took, in the pool's metrics."""
    taken = {row.job_id for row in rows if row.applied}
    metrics.rows_finished(
        metrics.FinishedRow(outcome(result), result.processing_time_seconds,
                            result.cost_usd if result.status is RowStatus.COMPLETED else None,
                            result.generated_images or (), bool(result.usage and "reuses_row" in result.usage))
        for result in results if result.job_id in taken)


class WorkerRuntime:
    """The shared state and side tasks of one worker process."""

    def __init__(self, config: WorkerConfig, storage: Storage | None = None) -> None:
        self.config = config
        self.settings = config.settings
        self.storage = storage if storage is not None else open_storage(config.settings)
        self.stats = Stats()
        key = config.settings.openai_api_key
        self.secrets = [key.get_secret_value()] if key is not None else []
        # Two connections: claims, checkpoints and everything else in order on one; reports of finished rows on
        # the other, so that a report and the next claim are in flight at once (a row's checkpoints are saved
        # before it finishes, so they still come before its report).
        self._main = _Lane()
        self._reports = _Lane()
        self.running: dict[int, asyncio.Task[None]] = {}  # rows being processed, by job id
        self.unreported: dict[int, ClaimedRow] = {}  # rows this worker holds whose result has not landed
        self._results: list[RowResult] = []
        self._logs: list[dict[str, Any]] = []
        self.wake = asyncio.Event()  # new jobs, a finished row, a landed report: the claim loop looks again
        self._report_now = asyncio.Event()
        self.stopping = False
        self.hard_stop = asyncio.Event()
        self._resync = False
        self.fatal: str | None = None
        self._side_tasks: list[asyncio.Task[None]] = []
        self._batches: dict[uuid.UUID, queries.BatchInfo] = {}
        self._row_traces: dict[int, Any] = {}  # finished rows' trace spans, for their report's links

    # --- messages -------------------------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """One line on stderr, naming this worker, with any secret removed."""
        say(f"worker {self.config.worker_id}: {redact(message, self.secrets)}")

    def log_row(self, job: ClaimedRow, level: LogLevel, operation: str, message: str,
                details: dict[str, Any]) -> None:
        """Queue a log line about one row (written with the next report), with any secret removed."""
        self._logs.append({"batch_id": str(job.batch_id), "row_job_id": job.job_id, "row_number": job.row_number,
                           "log_level": level.value, "message": redact(message, self.secrets),
                           "operation": operation, "details": redact_json(details, self.secrets)})

    def log_batch(self, batch_id: uuid.UUID, operation: str, message: str, details: dict[str, Any]) -> None:
        """Queue a log line about a batch (not one row), with any secret removed, and write it soon."""
        self._logs.append({"batch_id": str(batch_id), "log_level": LogLevel.INFO.value,
                           "message": redact(message, self.secrets), "operation": operation,
                           "details": redact_json(details, self.secrets)})
        self._report_now.set()

    # --- stopping -------------------------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """First call: stop claiming and finish what is in flight. Second call: let go at once."""
        if self.stopping:
            self.hard_stop.set()
        self.stopping = True
        self.wake.set()

    def let_go(self) -> None:
        """Stop at once: rows in flight go back to pending without counting a retry."""
        self.stopping = True
        self.hard_stop.set()
        self.wake.set()

    def stop_pool(self, reason: str) -> None:
        """No row can succeed (the provider refused the key or model; the database is newer than this code): this
        worker lets go, and its exit code tells the supervisor to stop the whole pool with this reason."""
        if self.fatal is None:
            self.fatal = redact(reason, self.secrets)
        self.let_go()

    # --- database access, with reconnection -----------------------------------------------------------------------

    async def _connect(self, lane: _Lane) -> db.AsyncConnection:
        conn = await db.connect_async(self.config.database_url, application_name="csvjobs-worker")
        await db.become_service_session(conn)
        if lane is self._main and self.settings.async_claims:
            await queries.use_quick_claims(conn)
        if self._resync and lane is self._main:
            # Claims whose answer was lost with the old connection would otherwise stay held by this live worker.
            await queries.release_held_rows(conn, worker_id=self.config.worker_id, count_retry=False,
                                            keep=list(self.unreported))
            await self._drop_lost_claims(conn)
            self._resync = False
        return conn

    async def _drop_lost_claims(self, conn: db.AsyncConnection) -> None:
        """Stop working on rows the database no longer gives this worker: a claim the server forgot in a crash
        (quick claims, sql/claim.sql) or on a failover. The row is pending again, and this worker may claim it
        again with the same attempt; the old task must not run beside the new one."""
        running = list(self.running)
        if not running:
            return
        held = {job.job_id for job in await queries.held_rows(conn, job_ids=running,
                                                               holder=self.config.worker_id)}
        for job_id in running:
            task = self.running.get(job_id)
            if job_id in held or task is None:
                continue
            del self.running[job_id]
            self.unreported.pop(job_id, None)
            task.cancel()
            self.stats.lost += 1
            self.say(f"row job {job_id} is no longer claimed by this worker (the database forgot the claim); "
                     "dropping it")

    # Written by hand rather than with psycopg_pool: each of this process's two connections serves one operation
    # at a time, under a lock, so that its claims and checkpoints stay in order. A pool would still need this
    # retry loop (a pool replaces a broken connection but does not retry the operation that broke), and its
    # reconnect policy gives up after reconnect_timeout (5 minutes by default), while a worker must outlast any
    # outage and then resync its claims (see _connect).
    async def db_call(self, operation: Callable[[db.AsyncConnection], Awaitable[T]], *, give_up: bool = False,
                      reports: bool = False) -> T:
        """Run one database operation (on the reports connection if asked), reconnecting with backoff while the
        database is away. A function the database no longer has means it was upgraded past this code: the pool
        stops (SchemaNewerError) rather than failing every row."""
        lane = self._reports if reports else self._main
        attempt = 0
        while True:
            try:
                async with lane.lock:
                    if lane.conn is None or lane.conn.closed:
                        lane.conn = await self._connect(lane)
                    return await operation(lane.conn)
            except Exception as exc:
                if db.is_missing_function(exc):
                    message = (f"the database at {db.describe_url(self.config.database_url)} was upgraded past "
                               f"this csvjobs ({db.first_line(exc)}); upgrade csvjobs on this machine")
                    self.stop_pool(message)
                    raise SchemaNewerError(message) from exc
                if not (db.is_retryable(exc) or isinstance(exc, DatabaseError)):
                    raise
                if lane.conn is not None:
                    with contextlib.suppress(Exception):
                        await lane.conn.close()
                    lane.conn = None
                    # A claim's answer may have been lost with it (a report is simply sent again).
                    self._resync = self._resync or lane is self._main
                if give_up and attempt >= 2:
                    raise
                delay = min(self.settings.backoff_cap_seconds, 0.5 * 2**attempt)
                self.say(f"database unavailable ({db.first_line(exc)}); retrying in {delay:.1f}s")
                attempt += 1
                await asyncio.sleep(delay)

    async def batch_info(self, batch_id: uuid.UUID) -> queries.BatchInfo:
        """A batch's channels and row estimate (read once per batch: they never change after the upload)."""
        if batch_id not in self._batches:
            self._batches[batch_id] = await self.db_call(functools.partial(queries.batch_info, batch_id=batch_id))
        return self._batches[batch_id]

    async def channels_of(self, batch_id: uuid.UUID) -> tuple[str, ...]:
        """A batch's sales channels."""
        return (await self.batch_info(batch_id)).channels

    def known_info(self, batch_id: uuid.UUID) -> queries.BatchInfo:
        """batch_info() for a batch already asked about (an empty one otherwise)."""
        return self._batches.get(batch_id) or queries.BatchInfo()

    # --- results --------------------------------------------------------------------------------------------------

    def finish(self, job: ClaimedRow, result: RowResult, trace: Any = None) -> None:
        """A row this worker holds is done: queue its result for the next report (whose trace span links to the
        row's, trace, when tracing is on)."""
        self._results.append(result)
        if trace is not None:
            self._row_traces[job.job_id] = trace
        self.running.pop(job.job_id, None)
        self._report_now.set()
        self.wake.set()

    def forget(self, job_ids: list[int]) -> None:
        """Rows this worker claimed and handed on (to a submission): no longer its to report."""
        for job_id in job_ids:
            self.unreported.pop(job_id, None)

    def flush_soon(self) -> None:
        """Write queued log lines (and results) with the next report."""
        self._report_now.set()

    async def report_for(self, holder: str, results: list[RowResult]) -> None:
        """Report results of rows a submission holds, now (not through the buffer: the caller's next step
        depends on them having landed)."""
        if results:
            worker_id = self.config.worker_id
            rows = await self.db_call(functools.partial(queries.report_results, worker_id=worker_id, holder=holder,
                                                        results=results))
            _count_landed(results, rows)

    async def flush(self, give_up: bool = False) -> None:
        """Write the queued log lines and results in one transaction."""
        if not self._results and not self._logs:
            return
        results, self._results = self._results, []
        logs, self._logs = self._logs, []
        worker_id = self.config.worker_id
        links = [self._row_traces.pop(result.job_id, None) for result in results] if self._row_traces else []
        try:
            with tracing.report_span(len(results), links):
                rows = await self.db_call(functools.partial(queries.report_results, worker_id=worker_id,
                                                            holder=worker_id, results=results, logs=logs),
                                          give_up=give_up, reports=True)
        except Exception:
            self._results = results + self._results
            self._logs = logs + self._logs
            raise
        if rows:
            self.stats.reports += 1
            self.wake.set()  # the claim loop may wait for held rows to be reported (or, at the end, to exit)
        _count_landed(results, rows)
        for row in rows:
            self.unreported.pop(row.job_id, None)
            if not row.applied:
                self.stats.lost += 1
                self.say(f"row job {row.job_id} was reclaimed by another worker; its result was dropped")

    # --- side tasks -----------------------------------------------------------------------------------------------

    def start_side_tasks(self, extra: dict[str, Coroutine[Any, Any, None]] | None = None) -> None:
        """Start heartbeats, the reporter and the job listener (and any extra loop), each watched by the monitor."""
        tasks = {"heartbeat": self._heartbeat_loop(), "reporter": self._reporter_loop(),
                 "listener": self._listen_loop(), **(extra or {})}
        for name, coroutine in tasks.items():
            task = asyncio.create_task(coroutine, name=name)
            task.add_done_callback(functools.partial(self._side_task_ended, name))
            self._side_tasks.append(task)

    def _side_task_ended(self, name: str, task: asyncio.Task[None]) -> None:
        """The monitor: a side task must run until the worker stops. One that dies (a heartbeat that no longer
        beats would get this worker's rows taken by cleanup while it works on them) stops the worker."""
        if task.cancelled() or self.stopping:
            return
        exc = task.exception()
        if isinstance(exc, SchemaNewerError):
            return  # stop_pool said why
        self.say(f"its {name} task stopped ({type(exc).__name__ if exc else 'ended'}: {exc}); the worker stops and "
                 "its rows in flight go back to pending")
        self.request_stop()

    async def stop_side_tasks(self) -> None:
        """Cancel the side tasks and wait for them."""
        for task in self._side_tasks:
            task.cancel()
        await asyncio.gather(*self._side_tasks, return_exceptions=True)

    async def heartbeat(self, status: WorkerStatus) -> None:
        """Tell the database this worker is alive (registering it on the first call)."""
        cfg = self.config
        was_stopped = await self.db_call(functools.partial(
            queries.heartbeat, worker_id=cfg.worker_id, status=status, running=len(self.running),
            processed=self.stats.processed + self.stats.failed, failed=self.stats.failed,
            concurrency=cfg.concurrency, user_id=cfg.user_id, batch_id=cfg.batch_id, hostname=socket.gethostname(),
            pid=os.getpid()), give_up=status is WorkerStatus.STOPPED)
        if was_stopped:
            self.say("cleanup declared this worker dead while it was silent; its rows were released and will be "
                     "processed again")

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            parent = self.config.parent_pid
            if parent is not None and os.getppid() != parent:
                self.say("the supervisor is gone; stopping")
                self.request_stop()
            await self.heartbeat(WorkerStatus.PROCESSING if self.running else WorkerStatus.IDLE)

    async def _reporter_loop(self) -> None:
        while True:
            await self._report_now.wait()
            self._report_now.clear()
            if len(self._results) < self.settings.report_batch_size and not self.stopping:
                # Let more rows finish so that one transaction reports several: a report costs the database about
                # as much for one row as for a dozen. (Also when no row runs at this moment: the claim loop is
                # usually starting more, which finish within the delay when rows are quick.)
                await asyncio.sleep(self.settings.report_delay_seconds)
            try:
                await self.flush()
            except SchemaNewerError:
                raise
            except Exception as exc:  # a bug, not an outage (db_call rides those out): keep the results, try again
                self.say(f"reporting results failed: {exc!r}; retrying")
                await asyncio.sleep(1.0)
                self._report_now.set()

    async def _listen_loop(self) -> None:
        """Wake the claim loop on NOTIFY of new or released jobs, so idle workers never poll hard."""
        while True:
            try:
                conn = await db.connect_async(self.config.database_url, application_name="csvjobs-worker-listen")
                async with conn:
                    await db.listen_async(conn, queries.JOBS_CHANNEL)
                    self.wake.set()  # something may have arrived while we were not listening
                    async for _ in conn.notifies():
                        self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database went away: the claim loop says so; listen again later
                await asyncio.sleep(2.0)

    # --- the end --------------------------------------------------------------------------------------------------

    async def close(self, release: Callable[[db.AsyncConnection], Awaitable[None]]) -> None:
        """The last words: write what is queued, release what this worker holds (release), say it stopped, and
        close the connections. A database that is gone by now leaves that to `csvjobs cleanup`."""
        try:
            await self.flush(give_up=True)
            await self.db_call(release, give_up=True)
            await self.heartbeat(WorkerStatus.STOPPED)
        except Exception as exc:
            self.say(f"could not report its last state ({db.first_line(exc)}); `csvjobs cleanup` will release its "
                     "rows")
        finally:
            for lane in (self._main, self._reports):
                if lane.conn is not None:
                    await lane.conn.close()
