"""The provider contract, the stable import path for providers of your own (`--provider module:attr`): what a
provider gets (a claimed row, storage, a step logger, checkpoints, shared rate limits), what it returns (prompts,
images, tags) and how it fails (TransientError, PermanentError, ProviderAccessError, JobLostError)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from csvjobs.errors import BudgetRefused, JobLostError, PermanentError, ProviderAccessError, TransientError
from csvjobs.models import ClaimedRow, ImageStyle, PaidCall, Route, RowResult, RowStatus, SubmissionStep, trigger_text
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

    def as_result(self, job: ClaimedRow) -> RowResult:
        """The completed result of the row, to report."""
        return RowResult(job_id=job.job_id, attempt=job.attempt, status=RowStatus.COMPLETED,
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

    job: ClaimedRow
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

    def call_worst_cases(self, job: ClaimedRow) -> dict[str, float]:
        """The most each of the row's remaining calls ("prompts", or an image style) can cost at standard prices
        (the Batch API path reserves them all at once)."""
        ...


class BatchState(BaseModel):
    """What the batch service says about one of its batches."""

    id: str
    status: str
    request_counts: dict[str, int] = {}
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: str = ""
    terminal: bool = False  # over: its output and error files are final


class BatchService(Protocol):
    """A batch service's files and batches (OpenAI's Files and Batch APIs), as the submission loop drives them."""

    async def upload(self, path: Path, name: str) -> str:
        """Upload an input file; its file id."""
        ...

    async def create(self, input_file_id: str, endpoint: str, key: uuid.UUID, description: str) -> BatchState:
        """Create the batch of an uploaded file, named by the submission key."""
        ...

    async def find(self, key: uuid.UUID, opened_at: float) -> BatchState | None:
        """The batch created for a submission key, if any (one a killed worker created)."""
        ...

    async def retrieve(self, batch_id: str) -> BatchState:
        """The batch's current status, counts and files."""
        ...

    async def cancel(self, batch_id: str) -> BatchState:
        """Ask the service to cancel the batch."""
        ...

    def lines(self, file_id: str) -> AsyncIterator[dict[str, Any]]:
        """The JSON lines of an output or error file, streamed."""
        ...


class BatchInputFile(Protocol):
    """An input file being written within the service's limits; a row's lines go in whole or not at all."""

    path: Path
    requests: int

    def fits(self, lines: list[bytes], *, empty: bool = False) -> bool:
        """Whether one row's lines still fit; with empty, whether they would fit in an empty file."""
        ...

    def add(self, lines: list[bytes]) -> None:
        """Append one row's lines."""
        ...


@dataclass
class LineOutcome:
    """What one output line did for its row: its prompts or one image saved, or why not."""

    prompts: bool = False
    image: GeneratedImage | None = None
    retry: str = ""  # failed: the row goes back for a retry (counted)
    permanent: str = ""  # refused for good (content policy): the row fails
    not_run: bool = False  # the service never ran it (expired, cancelled): back without counting a retry


@runtime_checkable
class BatchCapable(Protocol):
    """A provider that can also send rows through a batch service at batch prices: a worker runs the submission
    loop beside its synchronous one exactly when its provider has these. The loop keeps the leases, splits
    submissions and reports rows; what a row's requests are, and what an output line means, is the provider's."""

    def batch_api(self) -> BatchService:
        """The batch service on this provider's account."""
        ...

    def batch_input_file(self, path: Path) -> BatchInputFile:
        """A new, empty input file at path."""
        ...

    def call_worst_cases(self, job: ClaimedRow) -> dict[str, float]:
        """The most each of the row's remaining calls can cost at standard prices (see Paying)."""
        ...

    async def batch_requests(self, ctx: RowContext, job: ClaimedRow,
                             step: SubmissionStep) -> tuple[str, list[bytes]]:
        """(endpoint, input lines) of one row for a submission's step; no lines when nothing is left to ask for
        (a white image cut out of the photo needs no request, and is checkpointed here)."""
        ...

    def batch_line_key(self, line: dict[str, Any]) -> tuple[int, int, str] | None:
        """(row job id, attempt, kind) an output line answers; None for a line that is not one of ours."""
        ...

    async def batch_apply(self, ctx: RowContext, job: ClaimedRow, kind: str, line: dict[str, Any], *,
                          endpoint: str, service_batch_id: str, still_needed: list[str]) -> LineOutcome:
        """Record one output line as paid (once, keyed by the service's batch and the line) and save what it
        answered on the row through the fenced checkpoint."""
        ...

    def batch_result(self, job: ClaimedRow) -> RowResult:
        """The result of a row whose prompts and images are all checkpointed, at batch prices."""
        ...

    async def cancel_batches(self, batch_ids: list[str]) -> list[str]:
        """Cancel the service's batches of a cancelled csvjobs batch; the ids it took."""
        ...
