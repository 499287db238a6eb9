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

from pydantic import ValidationError

from csvjobs.errors import JobLostError, PermanentError, ProviderAccessError, TransientError
from csvjobs.models import (
    BatchStatus,
    ClaimedJob,
    ImageStyle,
    JobResult,
    JobStatus,
    ProcessingMode,
    Route,
    SubmissionState,
    SubmissionStep,
    trigger_text,
)
from csvjobs.providers import pricing
from csvjobs.providers.contract import (
    BatchCapable,
    GeneratedImage,
    GeneratedPrompts,
    PaidCall,
    RowContext,
    redo_styles,
    styles_still_needed,
)
from csvjobs.providers.openai_batch import (
    CONTENT_POLICY_CODES,
    NOT_RUN_CODES,
    PROMPTS_ENDPOINT,
    BatchAPI,
    BatchState,
    InputFile,
    custom_id,
    images_answer,
    line_error,
    parse_custom_id,
    parse_prompts,
    request_line,
)
from csvjobs.providers.packshot import analyse_photo, check_fidelity, store_cutout
from csvjobs.providers.photos import prepare_reference
from csvjobs.providers.redact import redact
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

# A lease outlives a slow step by far; the loop renews it while it works.
LEASE_SECONDS = 300.0
RENEW_EVERY_SECONDS = 30.0
# Completed rows of an output file being read are reported this many at a time, or this often.
REPORT_CHUNK = 100
REPORT_EVERY_SECONDS = 2.0
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


# --- the loop -------------------------------------------------------------------------------------------------


class SubmissionLoop:
    """Moves the rows of --openai-batch batches through OpenAI's Batch API (see the module docstring)."""

    def __init__(self, runtime: WorkerRuntime, provider: BatchCapable) -> None:
        self.runtime = runtime
        self.provider = provider
        self.api: BatchAPI = provider.batch_api()
        self.settings = runtime.settings
        self.instance_id = runtime.config.instance_id
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
            lease_submissions, worker_id=self.instance_id, lease_seconds=LEASE_SECONDS, limit=10,
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
            queries.claim_rows, worker_id=self.instance_id, limit=self.settings.openai_batch_max_requests,
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
            refused = await row_rules.reserve_row(rt, self.provider, job, holder=self.instance_id,
                                                  price_factor=pricing.BATCH_PRICE_FACTOR)
            if refused:
                rt.forget([job.job_id])  # the budget has no room for the row now; it is pending again
                if not refused.startswith(("wait:", "already paused")):
                    rt.say(f"batch {str(job.batch_id)[:8]} paused: {refused}")
                continue
            step = SubmissionStep.IMAGES if "prompts" in job.checkpoint else SubmissionStep.PROMPTS
            groups[(job.batch_id, step)].append(job.job_id)
        for (batch_id, step), ids in groups.items():
            await rt.db_call(functools.partial(open_submission, worker_id=self.instance_id, batch_id=batch_id,
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
                update_submission, submission_id=sub.id, worker_id=self.instance_id, changes=changes,
                lease_seconds=LEASE_SECONDS, next_check_seconds=next_check)):
            raise _LeaseLost
        for key, value in changes.items():
            if key in Submission.model_fields:
                setattr(sub, key, value)

    async def _held_rows(self, sub: Submission) -> list[ClaimedJob]:
        return await self.runtime.db_call(functools.partial(queries.held_rows, job_ids=sub.row_job_ids,
                                                            holder=sub.holder))

    def _context(self, sub: Submission, job: ClaimedJob) -> RowContext:
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
                        failed.append((job, redact(str(result), self.runtime.secrets), permanent))
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
        await self._update(sub, {"state": SubmissionState.UPLOADED, "input_file_id": file_id, "endpoint": endpoint,
                                 "request_count": file.requests})
        self.runtime.flush_soon()
        return True

    async def _lines(self, sub: Submission, job: ClaimedJob) -> tuple[str, list[bytes]]:
        """(endpoint, input lines) of one row for this submission's step."""
        ctx = self._context(sub, job)
        trigger = ctx.trigger_text
        reference = await prepare_reference(ctx, self.settings)
        if sub.step is SubmissionStep.PROMPTS:
            body = self.provider.prompt_request(ctx, trigger, reference)
            return PROMPTS_ENDPOINT, [request_line(custom_id(job.job_id, job.attempt, "prompts"), PROMPTS_ENDPOINT,
                                                   body)]
        needed = styles_still_needed(job.checkpoint)
        row_rules.prepare_redo(self.runtime, job)  # the reviewer's notes go into the prompts of the styles redone
        white = ImageStyle.SINGLE_WHITE_BACKGROUND
        if white in needed and reference is not None and self.settings.packshot == "auto":
            # The packshot from the product's own pixels, now: it needs no request (and no wait of a day).
            analysis = await analyse_photo(ctx, reference.png)
            if analysis.cutout is not None:
                image = await store_cutout(ctx, self.settings, analysis)
                if not await ctx.save_checkpoint({f"image:{white.value}": image.model_dump(mode="json")}):
                    raise JobLostError(f"row job {job.job_id} is no longer held by its submission")
                needed.remove(white)
        prompts = GeneratedPrompts.model_validate(job.checkpoint["prompts"])
        lines: list[bytes] = []
        endpoint = ""
        for style in needed:
            endpoint, body = self.provider.image_request(style, prompts.for_style(style).prompt, reference)
            lines.append(request_line(custom_id(job.job_id, job.attempt, style.value), endpoint, body))
        return endpoint, lines

    async def _split(self, sub: Submission, step: SubmissionStep, ids: list[int]) -> None:
        await self.runtime.db_call(functools.partial(split_submission, submission_id=sub.id,
                                                     worker_id=self.instance_id, step=step, job_ids=ids))
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
        done: list[JobResult] = []
        streamed = 0
        for file_id in (state.output_file_id, state.error_file_id):
            if not file_id:
                continue
            async for line in self.api.lines(file_id):
                parsed = parse_custom_id(line.get("custom_id"))
                job = rows.get(parsed[0]) if parsed else None
                if parsed is None or job is None or parsed[1] != job.attempt:
                    continue  # not ours, or a row this submission no longer holds (collected before a restart)
                st = states[job.job_id]
                await self._apply(sub, job, parsed[2], line, st, needed[job.job_id])
                if sub.step is SubmissionStep.IMAGES and not st.retry and not st.permanent and all(
                        style in st.images for style in needed[job.job_id]):
                    done.append(self._completed(rows.pop(job.job_id)))
                if len(done) >= REPORT_CHUNK or (done and time.monotonic() - reported > REPORT_EVERY_SECONDS):
                    await self._report(sub, done)
                    streamed += len(done)
                    done, reported = [], time.monotonic()
                if time.monotonic() - renewed > RENEW_EVERY_SECONDS:
                    await self._update(sub, {})
                    renewed = time.monotonic()
        await self._report(sub, done)
        await self._settle(sub, state, rows, states, needed, streamed=streamed + len(done))

    async def _apply(self, sub: Submission, job: ClaimedJob, kind: str, line: dict[str, Any], st: _RowState,
                     still_needed: list[str]) -> None:
        """Save one output line's result on its row (or note why it failed); an image the row's checkpoint already
        holds (stored by a collection cut off before it reported the row) is taken from there, not stored again."""
        problem = line_error(line)
        if problem is not None:
            code, message = problem
            if code in NOT_RUN_CODES:
                st.not_run = True
            elif code in CONTENT_POLICY_CODES:
                st.permanent = f"refused by the provider's content policy ({code}): {message[:300]}"
            else:
                st.retry = f"the OpenAI batch request failed ({code or 'error'}): {message[:300]}"
            return
        body = line["response"]["body"]
        ctx = self._context(sub, job)
        # Answered, so paid (at Batch prices), whether or not its answer can be used: into the ledger first.
        await self._record_paid(sub, job, ctx, kind, line, body)
        try:
            if kind == SubmissionStep.PROMPTS:
                prompts, usage = parse_prompts(body)
                if not await ctx.save_checkpoint({"prompts": prompts.model_dump(mode="json"), "prompt_usage": usage}):
                    return
                st.prompts = True
                ctx.log("prompts_generated", f"prompts generated by {self.settings.prompt_model} (OpenAI batch "
                        f"{sub.openai_batch_id})", {"usage": usage, "openai_batch_id": sub.openai_batch_id})
                return
            style = ImageStyle(kind)
            if style.value not in still_needed and f"image:{style.value}" in job.checkpoint:
                st.images[style.value] = GeneratedImage.model_validate(job.checkpoint[f"image:{style.value}"])
                return
            edited = sub.endpoint == "/v1/images/edits"
            image = await self.provider.store_image(ctx, style, images_answer(body), edited=edited)
            if image.unframed and ctx.channels:
                # (no redo here: through the Batch API it would wait another day; the review flags it)
                image.flagged = True
            if edited:
                await self._check_fidelity(ctx, image)
            if await ctx.save_checkpoint({f"image:{style.value}": image.model_dump(mode="json")}):
                st.images[style.value] = image
                ctx.log("image_stored", f"{style.value} image stored: {image.storage_path} (OpenAI batch "
                        f"{sub.openai_batch_id})", {"style": style.value, "bytes": image.bytes, "model": image.model})
        except (TransientError, PermanentError, ValidationError, ValueError) as exc:
            st.retry = redact(f"the OpenAI batch output for {kind} could not be used: {exc}", self.runtime.secrets)

    async def _record_paid(self, sub: Submission, job: ClaimedJob, ctx: RowContext, kind: str, line: dict[str, Any],
                           body: Any) -> None:
        """One answered output line in the ledger, keyed by its OpenAI batch and custom_id (so a line read again
        after a restart counts once), giving back what the row reserved for that call."""
        s = self.settings
        usage = body.get("usage") if isinstance(body, dict) else None
        usage = usage if isinstance(usage, dict) else None
        factor = pricing.BATCH_PRICE_FACTOR
        reserved = self.provider.call_worst_cases(job).get(kind, 0.0) * factor
        photo = ctx.row_has_photo
        key = f"openai-batch:{sub.openai_batch_id}:{line.get('custom_id')}"
        if kind == SubmissionStep.PROMPTS:
            call = PaidCall(key=key, kind="prompts", route="from_photo" if photo else "from_text", row_has_photo=photo,
                            model=s.prompt_model, price_factor=factor, reserved_usd=reserved,
                            cost_usd=pricing.prompt_cost(s.prompt_model, usage) * factor)
        else:
            edited = sub.endpoint == "/v1/images/edits"
            call = PaidCall(key=key, kind="image", purpose="regenerate" if kind in ctx.redo else "row", style=kind,
                            route=(Route.GENERATED_FROM_PHOTO if edited else Route.GENERATED_FROM_TEXT).value,
                            row_has_photo=photo, model=s.image_model, size=s.image_size, quality=s.image_quality,
                            price_factor=factor, reserved_usd=reserved,
                            cost_usd=pricing.image_cost(s.image_model, s.image_size, s.image_quality, usage,
                                                        edited=edited) * factor)
        await ctx.record_paid(call)

    async def _check_fidelity(self, ctx: RowContext, image: GeneratedImage) -> None:
        """The fidelity check of an image made from the photo. Here a failing image is flagged for review, not
        made again: a redo through the Batch API would wait another day (the synchronous path redoes it once)."""
        reference = await prepare_reference(ctx, self.settings)
        if reference is None:
            return
        analysis = await analyse_photo(ctx, reference.png)
        data = await asyncio.to_thread(ctx.storage.read_bytes, image.storage_path)
        verdict = check_fidelity(ctx, self.settings, analysis, image, data)
        image.fidelity = verdict.model_dump(mode="json")
        image.flagged = not verdict.passed
        image.separation = analysis.separation.model_dump(mode="json")

    async def _settle(self, sub: Submission, state: BatchState, rows: dict[int, ClaimedJob],
                      states: dict[int, _RowState], needed: dict[int, list[str]], *, streamed: int = 0) -> None:
        """Hand every row left on: to step 2, a result, or back to pending (streamed: the rows already reported
        completed while the output was read); then the submission is done."""
        cancelled = await self._batch_status(sub.batch_id) == BatchStatus.CANCELLED
        onward: list[int] = []
        results: list[JobResult] = []
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
            await self._split(sub, SubmissionStep.IMAGES, onward)
        await self._report(sub, results)
        await self._release(sub, retry, count_retry=True)
        await self._release(sub, not_run, count_retry=False)
        outcome = {"openai_status": state.status, "onward": len(onward),
                   "completed": streamed + sum(1 for r in results if r.status is JobStatus.COMPLETED),
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
        result = self.provider.outcome(trigger, prompts, job.checkpoint.get("prompt_usage"), images,
                                       price_factor=pricing.BATCH_PRICE_FACTOR).as_result(job)
        # Every answered line went into the ledger (and the row's and batch's cost) as it was collected.
        result.cost_recorded = True
        return result

    def _failed(self, job: ClaimedJob, message: str) -> JobResult:
        return row_rules.failed_result(job, message)

    async def _report(self, sub: Submission, results: list[JobResult]) -> None:
        await self.runtime.report_for(sub.holder, results)

    async def _release(self, sub: Submission, rows: list[tuple[int, str]], *, count_retry: bool) -> None:
        by_reason: dict[str, list[int]] = defaultdict(list)
        for job_id, reason in rows:
            by_reason[reason].append(job_id)
        for reason, ids in by_reason.items():
            await self.runtime.db_call(functools.partial(
                release_submission_rows, submission_id=sub.id, worker_id=self.instance_id, job_ids=ids,
                count_retry=count_retry, reason=reason))

    async def _finish(self, sub: Submission, outcome: dict[str, Any]) -> None:
        await self.runtime.db_call(functools.partial(finish_submission, submission_id=sub.id,
                                                     worker_id=self.instance_id, outcome=outcome))
        self.runtime.flush_soon()

    async def _log(self, sub: Submission, operation: str, message: str, details: dict[str, Any]) -> None:
        self.runtime.log_batch(sub.batch_id, operation, message, {"submission": sub.id, **details})


class _LeaseLost(Exception):
    """Another worker took the submission over (this one was too slow or was declared dead)."""
