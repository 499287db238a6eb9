"""Reviewing a batch's images as its owner: approve, reject, or redo an image with a note (sql/review.sql)."""

from __future__ import annotations

import uuid

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import InputError
from csvjobs.models import ImageStyle
from csvjobs.operate import queries
from csvjobs.providers import pricing
from csvjobs.users import resolve_user_id

STYLE_NAMES = {"lifestyle": ImageStyle.LIFESTYLE_EMOTIONAL, "white": ImageStyle.SINGLE_WHITE_BACKGROUND}


def parse_style(style: str | None) -> ImageStyle | None:
    """--style: lifestyle, white, or a full style name; None for both."""
    if style is None:
        return None
    key = style.strip().lower()
    if key in STYLE_NAMES:
        return STYLE_NAMES[key]
    try:
        return ImageStyle(key)
    except ValueError as exc:
        raise InputError(f"--style {style!r}: use lifestyle or white (or {', '.join(s.value for s in ImageStyle)})"
                         ) from exc


def review_images(settings: Settings, batch_id: uuid.UUID, rows: list[int] | None, style: ImageStyle | None,
                  action: str) -> int:
    """approve / reject / clear the current images of the rows; how many changed."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-review")
    with conn:
        return queries.review_images(conn, user_id, batch_id, rows, style.value if style else None, action)


def regenerate_images(settings: Settings, batch_id: uuid.UUID, rows: list[int], style: ImageStyle | None,
                      note: str | None) -> int:
    """Queue new versions of the rows' images (with the note for the prompt); how many rows were queued."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-review")
    with conn:
        return queries.request_regeneration(conn, user_id, batch_id, rows, style.value if style else None, note)


def redo_cost(settings: Settings, rows: int, style: ImageStyle | None) -> float:
    """What redoing the images of `rows` rows will cost at the configured image model, size and quality (their
    prompts are reused; an edit of the photo costs a little more, a cut-out nothing)."""
    per_image = pricing.image_cost(settings.image_model, settings.image_size, settings.image_quality, None)
    return round(rows * (1 if style is not None else len(ImageStyle)) * per_image, 4)
