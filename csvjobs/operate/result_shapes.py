"""Reading a row's stored results in every shape they may have been written in. csvjobs' own workers write
prompts as {style: {prompt, alt_text}}, images as [{style, storage_path, ...}] and tags as [...]; a worker written
from the single-call contract writes {"prompts": [lifestyle, white]}, {"images": [{"url", "model"}]} and
{"tags": [...]}. Readers (export, the gallery) go through these functions and never assume one shape."""

from __future__ import annotations

from typing import Any

from csvjobs.models import ImageStyle

_STYLES = list(ImageStyle)


def _unwrap(value: Any, key: str) -> Any:
    """{"key": X} -> X; anything else as it is."""
    if isinstance(value, dict) and key in value and len(value) == 1:
        return value[key]
    return value


def prompt_for(prompts: Any, style: ImageStyle) -> str:
    """The prompt of one style: from {style: {prompt}} or {style: text}, or by position from a list of two."""
    value = _unwrap(prompts, "prompts")
    entry: Any = None
    if isinstance(value, dict):
        entry = value.get(style.value)
    elif isinstance(value, list) and _STYLES.index(style) < len(value):
        entry = value[_STYLES.index(style)]
    if isinstance(entry, dict):
        entry = entry.get("prompt", "")
    return entry if isinstance(entry, str) else ""


def image_for(images: Any, style: ImageStyle) -> dict[str, Any]:
    """The image of one style as a dict: the item naming that style, else the item at the style's position."""
    value = _unwrap(images, "images")
    if isinstance(value, dict):  # {style: {...}} or {style: "path"}
        value = [dict(v, style=k) if isinstance(v, dict) else {"style": k, "url": v} for k, v in value.items()]
    if not isinstance(value, list):
        return {}
    items = [item if isinstance(item, dict) else {"url": item} for item in value if isinstance(item, dict | str)]
    for item in items:
        if item.get("style") == style.value:
            return item
    position = _STYLES.index(style)
    if position < len(items) and not items[position].get("style"):
        return items[position]
    return {}


def image_location(image: dict[str, Any]) -> str:
    """Where an image is: its storage path, else its URL (http(s) or a path), else ''."""
    for key in ("storage_path", "url", "path"):
        value = image.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def tags_of(tags: Any) -> list[str]:
    """Tags from [...], {"tags": [...]} or a comma-separated string."""
    value = _unwrap(tags, "tags")
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return []
    return [str(t).strip() for t in value if isinstance(t, str | int | float) and str(t).strip()]


def alt_text_for(prompts: Any, style: ImageStyle, review: Any = None) -> str:
    """One style's image's alt text: as the merchant edited it (review), else the model's (csvjobs' own shape has
    one; the contract's has none: '')."""
    entry = review.get(style.value) if isinstance(review, dict) else None
    edited = entry.get("alt_text") if isinstance(entry, dict) else None
    if isinstance(edited, str) and edited.strip():
        return edited.strip()
    value = _unwrap(prompts, "prompts")
    entry = value.get(style.value) if isinstance(value, dict) else None
    alt = entry.get("alt_text") if isinstance(entry, dict) else None
    return alt.strip() if isinstance(alt, str) else ""


def review_state(review: Any, style: ImageStyle) -> str:
    """approved, rejected or unreviewed: the merchant's review of a row's current image of one style."""
    entry = review.get(style.value) if isinstance(review, dict) else None
    state = entry.get("state") if isinstance(entry, dict) else None
    return state if state in ("approved", "rejected") else "unreviewed"
