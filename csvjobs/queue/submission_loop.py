"""The submission loop: how a worker processes the rows of batches uploaded with --openai-batch, through
OpenAI's Batch API at half the price, without one synchronous model call.

Each worker process whose provider is batch-capable (the OpenAI one) runs this loop beside its synchronous
one. A pass of the loop:
  1. claims pending rows of such batches (claim_csv_row_jobs with p_mode 'openai_batch') and gives them to new
     submissions (sql/submissions.sql): step 'prompts' for rows without prompts, step 'images' for the others.
     A variant that reuses an earlier row's images is finished at once, as the synchronous path does;
  2. leases the submissions that are due and advances each one a state:
     preparing: write the JSONL input file (a structured-output chat request per row, with the photo when the row
     has one; or its missing images, edits of the photo or generations), cutting it at OpenAI's limits (the rows
     that do not fit, or that need the other image endpoint, move to a submission of their own), and upload it;
     uploaded: create the OpenAI batch, unless the submission key finds one a killed worker created;
     submitted: check it (every CSVJOBS_OPENAI_BATCH_POLL_SECONDS), cancel it if its csvjobs batch was cancelled,
     and once OpenAI is done collect it: each output line, matched by custom_id, is saved through the same fenced
     checkpoints and result function as the synchronous path; rows with prompts move on to an images submission,
     rows with both images complete (costed at Batch prices), failed lines go back for a retry (counted) and
     lines OpenAI never ran (expired, cancelled) go back without one.
Every step is recorded before the next, so a worker killed anywhere is replaced by the next one to lease the
submission, which neither submits nor pays twice."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csvjobs.errors import JobLostError, PermanentError, ProviderAccessError, TransientError
from csvjobs.models import (
    BatchStatus,
    ClaimedRow,
    ProcessingMode,
    RowResult,
    RowStatus,
    SubmissionState,
    SubmissionStep,
)
from csvjobs.providers import pricing
from csvjobs.providers.contract import (
    BatchCapable,
    BatchService,
    BatchState,
    GeneratedImage,
    LineOutcome,
    RowContext,
    redo_styles,
    styles_still_needed,
)
from csvjobs.queue import queries, row_rules
from csvjobs.queue.runtime import WorkerRuntime
from csvjobs.queue.submission_queries import (
    Submission,
    finish_submission,
    lease_submissions,
    open_submission,
    release_submission_rows,
    split_submission,
    update_submission,
)
from csvjobs.redact import redact

# A lease outlives a slow step by far; the loop renews it while it works.
LEASE_SECONDS = 300.0
RENEW_EVERY_SECONDS = 30.0
# Completed rows of an output file being read are reported this many at a time, or this often.
REPORT_CHUNK = 100
REPORT_EVERY_SECONDS = 2.0
# Output lines applied at once by one process while it collects (each holds one decoded image at a time).
APPLY_WINDOW = 4
# How often a submission being prepared records how many of its rows are done (for `progress`).
PROGRESS_EVERY_SECONDS = 2.0
# Rows whose lines are built at once (photos are fetched concurrently within a window).
BUILD_WINDOW = 16


@dataclass
class _RowState:
    """What a submission's output said about one row."""

    prompts: bool = False
    images: dict[str, GeneratedImage] = field(default_factory=dict)
    retry: str = ""
    permanent: str = ""
    not_run: bool = False

    def take(self, kind: str, line: LineOutcome) -> None:
        """Add what one output line did for the row."""
        self.prompts = self.prompts or line.prompts
        if line.image is not None:
            self.images[kind] = line.image
        self.retry = line.retry or self.retry
        self.permanent = line.permanent or self.permanent
        self.not_run = self.not_run or line.not_run


# --- the loop -------------------------------------------------------------------------------------------------


class SubmissionLoop:
    """Moves the rows of --openai-batch batches through OpenAI's Batch API (see the module docstring)."""

    def __init__(self, runtime: WorkerRuntime, provider: BatchCapable) -> None:
        self.runtime = runtime
        self.provider = provider
        self.api: BatchService = provider.batch_api()
        self.settings = runtime.settings
        self.worker_id = runtime.config.worker_id
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Pass after pass until the worker stops; a failed pass is told and tried again later."""
        while not self.runtime.stopping:
            try:
                busy = await self.pass_once()
            except ProviderAccessError as exc:
                self.runtime.stop_pool(str(exc))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # outages db_call rides out; anything else is told, and tried again
                if self.runtime.fatal is not None:
                    raise
                self.runtime.say(f"submission loop: {type(exc).__name__}: {exc}")
                busy = False
            if not busy:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._idle_seconds())

    def _idle_seconds(self) -> float:
        # Often enough to notice rows uploaded meanwhile; submissions themselves are due by next_check_at.
        return min(self.settings.openai_batch_poll_seconds, self.settings.poll_seconds)

    async def pass_once(self) -> bool:
        """Open submissions for claimable rows, then advance every due submission; whether anything moved."""
        opened = await self._open()
        cfg = self.runtime.config
        leased = await self.runtime.db_call(functools.partial(
            lease_submissions, worker_id=self.worker_id, lease_seconds=LEASE_SECONDS, limit=10,
            batch_id=cfg.batch_id, user_id=cfg.user_id))
        for submission in leased:
            if self.runtime.stopping:
                break
            await self._advance(submission)
        return opened > 0 or bool(leased)

    # --- 1. rows to submissions -------------------------------------------------------------------------------

    async def _open(self) -> int:
        rt = self.runtime
        cfg = rt.config
        rows = await rt.db_call(functools.partial(
            queries.claim_rows, worker_id=self.worker_id,
            limit=min(self.settings.openai_batch_rows_per_submission, self.settings.openai_batch_max_requests),
            timeout_minutes=self.settings.claim_timeout_minutes, mode=ProcessingMode.OPENAI_BATCH,
            batch_id=cfg.batch_id, user_id=cfg.user_id))
        jobs = queries.parse_claims(rows)
        for job in jobs:
            rt.unreported[job.job_id] = job
        groups: dict[tuple[uuid.UUID, SubmissionStep], list[int]] = defaultdict(list)
        for job in jobs:
            if row_rules.reuses_images(job):
                reused = await row_rules.reuse_images(rt, job)
                if reused is not None:
                    rt.finish(job, reused)
                    continue
            refused = await row_rules.reserve_row(rt, self.provider, job, holder=self.worker_id,
                                                  price_factor=pricing.BATCH_PRICE_FACTOR)
            if refused:
                rt.forget([job.job_id])  # the budget has no room for the row now; it is pending again
                if not refused.startswith(("wait:", "already paused")):
                    rt.say(f"batch {str(job.batch_id)[:8]} paused: {refused}")
                continue
            step = SubmissionStep.IMAGES if "prompts" in job.checkpoint else SubmissionStep.PROMPTS
            groups[(job.batch_id, step)].append(job.job_id)
        for (batch_id, step), ids in groups.items():
            await rt.db_call(functools.partial(open_submission, worker_id=self.worker_id, batch_id=batch_id,
                                               step=step, job_ids=ids))
            rt.forget(ids)
        return len(jobs)

    # --- 2. advancing one submission --------------------------------------------------------------------------

    async def _advance(self, sub: Submission) -> None:
        try:
            await self.runtime.channels_of(sub.batch_id)  # for the rows' contexts
            status = await self._batch_status(sub.batch_id)
            if sub.state in (SubmissionState.PREPARING, SubmissionState.UPLOADED) and status == BatchStatus.CANCELLED:
                await self._finish(sub, {"cancelled_before_submission": True})
                return
            if sub.state is SubmissionState.PREPARING and not await self._prepare(sub):
                return
            if sub.state is SubmissionState.UPLOADED:
                await self._submit(sub)
                return
            if sub.state is SubmissionState.SUBMITTED:
                await self._check(sub, cancel=status == BatchStatus.CANCELLED)
        except TransientError as exc:
            # OpenAI unreachable, 5xx, 429: this submission is looked at again after the poll interval.
            self.runtime.say(f"OpenAI batch {sub.openai_batch_id or sub.id}: {exc}; trying again later")
            with contextlib.suppress(_LeaseLost):
                await self._update(sub, {}, next_check=self.settings.openai_batch_poll_seconds)
        except PermanentError as exc:
            # OpenAI will never take this submission (its file refused, its batch gone): its rows go back for a
            # retry (counted, so that a file refused every time fails its rows in the end), and it is over.
            with contextlib.suppress(_LeaseLost):
                await self._abandon(sub, redact(str(exc), self.runtime.secrets))
        except _LeaseLost:
            return

    async def _abandon(self, sub: Submission, reason: str) -> None:
        rows = await self._held_rows(sub)
        await self._update(sub, {"error_message": reason})
        await self._release(sub, [(job.job_id, f"OpenAI refused the batch: {reason}") for job in rows],
                            count_retry=True)
        await self._finish(sub, {"abandoned": reason, "retried": len(rows)})
        await self._log(sub, "openai_batch_refused", f"OpenAI refused the batch ({reason}); {len(rows)} row(s) "
                        "go back for a retry", {"reason": reason})

    async def _batch_status(self, batch_id: uuid.UUID) -> str:
        status = await self.runtime.db_call(functools.partial(queries.batch_status, batch_id=batch_id))
        return status or BatchStatus.CANCELLED.value  # a deleted batch is as good as cancelled

    async def _update(self, sub: Submission, changes: dict[str, Any], next_check: float | None = None) -> None:
        """Record changes and renew the lease; _LeaseLost when another worker has taken the submission over."""
        if not await self.runtime.db_call(functools.partial(
                update_submission, submission_id=sub.id, worker_id=self.worker_id, changes=changes,
                lease_seconds=LEASE_SECONDS, next_check_seconds=next_check)):
            raise _LeaseLost
        for key, value in changes.items():
            if key in Submission.model_fields:
                setattr(sub, key, value)

    async def _held_rows(self, sub: Submission) -> list[ClaimedRow]:
        return await self.runtime.db_call(functools.partial(queries.held_rows, job_ids=sub.row_job_ids,
                                                            holder=sub.holder))

    def _context(self, sub: Submission, job: ClaimedRow) -> RowContext:
        return row_rules.row_context(self.runtime, job, holder=sub.holder, redo=redo_styles(job.checkpoint),
                                     info=self.runtime.known_info(sub.batch_id))

    # preparing -> uploaded

    async def _prepare(self, sub: Submission) -> bool:
        """Write and upload the input file; False when the submission ended instead (no row left to send)."""
        rows = await self._held_rows(sub)
        endpoint: str | None = None
        kept: list[int] = []
        overflow: list[int] = []
        elsewhere: dict[str, list[int]] = defaultdict(list)
        done: list[RowResult] = []
        failed: list[tuple[ClaimedRow, str, bool]] = []
        renewed = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="csvjobs-openai-batch-") as tmp:
            file = self.provider.batch_input_file(Path(tmp) / f"csvjobs-{sub.submission_key}.jsonl")
            for start in range(0, len(rows), BUILD_WINDOW):
                window = rows[start:start + BUILD_WINDOW]
                if overflow:
                    overflow.extend(job.job_id for job in window)
                    continue
                built = await asyncio.gather(*(self._lines(sub, job) for job in window), return_exceptions=True)
                for job, result in zip(window, built, strict=True):
                    if isinstance(result, BaseException):
                        if isinstance(result, (ProviderAccessError, asyncio.CancelledError)):
                            raise result
                        if isinstance(result, JobLostError):
                            continue
                        permanent = isinstance(result, PermanentError)
                        failed.append((job, redact(str(result), self.runtime.secrets), permanent))
                        continue
                    row_endpoint, lines = result
                    if not lines:  # nothing left to ask for: the row is complete as it stands
                        done.append(self.provider.batch_result(job))
                        continue
                    if not file.fits(lines, empty=True):
                        # Too big for any input file on its own (a huge photo, or limits set very low).
                        failed.append((job, f"the row's requests ({sum(len(line) for line in lines)} bytes) do "
                                            "not fit in one OpenAI batch input file", True))
                        continue
                    endpoint = endpoint or row_endpoint
                    if row_endpoint != endpoint:
                        elsewhere[row_endpoint].append(job.job_id)
                    elif overflow or not file.fits(lines):
                        overflow.append(job.job_id)
                    else:
                        file.add(lines)
                        kept.append(job.job_id)
                if time.monotonic() - renewed > PROGRESS_EVERY_SECONDS:  # says how far it got; renews the lease
                    await self._update(sub, {"prepared_rows": start + len(window)})
                    renewed = time.monotonic()
            # Rows that do not go in this file, then rows that are over, before the file is sent.
            for rest in [overflow, *elsewhere.values()]:
                if rest:
                    await self._split(sub, sub.step, rest)
            await self._report(sub, done)
            await self._release(sub, [(j.job_id, m) for j, m, p in failed if not p], count_retry=True)
            await self._report(sub, [self._failed(j, m) for j, m, p in failed if p])
            if not kept:
                await self._finish(sub, {"requests": 0})
                return False
            assert endpoint is not None
            file_id = await self.api.upload(file.path, file.path.name)
        await self._update(sub, {"state": SubmissionState.UPLOADED, "input_file_id": file_id, "endpoint": endpoint,
                                 "request_count": file.requests, "prepared_rows": len(rows)})
        self.runtime.flush_soon()
        return True

    async def _lines(self, sub: Submission, job: ClaimedRow) -> tuple[str, list[bytes]]:
        """(endpoint, input lines) of one row for this submission's step."""
        if sub.step is SubmissionStep.IMAGES:
            row_rules.prepare_redo(self.runtime, job)  # the reviewer's notes go into the prompts of styles redone
        return await self.provider.batch_requests(self._context(sub, job), job, sub.step)

    async def _split(self, sub: Submission, step: SubmissionStep, ids: list[int]) -> None:
        await self.runtime.db_call(functools.partial(split_submission, submission_id=sub.id,
                                                     worker_id=self.worker_id, step=step, job_ids=ids))
        self.wake.set()

    # uploaded -> submitted

    async def _submit(self, sub: Submission) -> None:
        assert sub.input_file_id is not None and sub.endpoint is not None
        state = await self.api.find(sub.submission_key, sub.created_at.timestamp())
        found = state is not None
        if state is None:
            state = await self.api.create(sub.input_file_id, sub.endpoint, sub.submission_key,
                                          f"csvjobs batch {sub.batch_id}: {sub.step}")
        await self._update(sub, {"state": SubmissionState.SUBMITTED, "openai_batch_id": state.id,
                                 "openai_status": state.status, "request_counts": state.request_counts},
                           next_check=self.settings.openai_batch_poll_seconds)
        await self._log(sub, "openai_batch_submitted",
                        f"OpenAI batch {state.id} {'found (it was created before a restart)' if found else 'submitted'}"
                        f": {sub.request_count} {sub.step} request(s) to {sub.endpoint}",
                        {"openai_batch_id": state.id, "step": sub.step, "requests": sub.request_count})

    # submitted -> done

    async def _check(self, sub: Submission, *, cancel: bool) -> None:
        assert sub.openai_batch_id is not None
        state = await self.api.retrieve(sub.openai_batch_id)
        if cancel and not state.terminal and state.status != "cancelling":
            try:
                state = await self.api.cancel(sub.openai_batch_id)
            except PermanentError:  # cancelled meanwhile (by `csvjobs cancel`): OpenAI refuses a second cancel
                state = await self.api.retrieve(sub.openai_batch_id)
            await self._log(sub, "openai_batch_cancelled", f"OpenAI batch {state.id} cancelled with its csvjobs batch",
                            {"openai_batch_id": state.id})
        changes = {"openai_status": state.status, "request_counts": state.request_counts,
                   "output_file_id": state.output_file_id, "error_file_id": state.error_file_id,
                   "error_message": state.errors or None}
        if not state.terminal:
            await self._update(sub, changes, next_check=self.settings.openai_batch_poll_seconds)
            return
        await self._update(sub, changes)
        await self._collect(sub, state)

    async def _collect(self, sub: Submission, state: BatchState) -> None:
        rows = {job.job_id: job for job in await self._held_rows(sub)}
        # What each row asked for, before this output's images are saved on it.
        needed = {job_id: [style.value for style in styles_still_needed(job.checkpoint)]
                  for job_id, job in rows.items()}
        states: dict[int, _RowState] = defaultdict(_RowState)
        renewed = reported = time.monotonic()
        # Results land as they are read: a row of the images step whose images are all in is reported with the
        # next chunk (its output lines may be far apart in the file), so completed rows rise while a large file
        # is read. A restart reads the file again and skips the rows already reported (no longer held), and the
        # ledger counts each line once.
        done: list[RowResult] = []
        streamed = 0
        await self._update(sub, {"collected_rows": 0})  # collection begins: progress times its rate from here
        assert sub.endpoint is not None and sub.openai_batch_id is not None
        endpoint, service_batch_id = sub.endpoint, sub.openai_batch_id
        # A few lines are applied at once (each is decoding, finishing and storing an image, and writing to the
        # database), so that one process keeps a core busy; the window bounds the images held in memory.
        window = asyncio.Semaphore(APPLY_WINDOW)

        async def apply(job: ClaimedRow, kind: str, line: dict[str, Any]) -> None:
            try:
                outcome = await self.provider.batch_apply(
                    self._context(sub, job), job, kind, line, endpoint=endpoint, service_batch_id=service_batch_id,
                    still_needed=needed[job.job_id])
            finally:
                window.release()
            st = states[job.job_id]
            st.take(kind, outcome)
            if sub.step is SubmissionStep.IMAGES and job.job_id in rows and not st.retry and not st.permanent and all(
                    style in st.images for style in needed[job.job_id]):
                done.append(self.provider.batch_result(rows.pop(job.job_id)))

        try:
            async with asyncio.TaskGroup() as applying:
                for file_id in (state.output_file_id, state.error_file_id):
                    if not file_id:
                        continue
                    async for line in self.api.lines(file_id):
                        parsed = self.provider.batch_line_key(line)
                        job = rows.get(parsed[0]) if parsed else None
                        if parsed is None or job is None or parsed[1] != job.attempt:
                            continue  # not ours, or a row no longer held (collected before a restart)
                        await window.acquire()
                        applying.create_task(apply(job, parsed[2], line))
                        if len(done) >= REPORT_CHUNK or (done and time.monotonic() - reported > REPORT_EVERY_SECONDS):
                            chunk = done[:]
                            done.clear()
                            await self._report(sub, chunk)
                            streamed += len(chunk)
                            reported = time.monotonic()
                            await self._update(sub, {"collected_rows": len(states), "completed_rows": streamed})
                            renewed = time.monotonic()
                        if time.monotonic() - renewed > RENEW_EVERY_SECONDS:
                            await self._update(sub, {"collected_rows": len(states), "completed_rows": streamed})
                            renewed = time.monotonic()
        except BaseExceptionGroup as failed:
            # One failure stops the collection (the others were cancelled): raised as the one it is, as if the
            # lines had been applied one at a time, so that _advance sorts it.
            raise failed.exceptions[0] from None
        await self._report(sub, done)
        await self._settle(sub, state, rows, states, needed, streamed=streamed + len(done))

    async def _settle(self, sub: Submission, state: BatchState, rows: dict[int, ClaimedRow],
                      states: dict[int, _RowState], needed: dict[int, list[str]], *, streamed: int = 0) -> None:
        """Hand every row left on: to step 2, a result, or back to pending (streamed: the rows already reported
        completed while the output was read); then the submission is done."""
        cancelled = await self._batch_status(sub.batch_id) == BatchStatus.CANCELLED
        onward: list[int] = []
        results: list[RowResult] = []
        retry: list[tuple[int, str]] = []
        not_run: list[tuple[int, str]] = []
        for job_id, job in rows.items():
            st = states.get(job_id, _RowState())
            if sub.step is SubmissionStep.PROMPTS and st.prompts:
                if cancelled:
                    not_run.append((job_id, "its csvjobs batch was cancelled"))
                else:
                    onward.append(job_id)
            elif sub.step is SubmissionStep.IMAGES and not st.retry and not st.permanent and all(
                    style in st.images for style in needed[job_id]):
                results.append(self.provider.batch_result(job))
            elif st.permanent:
                results.append(self._failed(job, st.permanent))
            elif st.retry:
                retry.append((job_id, st.retry))
            elif state.status == "failed":
                retry.append((job_id, f"the OpenAI batch failed: {state.errors or 'no reason given'}"))
            elif state.status == "expired":
                not_run.append((job_id, "its OpenAI batch expired before running it"))
            else:
                not_run.append((job_id, f"its OpenAI batch ended ({state.status}) before running it"))
        if onward:
            await self._split(sub, SubmissionStep.IMAGES, onward)
        await self._report(sub, results)
        await self._release(sub, retry, count_retry=True)
        await self._release(sub, not_run, count_retry=False)
        outcome = {"openai_status": state.status, "onward": len(onward),
                   "completed": streamed + sum(1 for r in results if r.status is RowStatus.COMPLETED),
                   "failed": sum(1 for r in results if r.status is RowStatus.FAILED),
                   "retried": len(retry), "not_run": len(not_run)}
        await self._finish(sub, outcome)
        await self._log(sub, "openai_batch_collected",
                        f"OpenAI batch {sub.openai_batch_id} {state.status}: {len(onward)} row(s) on to their "
                        f"images, {outcome['completed']} completed, {outcome['failed']} failed, {len(retry)} to "
                        f"retry, {len(not_run)} not run (back to pending)", outcome)

    # --- results --------------------------------------------------------------------------------------------

    def _failed(self, job: ClaimedRow, message: str) -> RowResult:
        return row_rules.failed_result(job, message)

    async def _report(self, sub: Submission, results: list[RowResult]) -> None:
        await self.runtime.report_for(sub.holder, results)

    async def _release(self, sub: Submission, rows: list[tuple[int, str]], *, count_retry: bool) -> None:
        by_reason: dict[str, list[int]] = defaultdict(list)
        for job_id, reason in rows:
            by_reason[reason].append(job_id)
        for reason, ids in by_reason.items():
            await self.runtime.db_call(functools.partial(
                release_submission_rows, submission_id=sub.id, worker_id=self.worker_id, job_ids=ids,
                count_retry=count_retry, reason=reason))

    async def _finish(self, sub: Submission, outcome: dict[str, Any]) -> None:
        await self.runtime.db_call(functools.partial(finish_submission, submission_id=sub.id,
                                                     worker_id=self.worker_id, outcome=outcome))
        self.runtime.flush_soon()

    async def _log(self, sub: Submission, operation: str, message: str, details: dict[str, Any]) -> None:
        self.runtime.log_batch(sub.batch_id, operation, message, {"submission": sub.id, **details})


class _LeaseLost(Exception):
    """Another worker took the submission over (this one was too slow or was declared dead)."""
