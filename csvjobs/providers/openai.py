"""The OpenAI provider: one structured-output chat call writes both image prompts and the tags, then two Images API
calls (run concurrently) make the images. Every step is checkpointed on the job, so a retried row never pays for
a step twice; each call reserves its worst case against the budgets just before it is made and is recorded in the
ledger of paid calls the moment its answer arrives; calls go through rate limits shared by all workers; errors are
sorted into transient and permanent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
import uuid
from typing import Any, Literal

import httpx
import openai
from openai.lib._parsing._completions import type_to_response_format_param
from openai.types import ImagesResponse
from pydantic import ValidationError

from csvjobs.config import Settings
from csvjobs.errors import BudgetRefused, ConfigError
from csvjobs.images.packshot import PhotoAnalysis, analyse_photo, check_fidelity, finish_image, store_cutout
from csvjobs.images.photos import Reference, close_photo_clients, prepare_reference
from csvjobs.images.pixel_work import run_pixel_work
from csvjobs.metrics import RequestTimer
from csvjobs.models import ClaimedRow, ImageStyle, Route
from csvjobs.providers import pricing
from csvjobs.providers.contract import (
    GeneratedImage,
    GeneratedPrompts,
    JobLostError,
    PaidCall,
    PermanentError,
    ProviderAccessError,
    RowContext,
    RowOutcome,
    TransientError,
    styles_still_needed,
)
from csvjobs.providers.openai_errors import classify_error
from csvjobs.providers.openai_prompts import SYSTEM_PROMPT, prompt_messages, text_bytes
from csvjobs.tracing import RequestSpans

_TIMER = RequestTimer()
_SPANS = RequestSpans()

# Added to a white image's prompt when the first came back with a background the product could not be found on.
STRICT_WHITE = (" The background must be pure white (#FFFFFF) and empty: no floor, wall, scene, props, text or "
                "shadow; the whole product in view, centred, not touching the edges.")
PROMPT_ATTEMPTS = 3  # invalid or refused structured output is asked again this many times in all


def _most_serious(failures: list[BaseException]) -> BaseException:
    """Of the failures of one row's calls, the one that decides what happens to the row: the pool stops, then the
    row is lost, the budget refuses, it fails for good, and last it is retried."""
    for kind in (asyncio.CancelledError, ProviderAccessError, JobLostError, BudgetRefused, PermanentError):
        for failure in failures:
            if isinstance(failure, kind):
                return failure
    return failures[0]


class OpenAIProvider:
    """Prompts from a chat model, images from an image model; models and limits come from Settings."""

    name = "openai"

    def __init__(self, settings: Settings) -> None:
        if settings.openai_api_key is None:
            raise ConfigError("the openai provider needs an API key: set OPENAI_API_KEY or pass --api-key")
        self.settings = settings
        # Our own retries (with backoff shared through the database) replace the SDK's, so they don't multiply.
        self.client = openai.AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            max_retries=0,
            timeout=settings.openai_timeout_seconds,
            # The SDK's own client, with hooks that count each request for `work --metrics-port` and trace it
            # when OpenTelemetry is configured.
            http_client=openai.DefaultAsyncHttpxClient(
                event_hooks={"request": [_TIMER.started, _SPANS.started],
                             "response": [_TIMER.answered, _SPANS.answered]}),
        )
        self._http: httpx.AsyncClient | None = None

    def call_worst_cases(self, job: ClaimedRow) -> dict[str, float]:
        """The most each of the row's remaining calls can cost at standard prices (the Paying contract), by call:
        "prompts" unless its prompts are saved, and each image style it still needs, as an edit when it has a
        photo. Before the prompts exist an image prompt is bounded by the prompt call's own output limit."""
        s = self.settings
        photo = bool(job.product.get("image_url"))
        saved = job.checkpoint.get("prompts")
        worst: dict[str, float] = {}
        if not isinstance(saved, dict):
            sent = len(SYSTEM_PROMPT.encode()) + len(json.dumps(job.product).encode()) + 400
            worst["prompts"] = pricing.prompt_worst_case(s.prompt_model, sent, photo=photo)
        for style in styles_still_needed(job.checkpoint):
            entry = saved.get(style.value) if isinstance(saved, dict) else None
            prompt_bytes = (len(str(entry.get("prompt", "")).encode()) if isinstance(entry, dict)
                            else 4 * pricing.PROMPT_MAX_OUTPUT_TOKENS)
            worst[style.value] = pricing.image_worst_case(s.image_model, s.image_size, s.image_quality, prompt_bytes,
                                                          edited=photo)
        return worst

    async def aclose(self) -> None:
        """Close the HTTP clients (the photos' too)."""
        await self.client.close()
        if self._http is not None:
            await self._http.aclose()
        await close_photo_clients()

    # --- the row ----------------------------------------------------------------------------------------------

    async def process(self, ctx: RowContext) -> RowOutcome:
        """Prompts (or the saved ones), then whichever images are still missing, then the outcome with costs."""
        saved = ctx.job.checkpoint
        trigger = ctx.trigger_text
        # The product's own photo, when the row has a usable one: the prompt model looks at it, and both images
        # are edits of it. Without one, both images are made from the text alone.
        reference = await prepare_reference(ctx, self.settings)
        if "prompts" in saved:
            prompts = GeneratedPrompts.model_validate(saved["prompts"])
            prompt_usage = saved.get("prompt_usage")
            ctx.log("prompts_reused", "prompts reused from the checkpoint (not paid again)", {})
        else:
            prompts, prompt_usage = await self._generate_prompts(ctx, trigger, reference)
            await self._checkpoint(ctx, {"prompts": prompts.model_dump(mode="json"), "prompt_usage": prompt_usage})
            ctx.log("prompts_generated", f"prompts generated by {self.settings.prompt_model}",
                    {"usage": prompt_usage})
        analysis = await analyse_photo(ctx, reference.png) if reference is not None else None
        # The images this step pays for are reserved together before either call starts: a budget that refuses
        # the second must not leave the first running for a row that is no longer held.
        paid = [style for style in ImageStyle if self._pays_for(ctx, style, analysis)]
        await ctx.reserve_or_stop(sum(self._image_worst_case(prompts.for_style(style).prompt, reference)
                                      for style in paid))
        # Every call of the row ends (paid and checkpointed, or failed) before anything is raised: asyncio.gather
        # would let the other call run on unsupervised after the first failure, and the row's retry would then
        # ask again for an image that call was still making, paying for it twice.
        answers = await asyncio.gather(*(self._image(ctx, style, prompts, reference, analysis)
                                         for style in ImageStyle), return_exceptions=True)
        failures = [answer for answer in answers if isinstance(answer, BaseException)]
        if failures:
            raise _most_serious(failures)
        images = [answer for answer in answers if isinstance(answer, GeneratedImage)]
        return self.outcome(trigger, prompts, prompt_usage, images)

    def _pays_for(self, ctx: RowContext, style: ImageStyle, analysis: PhotoAnalysis | None) -> bool:
        """Whether this row's image of style is still to be made by the image model (not saved, not cut out)."""
        saved = ctx.job.checkpoint.get(f"image:{style.value}")
        if saved and ctx.storage.exists(GeneratedImage.model_validate(saved).storage_path):
            return False
        return not self._cut_out(style, analysis)

    def _cut_out(self, style: ImageStyle, analysis: PhotoAnalysis | None) -> bool:
        return (style is ImageStyle.SINGLE_WHITE_BACKGROUND and analysis is not None and analysis.cutout is not None
                and self.settings.packshot == "auto")

    def _image_worst_case(self, prompt: str, reference: Reference | None) -> float:
        s = self.settings
        return pricing.image_worst_case(s.image_model, s.image_size, s.image_quality, len(prompt.encode()),
                                        edited=reference is not None)

    def outcome(self, trigger: str, prompts: GeneratedPrompts, prompt_usage: dict[str, Any] | None,
                images: list[GeneratedImage], *, price_factor: float = 1.0) -> RowOutcome:
        """A finished row with its cost (price_factor 0.5: everything went through the Batch API)."""
        cost = pricing.prompt_cost(self.settings.prompt_model, prompt_usage) + sum(
            pricing.image_cost(image.model, image.size, image.quality or "", usage, edited=image.edited)
            for image in images for usage in [image.usage, *image.earlier_usage]
        )
        return RowOutcome(
            trigger_text=trigger,
            prompts=prompts.model_dump(mode="json"),
            images=images,
            tags=prompts.tags,
            cost_usd=round(cost * price_factor, 6),
            usage={"prompt": prompt_usage, "images": {i.style.value: i.usage for i in images},
                   **({"price_factor": price_factor} if price_factor != 1.0 else {})},
        )

    async def _image(self, ctx: RowContext, style: ImageStyle, prompts: GeneratedPrompts,
                     reference: Reference | None, analysis: PhotoAnalysis | None = None) -> GeneratedImage:
        key = f"image:{style.value}"
        saved = ctx.job.checkpoint.get(key)
        if saved:
            image = GeneratedImage.model_validate(saved)
            if ctx.storage.exists(image.storage_path):
                ctx.log("image_reused", f"{style.value} image reused from the checkpoint (not paid again)",
                        {"storage_path": image.storage_path})
                return image
        if self._cut_out(style, analysis):
            assert analysis is not None
            image = await store_cutout(ctx, self.settings, analysis)
        else:
            prompt = prompts.for_style(style).prompt
            image = await self._generate_image(ctx, style, prompt, reference, reserved=True,
                                               purpose="regenerate" if style.value in ctx.redo else "row")
            if image.unframed and ctx.channels:
                image = await self._white_again(ctx, style, prompt, reference, image)
            if analysis is not None:
                image = await self._faithful(ctx, style, prompt, reference, analysis, image)
        await self._checkpoint(ctx, {key: image.model_dump(mode="json")})
        ctx.log("image_stored", f"{style.value} image stored: {image.storage_path}",
                {"style": style.value, "bytes": image.bytes, "model": image.model})
        return image

    async def _faithful(self, ctx: RowContext, style: ImageStyle, prompt: str, reference: Reference | None,
                        analysis: PhotoAnalysis, image: GeneratedImage) -> GeneratedImage:
        """Check that an image made from the photo kept the product; below the threshold make it once more (paid,
        and counted in the image's cost), and if that fails too keep it flagged for review."""
        verdict = check_fidelity(ctx, self.settings, analysis, image, await self._stored(ctx, image))
        if not verdict.passed:
            # The redo is a call the row can do without: when the budget has no room for it, the first image is
            # kept, flagged for review, and the row goes on.
            refused = await ctx.reserve(self._image_worst_case(prompt, reference), False)
            if refused:
                ctx.log("fidelity_redo_skipped", f"{style.value} image kept flagged, not made again: {refused}",
                        {"passed": False})
            else:
                earlier = [image.usage or {}]
                ctx.log("fidelity_redo", f"{style.value} image made again: the first did not keep the product", {})
                image = await self._generate_image(ctx, style, prompt, reference, purpose="fidelity_redo",
                                                   reserved=True)
                verdict = check_fidelity(ctx, self.settings, analysis, image, await self._stored(ctx, image))
                image.earlier_usage = earlier
        image.fidelity = verdict.model_dump(mode="json")
        image.flagged = image.flagged or not verdict.passed
        image.separation = analysis.separation.model_dump(mode="json")
        return image

    async def _white_again(self, ctx: RowContext, style: ImageStyle, prompt: str, reference: Reference | None,
                           image: GeneratedImage) -> GeneratedImage:
        """A generated white image whose background was not clean enough to find the product in cannot be made
        channel-ready: ask once more, strictly (paid, and counted in the image's cost); if that fails too, keep it
        flagged for review."""
        strict = prompt + STRICT_WHITE
        refused = await ctx.reserve(self._image_worst_case(strict, reference), False)
        reason = (image.framing or {}).get("reason", "")
        if refused:
            ctx.log("white_redo_skipped", f"white image kept flagged, not made again: {refused}", {"passed": False})
            image.flagged = True
            return image
        ctx.log("white_redo", f"white image made again with a stricter prompt: the product could not be found on "
                f"its background ({reason})", {"framing": image.framing})
        earlier = [image.usage or {}, *image.earlier_usage]
        again = await self._generate_image(ctx, style, strict, reference, purpose="white_redo", reserved=True)
        again.earlier_usage = earlier
        if again.unframed:
            again.flagged = True
            ctx.log("white_not_ready", "white image flagged: its background is still not clean enough to frame the "
                    f"product for the batch's channels ({(again.framing or {}).get('reason', '')})",
                    {"passed": False, "framing": again.framing})
        return again

    async def _stored(self, ctx: RowContext, image: GeneratedImage) -> bytes:
        return await asyncio.to_thread(ctx.storage.read_bytes, image.storage_path)

    # --- the calls --------------------------------------------------------------------------------------------

    def prompt_request(self, ctx: RowContext, trigger: str, reference: Reference | None) -> dict[str, Any]:
        """The body of the prompt call as a Batch API line sends it: the same model, messages and structured
        output format as the synchronous call."""
        return {"model": self.settings.prompt_model, "messages": prompt_messages(ctx, trigger, reference),
                # The SDK's own conversion of the model to a strict JSON schema (what chat.completions.parse
                # sends), so that both paths ask for exactly the same output.
                "response_format": type_to_response_format_param(GeneratedPrompts),
                "max_completion_tokens": pricing.PROMPT_MAX_OUTPUT_TOKENS}

    async def _generate_prompts(
        self, ctx: RowContext, trigger: str, reference: Reference | None
    ) -> tuple[GeneratedPrompts, dict[str, Any]]:
        settings = self.settings
        messages = prompt_messages(ctx, trigger, reference)
        problem = ""
        # Flex processing: Batch API prices, but it may answer 429 when it has no capacity; such 429s are waited
        # out (with backoff) for at most flex_wait_seconds, then the call goes to the standard tier.
        flex_until = time.monotonic() + settings.flex_wait_seconds if settings.prompt_service_tier == "flex" else None
        busy = 0
        attempt = 0
        worst = pricing.prompt_worst_case(settings.prompt_model, text_bytes(messages), photo=reference is not None)
        while attempt < PROMPT_ATTEMPTS:
            flex = flex_until is not None
            await self._limit(ctx, f"prompts:{settings.prompt_model}", settings.rpm)
            await ctx.reserve_or_stop(worst)
            try:
                completion = await self.client.chat.completions.parse(
                    model=settings.prompt_model,
                    messages=messages,  # type: ignore[arg-type]
                    response_format=GeneratedPrompts,
                    max_completion_tokens=pricing.PROMPT_MAX_OUTPUT_TOKENS,
                    service_tier="flex" if flex else openai.omit,
                )
            except openai.LengthFinishReasonError as exc:  # paid for, and cut off at the token limit
                await self._paid_prompt(ctx, exc.completion.usage, flex, reference, worst)
                problem = f"the prompt model's answer was cut off at {pricing.PROMPT_MAX_OUTPUT_TOKENS} tokens"
                attempt += 1
                continue
            except (ValidationError, ValueError) as exc:  # JSON that is not valid for the schema (still paid)
                await self._paid_prompt(ctx, None, flex, reference, worst)
                problem = f"the prompt model returned invalid output ({str(exc).splitlines()[0][:200]})"
                attempt += 1
                continue
            except openai.RateLimitError as exc:
                await ctx.unreserve(worst)
                if flex_until is None:
                    raise await self._classify(ctx, exc, f"prompts:{settings.prompt_model}",
                                               settings.prompt_model, "CSVJOBS_PROMPT_MODEL") from exc
                busy += 1
                wait = min(2.0 ** min(busy, 5) * 0.25, max(0.0, flex_until - time.monotonic()))
                if wait <= 0:
                    flex_until = None
                    ctx.log("flex_fallback", f"flex processing had no capacity for {settings.flex_wait_seconds:.0f}s; "
                            "the prompt goes to the standard tier (standard price)", {"busy_answers": busy})
                else:
                    await asyncio.sleep(wait)
                continue
            except openai.OpenAIError as exc:
                await ctx.unreserve(worst)
                raise await self._classify(ctx, exc, f"prompts:{settings.prompt_model}",
                                           settings.prompt_model, "CSVJOBS_PROMPT_MODEL") from exc
            except BaseException:
                await ctx.unreserve(worst)
                raise
            usage = await self._paid_prompt(ctx, completion.usage, flex, reference, worst)
            attempt += 1
            if not completion.choices:
                problem = "the prompt model returned no choices"
                continue
            message = completion.choices[0].message
            if message.refusal:
                problem = f"the prompt model refused: {message.refusal[:300]}"
                continue
            if message.parsed is None:
                problem = "the prompt model returned no structured output"
                continue
            return message.parsed, usage
        raise PermanentError(f"{problem} ({PROMPT_ATTEMPTS} attempts)")

    async def _paid_prompt(self, ctx: RowContext, usage_model: Any, flex: bool, reference: Reference | None,
                           reserved: float) -> dict[str, Any]:
        """Record a prompt call that was answered (and so paid), and give back its reservation; its usage."""
        model = self.settings.prompt_model
        if usage_model is not None:
            usage = usage_model.model_dump()
        else:
            # An answer the SDK could not parse: its usage is lost with it; the published estimate stands in.
            tokens_in, tokens_out = pricing.PROMPT_TOKENS_ESTIMATE
            usage = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "estimated": True}
        # Priced by the tier that served it (pricing.prompt_cost): flex at Batch API prices.
        usage["service_tier"] = "flex" if flex else "default"
        await ctx.record_paid(PaidCall(
            key=f"a{ctx.job.attempt}:prompts:{uuid.uuid4().hex}", kind="prompts",
            route="from_photo" if reference is not None else "from_text", row_has_photo=ctx.row_has_photo,
            model=model, price_factor=pricing.BATCH_PRICE_FACTOR if flex else 1.0,
            cost_usd=pricing.prompt_cost(model, usage), reserved_usd=reserved))
        return usage

    def image_params(self, style: ImageStyle, prompt: str) -> dict[str, Any]:
        """The Images API parameters of one image (without the reference photo)."""
        settings = self.settings
        white = style is ImageStyle.SINGLE_WHITE_BACKGROUND
        params: dict[str, Any] = {
            "model": settings.image_model,  # always explicit: the SDK's default is an old model
            "prompt": prompt,
            "n": 1,
            "size": settings.image_size,
            "quality": settings.image_quality,
            # The white image is asked for without a background and composited onto pure white here (see
            # white_background.py): a model's "white" is rarely (255, 255, 255) to the edges.
            "output_format": "png" if white else settings.image_format,
        }
        if white:
            params["background"] = "transparent"
        return params

    def image_request(self, style: ImageStyle, prompt: str, reference: Reference | None) -> tuple[str, dict[str, Any]]:
        """(endpoint, body) of one image as a Batch API line sends it: an edit of the photo (the JSON form, with
        the photo as a data URL) when the row has one, else a generation."""
        params = self.image_params(style, prompt)
        if reference is None:
            return "/v1/images/generations", params
        return "/v1/images/edits", {**params, "images": [{"image_url": reference.png_data_url()}]}

    async def _generate_image(
        self, ctx: RowContext, style: ImageStyle, prompt: str, reference: Reference | None, *,
        purpose: Literal["row", "fidelity_redo", "white_redo", "regenerate"], reserved: bool
    ) -> GeneratedImage:
        """One Images API call (its worst case already reserved when reserved), recorded as paid the moment its
        answer arrives, then the image stored."""
        settings = self.settings
        limit_key = f"images:{settings.image_model}"
        worst = self._image_worst_case(prompt, reference) if reserved else 0.0
        params = self.image_params(style, prompt)
        try:
            await self._limit(ctx, limit_key, settings.ipm)
            if reference is not None:
                response: ImagesResponse = await self.client.images.edit(
                    image=("reference.png", reference.png, "image/png"), **params)
            else:
                response = await self.client.images.generate(**params)
        except openai.OpenAIError as exc:
            await ctx.unreserve(worst)
            raise await self._classify(ctx, exc, limit_key, settings.image_model, "CSVJOBS_IMAGE_MODEL") from exc
        except BaseException:
            await ctx.unreserve(worst)
            raise
        edited = reference is not None
        usage = response.usage.model_dump() if response.usage is not None else None
        await ctx.record_paid(PaidCall(
            key=f"a{ctx.job.attempt}:image:{style.value}:{uuid.uuid4().hex}", kind="image", purpose=purpose,
            style=style.value, route=(Route.GENERATED_FROM_PHOTO if edited else Route.GENERATED_FROM_TEXT).value,
            row_has_photo=ctx.row_has_photo, model=settings.image_model, size=settings.image_size,
            quality=settings.image_quality, reserved_usd=worst,
            cost_usd=pricing.image_cost(settings.image_model, settings.image_size, settings.image_quality, usage,
                                        edited=edited)))
        return await self.store_image(ctx, style, response, edited=edited)

    async def store_image(self, ctx: RowContext, style: ImageStyle, response: ImagesResponse, *,
                          edited: bool) -> GeneratedImage:
        """Decode an Images API answer (a call's, or a Batch API output line's), apply the white-background rule
        and store the image under the row's key."""
        settings = self.settings
        if not response.data:
            raise TransientError("the image model returned no image")
        item = response.data[0]
        data = await self._image_bytes(item.b64_json, item.url)
        white = style is ImageStyle.SINGLE_WHITE_BACKGROUND
        try:
            done = await run_pixel_work(finish_image, data, style, settings.image_format, ctx.channels,
                                           ai_made=True)
        except OSError as exc:  # Pillow's UnidentifiedImageError among them
            raise TransientError(f"the image model returned an image that cannot be read ({exc})") from exc
        data, fmt, checks = done.data, done.fmt, done.checks
        usage = response.usage.model_dump() if response.usage is not None else None
        bucket, key = ctx.image_key(style, fmt)
        path = await asyncio.to_thread(ctx.storage.put_bytes, bucket, key, data)
        return GeneratedImage(
            style=style,
            storage_path=path,
            model=settings.image_model,
            size=settings.image_size,
            quality=settings.image_quality,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            revised_prompt=getattr(item, "revised_prompt", None),
            usage=usage,
            edited=edited,
            pure_white=white or None,
            route=Route.GENERATED_FROM_PHOTO if edited else Route.GENERATED_FROM_TEXT,
            checks=checks,
            framing=done.reframed.model_dump(mode="json") if done.reframed is not None else None,
        )

    async def _image_bytes(self, b64: str | None, url: str | None) -> bytes:
        """GPT image models return base64; some compatible servers return a URL (http(s) or data:)."""
        try:
            if b64:
                return base64.b64decode(b64, validate=True)
            if url and url.startswith("data:"):
                return base64.b64decode(url.split(",", 1)[1], validate=True)
        except (binascii.Error, IndexError) as exc:
            raise TransientError(f"the image model returned undecodable image data ({exc})") from exc
        if url:
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=self.settings.openai_timeout_seconds, follow_redirects=True)
            try:
                response = await self._http.get(url)
            except httpx.HTTPError as exc:
                raise TransientError(f"downloading the generated image failed: {exc}") from exc
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientError(f"downloading the generated image failed: HTTP {response.status_code}")
            if response.status_code >= 400:
                raise PermanentError(f"the generated image's URL answered HTTP {response.status_code}")
            return response.content
        raise TransientError("the image model returned neither image data nor a URL")

    async def _checkpoint(self, ctx: RowContext, data: dict[str, Any]) -> None:
        if not await ctx.save_checkpoint(data):
            raise JobLostError(f"row job {ctx.job.job_id} was reclaimed by another worker")

    async def _limit(self, ctx: RowContext, key: str, per_minute: float) -> None:
        await ctx.rate_limiter.acquire(key, per_minute)

    async def _classify(
        self, ctx: RowContext, exc: openai.OpenAIError, limit_key: str, model: str, model_setting: str
    ) -> Exception:
        """classify_error(), plus the one side effect: a 429 pauses every worker's calls on limit_key."""
        key = self.settings.openai_api_key
        error = classify_error(exc, model=model, model_setting=model_setting,
                               secrets=[key.get_secret_value() if key is not None else None])
        if isinstance(error, TransientError) and isinstance(exc, openai.RateLimitError):
            await ctx.rate_limiter.pause(limit_key, error.retry_after if error.retry_after is not None else 10.0)
        return error
