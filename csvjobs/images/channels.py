"""The sales channels' image rules, and the check of a stored image against them.

Numbers as the channels publish them (checked 2026-12-06): Google Merchant Center's image_link page
(support.google.com/merchants/answer/6324350): at least 500 x 500 from 2027-01-31, 1500 x 1500 recommended, at most
64 megapixels and 16 MB. eBay's picture policy (ebay.com/help/policies/listing-policies/picture-policy): at least 500
px on the longest side, no added borders or text. Amazon (its Seller Central page was not in the stored copies;
every guide quoting it agrees): main image on pure white 255,255,255, the product filling at least 85% of the frame,
at least 1,000 px on the longest side for zoom and 1,600 recommended, at most 10,000 px, JPEG/PNG/GIF/TIFF, sRGB or
CMYK. Shopify (its help page was not in the stored copies; guides agree): 2048 x 2048 square recommended, at most
4472 x 4472 (20 megapixels) and 20 MB. Etsy: 2000 px recommended (guides; Etsy's own pages in the stored copies give
no number)."""

from __future__ import annotations

import io
import math

from PIL import Image
from pydantic import BaseModel

from csvjobs.images.white_background import border_white
from csvjobs.models import IMAGE_FORMATS, Channel, ImageStyle

# A pixel counts as product (for the fill) when any channel is below this: anti-aliased edges and a soft shadow's
# faint rim stay out of the measure.
PRODUCT_BELOW = 245


class ChannelRules(BaseModel):
    """What one channel asks of a product image (the white-background rules apply to its main image only)."""

    min_long_side: int = 0
    min_short_side: int = 0
    recommended_side: int
    max_side: int | None = None
    max_pixels: int | None = None
    max_bytes: int | None = None
    formats: frozenset[str] = frozenset({"JPEG", "PNG"})
    main_pure_white: bool = False
    main_min_fill: float | None = None


RULES: dict[Channel, ChannelRules] = {
    Channel.AMAZON: ChannelRules(min_long_side=1000, recommended_side=1600, max_side=10_000,
                                 formats=frozenset({"JPEG", "PNG", "GIF"}), main_pure_white=True,
                                 main_min_fill=0.85),
    Channel.GOOGLE: ChannelRules(min_short_side=500, recommended_side=1500, max_pixels=64_000_000,
                                 max_bytes=16 * 1024 * 1024, formats=frozenset({"JPEG", "PNG", "WEBP", "GIF"})),
    Channel.SHOPIFY: ChannelRules(recommended_side=2048, max_side=4472, max_pixels=20_000_000,
                                  max_bytes=20 * 1024 * 1024, formats=frozenset({"JPEG", "PNG", "WEBP", "GIF"})),
    Channel.EBAY: ChannelRules(min_long_side=500, recommended_side=1600, max_bytes=12 * 1024 * 1024),
    Channel.ETSY: ChannelRules(min_long_side=2000, recommended_side=2000, max_bytes=10 * 1024 * 1024,
                               formats=frozenset({"JPEG", "PNG", "GIF"})),
}
# The share of the frame a cut-out product is scaled to: above Amazon's 85%, with a white margin all round.
PACKSHOT_FILL = 0.88


def target_side(channels: list[Channel], current: int) -> int:
    """The long side images are stored at for these channels: the largest recommended size, within every
    channel's maximum (sides and pixels); without channels, the size the image came at."""
    if not channels:
        return current
    side = max(RULES[c].recommended_side for c in channels)
    for rules in (RULES[c] for c in channels):
        if rules.max_side is not None:
            side = min(side, rules.max_side)
        if rules.max_pixels is not None:
            side = min(side, math.isqrt(rules.max_pixels))
    return side


def resize_to(image: Image.Image, long_side: int) -> Image.Image:
    """The image with its long side at long_side, resampled with Lanczos (up or down); unchanged if already so."""
    w, h = image.size
    if max(w, h) == long_side:
        return image
    scale = long_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def product_fill(rgb: Image.Image) -> float:
    """How much of the frame the product spans: its bounding box (pixels clearly not white) against the frame,
    on the side where it reaches furthest."""
    gray = rgb.convert("L").point(lambda v: 255 if v < PRODUCT_BELOW else 0)
    box = gray.getbbox()
    if box is None:
        return 0.0
    w, h = rgb.size
    return max((box[2] - box[0]) / w, (box[3] - box[1]) / h)


class ChannelCheck(BaseModel):
    """One channel's verdict on one stored image: the rules it fails (none: it passes)."""

    passed: bool
    failed: list[str] = []


def check_image(data: bytes, style: ImageStyle, channels: list[Channel], *,
                pixels: Image.Image | None = None) -> dict[str, ChannelCheck]:
    """Check the stored bytes against each channel's rules; the main-image rules for the white-background image.
    pixels: the RGB image the bytes encode losslessly, when the caller has it (they are not decoded again)."""
    if not channels:
        return {}
    image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    fmt = str(image.format)
    w, h = image.size
    main = style is ImageStyle.SINGLE_WHITE_BACKGROUND
    rgb = (pixels if pixels is not None else image.convert("RGB")) if main else None
    white = border_white(rgb) if rgb is not None else False
    fill = product_fill(rgb) if rgb is not None else 0.0
    verdicts: dict[str, ChannelCheck] = {}
    for channel in channels:
        rules = RULES[channel]
        failed = []
        if max(w, h) < rules.min_long_side:
            failed.append(f"long side {max(w, h)} px < {rules.min_long_side}")
        if min(w, h) < rules.min_short_side:
            failed.append(f"short side {min(w, h)} px < {rules.min_short_side}")
        if rules.max_side is not None and max(w, h) > rules.max_side:
            failed.append(f"long side {max(w, h)} px > {rules.max_side}")
        if rules.max_pixels is not None and w * h > rules.max_pixels:
            failed.append(f"{w * h} pixels > {rules.max_pixels}")
        if rules.max_bytes is not None and len(data) > rules.max_bytes:
            failed.append(f"{len(data)} bytes > {rules.max_bytes}")
        if fmt not in rules.formats:
            failed.append(f"format {fmt} not accepted")
        if image.mode not in ("RGB", "RGBA", "L", "P"):
            failed.append(f"colour mode {image.mode}, not sRGB")
        if main and rules.main_pure_white and not white:
            failed.append("background not pure white to the edges")
        if main and rules.main_min_fill is not None and fill < rules.main_min_fill:
            failed.append(f"product fills {fill:.0%} of the frame < {rules.main_min_fill:.0%}")
        verdicts[channel.value] = ChannelCheck(passed=not failed, failed=failed)
    return verdicts


def describe_checks(checks: dict[str, ChannelCheck] | dict[str, dict[str, object]]) -> str:
    """One line for exports: amazon ok; google failed (short side 400 px < 500)."""
    parts = []
    for channel, verdict in checks.items():
        check = verdict if isinstance(verdict, ChannelCheck) else ChannelCheck.model_validate(verdict)
        parts.append(f"{channel} ok" if check.passed else f"{channel} failed ({'; '.join(check.failed)})")
    return "; ".join(parts)
