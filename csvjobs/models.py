"""Pydantic models and status enums shared across modules. Status words match the CHECK constraints in sql/."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field


class BatchStatus(StrEnum):
    """Where a batch is in its life."""

    UPLOADED = "uploaded"
    QUEUED = "queued"
    PROCESSING = "processing"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RowStatus(StrEnum):
    """Where a row job is in its life."""

    PENDING = "pending"
    CLAIMED = "claimed"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class WorkerStatus(StrEnum):
    """A registered worker's state."""

    IDLE = "idle"
    PROCESSING = "processing"
    STOPPED = "stopped"


class LogLevel(StrEnum):
    """Levels of csv_processing_logs rows."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"
    FATAL = "FATAL"


class ImageStyle(StrEnum):
    """The two images generated for every product."""

    LIFESTYLE_EMOTIONAL = "lifestyle_emotional"
    SINGLE_WHITE_BACKGROUND = "single_white_background"

    @property
    def word(self) -> str:
        """The style's one short word, everywhere a person reads it: file names, --style, the review page."""
        return STYLE_WORDS[self]

    @property
    def shopper_words(self) -> str:
        """What the image shows, for alt text a shopper reads when the model wrote none ("Mug in use")."""
        return "in use" if self is ImageStyle.LIFESTYLE_EMOTIONAL else "on white"


STYLE_WORDS = {ImageStyle.LIFESTYLE_EMOTIONAL: "lifestyle", ImageStyle.SINGLE_WHITE_BACKGROUND: "white"}


class Route(StrEnum):
    """What made an image: the product cut out of its own photo, or the image model from the photo or text."""

    CUTOUT = "cutout"
    GENERATED_FROM_PHOTO = "generated_from_photo"
    GENERATED_FROM_TEXT = "generated_from_text"


class ReviewState(StrEnum):
    """A merchant's decision on an image (csv_image_versions.review, and each image's review in csv_row_jobs)."""

    UNREVIEWED = "unreviewed"
    APPROVED = "approved"
    REJECTED = "rejected"


class ProcessingMode(StrEnum):
    """How a batch's rows are processed (csv_batches.processing_mode)."""

    SYNC = "sync"
    OPENAI_BATCH = "openai_batch"


class SubmissionStep(StrEnum):
    """What a submission to OpenAI's Batch API asks for (csv_openai_submissions.step)."""

    PROMPTS = "prompts"
    IMAGES = "images"


class SubmissionState(StrEnum):
    """Where a submission to OpenAI's Batch API is (csv_openai_submissions.state)."""

    PREPARING = "preparing"
    UPLOADED = "uploaded"
    SUBMITTED = "submitted"
    DONE = "done"


class Preset(StrEnum):
    """How `upload` maps a file's columns onto product fields (auto: by the headers)."""

    AUTO = "auto"
    SHOPIFY = "shopify"
    WOOCOMMERCE = "woocommerce"
    PLAIN = "plain"


class Channel(StrEnum):
    """Where the merchant sells, each with its own image rules."""

    AMAZON = "amazon"
    GOOGLE = "google"
    SHOPIFY = "shopify"
    EBAY = "ebay"
    ETSY = "etsy"


def parse_channels(values: list[str]) -> list[Channel]:
    """Channel names as given (any case, repeated or comma-separated); ValueError naming a bad one."""
    found: list[Channel] = []
    for value in values:
        for name in value.split(","):
            name = name.strip().lower()
            if not name:
                continue
            try:
                channel = Channel(name)
            except ValueError:
                raise ValueError(f"unknown channel {name!r}; choose from {', '.join(c.value for c in Channel)}") \
                    from None
            if channel not in found:
                found.append(channel)
    return found


# The image formats csvjobs opens (Image.open(..., formats=...)): never EPS/PS/PDF, which Pillow hands to
# Ghostscript, nor any other of Pillow's many decoders an attacker's bytes could pick by their first bytes.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")

PIPELINE_FIELDS = ("country", "product_type", "size", "mpn", "description", "title", "image_url")
"""The product fields the pipeline reads; CSV columns are mapped onto these names. image_url is the product's
own photo: an http(s) URL, or a path relative to the CSV file (stored with the batch by `upload`)."""


TRIGGER_FIELDS = ("country", "product_type", "size", "mpn", "description")
"""The fields the trigger text is built from, in order."""


def trigger_text(product: dict[str, str]) -> str:
    """The text the pipeline starts from: country, product type, size, MPN and description, empty parts skipped."""
    # Empty parts vanish in the whitespace normalisation (split() drops them), so no test per part is needed.
    return " ".join(" ".join([product.get(k) or "" for k in TRIGGER_FIELDS]).split())


class ClaimedRow(BaseModel):
    """A job handed to a worker by claim_csv_row_jobs; attempt is the claim token."""

    job_id: int
    batch_id: uuid.UUID
    user_id: uuid.UUID
    row_number: int
    row_data: dict[str, Any]
    product: dict[str, str] = Field(default_factory=dict)
    trigger_text: str | None = None
    attempt: int
    retry_count: int = 0
    max_retries: int = 3
    checkpoint: dict[str, Any] = Field(default_factory=dict)


class RowResult(BaseModel):
    """What a worker reports for one job through update_csv_row_job_results."""

    job_id: int
    attempt: int
    status: RowStatus
    trigger_text: str | None = None
    generated_prompts: dict[str, Any] | None = None
    generated_images: list[dict[str, Any]] | None = None
    generated_tags: list[str] | None = None
    processing_time_seconds: float | None = None
    error_message: str | None = None
    cost_usd: float | None = None
    usage: dict[str, Any] | None = None
    # The provider recorded each paid call of the row in the ledger as it was paid (which added it to the row's
    # and the batch's cost): cost_usd is then what this attempt paid, for the pool's own counts, and is not sent.
    cost_recorded: bool = Field(default=False, exclude=True)


class PaidCall(BaseModel):
    """One call the provider was paid for, as the ledger records it (sql/budget.sql, record_csv_paid_call)."""

    key: str  # unique among the row's calls: the same call recorded twice counts once
    kind: Literal["prompts", "image"]
    purpose: Literal["row", "fidelity_redo", "white_redo", "regenerate"] = "row"
    style: str | None = None
    route: str | None = None
    row_has_photo: bool = False
    model: str
    size: str | None = None
    quality: str | None = None
    price_factor: float = 1.0
    cost_usd: float
    reserved_usd: float = 0.0  # what the call's reservation held, given back now


class OpenAIBatchInfo(BaseModel):
    """A batch's submission to OpenAI's Batch API still under way (a row of csv_openai_submissions)."""

    step: SubmissionStep
    state: SubmissionState
    rows: int
    requests: int | None = None
    openai_batch_id: str | None = None
    openai_status: str | None = None
    request_counts: dict[str, int] | None = None
    # csvjobs' side, per OpenAI batch: rows whose requests were written (preparing), rows whose output was read
    # and rows completed (collecting); and how long each phase has run, for an ETA from the observed rate.
    prepared_rows: int = 0
    collected_rows: int = 0
    completed_rows: int = 0
    preparing_seconds: float | None = None
    submitted_seconds: float | None = None
    collecting_seconds: float | None = None


class BatchProgress(BaseModel):
    """One row of get_csv_batch_progress, with the batch's processing mode and its OpenAI batches under way."""

    batch_id: uuid.UUID
    user_id: uuid.UUID
    original_filename: str
    status: BatchStatus
    total_rows: int
    processed_rows: int
    successful_rows: int
    failed_rows: int
    skipped_rows: int
    pending_rows: int
    in_flight_rows: int
    percentage: Decimal
    rows_per_minute: Decimal
    eta_seconds: Decimal | None
    active_workers: int
    cost_usd: Decimal
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    updated_at: datetime
    processing_mode: ProcessingMode = ProcessingMode.SYNC
    openai_batches: list[OpenAIBatchInfo] = []
    # Completed rows whose images were made without the product's photo (it could not be fetched or used).
    rows_without_photo: int = 0
    # Images that are placeholders (the offline provider's, made without an OpenAI key): not the product's.
    placeholder_images: int = 0
    # What the upload estimated, the budget (None: none), and why csvjobs paused the batch (its budget).
    estimated_cost_usd: Decimal | None = None
    max_cost_usd: Decimal | None = None
    pause_reason: str | None = None
    channels: list[str] = []
    # The language written for shoppers (a BCP 47 tag; None for a batch uploaded before languages), and the extra
    # alt-text languages.
    language: str | None = None
    alt_languages: list[str] = []

    @property
    def finished(self) -> bool:
        """True once the batch will not change any more."""
        return self.status in (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED)


class RunSummary(BaseModel):
    """What one `csvjobs work` run did: rows finished while it ran, images paid for, cut out of photos or reused,
    what they cost, what is left, and batches a budget paused."""

    seconds: float
    completed: int = 0
    failed: int = 0
    left: int = 0
    # The completed rows' images, each once: generated by the image model, cut out of the product's photo, or
    # reused from a look-alike row (the three add up to the images the rows show).
    images_generated: int = 0
    images_cut_out: int = 0
    images_reused: int = 0
    # Image calls paid for (from the ledger), and how many of them were redos (fidelity, white, a reviewer's).
    images_paid: int = 0
    image_redos_paid: int = 0
    cost_usd: float = 0.0
    paused: dict[str, str] = {}
    # Placeholder images made in the run, by batch (the offline provider's: no OpenAI key).
    placeholders: dict[str, int] = {}


class CleanupReport(BaseModel):
    """What cleanup_stale_csv_workers did."""

    workers_stopped: int
    jobs_released: int
    jobs_failed: int
    # Rows held by a submission to OpenAI's Batch API: waiting on OpenAI, not on a dead worker; left alone.
    waiting_on_openai: int = 0
