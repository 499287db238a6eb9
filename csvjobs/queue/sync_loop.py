"""The synchronous loop of a worker process: claim rows of batches in the sync processing mode, process each on
the asyncio loop through the provider (retrying transient errors with backoff), and hand the results to the
runtime, which reports them in sets. Exits when stopped or, with until_done, when no work is left."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any

from csvjobs import db, tracing
from csvjobs.errors import BudgetRefused, JobLostError, PermanentError, ProviderAccessError, TransientError
from csvjobs.models import ClaimedRow, LogLevel, ProcessingMode, RowResult
from csvjobs.providers.contract import Provider, RowContext, RowOutcome
from csvjobs.queue import queries, row_rules
from csvjobs.queue.runtime import WorkerRuntime, backoff_delay, outcome
from csvjobs.redact import redact


class SyncLoop:
    """Claims and processes rows one provider call sequence at a time, concurrency rows at once."""

    def __init__(self, runtime: WorkerRuntime, provider: Provider, *, serves_openai_batches: bool) -> None:
        self.runtime = runtime
        self.provider = provider
        # Whether a submission loop runs beside this one: then rows of --openai-batch batches are this worker's to
        # wait for at the end of --until-done; otherwise they are not.
        self.serves_openai_batches = serves_openai_batches
        # A moving average of how long a row takes, claim to result (for linger_seconds).
        self._row_seconds = 0.0
        # Each claimed row's claim span, its parent in a trace (only while tracing is on).
        self._claim_spans: dict[int, Any] = {}

    async def run(self) -> None:
        """Claim and process until stopped, or (until_done) until no work this worker can do is left."""
        rt = self.runtime
        cfg = rt.config
        linger_until: float | None = None
        while not rt.stopping:
            # Cleared before looking at the state, so a wake-up that arrives after the look is never lost.
            rt.wake.clear()
            # A finished row stays held in the database until its report lands (on the other connection);
            # claiming goes on meanwhile, but never past four reports' worth of finished rows held (with one
            # report's worth, reports came smaller and the pool ran 10-15% slower).
            held = cfg.concurrency + 4 * rt.settings.report_batch_size
            free = min(cfg.concurrency - len(rt.running), held - len(rt.unreported))
            if free <= 0:
                await self._wait(rt.settings.poll_seconds)
                continue
            # A claim costs the database about as much for eight rows as for one. Claiming the moment a slot
            # frees settles into alternating claims of a few rows and of the rest (rows finish while a claim is
            # on its way); so while rows run, wait a moment for more slots to free up, then claim what is free.
            if rt.running and free < cfg.concurrency:
                now = time.monotonic()
                if linger_until is None or now < linger_until:
                    linger_until = linger_until or now + self.linger_seconds()
                    await self._wait(linger_until - now)
                    continue
            linger_until = None
            jobs = await rt.db_call(functools.partial(self.claim, limit=free))
            for job in jobs:
                rt.running[job.job_id] = asyncio.create_task(self.process(job))
            if jobs:
                continue
            if cfg.until_done and not rt.running and not rt.unreported and await self._nothing_left():
                return
            await self._wait(rt.settings.poll_seconds if not cfg.until_done else min(rt.settings.poll_seconds, 1.0))

    def linger_seconds(self) -> float:
        """How long a freed slot waits for others before a claim: 1% of a typical row's time, so that waiting
        never costs more than a hundredth of the pool's throughput; at least half a millisecond (rows already
        done but not yet run by the event loop come first), at most 20 ms."""
        return min(0.02, max(0.0005, 0.01 * self._row_seconds))

    async def _wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.runtime.wake.wait(), timeout)

    async def _nothing_left(self) -> bool:
        cfg = self.runtime.config
        mode = None if self.serves_openai_batches else ProcessingMode.SYNC
        left = await self.runtime.db_call(functools.partial(queries.outstanding_rows, mode=mode,
                                                            batch_id=cfg.batch_id, user_id=cfg.user_id))
        return left == 0

    async def claim(self, conn: db.AsyncConnection, limit: int,
                    mode: ProcessingMode = ProcessingMode.SYNC) -> list[ClaimedRow]:
        """Claim up to limit rows of batches in this processing mode, and start them."""
        rt = self.runtime
        cfg = rt.config
        with tracing.claim_span(cfg.worker_id) as span:
            rows = await queries.claim_rows(conn, worker_id=cfg.worker_id, limit=limit,
                                            timeout_minutes=rt.settings.claim_timeout_minutes, mode=mode,
                                            batch_id=cfg.batch_id, user_id=cfg.user_id)
            tracing.claimed(span, len(rows))
        try:
            jobs = queries.parse_claims(rows)
        except Exception:
            # The claim has committed: give its rows back (every row this worker holds but does not know of).
            await queries.release_held_rows(conn, worker_id=cfg.worker_id, count_retry=False,
                                            keep=list(rt.unreported))
            raise
        for job in jobs:
            rt.unreported[job.job_id] = job
            if span is not None:
                self._claim_spans[job.job_id] = span
        if jobs:
            rt.stats.claims += 1
        return jobs

    async def process(self, job: ClaimedRow) -> None:
        """One row, start to result (or to being let go), in its trace span when tracing is on."""
        if not tracing.enabled():
            await self._process(job, None)
            return
        with tracing.row_span(self._claim_spans.pop(job.job_id, None), job.job_id, job.batch_id, job.row_number,
                              job.attempt) as span:
            await self._process(job, span)

    async def _process(self, job: ClaimedRow, span: Any) -> None:
        rt = self.runtime
        started = time.monotonic()
        result: RowResult
        try:
            reused = await row_rules.reuse_images(rt, job) if row_rules.reuses_images(job) else None
            if reused is not None:
                result = reused
            else:
                ctx = row_rules.row_context(rt, job, holder=rt.config.worker_id,
                                            redo=row_rules.prepare_redo(rt, job),
                                            info=await rt.batch_info(job.batch_id))
                result = (await self._with_retries(ctx)).as_result(job)
                if row_rules.records_paid_calls(self.provider):
                    # Each paid call is in the ledger (and the row's and batch's cost) already.
                    result.cost_usd = round(ctx.paid_usd, 6)
                    result.cost_recorded = True
            rt.stats.processed += 1
        except BudgetRefused as exc:
            # The row is pending again (not ours), keeping what it paid for: the budget paused the batch (said
            # by the worker whose call paused it, not once per row), or calls in flight hold the rest of it (then
            # this slot waits a moment, rather than claim the same row again at once).
            rt.unreported.pop(job.job_id, None)
            if exc.wait:
                await asyncio.sleep(min(1.0, rt.settings.poll_seconds))
            elif not exc.reason.startswith("already paused"):
                rt.say(f"batch {str(job.batch_id)[:8]} paused: {exc.reason}")
            rt.running.pop(job.job_id, None)
            rt.wake.set()
            return
        except PermanentError as exc:
            result = row_rules.failed_result(job, redact(str(exc) or type(exc).__name__, rt.secrets))
            rt.stats.failed += 1
        except ProviderAccessError as exc:
            # Not this row's fault: every row would fail the same way. Stop the pool; the shutdown puts this
            # row and every other one in flight back to pending without counting a retry.
            if rt.fatal is None:
                rt.log_row(job, LogLevel.ERROR, "provider_refused", f"the pool stops: {exc}", {})
            rt.running.pop(job.job_id, None)
            rt.stop_pool(str(exc))
            return
        except JobLostError as exc:
            rt.say(f"{exc}; dropping it")
            rt.stats.lost += 1
            rt.running.pop(job.job_id, None)
            rt.unreported.pop(job.job_id, None)
            rt.wake.set()
            return
        except asyncio.CancelledError:
            # (the entry may already be another task's: a row dropped as lost and claimed again, see runtime.py)
            if rt.running.get(job.job_id) is asyncio.current_task():
                del rt.running[job.job_id]
            raise
        except Exception as exc:  # a transient error past its retries, or a bug in a provider: retry later
            message = str(exc) if isinstance(exc, TransientError) else f"{type(exc).__name__}: {exc}"
            result = row_rules.retry_result(job, redact(message, rt.secrets))
        elapsed = time.monotonic() - started
        self._row_seconds += 0.1 * (elapsed - self._row_seconds)
        result.processing_time_seconds = round(elapsed, 3)
        tracing.finished(span, outcome(result), result.error_message)
        rt.finish(job, result, trace=tracing.context_of(span))

    async def _with_retries(self, ctx: RowContext) -> RowOutcome:
        settings = self.runtime.settings
        for attempt in range(settings.transient_attempts):
            try:
                return await self.provider.process(ctx)
            except TransientError as exc:
                if attempt + 1 >= settings.transient_attempts or self.runtime.hard_stop.is_set():
                    raise
                delay = backoff_delay(attempt, settings.backoff_base_seconds, settings.backoff_cap_seconds,
                                      exc.retry_after)
                ctx.log("transient_error", f"{exc}; retrying in {delay:.1f}s",
                        {"attempt": attempt + 1, "retry_after": exc.retry_after})
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def drain(self) -> None:
        """At shutdown: let rows in flight finish within the grace period (or until a second stop), then cancel
        the rest; the runtime gives them back."""
        rt = self.runtime
        if rt.running:
            waiting = asyncio.ensure_future(asyncio.wait(list(rt.running.values()),
                                                         timeout=rt.settings.grace_seconds))
            hard = asyncio.ensure_future(rt.hard_stop.wait())
            await asyncio.wait([waiting, hard], return_when=asyncio.FIRST_COMPLETED)
            waiting.cancel()
            hard.cancel()
        for task in list(rt.running.values()):
            task.cancel()
        if rt.running:
            await asyncio.gather(*rt.running.values(), return_exceptions=True)
