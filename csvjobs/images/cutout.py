"""The packshot from the product's own pixels: measure whether a photo's background can be told from the product,
cut the product out where it can, and place it on pure white at a channel's size and fill.

The segmentation is classical, and that is the choice: product photos in catalogues are mostly shot on plain or
studio backgrounds, where the background is the one colour that runs round the whole border. The background
colour is the median of a border strip; a pixel is background when it is close to that colour in CIELAB
(perceptual distance, so a white mug on a light grey sweep still separates) and connected to the border (so a
white label inside the product stays product). The measure kept with each image says how uniform the border was
and how much of the frame the product took. A cluttered photo (a border of many colours), a product cut by the
frame, or a "product" that is nearly all or nearly none of the frame is not separable, and the caller falls back
to the image model. No learned model: nothing to download, fast on one core, and its failures are explainable."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pydantic import BaseModel

from csvjobs.images.white_background import flatten_onto_white
from csvjobs.models import IMAGE_FORMATS

# A border strip this share of the short side wide is what the background is measured on.
BORDER_SHARE = 0.03
# CIELAB distance (OpenCV's 8-bit Lab, roughly ΔE76) within which a pixel matches the background colour; widened
# for a border that varies (a gradient sweep, noise), up to MAX_TOLERANCE.
BASE_TOLERANCE = 12.0
MAX_TOLERANCE = 28.0
# The border must be this uniform (share of its pixels within the tolerance) for the background to be plain.
MIN_UNIFORMITY = 0.92
# The product must take between these shares of the frame, and touch the frame's outermost pixels on at most this
# share of them (more is a product the photo cuts off: its packshot would show it cut).
MIN_PRODUCT_SHARE = 0.01
MAX_PRODUCT_SHARE = 0.90
MAX_EDGE_CONTACT = 0.005
# Bits of "product" smaller than this share of the largest part are noise (dust, a seam in the backdrop).
SPECK_SHARE = 0.01
# Photos are analysed at most this big (a mask computed small and scaled up is indistinguishable after feathering).
ANALYSIS_SIDE = 1024


class Separation(BaseModel):
    """The measure of a photo's background, kept with the image it led to."""

    separable: bool
    reason: str = ""
    background: tuple[int, int, int] = (255, 255, 255)
    border_uniformity: float = 0.0
    tolerance: float = 0.0
    product_share: float = 0.0
    edge_contact: float = 0.0


@dataclass
class Cutout:
    """The product's pixels on transparency, cropped to the product, and the measure that allowed it."""

    image: Image.Image  # RGBA
    separation: Separation
    mask: np.ndarray  # the product mask at the photo's analysis size (uint8, 0/255), for the fidelity check
    analysis_rgb: np.ndarray  # the photo at the analysis size (RGB)


def _load_rgb(source: bytes | Image.Image) -> Image.Image:
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else flatten_onto_white(source)
    image = Image.open(io.BytesIO(source), formats=IMAGE_FORMATS)
    image.load()
    return flatten_onto_white(image)


def _border(mask_shape: tuple[int, int], width: int) -> np.ndarray:
    border = np.zeros(mask_shape, dtype=bool)
    border[:width, :] = border[-width:, :] = True
    border[:, :width] = border[:, -width:] = True
    return border


def separate(rgb: np.ndarray) -> tuple[Separation, np.ndarray]:
    """Measure the background of an RGB array and, when it is separable, the product mask (uint8, 255 = product)."""
    h, w = rgb.shape[:2]
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    width = max(2, round(min(h, w) * BORDER_SHARE))
    border = _border((h, w), width)
    background = np.median(lab[border], axis=0)
    distance = np.linalg.norm(lab - background, axis=2)
    spread = float(np.percentile(distance[border], 90))
    tolerance = float(min(MAX_TOLERANCE, max(BASE_TOLERANCE, spread * 1.5)))
    uniformity = float(np.mean(distance[border] <= tolerance))
    bg_rgb = cv2.cvtColor(background.reshape(1, 1, 3).astype(np.uint8), cv2.COLOR_LAB2RGB)[0, 0]
    measure = Separation(separable=False, background=(int(bg_rgb[0]), int(bg_rgb[1]), int(bg_rgb[2])),
                         border_uniformity=round(uniformity, 4), tolerance=round(tolerance, 2))
    empty = np.zeros((h, w), dtype=np.uint8)
    if uniformity < MIN_UNIFORMITY:
        measure.reason = f"the background is not plain (only {uniformity:.0%} of the border is one colour)"
        return measure, empty
    # Background: pixels close to its colour that the border reaches through other such pixels.
    candidate = (distance <= tolerance).astype(np.uint8)
    count, labels = cv2.connectedComponents(candidate, connectivity=8)
    touching = np.unique(labels[border & (candidate == 1)])
    background_mask = np.isin(labels, touching[touching != 0])
    # Clean: close small gaps, then drop specks far smaller than the product.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    product: np.ndarray = cv2.morphologyEx(((~background_mask) * 255).astype(np.uint8), cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _centroids = cv2.connectedComponentsWithStats(product, connectivity=8)
    if count > 1:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep = 1 + np.flatnonzero(areas >= areas.max() * SPECK_SHARE)
        product = (np.isin(labels, keep) * 255).astype(np.uint8)
    share = float(np.mean(product > 0))
    contact = float(np.mean(product[_border((h, w), 1)] > 0))
    measure.product_share = round(share, 4)
    measure.edge_contact = round(contact, 4)
    if share < MIN_PRODUCT_SHARE:
        measure.reason = "no product stands out from the background"
    elif share > MAX_PRODUCT_SHARE:
        measure.reason = f"the product would take {share:.0%} of the photo: the background cannot be told from it"
    elif contact > MAX_EDGE_CONTACT:
        measure.reason = f"the product touches the photo's edge ({contact:.0%} of the border): it may be cut off"
    else:
        measure.separable = True
        return measure, product
    return measure, empty


def cut_out(source: bytes | Image.Image) -> tuple[Cutout | None, Separation]:
    """The product cut out of its photo (encoded, or decoded and flattened), or None (with the measure saying why)
    when the background cannot be separated. Raises OSError for bytes that are not an image."""
    photo = _load_rgb(source)
    # Straight to the analysis size (a copy to shrink in place would hold the whole photo a second time).
    scale = min(1.0, ANALYSIS_SIDE / max(photo.size))
    analysis = photo if scale == 1.0 else photo.resize(
        (max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.Resampling.LANCZOS)
    rgb = np.asarray(analysis)
    measure, mask = separate(rgb)
    if not measure.separable:
        return None, measure
    # Scale the mask to the photo, feather its edge by a pixel or so, and crop to the product.
    alpha = Image.fromarray(mask).resize(photo.size, Image.Resampling.BILINEAR)
    alpha = alpha.filter(ImageFilter.GaussianBlur(radius=max(0.6, photo.size[0] / 1500)))
    rgba = photo.convert("RGBA")
    rgba.putalpha(alpha)
    box = alpha.point(lambda v: 255 if v > 8 else 0).getbbox()
    assert box is not None  # separable means a product share of at least MIN_PRODUCT_SHARE
    return Cutout(rgba.crop(box), measure, mask, rgb), measure


# A generated white-background image's background counts as white when its colour is within this (summed over the
# channels) of (255, 255, 255): a model's "white" is often a little off; a coloured backdrop is not white.
NEAR_WHITE_SUM = 45


def reframe_on_white(source: bytes | Image.Image, side: int, *,
                     fill: float) -> tuple[Image.Image | None, Separation]:
    """A generated white-background image reframed like a cut-out: the product found on its (near-)white
    background, cut out, and centred on pure white at side px spanning `fill` of the frame. None, with the measure
    saying why, when the background is not clean enough to find the product (a scene, a coloured backdrop, a
    product the frame cuts off)."""
    cutout, measure = cut_out(source)
    if cutout is not None and sum(255 - c for c in measure.background) > NEAR_WHITE_SUM:
        measure.separable = False
        measure.reason = f"the background is {measure.background}, not white"
        cutout = None
    if cutout is None:
        return None, measure
    return place_on_white(cutout.image, side, fill=fill), measure


def place_on_white(product: Image.Image, side: int, *, fill: float, shadow: bool = False) -> Image.Image:
    """The cut-out product centred on a pure white square of side px, scaled so that it spans `fill` of the
    frame on its longer side, with an optional soft contact shadow that stays clear of the edges."""
    w, h = product.size
    scale = side * fill / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    scaled = product.resize(size, Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    x, y = (side - size[0]) // 2, (side - size[1]) // 2
    if shadow:
        canvas.paste(_contact_shadow(size, side, (x, y)), (0, 0))
    canvas.paste(scaled, (x, y), mask=scaled.getchannel("A"))
    return canvas


def _contact_shadow(size: tuple[int, int], side: int, at: tuple[int, int]) -> Image.Image:
    """A soft grey ellipse under the product's base, blurred, on white; its rim never reaches the frame's edge."""
    layer = Image.new("L", (side, side), 0)
    w, h = size
    x, y = at
    ellipse = (x + w * 0.1, y + h - h * 0.03, x + w * 0.9, min(side - 4, y + h + h * 0.04))
    ImageDraw.Draw(layer).ellipse(ellipse, fill=70)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=max(2.0, side / 150)))
    shade = Image.new("RGB", (side, side), (255, 255, 255))
    grey = Image.new("RGB", (side, side), (120, 120, 120))
    shade.paste(grey, mask=layer)
    return shade
