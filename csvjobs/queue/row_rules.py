"""The rules for one row that both loops follow, written once: whether a variant reuses the images of the row it
looks like, what a merchant's redo request changes, which images a row still needs, the row's context for a
provider (its fenced checkpoint and step log), and the completed, failed and retry results."""

from __future__ import annotations

import functools
from typing import Any, cast

from csvjobs.models import ClaimedJob, ImageStyle, JobResult, JobStatus, LogLevel, trigger_text
from csvjobs.providers.contract import Paying, RowContext, redo_styles
from csvjobs.queue import queries
from csvjobs.queue.rate_limits import DatabaseRateLimiter
from csvjobs.queue.runtime import WorkerRuntime

# Longest error message stored on a row (a provider's error can quote a whole request).
ERROR_MESSAGE_LIMIT = 2000
# Step-log operations that are warnings rather than news.
WARNING_STEPS = frozenset({"transient_error"})


def reuses_images(job: ClaimedJob) -> bool:
    """Whether the row is a variant that reuses an earlier row's images (unless the merchant asked for its own)."""
    return bool(job.product.get("reuses_row")) and "regenerate" not in job.checkpoint


def failed_result(job: ClaimedJob, message: str) -> JobResult:
    """The row failed for good, with why."""
    return JobResult(job_id=job.job_id, attempt=job.attempt, status=JobStatus.FAILED,
                     error_message=message[:ERROR_MESSAGE_LIMIT])


def retry_result(job: ClaimedJob, message: str) -> JobResult:
    """The row goes back to pending for a later attempt (a retry is counted), with why."""
    return JobResult(job_id=job.job_id, attempt=job.attempt, status=JobStatus.PENDING,
                     error_message=message[:ERROR_MESSAGE_LIMIT])


def reused_result(job: ClaimedJob, source: queries.SourceRow | None) -> JobResult | None:
    """The earlier row's images, prompts and tags, at no cost, once it has completed (the claim holds a variant
    back until then). None: make the row's own (the earlier row failed, or has no images)."""
    if (source is None or source.status is not JobStatus.COMPLETED
            or not isinstance(source.generated_images, list) or not source.generated_images
            or not isinstance(source.generated_prompts, dict)):
        return None
    images = [dict(image, reuses_row=source.row_number) if isinstance(image, dict) else image
              for image in source.generated_images]
    tags = source.generated_tags
    return JobResult(job_id=job.job_id, attempt=job.attempt, status=JobStatus.COMPLETED,
                     trigger_text=job.trigger_text or trigger_text(job.product),
                     generated_prompts=source.generated_prompts, generated_images=images,
                     generated_tags=tags if isinstance(tags, list) else None, cost_usd=0.0,
                     usage={"reuses_row": source.row_number})


async def reuse_images(runtime: WorkerRuntime, job: ClaimedJob) -> JobResult | None:
    """Look up the row a variant reuses and, when it has completed, the variant's result (logged)."""
    source = await runtime.db_call(functools.partial(queries.source_row, job_id=job.job_id))
    result = reused_result(job, source)
    if result is not None and source is not None:
        runtime.log_row(job, LogLevel.INFO, "images_reused", f"images reused from row {source.row_number}: the same "
                        "product, photo and look (no cost)", {"reuses_row": source.row_number})
    return result


def prepare_redo(runtime: WorkerRuntime, job: ClaimedJob) -> frozenset[str]:
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


# A worker reserves this multiple of a row's estimate: a row can pay an image twice (a fidelity redo), and its
# real usage can run above the estimate; a budget is never exceeded as long as a row costs at most this much.
RESERVE_MARGIN = 2.0


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


def reservation(provider: object, info: queries.BatchInfo, job: ClaimedJob, *, price_factor: float = 1.0) -> float:
    """What to reserve against the budgets before paying for this row (0: the provider pays nothing)."""
    if not _pays(provider):
        return 0.0
    published = cast(Paying, provider).row_cost_estimate(photo=bool(job.product.get("image_url")))
    learned = info.estimated_row_cost_usd or 0.0
    return round(max(published, learned) * RESERVE_MARGIN * price_factor, 6)


async def reserve(runtime: WorkerRuntime, provider: object, job: ClaimedJob, *, holder: str,
                  price_factor: float = 1.0) -> str | None:
    """Reserve the row's cost against its batch's budget and the daily cap; None when reserved (or nothing to
    reserve), else why not: the batch was paused and the row went back to pending."""
    if not _pays(provider):
        return None
    amount = reservation(provider, await runtime.batch_info(job.batch_id), job, price_factor=price_factor)
    if amount <= 0:
        return None
    # Asked every time (the function returns at once when there is no budget): `resume --max-cost` may set a
    # budget while workers run.
    return await runtime.db_call(functools.partial(
        queries.reserve_row_cost, job_id=job.job_id, worker_id=holder, attempt=job.attempt, amount=amount,
        daily_max=runtime.settings.daily_max_cost_usd))


def styles_needed(checkpoint: dict[str, Any]) -> list[ImageStyle]:
    """The images a row with prompts still needs: those it has none of, and those the reviewer asked to redo."""
    redo = redo_styles(checkpoint)
    return [style for style in ImageStyle if f"image:{style.value}" not in checkpoint or style.value in redo]


def row_context(runtime: WorkerRuntime, job: ClaimedJob, *, holder: str, redo: frozenset[str],
                channels: tuple[str, ...] = ()) -> RowContext:
    """What a provider gets for one row: storage, the shared rate limits, a step log, and a checkpoint fenced on
    holder (the worker, or the submission that holds the row) and the claim's attempt."""
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
                      rate_limiter=DatabaseRateLimiter(runtime.db_call), redo=redo, channels=channels)
