"""What a batch will cost, before it is spent. Rows that reuse another row's images cost nothing and are left out;
rows with a photo are priced with their image input; the Batch API at its discount. Per-row prices start from the
published figures (providers/pricing.py) and, once this account has run rows with the same prompt and image
model, size and quality, come from what those rows really cost (their ledger, normalised to standard prices):
token counts per image differ by model, size and quality and change over time, and cut-out packshots pay no
image at all, so the account's own recent rows are the better guide."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.models import ImageStyle, ProcessingMode
from csvjobs.providers import pricing

# Rows of the account's most recent batches the estimate learns from.
LEARN_FROM_BATCHES = 5
LEARN_FROM_ROWS = 2000


class Estimate(BaseModel):
    """An estimate, and how it was made."""

    total_usd: float
    per_row_usd: float  # per paying row, at the batch's processing mode's prices
    paying_rows: int
    basis: str
    learned_from_rows: int = 0


class LearnedPrices(BaseModel):
    """Average standard-price cost of a paying row, with and without a photo, and how many rows say so."""

    text_row: float | None = None
    photo_row: float | None = None
    rows: int = 0


def learned_prices(conn: db.Connection, user_id: uuid.UUID, settings: Settings) -> LearnedPrices:
    """The account's recent paying rows made with this configuration, averaged (nothing when there are none)."""
    # A row counts as a photo row when the file gave it a photo, used or not: the next file's rows are counted
    # the same way, and the share of photos that cannot be used is part of what the account's rows cost.
    paid = [row["id"] for row in conn.execute(
        "SELECT r.id FROM csv_batches r WHERE r.user_id = %s AND r.cost_usd"
        " + coalesce((SELECT sum(c.cost_usd) FROM csv_batch_counters c WHERE c.batch_id = r.id), 0) > 0"
        " ORDER BY r.created_at DESC LIMIT %s", [user_id, LEARN_FROM_BATCHES]).fetchall()]
    if not paid:
        return LearnedPrices()  # nothing to learn from (an account's first batches): no look at the rows
    # The most recently completed rows, read through the completed_at index: a look by batch alone goes through
    # the batch BRIN index, which reads every range not yet summarised (an upload's own new rows among them).
    rows = conn.execute(
        "SELECT j.cost_usd, j.usage, j.generated_images,"
        " coalesce(csv_row_job_product(j.row_data, j.product, b.column_mapping) ->> 'image_url', '') <> '' AS photo"
        " FROM csv_row_jobs j JOIN csv_batches b ON b.id = j.batch_id"
        " WHERE j.batch_id = ANY (%s::uuid[]) AND j.completed_at IS NOT NULL AND j.status = 'completed'"
        " AND j.cost_usd > 0 ORDER BY j.completed_at DESC LIMIT %s",
        [paid, LEARN_FROM_ROWS]).fetchall()
    costs: dict[bool, list[float]] = {False: [], True: []}
    for row in rows:
        if not _same_configuration(row, settings):
            continue
        usage = row["usage"] if isinstance(row["usage"], dict) else {}
        factor = float(usage.get("price_factor") or 1.0)
        costs[bool(row["photo"])].append(float(row["cost_usd"]) / factor)
    mean = {photo: (sum(values) / len(values) if values else None) for photo, values in costs.items()}
    return LearnedPrices(text_row=mean[False], photo_row=mean[True], rows=len(costs[False]) + len(costs[True]))


def _same_configuration(row: dict[str, Any], settings: Settings) -> bool:
    images = row["generated_images"] if isinstance(row["generated_images"], list) else []
    lifestyle = next((i for i in images if isinstance(i, dict)
                      and i.get("style") == ImageStyle.LIFESTYLE_EMOTIONAL.value), None)
    # The lifestyle image is always the model's (the white one may be a cut-out): it names what was asked for.
    return (lifestyle is not None and lifestyle.get("model") == settings.image_model
            and lifestyle.get("quality") == settings.image_quality and lifestyle.get("size") == settings.image_size)


def estimate(settings: Settings, *, rows: int, photo_rows: int, reused_rows: int, reused_photo_rows: int,
             mode: ProcessingMode, learned: LearnedPrices | None = None) -> Estimate:
    """The batch's estimate in its processing mode."""
    args = (settings.prompt_model, settings.image_model, settings.image_size, settings.image_quality)
    published_text = pricing.row_estimate(*args)
    published_photo = pricing.row_estimate(*args, photo=True)
    text_price, photo_price = published_text, published_photo
    learned = learned or LearnedPrices()
    if learned.text_row is not None or learned.photo_row is not None:
        # A kind of row not seen yet is scaled like the kind that was.
        if learned.text_row is not None:
            scale = learned.text_row / published_text if published_text else 1.0
        else:
            assert learned.photo_row is not None
            scale = learned.photo_row / published_photo if published_photo else 1.0
        text_price = learned.text_row if learned.text_row is not None else published_text * scale
        photo_price = learned.photo_row if learned.photo_row is not None else published_photo * scale
    factor = pricing.BATCH_PRICE_FACTOR if mode is ProcessingMode.OPENAI_BATCH else 1.0
    paying_photo = max(0, photo_rows - reused_photo_rows)
    paying_text = max(0, rows - reused_rows - paying_photo)
    total = (paying_text * text_price + paying_photo * photo_price) * factor
    paying = paying_text + paying_photo
    source = (f"learned from {learned.rows} recent row(s) of this account" if learned.rows else
              "OpenAI's published prices and token counts")
    basis = (f"{paying_text} row(s) x ${text_price * factor:.4f} + {paying_photo} row(s) with a photo x "
             f"${photo_price * factor:.4f} ({source}); {reused_rows} look-alike variant(s) reuse another row's "
             f"images for free; {settings.prompt_model}, {settings.image_model} {settings.image_size} "
             f"{settings.image_quality}" + (", at the Batch API's half price" if factor != 1.0 else ""))
    if not pricing.is_priced(settings.prompt_model, settings.image_model):
        basis += " (a model is missing from the price table: counted as free)"
    return Estimate(total_usd=round(total, 4), per_row_usd=round(total / paying, 6) if paying else 0.0,
                    paying_rows=paying, basis=basis, learned_from_rows=learned.rows)
