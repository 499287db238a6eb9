"""The provider contract, the stable import path for providers of your own (`--provider module:attr`): what a
provider gets (a claimed row, storage, a step logger, checkpoints, shared rate limits), what it returns (prompts,
images, tags) and how it fails (TransientError, PermanentError, ProviderAccessError, JobLostError)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from csvjobs.errors import BudgetRefused, JobLostError, PermanentError, ProviderAccessError, TransientError
from csvjobs.models import ClaimedJob, ImageStyle, JobResult, JobStatus, PaidCall, Route, trigger_text
from csvjobs.storage.contract import Storage
from csvjobs.storage.keys import IMAGES_BUCKET, readable_name

__all__ = [
    "BudgetRefused", "Checkpoint", "GeneratedImage", "GeneratedPrompts", "JobLostError", "LogStep", "PaidCall",
    "PermanentError", "Provider",
    "ProviderAccessError", "RateLimiter", "RowContext", "RowOutcome", "StylePrompt", "TransientError", "redo_styles",
    "styles_still_needed",
]


class StylePrompt(BaseModel):
    """One image prompt and the alt text for the image it produces."""

    prompt: str = Field(min_length=1)
    alt_text: str = Field(min_length=1)


class AltTranslation(BaseModel):
    """Both images' alt text in one more language (upload --alt-languages)."""

    language: str
    lifestyle_emotional: str
    single_white_background: str


class GeneratedPrompts(BaseModel):
    """The prompt step's output: a prompt per style plus SEO tags, and alt text in any extra languages."""

    lifestyle_emotional: StylePrompt
    single_white_background: StylePrompt
    tags: list[str] = Field(min_length=1, max_length=30)
    translations: list[AltTranslation] = Field(default_factory=list)

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
    # Made from the product's photo (an Images edit) rather than from text alone.
    edited: bool = False
    # A white-background image checked to be pure (255, 255, 255) to its edges.
    pure_white: bool | None = None
    # What made it (the product's own pixels cut out, or the image model from the photo or from text alone).
    route: Route | None = None
    # Each of the batch's channels' verdict on the stored file: {"amazon": {"passed": true, "failed": []}}.
    checks: dict[str, Any] = Field(default_factory=dict)
    # How the photo's background measured (images/cutout.py Separation), when the row has a photo.
    separation: dict[str, Any] | None = None
    # The fidelity check of an image made from the photo (images/fidelity.py), and whether it needs a look.
    fidelity: dict[str, Any] | None = None
    flagged: bool = False
    # Usage of earlier paid attempts at this image (a redo after a failed fidelity check): they cost too.
    earlier_usage: list[dict[str, Any]] = Field(default_factory=list)
    # A generated white-background image: how its background measured when it was reframed like a cut-out
    # (images/cutout.py Separation; separable false: the product could not be found on it).
    framing: dict[str, Any] | None = None

    @property
    def unframed(self) -> bool:
        """A generated white image that could not be reframed: its background was not clean enough."""
        return self.framing is not None and not self.framing.get("separable", True)


class RowOutcome(BaseModel):
    """Everything a provider produced for one row."""

    trigger_text: str
    prompts: dict[str, Any]
    images: list[GeneratedImage]
    tags: list[str]
    cost_usd: float = 0.0
    usage: dict[str, Any] | None = None

    def as_result(self, job: ClaimedJob) -> JobResult:
        """The completed result of the row, to report."""
        return JobResult(job_id=job.job_id, attempt=job.attempt, status=JobStatus.COMPLETED,
                         trigger_text=self.trigger_text, generated_prompts=self.prompts,
                         generated_images=[image.model_dump(mode="json") for image in self.images],
                         generated_tags=self.tags, cost_usd=self.cost_usd, usage=self.usage)


def redo_styles(checkpoint: dict[str, Any]) -> frozenset[str]:
    """The styles the reviewer asked to redo (the row's checkpoint holds the request until the row completes)."""
    request = checkpoint.get("regenerate")
    if not isinstance(request, dict):
        return frozenset()
    return frozenset(style for style in request if style in {s.value for s in ImageStyle})


def styles_still_needed(checkpoint: dict[str, Any]) -> list[ImageStyle]:
    """The images a row still needs: those it has none of, and those the reviewer asked to redo."""
    redo = redo_styles(checkpoint)
    return [style for style in ImageStyle if f"image:{style.value}" not in checkpoint or style.value in redo]


class RateLimiter(Protocol):
    """Shared rate limits (kept in PostgreSQL so that every worker on every machine obeys them)."""

    async def acquire(self, key: str, per_minute: float) -> None:
        """Wait until a call on key may be made."""
        ...

    async def pause(self, key: str, seconds: float) -> None:
        """Hold every worker's calls on key for seconds (after a 429)."""
        ...


# The word an image's file name ends in, for each style.
LogStep = Callable[[str, str, dict[str, Any]], None]
Checkpoint = Callable[[dict[str, Any]], Awaitable[bool]]
# reserve(amount, release): None when reserved, else why not (see BudgetRefused); unreserve(amount); pay(call).
Reserve = Callable[[float, bool], Awaitable[str | None]]
Unreserve = Callable[[float], Awaitable[None]]
Pay = Callable[[PaidCall], Awaitable[None]]


async def _nothing_reserved(amount: float, release: bool) -> str | None:
    return None


async def _nothing_to_give_back(amount: float) -> None:
    return None


async def _paid_nowhere(call: PaidCall) -> None:
    return None


@dataclass
class RowContext:
    """What a provider may use while processing one row."""

    job: ClaimedJob
    storage: Storage
    log: LogStep
    save_checkpoint: Checkpoint
    rate_limiter: RateLimiter
    # Styles being redone at the merchant's request: their new image gets a key of its own, so the version it
    # replaces stays where it is.
    redo: frozenset[str] = frozenset()
    # The batch's sales channels (models.Channel values): the images' size and the rules they are checked against.
    channels: tuple[str, ...] = ()
    # The language shoppers read (a BCP 47 tag; "": not chosen, a batch from before languages) and the extra
    # languages its alt text is also written in.
    language: str = ""
    alt_languages: tuple[str, ...] = ()
    # The budget and the ledger: a paying provider reserves a call's worst case just before it (reserve), records
    # each paid call the moment its answer arrives (pay, which gives that call's reservation back), and gives
    # back the reservation of a call that failed (unreserve). Without a worker behind them they do nothing.
    reserve: Reserve = _nothing_reserved
    unreserve: Unreserve = _nothing_to_give_back
    pay: Pay = _paid_nowhere
    # What this row's calls were paid while this context lived (each recorded in the ledger as it was paid).
    paid_usd: float = 0.0

    async def record_paid(self, call: PaidCall) -> None:
        """Record a paid call in the ledger (giving its reservation back) and add it to paid_usd."""
        await self.pay(call)
        self.paid_usd += call.cost_usd

    async def reserve_or_stop(self, amount: float) -> None:
        """Reserve amount before calls; BudgetRefused (the row is pending again) when it does not fit."""
        if amount > 0 and (refused := await self.reserve(amount, True)):
            raise BudgetRefused(refused)

    @property
    def row_has_photo(self) -> bool:
        """Whether the file gave the row a photo (what upload knew of it; the ledger learns per kind of row)."""
        return bool(self.job.product.get("image_url"))

    def redo_note(self, style: ImageStyle) -> str:
        """The reviewer's note for a style being redone ('' when there is none)."""
        request = self.job.checkpoint.get("regenerate")
        entry = request.get(style.value) if isinstance(request, dict) else None
        note = entry.get("note") if isinstance(entry, dict) else None
        return note if style.value in self.redo and isinstance(note, str) else ""

    @property
    def trigger_text(self) -> str:
        """The row's trigger text (computed at upload; rebuilt from the product fields if absent)."""
        return self.job.trigger_text or trigger_text(self.job.product)

    def image_key(self, style: ImageStyle, ext: str = "png") -> tuple[str, str]:
        """(bucket, key) for one of this row's images: csv-images/{user_id}/{batch_id}/{row}/{name}-{style}.{ext},
        or ...-{style}-r{attempt}.{ext} for a redone one. The file name is the product's (blue-mug-lifestyle.png):
        Shopify and WordPress keep an imported image's file name, so the shop's media library stays readable."""
        job = self.job
        redo = f"-r{job.attempt}" if style.value in self.redo else ""
        name = readable_name(str(job.product.get("title") or job.product.get("product_type") or ""))
        word = style.word
        return IMAGES_BUCKET, f"{job.user_id}/{job.batch_id}/{job.row_number}/{name}-{word}{redo}.{ext}"


class Provider(Protocol):
    """Turns a row into its results. Implementations raise TransientError or PermanentError on failure."""

    name: str

    async def process(self, ctx: RowContext) -> RowOutcome:
        """Produce trigger text, prompts, two images and tags for one row."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections."""
        ...


@runtime_checkable
class Paying(Protocol):
    """A provider whose calls cost money: it reserves each call's worst case through its RowContext and records
    every paid call in the ledger as it is paid (providers without this, offline and noop, pay nothing)."""

    def call_worst_cases(self, job: ClaimedJob) -> dict[str, float]:
        """The most each of the row's remaining calls ("prompts", or an image style) can cost at standard prices
        (the Batch API path reserves them all at once)."""
        ...


@runtime_checkable
class BatchCapable(Protocol):
    """A provider that can also send rows through OpenAI's Batch API at batch prices: a worker runs the submission
    loop beside its synchronous one exactly when its provider has these (the loop builds the requests with them,
    and stores and prices what comes back)."""

    def batch_api(self) -> Any:
        """The Files and Batch API client (providers/openai_batch.py's BatchAPI) on this provider's account."""
        ...

    def call_worst_cases(self, job: ClaimedJob) -> dict[str, float]:
        """The most each of the row's remaining calls can cost at standard prices (see Paying)."""
        ...

    def prompt_request(self, ctx: RowContext, trigger: str, reference: Any) -> dict[str, Any]:
        """The body of the prompt request for one row."""
        ...

    def image_request(self, style: ImageStyle, prompt: str, reference: Any) -> tuple[str, dict[str, Any]]:
        """(endpoint, body) of one image request."""
        ...

    async def store_image(self, ctx: RowContext, style: ImageStyle, response: Any, *,
                          edited: bool) -> GeneratedImage:
        """Store the image of an Images API answer as the row's image of this style."""
        ...

    def outcome(self, trigger: str, prompts: GeneratedPrompts, prompt_usage: dict[str, Any] | None,
                images: list[GeneratedImage], *, price_factor: float = 1.0) -> RowOutcome:
        """A finished row with its cost at price_factor."""
        ...
