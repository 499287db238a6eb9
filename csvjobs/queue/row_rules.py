"""The rules for one row that both loops follow, written once: whether a variant reuses the images of the row it
looks like, what a merchant's redo request changes, which images a row still needs, the row's context for a
provider (its fenced checkpoint and step log), and the completed, failed and retry results."""

from __future__ import annotations

import functools
from typing import Any, cast

from csvjobs.models import ClaimedRow, LogLevel, RowResult, RowStatus, trigger_text
from csvjobs.providers.contract import PaidCall, Paying, RowContext, redo_styles
from csvjobs.queue import queries
from csvjobs.queue.rate_limits import DatabaseRateLimiter
from csvjobs.queue.runtime import WorkerRuntime

# Longest error message stored on a row (a provider's error can quote a whole request).
ERROR_MESSAGE_LIMIT = 2000
# Step-log operations that are warnings rather than news.
WARNING_STEPS = frozenset({"transient_error"})


def reuses_images(job: ClaimedRow) -> bool:
    """Whether the row is a variant that reuses an earlier row's images (unless the merchant asked for its own)."""
    return bool(job.product.get("reuses_row")) and "regenerate" not in job.checkpoint


def failed_result(job: ClaimedRow, message: str) -> RowResult:
    """The row failed for good, with why."""
    return RowResult(job_id=job.job_id, attempt=job.attempt, status=RowStatus.FAILED,
                     error_message=message[:ERROR_MESSAGE_LIMIT])


def retry_result(job: ClaimedRow, message: str) -> RowResult:
    """The row goes back to pending for a later attempt (a retry is counted), with why."""
    return RowResult(job_id=job.job_id, attempt=job.attempt, status=RowStatus.PENDING,
                     error_message=message[:ERROR_MESSAGE_LIMIT])


def reused_result(job: ClaimedRow, source: queries.SourceRow | None) -> RowResult | None:
    """The earlier row's images, prompts and tags, at no cost, once it has completed (the claim holds a variant
    back until then). None: make the row's own (the earlier row failed, or has no images)."""
    if (source is None or source.status is not RowStatus.COMPLETED
            or not isinstance(source.generated_images, list) or not source.generated_images
            or not isinstance(source.generated_prompts, dict)):
        return None
    images = [dict(image, reuses_row=source.row_number) if isinstance(image, dict) else image
              for image in source.generated_images]
    tags = source.generated_tags
    return RowResult(job_id=job.job_id, attempt=job.attempt, status=RowStatus.COMPLETED,
                     trigger_text=job.trigger_text or trigger_text(job.product),
                     generated_prompts=source.generated_prompts, generated_images=images,
                     generated_tags=tags if isinstance(tags, list) else None, cost_usd=0.0,
                     usage={"reuses_row": source.row_number})


async def reuse_images(runtime: WorkerRuntime, job: ClaimedRow) -> RowResult | None:
    """Look up the row a variant reuses and, when it has completed, the variant's result (logged)."""
    source = await runtime.db_call(functools.partial(queries.source_row, job_id=job.job_id))
    result = reused_result(job, source)
    if result is not None and source is not None:
        runtime.log_row(job, LogLevel.INFO, "images_reused", f"images reused from row {source.row_number}: the same "
                        "product, photo and look (no cost)", {"reuses_row": source.row_number})
    return result


def prepare_redo(runtime: WorkerRuntime, job: ClaimedRow) -> frozenset[str]:
    """The styles the merchant asked to redo: their saved image is forgotten (so it is made, and paid for,
    again) and the note, if any, is added to their saved prompt; everything else is reused. Logged once."""
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
    runtime.log_row(job, LogLevel.INFO, "images_redo", f"redoing {', '.join(sorted(styles))} at the reviewer's "
                    "request", {"request": request})
    return styles


_PAYS: dict[type, bool] = {}


def _pays(provider: object) -> bool:
    # An isinstance check against a runtime-checkable protocol inspects the class's attributes on every call (a
    # tenth of a worker's CPU per row with a provider that pays nothing); a provider's methods are its class's,
    # so the answer is kept per class.
    kind = type(provider)
    known = _PAYS.get(kind)
    if known is None:
        known = _PAYS[kind] = isinstance(provider, Paying)
    return known


def records_paid_calls(provider: object) -> bool:
    """Whether the provider records each paid call in the ledger itself (then a result carries no cost to add)."""
    return _pays(provider)


async def reserve_row(runtime: WorkerRuntime, provider: object, job: ClaimedRow, *, holder: str,
                      price_factor: float) -> str | None:
    """Reserve the worst case of all the row's remaining calls at once (the Batch API path: its calls cannot be
    stopped half way); None when reserved (or nothing to reserve), else why not (the row is pending again)."""
    if not _pays(provider):
        return None
    amount = round(sum(cast(Paying, provider).call_worst_cases(job).values()) * price_factor, 6)
    if amount <= 0:
        return None
    return await runtime.db_call(functools.partial(
        queries.reserve_call_cost, job_id=job.job_id, worker_id=holder, attempt=job.attempt, amount=amount,
        daily_max=runtime.settings.daily_max_cost_usd, release=True))


def row_context(runtime: WorkerRuntime, job: ClaimedRow, *, holder: str, redo: frozenset[str],
                info: queries.BatchInfo | None = None) -> RowContext:
    """What a provider gets for one row: storage, the shared rate limits, a step log, its batch's channels and
    language, a checkpoint fenced on holder (the worker, or the submission that holds the row) and the claim's
    attempt, and the budget's reservations and ledger."""
    info = info or queries.BatchInfo()

    async def reserve(amount: float, release: bool) -> str | None:
        # Asked every time (the function returns at once when there is no budget): `resume --max-cost` may set a
        # budget while workers run.
        return await runtime.db_call(functools.partial(
            queries.reserve_call_cost, job_id=job.job_id, worker_id=holder, attempt=job.attempt,
            amount=round(amount, 6), daily_max=runtime.settings.daily_max_cost_usd, release=release))

    async def unreserve(amount: float) -> None:
        if amount > 0:
            await runtime.db_call(functools.partial(queries.unreserve_call_cost, job_id=job.job_id, worker_id=holder,
                                                    attempt=job.attempt, amount=round(amount, 6)))

    async def pay(call: PaidCall) -> None:
        await runtime.db_call(functools.partial(queries.record_paid_call, job_id=job.job_id, holder=holder,
                                                attempt=job.attempt, call=call))

    async def checkpoint(data: dict[str, Any]) -> bool:
        held = await runtime.db_call(functools.partial(queries.save_checkpoint, job_id=job.job_id, holder=holder,
                                                       attempt=job.attempt, data=data))
        if held:
            # A later step (or a retry inside this worker) must see what was already paid for.
            job.checkpoint.update(data)
        return held

    def log(operation: str, message: str, details: dict[str, Any]) -> None:
        # A step that names a failed check (passed: false) warns too, so a merchant filtering for warnings sees it.
        level = LogLevel.WARN if operation in WARNING_STEPS or details.get("passed") is False else LogLevel.INFO
        runtime.log_row(job, level, operation, message, details)

    return RowContext(job=job, storage=runtime.storage, log=log, save_checkpoint=checkpoint,
                      rate_limiter=DatabaseRateLimiter(runtime.db_call), redo=redo, channels=info.channels,
                      language=info.language or "", alt_languages=info.alt_languages,
                      reserve=reserve, unreserve=unreserve, pay=pay)
