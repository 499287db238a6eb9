"""The offline provider: used when no API key is configured. Prompts from templates built on the trigger text,
tags from the row's words, and two placeholder PNGs that say plainly that they are placeholders, with the
product's own photo inside them when the row has one (fetched and checked as the OpenAI provider does), so the
whole flow can be seen without a key."""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import textwrap
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from csvjobs.config import Settings
from csvjobs.images.packshot import PhotoAnalysis, analyse_photo, finish_image, store_cutout
from csvjobs.images.photos import close_photo_clients, prepare_reference
from csvjobs.images.pixel_work import run_pixel_work
from csvjobs.models import IMAGE_FORMATS, ImageStyle, Route
from csvjobs.providers.contract import GeneratedImage, GeneratedPrompts, RowContext, RowOutcome, StylePrompt

IMAGE_SIZE = (512, 512)
_BACKGROUND = {ImageStyle.LIFESTYLE_EMOTIONAL: (250, 226, 200), ImageStyle.SINGLE_WHITE_BACKGROUND: (255, 255, 255)}
_STOPWORDS = frozenset(
    "a an and are as at be by for from has in is it its of on or that the this to with your you our "
    "de da do das dos e em para com um uma o os as".split()
)
_WORD = re.compile(r"[^\W\d_][\w'-]{2,}", re.UNICODE)


def template_prompts(product: dict[str, str], trigger: str) -> GeneratedPrompts:
    """Both image prompts, alt texts and tags from templates; deterministic for the same row."""
    name = product.get("title") or product.get("product_type") or "the product"
    kind = product.get("product_type") or "product"
    where = f" in {product['country']}" if product.get("country") else ""
    lifestyle = (
        f"An emotionally warm lifestyle photograph of {name} ({kind}) in everyday use{where}: a person enjoying "
        f"it in natural light, candid and aspirational, shallow depth of field. Product details: {trigger}"
    )
    white = (
        f"A clean e-commerce product photograph of {name} ({kind}) alone on a pure white background, centred, "
        f"soft studio lighting, no props, no text. Product details: {trigger}"
    )
    return GeneratedPrompts(
        lifestyle_emotional=StylePrompt(prompt=lifestyle, alt_text=f"{name} in use{where}"),
        single_white_background=StylePrompt(prompt=white, alt_text=f"{name} on a white background"),
        tags=tags_from_words(product) or [kind.lower()],
    )


def tags_from_words(product: dict[str, str], limit: int = 12) -> list[str]:
    """The row's most telling words, lowercased, without stopwords, in order of first appearance."""
    seen: dict[str, None] = {}
    for key in ("product_type", "title", "size", "country", "description"):
        for word in _WORD.findall(product.get(key, "")):
            lowered = word.lower().strip("'-")
            if lowered not in _STOPWORDS and len(lowered) > 2:
                seen.setdefault(lowered, None)
    return list(seen)[:limit]


def render_placeholder(style: ImageStyle, prompt: str, row_number: int, photo: bytes | None = None) -> bytes:
    """A PNG that shows it is a placeholder, with its style and prompt (also stored in the PNG's text chunks), and
    the product's photo in its lower half when there is one."""
    image = Image.new("RGB", IMAGE_SIZE, _BACKGROUND[style])
    draw = ImageDraw.Draw(image)
    big = ImageFont.load_default(size=30)
    small = ImageFont.load_default(size=15)
    draw.rectangle((8, 8, IMAGE_SIZE[0] - 9, IMAGE_SIZE[1] - 9), outline=(200, 40, 40), width=4)
    draw.text((24, 24), "PLACEHOLDER", fill=(200, 40, 40), font=big)
    draw.text((24, 64), f"style: {style.value}", fill=(40, 40, 40), font=small)
    draw.text((24, 86), f"row {row_number} - no image model was used", fill=(90, 90, 90), font=small)
    y = 124
    for line in textwrap.wrap(prompt, width=58)[: 8 if photo else 18]:
        draw.text((24, y), line, fill=(30, 30, 30), font=small)
        y += 20
    if photo is not None:
        thumb = Image.open(io.BytesIO(photo), formats=IMAGE_FORMATS).convert("RGBA")
        thumb.thumbnail((IMAGE_SIZE[0] - 48, IMAGE_SIZE[1] - y - 32))
        left = (IMAGE_SIZE[0] - thumb.width) // 2
        image.paste(thumb, (left, y + 8), thumb.getchannel("A"))
        draw.text((24, IMAGE_SIZE[1] - 30), "the product's photo (reference)", fill=(90, 90, 90), font=small)
    info = PngInfo()
    info.add_text("csvjobs:placeholder", "true")
    info.add_text("csvjobs:style", style.value)
    info.add_text("csvjobs:prompt", prompt)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info, optimize=False)
    return out.getvalue()


class OfflineProvider:
    """Templates and placeholder images: the whole pipeline, with no network and no cost."""

    name = "offline"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def process(self, ctx: RowContext) -> RowOutcome:
        """Template prompts, word tags and two stored placeholder images (showing the photo, if any)."""
        trigger = ctx.trigger_text
        reference = await prepare_reference(ctx, self.settings)
        prompts = template_prompts(ctx.job.product, trigger)
        ctx.log("prompts_generated", "prompts generated from templates (offline provider)", {})
        photo = reference.png if reference is not None else None
        analysis = await analyse_photo(ctx, photo) if photo is not None else None
        images = await asyncio.gather(*(self._image(ctx, style, prompts, photo, analysis) for style in ImageStyle))
        return RowOutcome(
            trigger_text=trigger,
            prompts=prompts.model_dump(mode="json"),
            images=list(images),
            tags=prompts.tags,
        )

    async def _image(self, ctx: RowContext, style: ImageStyle, prompts: GeneratedPrompts,
                     photo: bytes | None, analysis: PhotoAnalysis | None) -> GeneratedImage:
        white = style is ImageStyle.SINGLE_WHITE_BACKGROUND
        if white and analysis is not None and analysis.cutout is not None and self.settings.packshot == "auto":
            return await store_cutout(ctx, self.settings, analysis)  # the real thing: no model is needed
        prompt = prompts.for_style(style).prompt
        note = ctx.redo_note(style)
        if note:
            prompt = f"{prompt} Changes the reviewer asked for: {note}"
        data = await run_pixel_work(render_placeholder, style, prompt, ctx.job.row_number, photo)
        # The same finishing as real images (pure white to the edges, the channels' size and checks); a placeholder
        # is not claimed to be AI-made.
        done = await run_pixel_work(finish_image, data, style, "png", ctx.channels, ai_made=False)
        data, fmt, checks = done.data, done.fmt, done.checks
        bucket, key = ctx.image_key(style, fmt)
        path = await asyncio.to_thread(ctx.storage.put_bytes, bucket, key, data)
        details: dict[str, Any] = {"style": style.value, "storage_path": path, "bytes": len(data)}
        ctx.log("image_stored", f"placeholder image stored: {path}", details)
        return GeneratedImage(
            style=style,
            storage_path=path,
            model="offline-placeholder",
            size="x".join(str(n) for n in Image.open(io.BytesIO(data), formats=IMAGE_FORMATS).size),
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            placeholder=True,
            edited=photo is not None,
            pure_white=white or None,
            route=Route.GENERATED_FROM_PHOTO if photo is not None else Route.GENERATED_FROM_TEXT,
            checks=checks,
        )

    async def aclose(self) -> None:
        """Close the photos' pooled connections."""
        await close_photo_clients()
