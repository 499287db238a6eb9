"""One worker process: claim rows, process them concurrently on an asyncio loop, report results in sets,
send heartbeats, ride out database outages, and shut down cleanly (releasing what it could not finish)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import DatabaseError, JobLostError, PermanentError, ProviderAccessError, TransientError
from csvjobs.models import ClaimedJob, JobResult, JobStatus, LogLevel, WorkerStatus, trigger_text
from csvjobs.providers.contract import Provider, RowContext, redo_styles
from csvjobs.providers.redact import redact, redact_json
from csvjobs.providers.registry import load_provider
from csvjobs.queue import queries
from csvjobs.queue.rate_limits import DatabaseRateLimiter
from csvjobs.storage.registry import open_storage

if TYPE_CHECKING:
    from csvjobs.queue.openai_batches import OpenAIBatchDriver

T = TypeVar("T")
# A worker's exit code when the provider refused the account, key or model: the supervisor stops the whole pool.
EXIT_PROVIDER_REFUSED = 4


class WorkerConfig(BaseModel):
    """What one worker process is to do (its timings and limits come from settings); pickled to the child."""

    database_url: str
    settings: Settings
    instance_id: str = ""
    instance_suffix: str = ""
    concurrency: int = 1
    batch_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    until_done: bool = False
    provider: str = "offline"
    parent_pid: int | None = None


def make_instance_id(pid: int | None = None, suffix: str | None = None) -> str:
    """host-pid-random: unique across machines, and readable in `csvjobs workers`."""
    return f"{socket.gethostname()}-{pid or os.getpid()}-{suffix or uuid.uuid4().hex[:6]}"


def say(message: str) -> None:
    """One line on stderr (the supervisor's terminal)."""
    print(message, file=sys.stderr, flush=True)


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter; a server's Retry-After wins when it asks for longer."""
    delay = random.uniform(0, min(cap, base * 2**attempt))
    return max(delay, retry_after) if retry_after is not None else delay


@dataclass
class _Stats:
    processed: int = 0
    failed: int = 0
    lost: int = 0


@dataclass
class _Lane:
    """One database connection of a worker, used by one operation at a time."""

    conn: db.AsyncConnection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class Worker:
    """The worker loop of one process."""

    config: WorkerConfig
    provider: Provider | None = None
    stats: _Stats = field(default_factory=_Stats)

    def __post_init__(self) -> None:
        # Two connections: claims, checkpoints and everything else in order on one; reports of finished rows on
        # the other, so that a report and the next claim are in flight at once (a row's checkpoints are saved
        # before it finishes, so they still come before its report).
        self._main = _Lane()
        self._reports = _Lane()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._unreported: dict[int, ClaimedJob] = {}
        self._results: list[JobResult] = []
        self._logs: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._report_now = asyncio.Event()
        self._stopping = False
        self._hard_stop = asyncio.Event()
        self._resync = False
        self.storage = open_storage(self.config.settings)
        self.fatal: str | None = None
        self._driver: OpenAIBatchDriver | None = None
        key = self.config.settings.openai_api_key
        self.secrets = [key.get_secret_value()] if key is not None else []

    # --- database access, with reconnection -------------------------------------------------------------------

    async def _connect(self, lane: _Lane) -> db.AsyncConnection:
        conn = await db.connect_async(self.config.database_url, application_name="csvjobs-worker")
        await db.become_service_session(conn)
        if self._resync and lane is self._main:
            # Claims whose answer was lost with the old connection would otherwise stay held by this live worker.
            keep = list(self._unreported)
            await conn.execute(queries.RELEASE_SQL_KEEP, [self.config.instance_id, False, keep])
            self._resync = False
        return conn

    # Written by hand rather than with psycopg_pool: each of this process's two connections serves one operation
    # at a time, under a lock, so that its claims and checkpoints stay in order. A pool would still need this
    # retry loop (a pool replaces a broken connection but does not retry the operation that broke), and its
    # reconnect policy gives up after reconnect_timeout (5 minutes by default), while a worker must outlast any
    # outage and then resync its claims (see _connect). test_lost_database_connections_are_survived covers it.
    async def db_call(self, operation: Callable[[db.AsyncConnection], Awaitable[T]], *, give_up: bool = False,
                      reports: bool = False) -> T:
        """Run one database operation (on the reports connection if asked), reconnecting with backoff while the
        database is away."""
        lane = self._reports if reports else self._main
        attempt = 0
        while True:
            try:
                async with lane.lock:
                    if lane.conn is None or lane.conn.closed:
                        lane.conn = await self._connect(lane)
                    return await operation(lane.conn)
            except Exception as exc:
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
                delay = min(self.config.settings.backoff_cap_seconds, 0.5 * 2**attempt)
                say(f"worker {self.config.instance_id}: database unavailable ({db.first_line(exc)}); "
                    f"retrying in {delay:.1f}s")
                attempt += 1
                await asyncio.sleep(delay)

    # --- the loop ---------------------------------------------------------------------------------------------

    async def run(self) -> int:
        """Work until stopped (or, with until_done, until no work is left); returns the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGUSR1, self.let_go)
        if self.provider is None:
            self.provider = load_provider(self.config.provider, self.config.settings)
        await self._heartbeat(WorkerStatus.IDLE)
        helpers = [asyncio.create_task(self._heartbeat_loop()), asyncio.create_task(self._reporter_loop()),
                   asyncio.create_task(self._listen_loop())]
        # The openai SDK takes a second of CPU to import; a worker whose provider is not OpenAI's never loads it
        # (its module is loaded exactly when the provider is an OpenAIProvider).
        openai_provider = sys.modules.get("csvjobs.providers.openai")
        if openai_provider is not None and isinstance(self.provider, openai_provider.OpenAIProvider):
            from csvjobs.queue.openai_batches import OpenAIBatchDriver

            self._driver = OpenAIBatchDriver(self, self.provider)
            helpers.append(asyncio.create_task(self._driver.run()))
        elif await self.db_call(functools.partial(self._outstanding, mode="openai_batch")):
            say(f"worker {self.config.instance_id}: batches uploaded with --openai-batch are waiting; they go "
                "through OpenAI's Batch API, which needs the openai provider (this worker leaves them alone)")
        try:
            await self._claim_loop()
        finally:
            await self._shutdown(helpers)
        return EXIT_PROVIDER_REFUSED if self.fatal else 0

    def request_stop(self) -> None:
        """First call: stop claiming and finish what is in flight. Second call: let go at once."""
        if self._stopping:
            self._hard_stop.set()
        self._stopping = True
        self._wake.set()

    # --- what the OpenAI batch driver (openai_batches.py) uses ---------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether the worker is stopping (the driver starts nothing new)."""
        return self._stopping

    def say(self, message: str) -> None:
        """One line on stderr, naming this worker."""
        say(f"worker {self.config.instance_id}: {message}")

    def refuse(self, message: str) -> None:
        """The provider refused the key, account or model: the pool stops (see ProviderAccessError)."""
        if self.fatal is None:
            self.fatal = redact(message, self.secrets)  # the supervisor tells it, once for the whole pool
        self.let_go()

    def forget(self, job_ids: list[int]) -> None:
        """Rows this worker claimed and handed to an OpenAI batch submission: no longer its to report."""
        for job_id in job_ids:
            self._unreported.pop(job_id, None)

    def flush_soon(self) -> None:
        """Write queued log lines (and results) with the next report."""
        self._report_now.set()

    def log_batch(self, batch_id: uuid.UUID, operation: str, message: str, details: dict[str, Any]) -> None:
        """Queue a log line about a batch (not one row), with any secret removed."""
        self._logs.append({"batch_id": str(batch_id), "log_level": LogLevel.INFO.value,
                           "message": redact(message, self.secrets), "operation": operation,
                           "details": redact_json(details, self.secrets)})
        self._report_now.set()

    def let_go(self) -> None:
        """Stop at once: rows in flight go back to pending without counting a retry."""
        self._stopping = True
        self._hard_stop.set()
        self._wake.set()

    async def _claim_loop(self) -> None:
        cfg = self.config
        while not self._stopping:
            # Cleared before looking at the state, so a wake-up that arrives after the look is never lost.
            self._wake.clear()
            # A finished row stays held in the database until its report lands (on the other connection);
            # claiming goes on meanwhile, but never past four reports' worth of finished rows held (with one
            # report's worth, reports came smaller and the pool ran 10-15% slower).
            held = cfg.concurrency + 4 * cfg.settings.report_batch_size
            free = min(cfg.concurrency - len(self._running), held - len(self._unreported))
            if free <= 0:
                await self._wait(cfg.settings.poll_seconds)
                continue
            rows = await self.db_call(functools.partial(self.claim, limit=free))
            for job in rows:
                self._start(job)
            if rows:
                continue
            if cfg.until_done and not self._running and not self._unreported:
                outstanding = await self.db_call(self._outstanding)
                if outstanding == 0:
                    return
            await self._wait(cfg.settings.poll_seconds if not cfg.until_done else min(cfg.settings.poll_seconds, 1.0))

    async def _wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def claim(self, conn: db.AsyncConnection, limit: int, mode: str = "sync") -> list[ClaimedJob]:
        """Claim up to limit rows of batches in this processing mode, and start them."""
        cfg = self.config
        # One statement, so one round trip and no BEGIN/COMMIT of its own (a transaction would be three).
        cur = await conn.execute(queries.CLAIM_SQL, [cfg.instance_id, cfg.batch_id, cfg.settings.claim_timeout_minutes,
                                                     limit, cfg.user_id, mode])
        rows = await cur.fetchall()
        try:
            jobs = queries.parse_claims(rows)
        except Exception:
            # The claim has committed: give its rows back (every row this worker holds but does not know of).
            await conn.execute(queries.RELEASE_SQL_KEEP, [cfg.instance_id, False, list(self._unreported)])
            raise
        for job in jobs:
            self._unreported[job.job_id] = job
        return jobs

    async def _outstanding(self, conn: db.AsyncConnection, mode: str | None = None) -> int:
        if mode is None and self._driver is None:
            mode = "sync"  # without a driver, rows waiting on OpenAI are not this worker's to wait for
        cur = await conn.execute(queries.OUTSTANDING_SQL, [self.config.batch_id, self.config.user_id, mode])
        row = await cur.fetchone()
        return int(row["n"]) if row else 0

    def _start(self, job: ClaimedJob) -> None:
        task = asyncio.create_task(self._process(job))
        self._running[job.job_id] = task

    # --- one row ----------------------------------------------------------------------------------------------

    async def _process(self, job: ClaimedJob) -> None:
        started = time.monotonic()
        ctx = RowContext(job=job, storage=self.storage, log=self._step_logger(job),
                         save_checkpoint=lambda data: self._checkpoint(job, data),
                         rate_limiter=DatabaseRateLimiter(self.db_call), redo=self.prepare_redo(job))
        result: JobResult
        try:
            shares = job.product.get("reuse_of_row") and "regenerate" not in job.checkpoint
            reused = await self.reused(job) if shares else None
            if reused is not None:
                reused.processing_time_seconds = round(time.monotonic() - started, 3)
                self.stats.processed += 1
                self.finish(job, reused)
                return
            outcome = await self._with_retries(ctx)
            result = outcome.as_result(job)
            self.stats.processed += 1
        except PermanentError as exc:
            result = JobResult(job_id=job.job_id, attempt=job.attempt, status=JobStatus.FAILED,
                               error_message=redact(str(exc) or type(exc).__name__, self.secrets))
            self.stats.failed += 1
        except ProviderAccessError as exc:
            # Not this row's fault: every row would fail the same way. Stop the worker; the shutdown puts this
            # row and every other one in flight back to pending without counting a retry.
            if self.fatal is None:
                self.log_row(job, LogLevel.ERROR, "provider_refused", f"the pool stops: {exc}", {})
            self._running.pop(job.job_id, None)
            self.refuse(str(exc))
            return
        except JobLostError as exc:
            say(f"worker {self.config.instance_id}: {exc}; dropping it")
            self.stats.lost += 1
            self._running.pop(job.job_id, None)
            self._unreported.pop(job.job_id, None)
            self._wake.set()
            return
        except asyncio.CancelledError:
            self._running.pop(job.job_id, None)
            raise
        except Exception as exc:  # a transient error past its retries, or a bug in a provider: retry later
            message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TransientError) else str(exc)
            result = JobResult(job_id=job.job_id, attempt=job.attempt, status=JobStatus.PENDING,
                               error_message=redact(message, self.secrets)[:2000])
        result.processing_time_seconds = round(time.monotonic() - started, 3)
        self.finish(job, result)

    def prepare_redo(self, job: ClaimedJob) -> frozenset[str]:
        """The styles the merchant asked to redo: their saved image is forgotten (so it is made, and paid for,
        again) and the note, if any, is added to their saved prompt; everything else is reused."""
        styles = redo_styles(job.checkpoint)
        request = job.checkpoint.get("regenerate")
        if not styles or not isinstance(request, dict):
            return styles
        prompts = job.checkpoint.get("prompts")
        for style in styles:
            job.checkpoint.pop(f"image:{style}", None)
            note = (request.get(style) or {}).get("note")
            entry = prompts.get(style) if isinstance(prompts, dict) else None
            if note and isinstance(entry, dict) and isinstance(entry.get("prompt"), str):
                entry["prompt"] = f"{entry['prompt']} Changes the reviewer asked for: {note}"
        if styles:
            self.log_row(job, LogLevel.INFO, "images_redo", f"redoing {', '.join(sorted(styles))} at the "
                          "reviewer's request", {"request": request})
        return styles

    def finish(self, job: ClaimedJob, result: JobResult) -> None:
        self._results.append(result)
        self._running.pop(job.job_id, None)
        self._report_now.set()
        self._wake.set()

    async def reused(self, job: ClaimedJob) -> JobResult | None:
        """A variant that looks like an earlier row of its product: that row's images, prompts and tags, at no
        cost, once it has completed (the claim holds the variant back until then). None: make its own (the
        earlier row failed)."""
        async def leader(conn: db.AsyncConnection) -> dict[str, Any] | None:
            cur = await conn.execute(queries.LEADER_SQL, [job.job_id])
            return await cur.fetchone()

        row = await self.db_call(leader)
        if (row is None or row["status"] != JobStatus.COMPLETED.value
                or not isinstance(row["generated_images"], list) or not row["generated_images"]
                or not isinstance(row["generated_prompts"], dict)):
            return None
        source = row["row_number"]
        images = [dict(image, reused_from_row=source) if isinstance(image, dict) else image
                  for image in row["generated_images"]]
        self.log_row(job, LogLevel.INFO, "images_reused",
                      f"images reused from row {source}: the same product, photo and look (no cost)",
                      {"reused_from_row": source})
        tags = row["generated_tags"]
        return JobResult(job_id=job.job_id, attempt=job.attempt, status=JobStatus.COMPLETED,
                         trigger_text=job.trigger_text or trigger_text(job.product),
                         generated_prompts=row["generated_prompts"], generated_images=images,
                         generated_tags=tags if isinstance(tags, list) else None, cost_usd=0.0,
                         usage={"reused_from_row": source})

    async def _with_retries(self, ctx: RowContext) -> Any:
        assert self.provider is not None
        cfg = self.config
        for attempt in range(cfg.settings.transient_attempts):
            try:
                return await self.provider.process(ctx)
            except TransientError as exc:
                if attempt + 1 >= cfg.settings.transient_attempts or self._hard_stop.is_set():
                    raise
                delay = backoff_delay(attempt, cfg.settings.backoff_base_seconds, cfg.settings.backoff_cap_seconds,
                                      exc.retry_after)
                ctx.log("transient_error", f"{exc}; retrying in {delay:.1f}s",
                        {"attempt": attempt + 1, "retry_after": exc.retry_after})
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _step_logger(self, job: ClaimedJob) -> Callable[[str, str, dict[str, Any]], None]:
        def log(operation: str, message: str, details: dict[str, Any]) -> None:
            level = LogLevel.WARN if operation in ("transient_error",) else LogLevel.INFO
            self.log_row(job, level, operation, message, details)

        return log

    def log_row(self, job: ClaimedJob, level: LogLevel, operation: str, message: str,
                 details: dict[str, Any]) -> None:
        """Queue a log line about one row (written with the next report), with any secret removed."""
        self._logs.append({"batch_id": str(job.batch_id), "row_job_id": job.job_id, "row_number": job.row_number,
                           "log_level": level.value, "message": redact(message, self.secrets),
                           "operation": operation, "details": redact_json(details, self.secrets)})

    async def _checkpoint(self, job: ClaimedJob, data: dict[str, Any]) -> bool:
        async def save(conn: db.AsyncConnection) -> bool:
            cur = await conn.execute(queries.CHECKPOINT_SQL, [job.job_id, self.config.instance_id, job.attempt,
                                                            json.dumps(data)])
            row = await cur.fetchone()
            return bool(row and row["held"])

        held = await self.db_call(save)
        if held:
            # A retry inside this worker must see what was already paid for.
            job.checkpoint.update(data)
        return held

    # --- reporting, heartbeats, notifications -----------------------------------------------------------------

    async def _reporter_loop(self) -> None:
        while True:
            await self._report_now.wait()
            self._report_now.clear()
            if len(self._results) < self.config.settings.report_batch_size and self._running:
                # Let a few more rows finish so that one transaction reports several (fewer batch-row updates).
                await asyncio.sleep(self.config.settings.report_delay_seconds)
            try:
                await self._flush()
            except Exception as exc:  # a bug, not an outage (db_call rides those out): keep the results, try again
                say(f"worker {self.config.instance_id}: reporting results failed: {exc!r}; retrying")
                await asyncio.sleep(1.0)
                self._report_now.set()

    async def _flush(self, give_up: bool = False) -> None:
        if not self._results and not self._logs:
            return
        results, self._results = self._results, []
        logs, self._logs = self._logs, []

        async def report(conn: db.AsyncConnection) -> list[dict[str, Any]]:
            if not logs:  # one statement is its own transaction: no BEGIN and COMMIT round trips
                cur = await conn.execute(queries.REPORT_SQL, [self.config.instance_id, queries.results_json(results)])
                return await cur.fetchall()
            async with conn.transaction():
                rows: list[dict[str, Any]] = []
                # Step logs first: they happened before the results, and log ids are the order of events.
                await conn.execute(queries.WRITE_LOGS_SQL, [self.config.instance_id, json.dumps(logs)])
                if results:
                    cur = await conn.execute(queries.REPORT_SQL, [self.config.instance_id,
                                                                queries.results_json(results)])
                    rows = await cur.fetchall()
                return rows

        try:
            rows = await self.db_call(report, give_up=give_up, reports=True)
        except Exception:
            self._results = results + self._results
            self._logs = logs + self._logs
            raise
        if rows:
            self._wake.set()  # the claim loop may wait for held rows to be reported (or, at the end, to exit)
        for row in rows:
            self._unreported.pop(row["job_id"], None)
            if not row["applied"]:
                self.stats.lost += 1
                say(f"worker {self.config.instance_id}: row job {row['job_id']} was reclaimed by another worker; "
                    "its result was dropped")

    async def _heartbeat(self, status: WorkerStatus) -> None:
        cfg = self.config

        async def beat(conn: db.AsyncConnection) -> dict[str, Any] | None:
            cur = await conn.execute(queries.HEARTBEAT_SQL, [
                cfg.instance_id, status.value, len(self._running), self.stats.processed + self.stats.failed,
                self.stats.failed, cfg.concurrency, cfg.user_id, cfg.batch_id, socket.gethostname(), os.getpid()])
            return await cur.fetchone()

        row = await self.db_call(beat, give_up=status is WorkerStatus.STOPPED)
        if row and row["was_stopped"]:
            say(f"worker {cfg.instance_id}: cleanup declared this worker dead while it was silent; "
                "its rows were released and will be processed again")

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.settings.heartbeat_seconds)
            parent = self.config.parent_pid
            if parent is not None and os.getppid() != parent:
                say(f"worker {self.config.instance_id}: the supervisor is gone; stopping")
                self.request_stop()
            status = WorkerStatus.PROCESSING if self._running else WorkerStatus.IDLE
            await self._heartbeat(status)

    async def _listen_loop(self) -> None:
        """Wake the claim loop on NOTIFY of new or released jobs, so idle workers never poll hard."""
        while True:
            try:
                conn = await db.connect_async(self.config.database_url, application_name="csvjobs-worker-listen")
                async with conn:
                    await db.listen_async(conn, queries.JOBS_CHANNEL)
                    self._wake.set()  # something may have arrived while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database went away: the claim loop says so; listen again later
                await asyncio.sleep(2.0)

    # --- shutdown ---------------------------------------------------------------------------------------------

    async def _shutdown(self, helpers: list[asyncio.Task[None]]) -> None:
        cfg = self.config
        if self._running:
            waiting = asyncio.ensure_future(asyncio.wait(list(self._running.values()),
                                                         timeout=cfg.settings.grace_seconds))
            hard = asyncio.ensure_future(self._hard_stop.wait())
            await asyncio.wait([waiting, hard], return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            hard.cancel()
        for task in list(self._running.values()):
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        try:
            await self._flush(give_up=True)

            async def release(conn: db.AsyncConnection) -> None:
                await conn.execute(queries.RELEASE_SQL_KEEP, [cfg.instance_id, False, []])
                # Another driver goes on with this one's OpenAI batches at once, not when the lease runs out.
                await conn.execute(queries.RELEASE_OPENAI_LEASES_SQL, [cfg.instance_id])

            await self.db_call(release, give_up=True)
            await self._heartbeat(WorkerStatus.STOPPED)
        except Exception as exc:
            say(f"worker {cfg.instance_id}: could not report its last state ({db.first_line(exc)}); "
                "`csvjobs cleanup` will release its rows")
        finally:
            if self.provider is not None:
                await self.provider.aclose()
            for lane in (self._main, self._reports):
                if lane.conn is not None:
                    await lane.conn.close()


def run_worker(config: WorkerConfig, on_fatal: Callable[[str], None] | None = None) -> int:
    """Entry point of a worker process; on_fatal hears why the provider refused us, if it did."""
    worker = Worker(config)
    code = asyncio.run(worker.run())
    if worker.fatal is not None and on_fatal is not None:
        on_fatal(worker.fatal)
    return code


def child_main(config: WorkerConfig, fatal: Any = None) -> None:
    """multiprocessing target: run in a process group of its own, so the supervisor alone handles Ctrl-C.
    fatal is a queue on which the reason the provider refused us goes to the supervisor."""
    os.setpgrp()
    config.instance_id = make_instance_id(os.getpid(), config.instance_suffix)
    try:
        code = run_worker(config, fatal.put if fatal is not None else None)
    except KeyboardInterrupt:
        code = 0
    except DatabaseError as exc:
        say(f"worker {config.instance_id}: {exc}")
        code = 3
    sys.exit(code)
