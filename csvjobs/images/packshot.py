"""How every image is finished before it is stored, whichever provider made it, and the packshot made without
one: the white-background rule, the channels' size (Lanczos), provenance (AI-made images say so in XMP), the
channels' checks; the product cut out of its own photo onto white; the fidelity check of an image made from the
photo. Providers call these; nothing here calls a model."""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from csvjobs.config import Settings
from csvjobs.images import fidelity
from csvjobs.images.channels import PACKSHOT_FILL, RULES, check_image, resize_to, target_side
from csvjobs.images.cutout import Cutout, Separation, cut_out, place_on_white, reframe_on_white
from csvjobs.images.pixel_work import run_pixel_work
from csvjobs.images.provenance import mark_ai_generated
from csvjobs.images.white_background import PNG_LEVEL, encode_white, flatten_onto_white, whiten
from csvjobs.models import IMAGE_FORMATS, ImageStyle, Route, parse_channels
from csvjobs.providers.contract import GeneratedImage, RowContext


@dataclass
class PhotoAnalysis:
    """What the row's photo allows: its cut-out (when its background separates), the measure, and the product's
    pixels for the fidelity check."""

    cutout: Cutout | None
    separation: Separation
    product_pixels: np.ndarray


async def analyse_photo(ctx: RowContext, png: bytes) -> PhotoAnalysis:
    """Measure the photo's background once per row (a thread: it is CPU work) and log the measure."""
    cutout, separation = await run_pixel_work(cut_out, png)
    if cutout is not None:
        pixels = fidelity.product_pixels(cutout.analysis_rgb, cutout.mask)
    else:
        photo = Image.open(io.BytesIO(png), formats=IMAGE_FORMATS).convert("RGB")
        photo.thumbnail((512, 512))
        pixels = fidelity.product_pixels(np.asarray(photo), None)
    ctx.log("photo_background", ("the photo's background separates from the product" if separation.separable else
                                 f"the photo's background does not separate: {separation.reason}"),
            separation.model_dump(mode="json"))
    return PhotoAnalysis(cutout, separation, pixels)


def _long_side(size: str) -> int:
    try:
        return max(int(part) for part in size.lower().split("x"))
    except ValueError:
        return 1024


@dataclass
class Finished:
    """An image ready to store: its bytes and format, each channel's verdict, and for a generated white-background
    image whether it could be reframed like a cut-out (None: not such an image)."""

    data: bytes
    fmt: str
    checks: dict[str, Any]
    reframed: Separation | None = None

    @property
    def unframed(self) -> bool:
        """A generated white image whose background was not clean enough to find the product in."""
        return self.reframed is not None and not self.reframed.separable


def finish_image(data: bytes, style: ImageStyle, fmt: str, channels: tuple[str, ...], *,
                 ai_made: bool) -> Finished:
    """The bytes to store, their format and the channels' checks: resized for the channels, the white-background
    image pure white to its edges (a generated one reframed like a cut-out: the product found on its white
    background and centred at the packshot's fill), and, for an AI-made image, XMP saying so. Raises OSError for
    non-images."""
    image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    image.load()
    return finish_pixels(flatten_onto_white(image), style, fmt, channels, ai_made=ai_made)


def finish_pixels(rgb: Image.Image, style: ImageStyle, fmt: str, channels: tuple[str, ...], *,
                  ai_made: bool) -> Finished:
    """finish_image() of pixels already decoded (RGB; the white image's are whitened in place): every step works
    on them, and only the stored bytes are encoded."""
    wanted = parse_channels(list(channels))
    save_as = {"jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}.get(fmt, "PNG")
    if any(save_as not in RULES[channel].formats for channel in wanted):
        fmt, save_as = "png", "PNG"  # every channel takes PNG; not every one takes WebP
    side = target_side(wanted, max(rgb.size))
    reframed: Separation | None = None
    if style is ImageStyle.SINGLE_WHITE_BACKGROUND and ai_made:
        framed, reframed = reframe_on_white(rgb, side, fill=PACKSHOT_FILL)
        if framed is not None:
            rgb = framed
    if side != max(rgb.size):
        rgb = resize_to(rgb, side)
    if style is ImageStyle.SINGLE_WHITE_BACKGROUND:
        rgb = whiten(rgb)
        out, fmt = encode_white(rgb, fmt)
        exact = fmt == "png"
    else:
        encoded = io.BytesIO()
        rgb.save(encoded, format=save_as, **({"quality": 92} if save_as in ("JPEG", "WEBP") else
                                              {"compress_level": PNG_LEVEL}))
        out = encoded.getvalue()
        exact = save_as == "PNG"
    if ai_made:
        out = mark_ai_generated(out)  # XMP only: the pixels are not touched
    checks = {name: verdict.model_dump()
              for name, verdict in check_image(out, style, wanted, pixels=rgb if exact else None).items()}
    return Finished(out, fmt, checks, reframed)


async def store_cutout(ctx: RowContext, settings: Settings, analysis: PhotoAnalysis) -> GeneratedImage:
    """The white-background image from the product's own pixels: centred on pure white at the channels' size,
    filling PACKSHOT_FILL of the frame; stored, and paid for by nobody."""
    assert analysis.cutout is not None
    style = ImageStyle.SINGLE_WHITE_BACKGROUND
    side = target_side(parse_channels(list(ctx.channels)), _long_side(settings.image_size))

    def render() -> tuple[bytes, str, dict[str, Any]]:
        assert analysis.cutout is not None
        canvas = place_on_white(analysis.cutout.image, side, fill=PACKSHOT_FILL, shadow=settings.packshot_shadow)
        done = finish_pixels(canvas, style, settings.image_format, ctx.channels, ai_made=False)
        return done.data, done.fmt, done.checks

    data, fmt, checks = await run_pixel_work(render)
    bucket, key = ctx.image_key(style, fmt)
    path = await asyncio.to_thread(ctx.storage.put_bytes, bucket, key, data)
    image = GeneratedImage(style=style, storage_path=path, model="cutout", size=f"{side}x{side}", bytes=len(data),
                           sha256=hashlib.sha256(data).hexdigest(), pure_white=True, route=Route.CUTOUT,
                           # made from the product's photo (its own pixels): not an image "made without the photo"
                           edited=True,
                           checks=checks, separation=analysis.separation.model_dump(mode="json"))
    ctx.log("packshot_cut_out", f"white-background image cut out of the product's photo (no image model paid): "
            f"{path}", {"style": style.value, "bytes": len(data), "separation": image.separation, "checks": checks})
    return image


def check_fidelity(ctx: RowContext, settings: Settings, analysis: PhotoAnalysis, image: GeneratedImage,
                   data: bytes) -> fidelity.Fidelity:
    """Score an image made from the photo against the photo's product, and log it (WARN when it fails)."""
    verdict = fidelity.check(analysis.product_pixels, data)
    verdict.threshold = settings.fidelity_threshold
    verdict.passed = verdict.score >= settings.fidelity_threshold
    ctx.log("fidelity_check", f"{image.style.value} image {'keeps' if verdict.passed else 'may have lost'} the "
            f"product's colours (score {verdict.score:.2f}, threshold {verdict.threshold:.2f})"
            + (f": {verdict.note}" if verdict.note else ""),
            {"style": image.style.value, **verdict.model_dump(mode="json")})
    return verdict
