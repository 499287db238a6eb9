"""Did the product survive? A cheap local check of an image made from the product's photo: the product's own
colours (from the photo's product mask, or the photo's centre when its background cannot be separated) must be
found in the generated image. The product's colours are clustered in CIELAB (k-means); each cluster is looked for
among the generated image's pixels within a perceptual distance; the score is the product's colour share that was
found. An image model that loses the product, repaints it another colour or swaps it for another object scores low.
Neutral colours (white, greys, black) say little (every scene has them), so only colourful clusters count; a
product with none passes with a note instead of a guess."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel

from csvjobs.models import IMAGE_FORMATS

THRESHOLD = 0.6
CLUSTERS = 4
# OpenCV 8-bit Lab: a and b are offset by 128; chroma below this is a neutral colour.
MIN_CHROMA = 18.0
MATCH_DISTANCE = 20.0
# A cluster is wholly found when this share of the generated image matches it (times its share of the product):
# a product filling a tenth of a lifestyle scene still counts in full.
FOUND_SHARE = 0.02
SAMPLE = 20_000


class Fidelity(BaseModel):
    """The check's verdict, kept with the image and logged as fidelity_check."""

    score: float
    passed: bool
    threshold: float = THRESHOLD
    note: str = ""


def _lab_pixels(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb.astype(np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)


def product_pixels(rgb: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The reference's product pixels (RGB rows): under the mask, or the middle half of the photo without one."""
    if mask is not None and mask.any():
        return rgb[mask > 0]
    h, w = rgb.shape[:2]
    return rgb[h // 4: 3 * h // 4, w // 4: 3 * w // 4].reshape(-1, 3)


def check(reference_pixels: np.ndarray, generated: bytes) -> Fidelity:
    """Score the generated image against the reference product's pixels."""
    rng = np.random.default_rng(0)  # a fixed seed: the same images always score the same
    pixels = reference_pixels
    if len(pixels) > SAMPLE:
        pixels = pixels[rng.choice(len(pixels), SAMPLE, replace=False)]
    lab = _lab_pixels(pixels)
    k = min(CLUSTERS, len(lab))
    if k == 0:
        return Fidelity(score=1.0, passed=True, note="no product pixels to compare")
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1.0)
    cv2.setRNGSeed(0)
    _compactness, labels, centres = cv2.kmeans(lab, k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    weights = np.bincount(labels.ravel(), minlength=k) / len(lab)
    chroma = np.hypot(centres[:, 1] - 128, centres[:, 2] - 128)
    colourful = chroma >= MIN_CHROMA
    if not colourful.any() or weights[colourful].sum() < 0.05:
        return Fidelity(score=1.0, passed=True, note="the product has no distinctive colour to check")
    image = Image.open(io.BytesIO(generated), formats=IMAGE_FORMATS).convert("RGB")
    image.thumbnail((256, 256))
    target = _lab_pixels(np.asarray(image))
    score = 0.0
    for centre, weight in zip(centres[colourful], weights[colourful], strict=True):
        share = float(np.mean(np.linalg.norm(target - centre, axis=1) <= MATCH_DISTANCE))
        score += weight * min(1.0, share / (FOUND_SHARE * weight / weights[colourful].max()))
    score = round(score / float(weights[colourful].sum()), 3)
    return Fidelity(score=score, passed=score >= THRESHOLD)
