"""What a batch will cost, before it is spent, priced by route.

A row takes one of a few routes, and each route pays for different calls: a look-alike variant reuses another
row's images (nothing); a row without a photo pays a prompt call and two images made from text; a row with a photo
pays a prompt call that looks at the photo, an edit of the photo for the lifestyle image, and for the white image
either nothing (the product cut out of its own photo) or another edit, plus, on the synchronous path, an edit made
again when the fidelity check finds the product lost. Upload knows which rows are look-alikes and which have a
photo; whether a photo separates into a cut-out (and how often an edit is redone) it cannot know before fetching.

So an estimate is (paying rows of each kind) x (the calls such a row pays for) x (the price of each call), in the
batch's mode. The calls per row and the price per call are learned from this account's ledger of paid calls
(csv_paid_calls) when it has rows of that kind made with the same models, size and quality: that is the account's
own share of cut-outs and redos, and its real token counts. Otherwise they are the published figures
(providers/pricing.py) with FIRST_BATCH_CUTOUT_SHARE. The range: low, every photo's white image cut out and no
redo; high, every white image generated and every fidelity redo paid."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import InputError
from csvjobs.ingest import queries
from csvjobs.models import ProcessingMode, Route
from csvjobs.providers import pricing

# The account's most recent paying rows the estimate learns from.
LEARN_FROM_ROWS = 500
# Before an account has made a photo row: the share of photos whose product is cut out onto white (a plain
# background) rather than paid for. The range covers any share.
FIRST_BATCH_CUTOUT_SHARE = 0.5
# Output tokens of both images' alt text in one extra language (upload --alt-languages).
ALT_TEXT_TOKENS = 60

# A paid call's kind of answer, as the ledger says: (kind, route). Prompt calls' route is from_photo / from_text.
PROMPT_FROM_TEXT = ("prompts", "from_text")
PROMPT_FROM_PHOTO = ("prompts", "from_photo")
IMAGE_FROM_TEXT = ("image", Route.GENERATED_FROM_TEXT.value)
IMAGE_FROM_PHOTO = ("image", Route.GENERATED_FROM_PHOTO.value)
Call = tuple[str, str]


class RowMix(BaseModel):
    """The calls one paying row of a kind pays for on average: {(kind, route): calls}, the fidelity redos apart
    (the Batch API path makes none), and how many rows say so (0: the published figures)."""

    calls: dict[str, float]
    redo_calls: dict[str, float] = {}
    rows: int = 0


class LearnedPrices(BaseModel):
    """What the account's ledger says: the standard price of each kind of call, and the mix of calls of a text row
    and of a photo row; empty when it has nothing made with this configuration."""

    call_prices: dict[str, float] = {}
    text_row: RowMix | None = None
    photo_row: RowMix | None = None

    @property
    def rows(self) -> int:
        """How many of the account's rows the mixes were learned from."""
        return (self.text_row.rows if self.text_row else 0) + (self.photo_row.rows if self.photo_row else 0)


class Estimate(BaseModel):
    """An estimate, its range, and how it was made."""

    total_usd: float
    low_usd: float
    high_usd: float
    per_row_usd: float  # per paying row, at the batch's processing mode's prices
    least_row_usd: float  # the cheapest a paying row of this batch can be
    paying_rows: int
    basis: str
    learned_from_rows: int = 0


def _key(call: Call) -> str:
    return f"{call[0]}:{call[1]}"


def learned_prices(conn: db.Connection, user_id: uuid.UUID, settings: Settings) -> LearnedPrices:
    """The account's recent paid calls made with this configuration: the price of each kind of call, and the mix
    of calls of its text rows and photo rows (nothing when there are none)."""
    calls = queries.recent_paid_calls(conn, user_id, rows=LEARN_FROM_ROWS)
    if not calls:
        return LearnedPrices()
    same = [c for c in calls if _same_configuration(c, settings)]
    prices: dict[str, list[float]] = {}
    for call in same:
        prices.setdefault(_key((call["kind"], call["route"] or "")), []).append(
            float(call["cost_usd"]) / float(call["price_factor"] or 1))
    # A row counts only when every one of its calls was made with this configuration (a mix is per whole row).
    other_rows = {c["row_job_id"] for c in calls if not _same_configuration(c, settings)}
    return LearnedPrices(call_prices={key: sum(values) / len(values) for key, values in prices.items()},
                         text_row=_mix(c for c in same if not c["row_has_photo"] and c["row_job_id"] not in other_rows),
                         photo_row=_mix(c for c in same if c["row_has_photo"] and c["row_job_id"] not in other_rows))


def _mix(calls: Iterable[dict[str, Any]]) -> RowMix | None:
    counts: dict[str, float] = {}
    redos: dict[str, float] = {}
    rows: set[int] = set()
    for call in calls:
        rows.add(call["row_job_id"])
        into = redos if call["purpose"] in ("fidelity_redo", "white_redo") else counts
        key = _key((call["kind"], call["route"] or ""))
        into[key] = into.get(key, 0.0) + 1
    if not rows:
        return None
    return RowMix(calls={k: v / len(rows) for k, v in counts.items()},
                  redo_calls={k: v / len(rows) for k, v in redos.items()}, rows=len(rows))


def _same_configuration(call: dict[str, Any], settings: Settings) -> bool:
    if call["kind"] == "prompts":
        return bool(call["model"] == settings.prompt_model)
    return bool(call["model"] == settings.image_model and call["size"] == settings.image_size
                and call["quality"] == settings.image_quality)


def published_call_prices(settings: Settings) -> dict[str, float]:
    """The standard price of each kind of call from OpenAI's published prices and token counts."""
    tokens_in, tokens_out = pricing.PROMPT_TOKENS_ESTIMATE
    s = settings
    return {
        _key(PROMPT_FROM_TEXT): pricing.prompt_cost(s.prompt_model, {"prompt_tokens": tokens_in,
                                                                       "completion_tokens": tokens_out}),
        _key(PROMPT_FROM_PHOTO): pricing.prompt_cost(s.prompt_model, {
            "prompt_tokens": tokens_in + pricing.VISION_TOKENS_ESTIMATE, "completion_tokens": tokens_out}),
        _key(IMAGE_FROM_TEXT): pricing.image_cost(s.image_model, s.image_size, s.image_quality, None),
        _key(IMAGE_FROM_PHOTO): pricing.image_cost(s.image_model, s.image_size, s.image_quality, None, edited=True),
    }


def _first_mixes() -> tuple[RowMix, RowMix]:
    text = RowMix(calls={_key(PROMPT_FROM_TEXT): 1.0, _key(IMAGE_FROM_TEXT): 2.0})
    photo = RowMix(calls={_key(PROMPT_FROM_PHOTO): 1.0, _key(IMAGE_FROM_PHOTO): 2.0 - FIRST_BATCH_CUTOUT_SHARE})
    return text, photo


class RoutePrices(BaseModel):
    """What a paying row of each kind costs in one mode: expected, lowest and highest."""

    text: float
    photo: float
    text_low: float
    text_high: float
    photo_low: float
    photo_high: float
    call_prices: dict[str, float]


def route_prices(settings: Settings, mode: ProcessingMode, learned: LearnedPrices | None = None) -> RoutePrices:
    """Each kind of row's expected, lowest and highest cost in this mode, from what was learned or published."""
    learned = learned or LearnedPrices()
    published = published_call_prices(settings)
    prices = {**published, **learned.call_prices}
    first_text, first_photo = _first_mixes()
    text_mix = learned.text_row or first_text
    photo_mix = learned.photo_row or first_photo
    batch = mode is ProcessingMode.OPENAI_BATCH
    factor = pricing.BATCH_PRICE_FACTOR if batch else 1.0

    def cost(mix: RowMix) -> float:
        calls = dict(mix.calls)
        if not batch:  # the Batch API path flags a lost product for review instead of paying a redo
            for key, n in mix.redo_calls.items():
                calls[key] = calls.get(key, 0.0) + n
        return sum(n * prices.get(key, 0.0) for key, n in calls.items()) * factor

    text_row = cost(text_mix)
    edit = prices[_key(IMAGE_FROM_PHOTO)]
    prompt_photo = prices[_key(PROMPT_FROM_PHOTO)]
    photo_low = (prompt_photo + edit) * factor
    photo_high = (prompt_photo + 2 * edit * (1 if batch else 2)) * factor
    return RoutePrices(text=text_row, photo=cost(photo_mix), text_low=text_row, text_high=text_row,
                       photo_low=photo_low, photo_high=photo_high, call_prices=prices)


def estimate(settings: Settings, *, rows: int, photo_rows: int, reused_rows: int, reused_photo_rows: int,
             mode: ProcessingMode, learned: LearnedPrices | None = None, alt_languages: int = 0) -> Estimate:
    """The batch's estimate in its processing mode, with its range; each extra alt-text language adds its output
    tokens to every paying row's prompt call."""
    learned = learned or LearnedPrices()
    price = route_prices(settings, mode, learned)
    if alt_languages:
        factor_now = pricing.BATCH_PRICE_FACTOR if mode is ProcessingMode.OPENAI_BATCH else 1.0
        extra = pricing.prompt_cost(settings.prompt_model, {"prompt_tokens": 0, "completion_tokens":
                                                            ALT_TEXT_TOKENS * alt_languages}) * factor_now
        price = price.model_copy(update={k: getattr(price, k) + extra for k in (
            "text", "photo", "text_low", "text_high", "photo_low", "photo_high")})
    paying_photo = max(0, photo_rows - reused_photo_rows)
    paying_text = max(0, rows - reused_rows - paying_photo)
    paying = paying_text + paying_photo
    total = paying_text * price.text + paying_photo * price.photo
    low = paying_text * price.text_low + paying_photo * price.photo_low
    high = paying_text * price.text_high + paying_photo * price.photo_high
    least = min([p for p, n in ((price.text_low, paying_text), (price.photo_low, paying_photo)) if n] or [0.0])
    factor = pricing.BATCH_PRICE_FACTOR if mode is ProcessingMode.OPENAI_BATCH else 1.0
    photo_source = (f"learned from {learned.photo_row.rows} photo row(s)" if learned.photo_row else
                    f"published, with {FIRST_BATCH_CUTOUT_SHARE:.0%} of photos cut out")
    text_source = f"learned from {learned.text_row.rows} row(s)" if learned.text_row else "published"
    basis = (f"{paying_text} row(s) x ${price.text:.4f} ({text_source}) + {paying_photo} row(s) with a photo x "
             f"${price.photo:.4f} ({photo_source}; ${price.photo_low:.4f} if every white image is cut out, "
             f"${price.photo_high:.4f} if none is{'' if factor != 1.0 else ' and every edit is redone'}); "
             f"{reused_rows} look-alike variant(s) reuse another row's images for free; {settings.prompt_model}, "
             f"{settings.image_model} {settings.image_size} {settings.image_quality}"
             + (", at the Batch API's half price" if factor != 1.0 else "")
             + (f"; learned from {learned.rows} recent row(s) of this account" if learned.rows else
                "; OpenAI's published prices and token counts"))
    if not pricing.is_priced(settings.prompt_model, settings.image_model):
        basis += " (a model is missing from the price table: counted as free)"
    # (the range rounded outwards, so that a cost exactly at a bound stays inside it)
    return Estimate(total_usd=round(total, 4), low_usd=math.floor(low * 1e4) / 1e4,
                    high_usd=math.ceil(high * 1e4) / 1e4,
                    per_row_usd=round(total / paying, 6) if paying else 0.0, least_row_usd=round(least, 6),
                    paying_rows=paying, basis=basis, learned_from_rows=learned.rows)


def check_budget(estimate: Estimate, max_cost_usd: float | None) -> None:
    """Refuse a budget that no paying row of the batch fits (InputError, saying the least a row costs)."""
    if max_cost_usd is None or estimate.paying_rows == 0 or max_cost_usd >= estimate.least_row_usd:
        return
    raise InputError(f"--max-cost {max_cost_usd:g}: no row of this file fits that budget; the least a row costs "
                     f"is about ${estimate.least_row_usd:.4f}, so the batch would pay for prompts and never "
                     f"finish an image. Set --max-cost to at least {estimate.least_row_usd:.4f} (the whole file is "
                     f"estimated at ${estimate.total_usd:.2f}), or leave it out")


def redo_price(settings: Settings, images: Iterable[dict[str, Any]], learned: LearnedPrices | None = None) -> float:
    """What redoing these images costs: each image made again by its own route (an edit of the photo, or from
    text; a cut-out again costs nothing), at the learned or published price of that call. The one price
    `regenerate`, the review page and the bill agree on."""
    prices = route_prices(settings, ProcessingMode.SYNC, learned).call_prices
    total = 0.0
    for image in images:
        route = image.get("route") or (Route.GENERATED_FROM_PHOTO.value if image.get("edited")
                                       else Route.GENERATED_FROM_TEXT.value)
        if route != Route.CUTOUT.value and not image.get("reuses_row"):
            total += prices.get(_key(("image", route)), 0.0)
    return round(total, 6)
