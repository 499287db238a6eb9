"""Prices in one place, for cost estimates per row and per file. USD per million tokens, as published by OpenAI
for the standard tier (gpt-6.1-terra: $1 in / $5 out; GPT Image 2.6: $5 text in, $8 image in, $30 image out).
Models not listed here are costed at zero and reported as unpriced."""

from __future__ import annotations

from typing import Any

# OpenAI's Batch API runs the same requests at half the standard price.
BATCH_PRICE_FACTOR = 0.5
# model -> (input, output) USD per 1M tokens
PROMPT_MODEL_PRICES: dict[str, tuple[float, float]] = {
    "gpt-6.1-terra": (1.00, 5.00),
    "gpt-6.1-sol": (2.00, 10.00),
    "gpt-5.6-terra": (2.00, 12.00),
}
# model -> (text input, image input, image output) USD per 1M tokens
IMAGE_MODEL_PRICES: dict[str, tuple[float, float, float]] = {
    "gpt-image-2.6-flare": (5.00, 8.00, 30.00),
    "gpt-image-2.6-sunburst": (5.00, 8.00, 30.00),
    "gpt-image-2.5-sunburst": (5.00, 8.00, 30.00),
}
# Output tokens of one 1024x1024 image by quality (larger sizes scale by area), for estimates made before any call.
IMAGE_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160, "auto": 1056}
PROMPT_TOKENS_ESTIMATE = (700, 600)  # one prompt-generation call: input, output
# A row with a photo: the prompt model sees it at low detail (a fixed 85 tokens), and each image is an edit whose
# input includes the reference (about 1,300 image tokens for a 1536 px reference: an estimate until the usage of
# the real call replaces it).
VISION_TOKENS_ESTIMATE = 85
REFERENCE_IMAGE_TOKENS_ESTIMATE = 1300

# Worst cases, reserved against budgets just before a call (sql/budget.sql). The prompt call is sent with
# max_completion_tokens = PROMPT_MAX_OUTPUT_TOKENS (a structured answer is about 600), so its output is bounded; its
# input is bounded by the bytes sent (a token is at least one byte) plus the chat format's own tokens. An image's
# output tokens are fixed by its size and quality; its text input is bounded the same way, and the reference photo
# (at most 1536 px a side) by REFERENCE_IMAGE_TOKENS_MAX, half again above what such a photo was measured to cost.
PROMPT_MAX_OUTPUT_TOKENS = 2000
MESSAGE_OVERHEAD_TOKENS = 50
REFERENCE_IMAGE_TOKENS_MAX = 2000
# The largest size an image of size "auto" may come back at (1536x1024), as a share of 1024x1024.
AUTO_SIZE_AREA_FACTOR = 1.5


def prompt_cost(model: str, usage: dict[str, Any] | None) -> float:
    """Cost of one prompt-generation call from its token usage; a call flex processing served is at Batch API
    prices (OpenAI: "Batch API prices for Responses/Chat Completions")."""
    price = PROMPT_MODEL_PRICES.get(model)
    if price is None or not usage:
        return 0.0
    cost = (usage.get("prompt_tokens", 0) * price[0] + usage.get("completion_tokens", 0) * price[1]) / 1e6
    return cost * BATCH_PRICE_FACTOR if usage.get("service_tier") == "flex" else cost


def _area_factor(size: str, unknown: float = 1.0) -> float:
    try:
        width, height = (int(part) for part in size.lower().split("x"))
    except ValueError:
        return unknown
    return width * height / (1024 * 1024)


def image_cost(model: str, size: str, quality: str, usage: dict[str, Any] | None, *, edited: bool = False) -> float:
    """Cost of one image: from its usage when the API reports it (text and image input tokens priced apart),
    else estimated from size and quality, plus the reference photo's input for an edit."""
    price = IMAGE_MODEL_PRICES.get(model)
    if price is None:
        return 0.0
    text_in, image_in, image_out = price
    if usage and ("output_tokens" in usage or "input_tokens" in usage):
        details = usage.get("input_tokens_details") or {}
        image_tokens = int(details.get("image_tokens") or 0)
        text_tokens = int(details.get("text_tokens") or max(0, int(usage.get("input_tokens", 0)) - image_tokens))
        return (text_tokens * text_in + image_tokens * image_in + usage.get("output_tokens", 0) * image_out) / 1e6
    tokens = IMAGE_OUTPUT_TOKENS.get(quality, IMAGE_OUTPUT_TOKENS["medium"]) * _area_factor(size)
    reference = REFERENCE_IMAGE_TOKENS_ESTIMATE * image_in if edited else 0.0
    return (tokens * image_out + reference) / 1e6


def row_estimate(prompt_model: str, image_model: str, size: str, quality: str, *, photo: bool = False) -> float:
    """Estimated cost of one row (one prompt call and two images) before anything is spent; with photo, the
    prompt model also looks at the product photo and both images are edits of it."""
    tokens_in, tokens_out = PROMPT_TOKENS_ESTIMATE
    if photo:
        tokens_in += VISION_TOKENS_ESTIMATE
    prompt = prompt_cost(prompt_model, {"prompt_tokens": tokens_in, "completion_tokens": tokens_out})
    return prompt + 2 * image_cost(image_model, size, quality, None, edited=photo)


def prompt_worst_case(model: str, input_bytes: int, *, photo: bool) -> float:
    """The most one prompt call can cost: every byte sent a token, the photo's fixed low-detail tokens, and the
    whole of max_completion_tokens."""
    price = PROMPT_MODEL_PRICES.get(model)
    if price is None:
        return 0.0
    tokens_in = input_bytes + MESSAGE_OVERHEAD_TOKENS + (VISION_TOKENS_ESTIMATE if photo else 0)
    return (tokens_in * price[0] + PROMPT_MAX_OUTPUT_TOKENS * price[1]) / 1e6


def image_worst_case(model: str, size: str, quality: str, prompt_bytes: int, *, edited: bool) -> float:
    """The most one image call can cost: its output tokens (fixed by size and quality; the highest quality when
    it is "auto"), every prompt byte a token, and the reference photo at its bound for an edit."""
    price = IMAGE_MODEL_PRICES.get(model)
    if price is None:
        return 0.0
    text_in, image_in, image_out = price
    per_image = IMAGE_OUTPUT_TOKENS["high"] if quality == "auto" else IMAGE_OUTPUT_TOKENS.get(
        quality, IMAGE_OUTPUT_TOKENS["high"])
    tokens_out = per_image * _area_factor(size, AUTO_SIZE_AREA_FACTOR)
    tokens_text = prompt_bytes + MESSAGE_OVERHEAD_TOKENS
    tokens_image = REFERENCE_IMAGE_TOKENS_MAX if edited else 0
    return (tokens_out * image_out + tokens_text * text_in + tokens_image * image_in) / 1e6


def is_priced(prompt_model: str, image_model: str) -> bool:
    """Whether both models are in the price table."""
    return prompt_model in PROMPT_MODEL_PRICES and image_model in IMAGE_MODEL_PRICES
