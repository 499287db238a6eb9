"""The row pipeline's contract: what a provider gets (a claimed row), what it returns (prompts, images, tags),
how it signals transient and permanent failures, and how a provider is chosen by name."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, Field

from csvjobs.column_mapping import trigger_text
from csvjobs.config import Settings
from csvjobs.errors import ConfigError
from csvjobs.models import ClaimedJob, ImageStyle
from csvjobs.storage import IMAGES_BUCKET, Storage


class TransientError(Exception):
    """A failure worth retrying (timeouts, connection errors, HTTP 429 and 5xx); retry_after in seconds if known."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """A failure that retrying cannot fix (bad request, content policy); the row fails at once with this reason."""


class ProviderAccessError(Exception):
    """The provider refuses the account, key or model (HTTP 401, 403, an unknown or retired model): no row can
    succeed until a setting is fixed, so the pool stops and puts its rows back without counting a retry. The
    message names the cause and the setting to fix, with any secret already removed."""


class JobLostError(Exception):
    """The worker no longer holds the job (its claim timed out and another worker took it): stop, report nothing."""


class StylePrompt(BaseModel):
    """One image prompt and the alt text for the image it produces."""

    prompt: str = Field(min_length=1)
    alt_text: str = Field(min_length=1)


class GeneratedPrompts(BaseModel):
    """The prompt step's output: a prompt per style plus SEO tags."""

    lifestyle_emotional: StylePrompt
    single_white_background: StylePrompt
    tags: list[str] = Field(min_length=1, max_length=30)

    def for_style(self, style: ImageStyle) -> StylePrompt:
        """The prompt of one style."""
        return self.lifestyle_emotional if style is ImageStyle.LIFESTYLE_EMOTIONAL else self.single_white_background


class GeneratedImage(BaseModel):
    """A stored image and what made it."""

    style: ImageStyle
    storage_path: str
    model: str
    size: str
    quality: str | None = None
    bytes: int
    sha256: str
    revised_prompt: str | None = None
    usage: dict[str, Any] | None = None
    placeholder: bool = False


class RowOutcome(BaseModel):
    """Everything a provider produced for one row."""

    trigger_text: str
    prompts: dict[str, Any]
    images: list[GeneratedImage]
    tags: list[str]
    cost_usd: float = 0.0
    usage: dict[str, Any] | None = None


class RateLimiter(Protocol):
    """Shared rate limits (kept in PostgreSQL so that every worker on every machine obeys them)."""

    async def acquire(self, key: str, per_minute: float) -> None:
        """Wait until a call on key may be made."""
        ...

    async def pause(self, key: str, seconds: float) -> None:
        """Hold every worker's calls on key for seconds (after a 429)."""
        ...


class NoRateLimit:
    """A limiter that never waits (tests of providers without a database)."""

    async def acquire(self, key: str, per_minute: float) -> None:
        """Never wait."""

    async def pause(self, key: str, seconds: float) -> None:
        """Ignore pauses."""


LogStep = Callable[[str, str, dict[str, Any]], None]
Checkpoint = Callable[[dict[str, Any]], Awaitable[bool]]


async def _no_checkpoint(_data: dict[str, Any]) -> bool:
    return True


@dataclass
class RowContext:
    """What a provider may use while processing one row."""

    job: ClaimedJob
    storage: Storage
    log: LogStep = lambda operation, message, details: None
    save_checkpoint: Checkpoint = _no_checkpoint
    rate_limiter: RateLimiter = field(default_factory=NoRateLimit)

    @property
    def trigger_text(self) -> str:
        """The row's trigger text (computed at upload; rebuilt from the product fields if absent)."""
        return self.job.trigger_text or trigger_text(self.job.product)

    def image_key(self, style: ImageStyle, ext: str = "png") -> tuple[str, str]:
        """(bucket, key) for one of this row's images: csv-images/{user_id}/{batch_id}/{row}-{style}.{ext}."""
        job = self.job
        return IMAGES_BUCKET, f"{job.user_id}/{job.batch_id}/{job.row_number}-{style.value}.{ext}"


class Provider(Protocol):
    """Turns a row into its results. Implementations raise TransientError or PermanentError on failure."""

    name: str

    async def process(self, ctx: RowContext) -> RowOutcome:
        """Produce trigger text, prompts, two images and tags for one row."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections."""
        ...


class NoopProvider:
    """Does no work (optionally sleeping): for measuring the queue itself. Spec: noop or noop:SECONDS."""

    name = "noop"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def process(self, ctx: RowContext) -> RowOutcome:
        """Return an empty result after the configured delay."""
        if self.delay:
            await asyncio.sleep(self.delay)
        return RowOutcome(trigger_text=ctx.trigger_text, prompts={}, images=[], tags=[])

    async def aclose(self) -> None:
        """Nothing to release."""


PROVIDER_NAMES = ("offline", "openai", "noop")


def default_provider_name(settings: Settings) -> str:
    """openai when an API key is configured, offline otherwise."""
    return "openai" if settings.openai_api_key is not None else "offline"


def load_provider(spec: str, settings: Settings) -> Provider:
    """A provider from its name: offline, openai, noop[:SECONDS], or module:attribute for your own."""
    name, _, arg = spec.partition(":")
    if name == "offline":
        from csvjobs.offline_provider import OfflineProvider

        return OfflineProvider()
    if name == "openai":
        try:
            from csvjobs.openai_provider import OpenAIProvider
        except ImportError as exc:
            raise ConfigError("the openai provider is not available in this version") from exc
        return OpenAIProvider(settings)
    if name == "noop":
        try:
            return NoopProvider(float(arg) if arg else 0.0)
        except ValueError as exc:
            raise ConfigError(f"--provider {spec!r}: the noop delay must be a number of seconds") from exc
    if arg:
        try:
            module = importlib.import_module(name)
            factory = getattr(module, arg)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--provider {spec!r}: cannot load {arg} from module {name}: {exc}") from exc
        provider: Provider = factory(settings)
        return provider
    raise ConfigError(
        f"unknown provider {spec!r}; choose {', '.join(PROVIDER_NAMES)} (or module:attribute for your own)"
    )
