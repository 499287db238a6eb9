"""The OpenAI batch driver: how a worker processes the rows of batches uploaded with --openai-batch, through
OpenAI's Batch API at half the price, without one synchronous model call.

Each worker process that has the OpenAI provider runs one driver beside its claim loop. A pass of the driver:
  1. claims pending rows of such batches (claim_csv_row_jobs with p_mode 'openai_batch') and gives them to new
     submissions (sql/openai_batches.sql): step 'prompts' for rows without prompts, step 'images' for the others.
     A variant that reuses an earlier row's images is finished at once, as the synchronous path does;
  2. leases the submissions that are due and advances each one a state:
     preparing: write the JSONL input file (a structured-output chat request per row, with the photo when the row
     has one; or its missing images, edits of the photo or generations), cutting it at OpenAI's limits (the rows
     that do not fit, or that need the other image endpoint, move to a submission of their own), and upload it;
     uploaded: create the OpenAI batch, unless the submission key finds one a killed driver created;
     submitted: check it (every CSVJOBS_OPENAI_BATCH_POLL_SECONDS), cancel it if its csvjobs batch was cancelled,
     and once OpenAI is done collect it: each output line, matched by custom_id, is saved through the same fenced
     checkpoints and result function as the synchronous path; rows with prompts move on to an images submission,
     rows with both images complete (costed at Batch prices), failed lines go back for a retry (counted) and
     lines OpenAI never ran (expired, cancelled) go back without one.
Every step is recorded before the next, so a driver killed anywhere is replaced by the next one to lease the
submission, which neither submits nor pays twice."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from csvjobs import db
from csvjobs.errors import JobLostError, PermanentError, ProviderAccessError, TransientError
from csvjobs.models import ClaimedJob, ImageStyle, JobResult, JobStatus, LogLevel, trigger_text
from csvjobs.providers import pricing
from csvjobs.providers.contract import GeneratedImage, GeneratedPrompts, RowContext, redo_styles
from csvjobs.providers.openai import OpenAIProvider
from csvjobs.providers.openai_batch import BatchAPI, BatchState, images_answer, parse_prompts
from csvjobs.providers.photos import prepare_reference
from csvjobs.providers.redact import redact
from csvjobs.queue import queries
from csvjobs.queue.rate_limits import DatabaseRateLimiter

if TYPE_CHECKING:
    from csvjobs.queue.worker import Worker

PROMPTS_ENDPOINT = "/v1/chat/completions"
# A lease outlives a slow step by far; the driver renews it while it works.
LEASE_SECONDS = 300.0
RENEW_EVERY_SECONDS = 30.0
# Rows whose lines are built at once (photos are fetched concurrently within a window).
BUILD_WINDOW = 16
# Error codes of lines OpenAI never ran: they go back without counting a retry.
NOT_RUN_CODES = frozenset({"batch_expired", "batch_cancelled"})
_CONTENT_POLICY_CODES = frozenset({"content_policy_violation", "moderation_blocked", "content_filter",
                                   "safety_violation"})


class Submission(BaseModel):
    """One row of csv_openai_batches: an input file, and the OpenAI batch made of it."""

    id: int
    batch_id: uuid.UUID
    step: str
    endpoint: str | None = None
    state: str
    submission_key: uuid.UUID
    row_job_ids: list[int]
    request_count: int | None = None
    input_file_id: str | None = None
    openai_batch_id: str | None = None
    openai_status: str | None = None
    created_at: datetime

    @property
    def holder(self) -> str:
        """The claimed_by of the rows this submission holds."""
        return f"openai-batch:{self.id}"


# --- pure parts: custom ids, the input file's limits, which styles a row still needs ---------------------------


def custom_id(job: ClaimedJob, kind: str) -> str:
    """A request's custom_id: row job id, claim attempt and kind (prompts, or an image style)."""
    return f"{job.job_id}-{job.attempt}-{kind}"


def parse_custom_id(value: Any) -> tuple[int, int, str] | None:
    """(job_id, attempt, kind) of a custom_id we wrote; None for anything else."""
    parts = str(value).split("-", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1]), parts[2]


def styles_needed(checkpoint: dict[str, Any]) -> list[ImageStyle]:
    """The images a row with prompts still needs: those it has none of, and those the reviewer asked to redo."""
    redo = redo_styles(checkpoint)
    return [style for style in ImageStyle if f"image:{style.value}" not in checkpoint or style.value in redo]


@dataclass
class InputFile:
    """A JSONL input file being written, within OpenAI's limits. A row's lines go in whole or not at all."""

    max_requests: int
    max_bytes: int
    path: Path
    requests: int = 0
    size: int = 0

    def fits(self, lines: list[bytes], *, empty: bool = False) -> bool:
        """Whether these lines (one row's) still fit; with empty, whether they would fit in an empty file."""
        requests, size = (0, 0) if empty else (self.requests, self.size)
        return (requests + len(lines) <= self.max_requests
                and size + sum(len(line) for line in lines) <= self.max_bytes)

    def add(self, lines: list[bytes]) -> None:
        """Append one row's lines (each ending in a newline)."""
        with self.path.open("ab") as handle:
            for line in lines:
                handle.write(line)
        self.requests += len(lines)
        self.size += sum(len(line) for line in lines)


def request_line(custom: str, endpoint: str, body: dict[str, Any]) -> bytes:
    """One line of an input file."""
    return (json.dumps({"custom_id": custom, "method": "POST", "url": endpoint, "body": body},
                       separators=(",", ":")) + "\n").encode()


def line_error(line: dict[str, Any]) -> tuple[str, str] | None:
    """(code, message) of an output or error file line that did not succeed; None for a success."""
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    error = line.get("error") if isinstance(line.get("error"), dict) else None
    if response is not None and response.get("status_code") == 200 and isinstance(response.get("body"), dict):
        return None
    if error is not None:
        return str(error.get("code") or ""), str(error.get("message") or "the request failed")
    body = response.get("body") if response is not None else None
    detail: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = body["error"]
    status = response.get("status_code") if response is not None else None
    return str(detail.get("code") or ""), f"HTTP {status}: {detail.get('message') or 'the request failed'}"


@dataclass
class _RowState:
    """What a submission's output said about one row."""

    prompts: bool = False
    images: dict[str, GeneratedImage] = field(default_factory=dict)
    retry: str = ""
    permanent: str = ""
    not_run: bool = False


# --- the driver -----------------------------------------------------------------------------------------------


class OpenAIBatchDriver:
    """Moves the rows of --openai-batch batches through OpenAI's Batch API (see the module docstring)."""

    def __init__(self, worker: Worker, provider: OpenAIProvider) -> None:
        self.worker = worker
        self.provider = provider
        self.api = BatchAPI(provider)
        self.settings = worker.config.settings
        self.instance_id = worker.config.instance_id
        self.wake = asyncio.Event()

    async def run(self) -> None:
        """Pass after pass until the worker stops; a failed pass is told and tried again later."""
        while not self.worker.stopping:
            try:
                busy = await self.pass_once()
            except ProviderAccessError as exc:
                self.worker.refuse(str(exc))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # outages db_call rides out; anything else is told, and tried again
                self.worker.say(f"OpenAI batch driver: {type(exc).__name__}: {redact(str(exc), self.worker.secrets)}")
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
        leased = await self.worker.db_call(self._lease)
        for submission in leased:
            if self.worker.stopping:
                break
            await self._advance(submission)
        return opened > 0 or bool(leased)

    # --- 1. rows to submissions -------------------------------------------------------------------------------

    async def _open(self) -> int:
        worker = self.worker
        jobs = await worker.db_call(functools.partial(worker.claim, limit=self.settings.openai_batch_max_requests,
                                                      mode="openai_batch"))
        groups: dict[tuple[uuid.UUID, str], list[int]] = defaultdict(list)
        for job in jobs:
            if job.product.get("reuse_of_row") and "regenerate" not in job.checkpoint:
                reused = await worker.reused(job)
                if reused is not None:
                    worker.finish(job, reused)
                    continue
            groups[(job.batch_id, "images" if "prompts" in job.checkpoint else "prompts")].append(job.job_id)
        for (batch_id, step), ids in groups.items():
            async def give(conn: db.AsyncConnection, batch_id: uuid.UUID = batch_id, step: str = step,
                           ids: list[int] = ids) -> None:
                await conn.execute(queries.OPEN_OPENAI_BATCH_SQL, [self.instance_id, batch_id, step, ids])

            await worker.db_call(give)
            worker.forget(ids)
        return len(jobs)

    async def _lease(self, conn: db.AsyncConnection) -> list[Submission]:
        cfg = self.worker.config
        cur = await conn.execute(queries.LEASE_OPENAI_BATCHES_SQL,
                                 [self.instance_id, LEASE_SECONDS, 10, cfg.batch_id, cfg.user_id])
        return [Submission.model_validate(row) for row in await cur.fetchall()]

    # --- 2. advancing one submission --------------------------------------------------------------------------

    async def _advance(self, sub: Submission) -> None:
        try:
            status = await self._batch_status(sub.batch_id)
            if sub.state in ("preparing", "uploaded") and status == "cancelled":
                await self._finish(sub, {"cancelled_before_submission": True})
                return
            if sub.state == "preparing" and not await self._prepare(sub):
                return
            if sub.state == "uploaded":
                await self._submit(sub)
                return
            if sub.state == "submitted":
                await self._check(sub, cancel=status == "cancelled")
        except TransientError as exc:
            # OpenAI unreachable, 5xx, 429: this submission is looked at again after the poll interval.
            self.worker.say(f"OpenAI batch {sub.openai_batch_id or sub.id}: {exc}; trying again later")
            with contextlib.suppress(_LeaseLost):
                await self._update(sub, {}, next_check=self.settings.openai_batch_poll_seconds)
        except PermanentError as exc:
            # OpenAI will never take this submission (its file refused, its batch gone): its rows go back for a
            # retry (counted, so that a file refused every time fails its rows in the end), and it is over.
            with contextlib.suppress(_LeaseLost):
                await self._abandon(sub, redact(str(exc), self.worker.secrets))
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
        async def read(conn: db.AsyncConnection) -> str:
            cur = await conn.execute("SELECT status FROM csv_batches WHERE id = %s", [batch_id])
            row = await cur.fetchone()
            return str(row["status"]) if row else "cancelled"

        return await self.worker.db_call(read)

    async def _update(self, sub: Submission, changes: dict[str, Any], next_check: float | None = None) -> None:
        """Record changes and renew the lease; _LeaseLost when another driver has taken the submission over."""
        async def save(conn: db.AsyncConnection) -> bool:
            cur = await conn.execute(queries.UPDATE_OPENAI_BATCH_SQL,
                                     [sub.id, self.instance_id, json.dumps(changes), LEASE_SECONDS, next_check])
            row = await cur.fetchone()
            return bool(row and row["ok"])

        if not await self.worker.db_call(save):
            raise _LeaseLost
        for key, value in changes.items():
            if key in Submission.model_fields:
                setattr(sub, key, value)

    async def _held_rows(self, sub: Submission) -> list[ClaimedJob]:
        async def read(conn: db.AsyncConnection) -> list[dict[str, Any]]:
            cur = await conn.execute(queries.HELD_ROWS_SQL, [sub.row_job_ids, sub.holder])
            return await cur.fetchall()

        return queries.parse_claims(await self.worker.db_call(read))

    def _context(self, sub: Submission, job: ClaimedJob) -> RowContext:
        async def checkpoint(data: dict[str, Any]) -> bool:
            async def save(conn: db.AsyncConnection) -> bool:
                cur = await conn.execute(queries.CHECKPOINT_SQL, [job.job_id, sub.holder, job.attempt,
                                                                json.dumps(data)])
                row = await cur.fetchone()
                return bool(row and row["held"])

            held = await self.worker.db_call(save)
            if held:
                job.checkpoint.update(data)
            return held

        return RowContext(job=job, storage=self.worker.storage,
                          log=lambda op, message, details: self.worker.log_row(job, LogLevel.INFO, op, message,
                                                                              details),
                          save_checkpoint=checkpoint, rate_limiter=DatabaseRateLimiter(self.worker.db_call),
                          redo=redo_styles(job.checkpoint))

    # preparing -> uploaded

    async def _prepare(self, sub: Submission) -> bool:
        """Write and upload the input file; False when the submission ended instead (no row left to send)."""
        rows = await self._held_rows(sub)
        endpoint: str | None = None
        kept: list[int] = []
        overflow: list[int] = []
        elsewhere: dict[str, list[int]] = defaultdict(list)
        done: list[JobResult] = []
        failed: list[tuple[ClaimedJob, str, bool]] = []
        renewed = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="csvjobs-openai-batch-") as tmp:
            file = InputFile(self.settings.openai_batch_max_requests, self.settings.openai_batch_max_bytes,
                             Path(tmp) / f"csvjobs-{sub.submission_key}.jsonl")
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
                        failed.append((job, redact(str(result), self.worker.secrets), permanent))
                        continue
                    row_endpoint, lines = result
                    if not lines:  # nothing left to ask for: the row is complete as it stands
                        done.append(self._completed(job))
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
                if time.monotonic() - renewed > RENEW_EVERY_SECONDS:
                    await self._update(sub, {})
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
        await self._update(sub, {"state": "uploaded", "input_file_id": file_id, "endpoint": endpoint,
                                 "request_count": file.requests})
        self.worker.flush_soon()
        return True

    async def _lines(self, sub: Submission, job: ClaimedJob) -> tuple[str, list[bytes]]:
        """(endpoint, input lines) of one row for this submission's step."""
        ctx = self._context(sub, job)
        trigger = ctx.trigger_text
        reference = await prepare_reference(ctx, self.settings)
        if sub.step == "prompts":
            body = self.provider.prompt_request(ctx, trigger, reference)
            return PROMPTS_ENDPOINT, [request_line(custom_id(job, "prompts"), PROMPTS_ENDPOINT, body)]
        needed = styles_needed(job.checkpoint)
        self.worker.prepare_redo(job)  # the reviewer's notes go into the prompts of the styles redone
        prompts = GeneratedPrompts.model_validate(job.checkpoint["prompts"])
        lines: list[bytes] = []
        endpoint = ""
        for style in needed:
            endpoint, body = self.provider.image_request(style, prompts.for_style(style).prompt, reference)
            lines.append(request_line(custom_id(job, style.value), endpoint, body))
        return endpoint, lines

    async def _split(self, sub: Submission, step: str, ids: list[int]) -> None:
        async def move(conn: db.AsyncConnection) -> None:
            await conn.execute(queries.SPLIT_OPENAI_BATCH_SQL, [sub.id, self.instance_id, step, ids])

        await self.worker.db_call(move)
        self.wake.set()

    # uploaded -> submitted

    async def _submit(self, sub: Submission) -> None:
        assert sub.input_file_id is not None and sub.endpoint is not None
        state = await self.api.find(sub.submission_key, sub.created_at.timestamp())
        found = state is not None
        if state is None:
            state = await self.api.create(sub.input_file_id, sub.endpoint, sub.submission_key,
                                          f"csvjobs batch {sub.batch_id}: {sub.step}")
        await self._update(sub, {"state": "submitted", "openai_batch_id": state.id, "openai_status": state.status,
                                 "request_counts": state.request_counts},
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
        needed = {job_id: [style.value for style in styles_needed(job.checkpoint)] for job_id, job in rows.items()}
        states: dict[int, _RowState] = defaultdict(_RowState)
        renewed = time.monotonic()
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            async for line in self.api.lines(file_id):
                parsed = parse_custom_id(line.get("custom_id"))
                job = rows.get(parsed[0]) if parsed else None
                if parsed is None or job is None or parsed[1] != job.attempt:
                    continue  # not ours, or a row this submission no longer holds (collected before a restart)
                await self._apply(sub, job, parsed[2], line, states[job.job_id])
                if time.monotonic() - renewed > RENEW_EVERY_SECONDS:
                    await self._update(sub, {})
                    renewed = time.monotonic()
        await self._settle(sub, state, rows, states, needed)

    async def _apply(self, sub: Submission, job: ClaimedJob, kind: str, line: dict[str, Any], st: _RowState) -> None:
        """Save one output line's result on its row (or note why it failed)."""
        problem = line_error(line)
        if problem is not None:
            code, message = problem
            if code in NOT_RUN_CODES:
                st.not_run = True
            elif code in _CONTENT_POLICY_CODES:
                st.permanent = f"refused by the provider's content policy ({code}): {message[:300]}"
            else:
                st.retry = f"the OpenAI batch request failed ({code or 'error'}): {message[:300]}"
            return
        body = line["response"]["body"]
        ctx = self._context(sub, job)
        try:
            if kind == "prompts":
                prompts, usage = parse_prompts(body)
                if not await ctx.save_checkpoint({"prompts": prompts.model_dump(mode="json"), "prompt_usage": usage}):
                    return
                st.prompts = True
                ctx.log("prompts_generated", f"prompts generated by {self.settings.prompt_model} (OpenAI batch "
                        f"{sub.openai_batch_id})", {"usage": usage, "openai_batch_id": sub.openai_batch_id})
                return
            style = ImageStyle(kind)
            image = await self.provider.store_image(ctx, style, images_answer(body),
                                                    edited=sub.endpoint == "/v1/images/edits")
            if await ctx.save_checkpoint({f"image:{style.value}": image.model_dump(mode="json")}):
                st.images[style.value] = image
                ctx.log("image_stored", f"{style.value} image stored: {image.storage_path} (OpenAI batch "
                        f"{sub.openai_batch_id})", {"style": style.value, "bytes": image.bytes, "model": image.model})
        except (TransientError, PermanentError, ValidationError, ValueError) as exc:
            st.retry = redact(f"the OpenAI batch output for {kind} could not be used: {exc}", self.worker.secrets)

    async def _settle(self, sub: Submission, state: BatchState, rows: dict[int, ClaimedJob],
                      states: dict[int, _RowState], needed: dict[int, list[str]]) -> None:
        """Hand every row on: to step 2, a result, or back to pending; then the submission is done."""
        cancelled = await self._batch_status(sub.batch_id) == "cancelled"
        onward: list[int] = []
        results: list[JobResult] = []
        retry: list[tuple[int, str]] = []
        not_run: list[tuple[int, str]] = []
        for job_id, job in rows.items():
            st = states.get(job_id, _RowState())
            if sub.step == "prompts" and st.prompts:
                if cancelled:
                    not_run.append((job_id, "its csvjobs batch was cancelled"))
                else:
                    onward.append(job_id)
            elif sub.step == "images" and not st.retry and not st.permanent and all(
                    style in st.images for style in needed[job_id]):
                results.append(self._completed(job))
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
            await self._split(sub, "images", onward)
        await self._report(sub, results)
        await self._release(sub, retry, count_retry=True)
        await self._release(sub, not_run, count_retry=False)
        outcome = {"openai_status": state.status, "onward": len(onward),
                   "completed": sum(1 for r in results if r.status is JobStatus.COMPLETED),
                   "failed": sum(1 for r in results if r.status is JobStatus.FAILED),
                   "retried": len(retry), "not_run": len(not_run)}
        await self._finish(sub, outcome)
        await self._log(sub, "openai_batch_collected",
                        f"OpenAI batch {sub.openai_batch_id} {state.status}: {len(onward)} row(s) on to their "
                        f"images, {outcome['completed']} completed, {outcome['failed']} failed, {len(retry)} to "
                        f"retry, {len(not_run)} not run (back to pending)", outcome)

    # --- results --------------------------------------------------------------------------------------------

    def _completed(self, job: ClaimedJob) -> JobResult:
        prompts = GeneratedPrompts.model_validate(job.checkpoint["prompts"])
        images = [GeneratedImage.model_validate(job.checkpoint[f"image:{style.value}"]) for style in ImageStyle]
        trigger = job.trigger_text or trigger_text(job.product)
        return self.provider.outcome(trigger, prompts, job.checkpoint.get("prompt_usage"), images,
                                     price_factor=pricing.BATCH_PRICE_FACTOR).as_result(job)

    def _failed(self, job: ClaimedJob, message: str) -> JobResult:
        return JobResult(job_id=job.job_id, attempt=job.attempt, status=JobStatus.FAILED, error_message=message[:2000])

    async def _report(self, sub: Submission, results: list[JobResult]) -> None:
        if not results:
            return

        async def report(conn: db.AsyncConnection) -> None:
            async with conn.transaction():
                await conn.execute(queries.REPORT_SQL, [sub.holder, queries.results_json(results)])

        await self.worker.db_call(report)

    async def _release(self, sub: Submission, rows: list[tuple[int, str]], *, count_retry: bool) -> None:
        by_reason: dict[str, list[int]] = defaultdict(list)
        for job_id, reason in rows:
            by_reason[reason].append(job_id)
        for reason, ids in by_reason.items():
            async def release(conn: db.AsyncConnection, ids: list[int] = ids, reason: str = reason) -> None:
                await conn.execute(queries.RELEASE_OPENAI_BATCH_ROWS_SQL,
                                   [sub.id, self.instance_id, ids, count_retry, reason])

            await self.worker.db_call(release)

    async def _finish(self, sub: Submission, outcome: dict[str, Any]) -> None:
        async def finish(conn: db.AsyncConnection) -> None:
            await conn.execute(queries.FINISH_OPENAI_BATCH_SQL, [sub.id, self.instance_id, json.dumps(outcome)])

        await self.worker.db_call(finish)
        self.worker.flush_soon()

    async def _log(self, sub: Submission, operation: str, message: str, details: dict[str, Any]) -> None:
        self.worker.log_batch(sub.batch_id, operation, message, {"submission": sub.id, **details})


class _LeaseLost(Exception):
    """Another driver took the submission over (this one was too slow or was declared dead)."""
