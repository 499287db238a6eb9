"""Settings: one pydantic-settings class, read from CSVJOBS_* environment variables and command-line options."""

from __future__ import annotations

import uuid
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_home() -> Path:
    """The platform's user data directory for csvjobs."""
    return Path(platformdirs.user_data_dir("csvjobs", appauthor=False))


class Settings(BaseSettings):
    """Everything csvjobs can be configured with; command-line options override these."""

    model_config = SettingsConfigDict(env_prefix="CSVJOBS_", extra="ignore", populate_by_name=True)

    home: Path = Field(default_factory=default_home)
    # A URL may carry a password: SecretStr keeps it out of reprs, logs and error messages.
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CSVJOBS_DATABASE_URL", "DATABASE_URL")
    )
    user_id: uuid.UUID | None = None

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CSVJOBS_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("CSVJOBS_OPENAI_BASE_URL", "OPENAI_BASE_URL")
    )

    # Current OpenAI models (November 2026): gpt-image-1 and gpt-image-1.5 are retired or retiring; GPT Image 2.6
    # Flare is the fast variant meant for product shots, gpt-6.1-terra the replacement of gpt-5-mini.
    prompt_model: str = "gpt-6.1-terra"
    image_model: str = "gpt-image-2.6-flare"
    image_size: str = "1024x1024"
    image_quality: str = "medium"
    image_format: str = "png"
    # Requests per minute for the prompt model and images per minute for the image model, shared by every worker
    # on every machine through the database; 0 means no limit of our own (429s still pause everyone).
    rpm: float = 0
    ipm: float = 0
    openai_timeout_seconds: float = 180.0

    # Object storage: "local" (directories under home) or "s3" (any S3-compatible service; credentials come from
    # the standard AWS variables). One bucket per logical bucket, named prefix + logical name, unless s3_bucket
    # names a single bucket that holds the logical buckets as top-level folders.
    storage: str = "local"
    s3_endpoint_url: str | None = None
    s3_bucket_prefix: str = ""
    s3_bucket: str | None = None
    s3_region: str | None = None
    s3_addressing_style: str = "auto"
    # Where shops fetch exported images from: a public bucket or a CDN in front of the storage, under which every
    # storage path ({bucket}/{key}) is served. Unset with S3 storage: presigned URLs that expire after 7 days.
    public_base_url: str | None = None

    # Product photos (images/photos.py): fetched with this size cap and timeout; hosts that resolve to
    # loopback, private, link-local or metadata addresses are refused unless allowed here ("1" for any, or a
    # comma-separated list of addresses or networks); with require_photo a row whose photo cannot be used fails.
    photo_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024)
    photo_timeout_seconds: float = Field(default=15.0, gt=0)
    allow_private_image_hosts: str = ""
    require_photo: bool = False
    # Variant options that change how a product looks (matched as words inside the option's name, any case):
    # variants differing only in other options (size) share images; `upload --per-variant` turns that off.
    look_options: str = "colour,color,material,pattern,finish,print,cor,estampa,farbe,couleur,motif"

    # Where the images will be sold (amazon, google, shopify, ebay, etsy; comma-separated): images are stored at
    # the size those channels need and checked against their rules. `upload --channel` sets a batch's own.
    channels: str = ""
    # The white-background image: "auto" cuts the product out of its photo when the photo's background can be
    # told from the product (no image model is paid), else asks the image model; "generate" always asks it.
    packshot: str = "auto"
    packshot_shadow: bool = False
    # An image made from the product's photo must show the product's colours (images/fidelity.py): below this
    # score it is made once more (paid), then kept and flagged for review.
    fidelity_threshold: float = Field(default=0.6, ge=0, le=1)
    # Budgets (USD): an upload's default budget (`upload --max-cost` overrides; unset: none), and a cap on what the
    # whole account may spend in a day (every batch, every worker; unset: none).
    max_cost_usd: float | None = Field(default=None, ge=0)
    # The language an upload writes in for shoppers when `upload --language` is not given (a BCP 47 tag; unset:
    # read from the file, see ingest/language.py).
    language: str | None = None
    # `csvjobs work` serves Prometheus metrics here while it runs (unset: not at all).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    daily_max_cost_usd: float | None = Field(default=None, ge=0)
    # The prompt step through OpenAI's flex processing (Batch API prices, slower, may answer 429 when it has no
    # capacity): "flex" tries it, falling back to the standard tier after flex_wait_seconds of 429s.
    prompt_service_tier: str = "default"
    flex_wait_seconds: float = Field(default=60.0, ge=0)

    @property
    def look_option_words(self) -> tuple[str, ...]:
        """look_options as lowercase words."""
        return tuple(w.strip().lower() for w in self.look_options.split(",") if w.strip())

    # The worker pool: one place for every default (`csvjobs work` options override them, CSVJOBS_* variables
    # set them). The SQL functions keep their own defaults only for callers that name none (the contract's
    # single-job calls): 5 minutes, as claim_timeout_minutes here.
    concurrency: int = Field(default=4, ge=1)
    processes: int | None = Field(default=None, ge=1)
    dedicated_threshold: int = Field(default=20, ge=0)
    max_dedicated: int = Field(default=2, ge=0)
    claim_timeout_minutes: float = Field(default=5.0, gt=0)
    # Claims commit without waiting for the disk (sql/claim.sql, "quick claims"): a database crash may forget the
    # claims of its last fraction of a second, whose rows are then handed out again. False: every claim waits.
    async_claims: bool = True
    grace_seconds: float = Field(default=30.0, ge=0)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    poll_seconds: float = Field(default=10.0, gt=0)
    # A row's transient failures (timeouts, 429, 5xx) are retried this many times in all, with exponential backoff
    # and full jitter between backoff_base_seconds and backoff_cap_seconds, before the row is put back for later.
    transient_attempts: int = Field(default=4, ge=1)
    backoff_base_seconds: float = Field(default=1.0, gt=0)
    backoff_cap_seconds: float = Field(default=30.0, gt=0)
    # Results are reported in sets: a report goes at once when this many finished rows wait, else after this
    # delay (which lets more rows finish); a worker holds at most four reports' worth unreported.
    report_batch_size: int = Field(default=32, ge=1)
    report_delay_seconds: float = Field(default=0.02, ge=0)
    # Batches uploaded with --openai-batch go through OpenAI's Batch API (queue/submission_loop.py): submitted
    # OpenAI batches are checked this often, and input files are cut at OpenAI's limits (50,000 requests, 200 MB).
    openai_batch_poll_seconds: float = Field(default=60.0, gt=0)
    openai_batch_max_requests: int = Field(default=50_000, ge=2, le=50_000)
    openai_batch_max_bytes: int = Field(default=200_000_000, ge=1024, le=200_000_000)
    # Rows a worker takes into one submission at a time: a large batch becomes several OpenAI batches, prepared and
    # collected by every worker process at once instead of by the one that happened to claim every row.
    openai_batch_rows_per_submission: int = Field(default=1000, ge=1, le=50_000)

    @model_validator(mode="after")
    def _pool(self) -> Settings:
        if self.processes is not None and self.processes > self.concurrency:
            raise ValueError(f"--processes {self.processes} (CSVJOBS_PROCESSES) must not exceed --concurrency "
                             f"{self.concurrency} (CSVJOBS_CONCURRENCY): each process runs at least one row")
        return self

    @field_validator("image_quality")
    @classmethod
    def _quality(cls, value: str) -> str:
        allowed = ("low", "medium", "high", "xhigh", "max", "auto")
        if value not in allowed:
            raise ValueError(f"image quality must be one of {', '.join(allowed)}")
        return value

    @field_validator("image_size")
    @classmethod
    def _size(cls, value: str) -> str:
        width, sep, height = value.lower().partition("x")
        if value != "auto" and not (sep and width.isdigit() and height.isdigit()):
            raise ValueError("image size must be WIDTHxHEIGHT (for example 1024x1024) or auto")
        return value.lower()

    @field_validator("image_format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("png", "jpeg", "webp"):
            raise ValueError("image format must be png, jpeg or webp")
        return value

    @field_validator("prompt_service_tier")
    @classmethod
    def _tier(cls, value: str) -> str:
        if value not in ("default", "flex"):
            raise ValueError("prompt service tier must be default or flex")
        return value

    @field_validator("packshot")
    @classmethod
    def _packshot(cls, value: str) -> str:
        if value not in ("auto", "generate"):
            raise ValueError("packshot must be auto (cut the product out of its photo when possible) or generate")
        return value

    @property
    def pgdata(self) -> Path:
        """Where the embedded PostgreSQL keeps its data."""
        return self.home / "pgdata"

    @property
    def storage_root(self) -> Path:
        """The local storage directory holding the buckets."""
        return self.home / "storage"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (non-None) command-line values on top."""
    given = {key: value for key, value in overrides.items() if value is not None}
    return Settings(**given)  # type: ignore[arg-type]
