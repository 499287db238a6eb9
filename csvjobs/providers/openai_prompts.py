"""What the prompt model is asked: the system prompt, the row's product fields and photo, and the shop's language
and market; the same messages for the synchronous call and a Batch API line."""

from __future__ import annotations

from typing import Any

from csvjobs.images.photos import Reference
from csvjobs.languages import language_name
from csvjobs.providers.contract import RowContext

SYSTEM_PROMPT = (
    "You write image-generation prompts for e-commerce marketing. For the product described by the user, return: "
    "lifestyle_emotional: a detailed prompt for an emotionally driven photograph of the product in use, with a "
    "person, a setting that fits the product's country and audience, natural light and a clear mood; "
    "single_white_background: a detailed prompt for the product alone on a pure white background, centred, soft "
    "studio light, no props and no text, ready for a product page; alt text for each image; and 5 to 12 short "
    "lowercase SEO tags. Describe only what the product data supports."
)


def language_brief(ctx: RowContext, country: str) -> str:
    """What the prompt model is told of the shop's language and market: alt text and tags in the batch's language
    (by name and tag), image prompts in English (image models follow English best) with the scene in the market,
    the product's own names, sizes and brand as the shop wrote them, and alt text in any extra languages."""
    if not ctx.language and not ctx.alt_languages:
        return ""
    tag = ctx.language or "en"
    name = language_name(tag)
    market = f"shoppers in {country}" if country else f"{name}-speaking shoppers"
    brief = (f"\nShop language: {name} ({tag}). Write both alt texts and every tag in {name}; write both image "
             f"prompts in English, with the scene set for {market} (any text shown in an image in {name}). Keep "
             "the product's own names, sizes and brand exactly as written above.")
    if ctx.alt_languages:
        wanted = ", ".join(f"{language_name(t)} ({t})" for t in ctx.alt_languages)
        brief += (f"\nAlt text languages: {', '.join(ctx.alt_languages)}. In translations, give both images' alt "
                  f"text once in each of: {wanted}.")
    else:
        brief += "\nLeave translations empty."
    return brief


def text_bytes(messages: list[dict[str, Any]]) -> int:
    """The bytes of text a chat request sends (a photo at low detail is a fixed number of tokens, whatever the
    bytes of its data URL: pricing.VISION_TOKENS_ESTIMATE)."""
    total = 0
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        total += sum(len(str(part.get("text") or "").encode()) for part in parts if part.get("type") == "text")
    return total


def prompt_messages(ctx: RowContext, trigger: str, reference: Reference | None) -> list[dict[str, Any]]:
    """The prompt model's messages for one row: its product fields, and its photo when it has one."""
    product = ctx.job.product
    user_text = (
        f"Product: {product.get('title') or '(untitled)'}\nType: {product.get('product_type', '')}\n"
        f"Country: {product.get('country', '')}\nSize: {product.get('size', '')}\nMPN: {product.get('mpn', '')}\n"
        f"Description: {product.get('description', '')}\nTrigger text: {trigger}"
    )
    user_text += language_brief(ctx, product.get("country", ""))
    content: str | list[dict[str, Any]] = user_text
    if reference is not None:
        # The product's photo: the prompts then describe its real colour, material and shape. Low detail
        # (one 512 px tile) is enough for that and keeps the call cheap.
        content = [
            {"type": "text", "text": user_text + "\nThe attached photo shows this exact product; describe it "
             "as it looks there, and write both prompts as edits of that photo that keep the product unchanged."},
            {"type": "image_url", "image_url": {"url": reference.vision_data_url(), "detail": "low"}},
        ]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]
