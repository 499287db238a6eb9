"""One row through OpenAI's Batch API: the openai provider's side of the BatchCapable port. It writes a row's
requests (the prompt call, or its missing images as edits of the photo or generations; a white image cut out of
the photo needs none), and reads an output line back: recorded as paid first, then saved on the row through the
same fenced checkpoints as the synchronous path. The submission loop (queue/submission_loop.py) keeps the leases,
splits and reports; nothing here knows about submissions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from csvjobs.errors import JobLostError, PermanentError, TransientError
from csvjobs.images.packshot import analyse_photo, check_fidelity, store_cutout
from csvjobs.images.photos import prepare_reference
from csvjobs.models import ClaimedRow, ImageStyle, Route, RowResult, SubmissionStep, trigger_text
from csvjobs.providers import pricing
from csvjobs.providers.contract import (
    GeneratedImage,
    GeneratedPrompts,
    LineOutcome,
    PaidCall,
    RowContext,
    styles_still_needed,
)
from csvjobs.providers.openai import OpenAIProvider
from csvjobs.providers.openai_batch import (
    NOT_RUN_CODES,
    PROMPTS_ENDPOINT,
    BatchAPI,
    InputFile,
    custom_id,
    images_answer,
    line_error,
    parse_custom_id,
    parse_prompts,
    request_line,
)
from csvjobs.providers.openai_errors import CONTENT_POLICY_CODES
from csvjobs.redact import redact

EDITS_ENDPOINT = "/v1/images/edits"


class OpenAIBatchProvider(OpenAIProvider):
    """The openai provider, able to send rows through the Batch API too (the BatchCapable port): the registry
    hands out this one, so a worker with the openai provider runs the submission loop."""

    def batch_api(self) -> BatchAPI:
        """The Files and Batch API client on this provider's account."""
        return BatchAPI(self)

    def batch_input_file(self, path: Path) -> InputFile:
        """A new JSONL input file within OpenAI's limits (as configured)."""
        return InputFile(self.settings.openai_batch_max_requests, self.settings.openai_batch_max_bytes, path)

    def batch_line_key(self, line: dict[str, Any]) -> tuple[int, int, str] | None:
        """(row job id, attempt, kind) of an output line, from the custom_id csvjobs wrote."""
        return parse_custom_id(line.get("custom_id"))

    async def cancel_batches(self, batch_ids: list[str]) -> list[str]:
        """Cancel OpenAI batches; the ids OpenAI took."""
        api = self.batch_api()
        return [(await api.cancel(batch_id)).id for batch_id in batch_ids]

    async def batch_requests(self, ctx: RowContext, job: ClaimedRow,
                             step: SubmissionStep) -> tuple[str, list[bytes]]:
        """(endpoint, input lines) of one row for a submission's step."""
        reference = await prepare_reference(ctx, self.settings)
        if step is SubmissionStep.PROMPTS:
            body = self.prompt_request(ctx, ctx.trigger_text, reference)
            return PROMPTS_ENDPOINT, [request_line(custom_id(job.job_id, job.attempt, "prompts"), PROMPTS_ENDPOINT,
                                                   body)]
        needed = styles_still_needed(job.checkpoint)
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
            endpoint, body = self.image_request(style, prompts.for_style(style).prompt, reference)
            lines.append(request_line(custom_id(job.job_id, job.attempt, style.value), endpoint, body))
        return endpoint, lines

    async def batch_apply(self, ctx: RowContext, job: ClaimedRow, kind: str, line: dict[str, Any], *,
                          endpoint: str, service_batch_id: str, still_needed: list[str]) -> LineOutcome:
        """Save one output line's result on its row (or say why it failed); an image the row's checkpoint already
        holds (stored by a collection cut off before it reported the row) is taken from there, not stored again."""
        problem = line_error(line)
        if problem is not None:
            code, message = problem
            if code in NOT_RUN_CODES:
                return LineOutcome(not_run=True)
            if code in CONTENT_POLICY_CODES:
                return LineOutcome(permanent=f"refused by the provider's content policy ({code}): {message[:300]}")
            return LineOutcome(retry=f"the OpenAI batch request failed ({code or 'error'}): {message[:300]}")
        body = line["response"]["body"]
        edited = endpoint == EDITS_ENDPOINT
        # Answered, so paid (at Batch prices), whether or not its answer can be used: into the ledger first.
        await ctx.record_paid(self._paid_call(ctx, job, kind, f"openai-batch:{service_batch_id}:"
                                              f"{line.get('custom_id')}", body, edited=edited))
        try:
            if kind == SubmissionStep.PROMPTS:
                prompts, usage = parse_prompts(body)
                if not await ctx.save_checkpoint({"prompts": prompts.model_dump(mode="json"), "prompt_usage": usage}):
                    return LineOutcome()
                ctx.log("prompts_generated", f"prompts generated by {self.settings.prompt_model} (OpenAI batch "
                        f"{service_batch_id})", {"usage": usage, "openai_batch_id": service_batch_id})
                return LineOutcome(prompts=True)
            style = ImageStyle(kind)
            if style.value not in still_needed and f"image:{style.value}" in job.checkpoint:
                return LineOutcome(image=GeneratedImage.model_validate(job.checkpoint[f"image:{style.value}"]))
            image = await self.store_image(ctx, style, images_answer(body), edited=edited)
            if image.unframed and ctx.channels:
                # (no redo here: through the Batch API it would wait another day; the review flags it)
                image.flagged = True
            if edited:
                await self._batch_fidelity(ctx, image)
            if not await ctx.save_checkpoint({f"image:{style.value}": image.model_dump(mode="json")}):
                return LineOutcome()
            ctx.log("image_stored", f"{style.value} image stored: {image.storage_path} (OpenAI batch "
                    f"{service_batch_id})", {"style": style.value, "bytes": image.bytes, "model": image.model})
            return LineOutcome(image=image)
        except (TransientError, PermanentError, ValidationError, ValueError) as exc:
            key = self.settings.openai_api_key
            return LineOutcome(retry=redact(f"the OpenAI batch output for {kind} could not be used: {exc}",
                                            [key.get_secret_value() if key is not None else None]))

    def _paid_call(self, ctx: RowContext, job: ClaimedRow, kind: str, key: str, body: Any, *,
                   edited: bool) -> PaidCall:
        """One answered output line as a ledger entry, keyed by its OpenAI batch and custom_id (so a line read
        again after a restart counts once), giving back what the row reserved for that call."""
        s = self.settings
        usage = body.get("usage") if isinstance(body, dict) else None
        usage = usage if isinstance(usage, dict) else None
        factor = pricing.BATCH_PRICE_FACTOR
        reserved = self.call_worst_cases(job).get(kind, 0.0) * factor
        photo = ctx.row_has_photo
        if kind == SubmissionStep.PROMPTS:
            return PaidCall(key=key, kind="prompts", route="from_photo" if photo else "from_text",
                            row_has_photo=photo, model=s.prompt_model, price_factor=factor, reserved_usd=reserved,
                            cost_usd=pricing.prompt_cost(s.prompt_model, usage) * factor)
        return PaidCall(key=key, kind="image", purpose="regenerate" if kind in ctx.redo else "row", style=kind,
                        route=(Route.GENERATED_FROM_PHOTO if edited else Route.GENERATED_FROM_TEXT).value,
                        row_has_photo=photo, model=s.image_model, size=s.image_size, quality=s.image_quality,
                        price_factor=factor, reserved_usd=reserved,
                        cost_usd=pricing.image_cost(s.image_model, s.image_size, s.image_quality, usage,
                                                    edited=edited) * factor)

    async def _batch_fidelity(self, ctx: RowContext, image: GeneratedImage) -> None:
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

    def batch_result(self, job: ClaimedRow) -> RowResult:
        """The result of a row whose prompts and images are all checkpointed, at Batch prices."""
        prompts = GeneratedPrompts.model_validate(job.checkpoint["prompts"])
        images = [GeneratedImage.model_validate(job.checkpoint[f"image:{style.value}"]) for style in ImageStyle]
        trigger = job.trigger_text or trigger_text(job.product)
        result = self.outcome(trigger, prompts, job.checkpoint.get("prompt_usage"), images,
                              price_factor=pricing.BATCH_PRICE_FACTOR).as_result(job)
        # Every answered line went into the ledger (and the row's and batch's cost) as it was collected.
        result.cost_recorded = True
        return result
