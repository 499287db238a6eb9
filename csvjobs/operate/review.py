"""Reviewing a batch's images as its owner: approve, reject, or redo an image with a note (sql/review.sql)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import InputError
from csvjobs.ingest.estimate import learned_prices, redo_price
from csvjobs.models import ImageStyle
from csvjobs.operate import queries
from csvjobs.users import resolve_user_id


def parse_style(style: str | None) -> ImageStyle | None:
    """--style: lifestyle, white, or a full style name; None for both."""
    if style is None:
        return None
    key = style.strip().lower()
    by_word = {style.word: style for style in ImageStyle}
    if key in by_word:
        return by_word[key]
    try:
        return ImageStyle(key)
    except ValueError as exc:
        raise InputError(f"--style {style!r}: use lifestyle or white (or {', '.join(s.value for s in ImageStyle)})"
                         ) from exc


class Decision(BaseModel):
    """What approve / reject did: how many images changed, and the rows named that the upload left out."""

    changed: int
    left_out: list[int] = []


def review_images(settings: Settings, batch_id: uuid.UUID, rows: list[int] | None, style: ImageStyle | None,
                  action: str) -> Decision:
    """approve / reject / clear the current images of the rows: how many changed, and which rows named are not in
    the batch because the upload left them out (a number past the file's last row is an error)."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-review")
    with conn:
        changed = queries.review_images(conn, user_id, batch_id, rows, style.value if style else None, action)
        left_out = queries.rows_left_out(conn, user_id, batch_id, rows) if rows else []
    return Decision(changed=changed, left_out=left_out)


class Unflagged(BaseModel):
    """What approving by exception did: images approved, and products left for the merchant's eyes."""

    changed: int
    needs_eyes: int


def approve_unflagged(settings: Settings, batch_id: uuid.UUID) -> Unflagged:
    """Approve every image still to review of the products that need no eyes (review by exception)."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-review")
    with conn:
        changed = queries.approve_unflagged(conn, user_id, batch_id)
        counts = queries.review_page(conn, user_id, batch_id, "needs_eyes", size=1)["counts"]
    return Unflagged(changed=changed, needs_eyes=counts["needs_eyes"])


class Redo(BaseModel):
    """A redo request's answer: how many rows were queued, what their new images will cost, and the rows named
    that the upload left out."""

    rows: int
    price_usd: float
    left_out: list[int] = []


def regenerate_images(settings: Settings, batch_id: uuid.UUID, rows: list[int], style: ImageStyle | None,
                      note: str | None) -> Redo:
    """Queue new versions of the rows' images (with the note for the prompt): how many rows were queued, and the
    price of their new images (estimate.redo_price, the one price the review page shows too)."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-review")
    with conn:
        kind = style.value if style else None
        price = redo_quote(conn, settings, user_id, queries.images_to_redo(conn, user_id, batch_id, rows, kind))
        count = queries.request_regeneration(conn, user_id, batch_id, rows, kind, note)
        left_out = queries.rows_left_out(conn, user_id, batch_id, rows)
    return Redo(rows=count, price_usd=price if count else 0.0, left_out=left_out)


def regenerate_placeholders(settings: Settings, batch_id: uuid.UUID) -> Redo:
    """Queue new versions of exactly the batch's placeholder images (look-alike variants reuse the new ones)."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-review")
    with conn:
        price = redo_quote(conn, settings, user_id, queries.images_to_redo(conn, user_id, batch_id, None, None,
                                                                          placeholders=True))
        count = queries.redo_placeholders(conn, user_id, batch_id)
    return Redo(rows=count, price_usd=price if count else 0.0)


def redo_quote(conn: db.Connection, settings: Settings, user_id: uuid.UUID, images: list[dict[str, Any]]) -> float:
    """What making these images again costs, at this account's learned (or the published) price of each route."""
    return redo_pricer(conn, settings, user_id)(images)


def redo_pricer(conn: db.Connection, settings: Settings, user_id: uuid.UUID
                ) -> Callable[[list[dict[str, Any]]], float]:
    """estimate.redo_price with this account's prices learned once (the review page prices every image it shows)."""
    with db.user_transaction(conn, user_id):
        learned = learned_prices(conn, user_id, settings)
    return lambda images: redo_price(settings, images, learned)
