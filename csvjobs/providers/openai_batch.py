"""OpenAI's Files and Batch APIs (the contract's BatchService) and their file format: upload an input file,
create a batch (or find the one a killed driver created, by the submission key in its metadata), check it, cancel
it, and read its output and error files line by line (an images output file holds every image in base64: it is
streamed, never held whole). Errors are sorted as the synchronous calls' are (classify_error)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from openai.types import Batch, ImagesResponse
from pydantic import ValidationError

from csvjobs.config import Settings
from csvjobs.errors import TransientError
from csvjobs.providers.contract import BatchState, GeneratedPrompts
from csvjobs.providers.openai import OpenAIProvider
from csvjobs.providers.openai_errors import classify_error

# The metadata key that names a submission (csv_openai_submissions.submission_key) on OpenAI's side.
SUBMISSION_KEY = "csvjobs_submission"
# OpenAI's statuses after which a batch changes no more.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# How far back (seconds before the submission was opened) to look for a batch whose creation was not recorded.
_FIND_SLACK_SECONDS = 3600


def batch_state(batch: Batch) -> BatchState:
    """What the SDK's Batch object says, in the contract's terms."""
    counts = batch.request_counts.model_dump() if batch.request_counts is not None else {}
    errors = "; ".join(f"{e.code}: {e.message}" if e.code else str(e.message)
                       for e in (batch.errors.data or [] if batch.errors is not None else []))
    return BatchState(id=batch.id, status=batch.status, request_counts={k: int(v) for k, v in counts.items()},
                      output_file_id=batch.output_file_id, error_file_id=batch.error_file_id, errors=errors[:2000],
                      terminal=batch.status in TERMINAL)


class BatchAPI:
    """The Files and Batch API calls of one OpenAI client (the provider's: same key, base URL and timeout)."""

    def __init__(self, provider: OpenAIProvider) -> None:
        self.client = provider.client
        self.settings: Settings = provider.settings

    def _error(self, exc: openai.OpenAIError) -> Exception:
        key = self.settings.openai_api_key
        return classify_error(exc, model="(Batch API)", model_setting="CSVJOBS_PROMPT_MODEL",
                              secrets=[key.get_secret_value() if key is not None else None])

    async def upload(self, path: Path, name: str) -> str:
        """Upload a JSONL input file (purpose batch); its file id."""
        try:
            with path.open("rb") as handle:
                created = await self.client.files.create(file=(name, handle, "application/jsonl"), purpose="batch")
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        return created.id

    async def create(self, input_file_id: str, endpoint: str, key: uuid.UUID, description: str) -> BatchState:
        """Create the batch of an uploaded file, named by the submission key."""
        try:
            batch = await self.client.batches.create(
                input_file_id=input_file_id, endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h", metadata={SUBMISSION_KEY: str(key), "description": description[:500]})
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        return batch_state(batch)

    async def find(self, key: uuid.UUID, opened_at: float) -> BatchState | None:
        """The batch created for a submission key, if any: a driver killed after creating it but before
        recording it must not create (and pay for) a second one. Lists the newest batches back to a little
        before the submission was opened."""
        try:
            async for batch in self.client.batches.list(limit=100):
                if (batch.metadata or {}).get(SUBMISSION_KEY) == str(key):
                    return batch_state(batch)
                if batch.created_at < opened_at - _FIND_SLACK_SECONDS:
                    return None
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        return None

    async def retrieve(self, batch_id: str) -> BatchState:
        """The batch's current status, counts and files."""
        try:
            return batch_state(await self.client.batches.retrieve(batch_id))
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc

    async def cancel(self, batch_id: str) -> BatchState:
        """Ask OpenAI to cancel the batch (it goes cancelling, then cancelled with what had finished)."""
        try:
            return batch_state(await self.client.batches.cancel(batch_id))
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc

    async def lines(self, file_id: str) -> AsyncIterator[dict[str, Any]]:
        """The JSON lines of an output or error file, streamed; a line that is not JSON is skipped."""
        try:
            async with self.client.files.with_streaming_response.content(file_id) as response:
                async for line in response.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        item = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(item, dict):
                        yield item
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc


def parse_prompts(body: dict[str, Any]) -> tuple[GeneratedPrompts, dict[str, Any]]:
    """The prompts and usage of a chat completion from a Batch API output line; TransientError (a retry in a later
    OpenAI batch) for a refusal or output that does not fit the schema."""
    choices = body.get("choices") or []
    message = choices[0].get("message") if choices and isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        raise TransientError("the prompt model returned no choices")
    if message.get("refusal"):
        raise TransientError(f"the prompt model refused: {str(message['refusal'])[:300]}")
    try:
        prompts = GeneratedPrompts.model_validate_json(message.get("content") or "")
    except ValidationError as exc:
        raise TransientError(f"the prompt model returned invalid output ({str(exc).splitlines()[0][:200]})") from exc
    usage = body.get("usage")
    return prompts, usage if isinstance(usage, dict) else {}


def images_answer(body: dict[str, Any]) -> ImagesResponse:
    """An Images API answer from a Batch API output line, as the synchronous call would have returned it."""
    return ImagesResponse.model_validate(body)


PROMPTS_ENDPOINT = "/v1/chat/completions"
# Error codes of lines OpenAI never ran: they go back without counting a retry.
NOT_RUN_CODES = frozenset({"batch_expired", "batch_cancelled"})


# --- the input and output files' format: custom ids, limits, lines ---------------------------------------------


def custom_id(job_id: int, attempt: int, kind: str) -> str:
    """A request's custom_id: row job id, claim attempt and kind (prompts, or an image style)."""
    return f"{job_id}-{attempt}-{kind}"


def parse_custom_id(value: Any) -> tuple[int, int, str] | None:
    """(job_id, attempt, kind) of a custom_id we wrote; None for anything else."""
    parts = str(value).split("-", 2)
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return int(parts[0]), int(parts[1]), parts[2]


@dataclass
class InputFile:
    """A JSONL input file being written, within OpenAI's limits. A row's lines go in whole or not at all."""

    max_requests: int
    max_bytes: int
    path: Path
    requests: int = 0
    size: int = 0

    def fits(self, lines: list[bytes], *, empty: bool = False) -> bool:
        """Whether these lines (one row's) still fit; with empty, whether they would fit in an empty file."""
        requests, size = (0, 0) if empty else (self.requests, self.size)
        return (requests + len(lines) <= self.max_requests
                and size + sum(len(line) for line in lines) <= self.max_bytes)

    def add(self, lines: list[bytes]) -> None:
        """Append one row's lines (each ending in a newline)."""
        with self.path.open("ab") as handle:
            for line in lines:
                handle.write(line)
        self.requests += len(lines)
        self.size += sum(len(line) for line in lines)


def request_line(custom: str, endpoint: str, body: dict[str, Any]) -> bytes:
    """One line of an input file."""
    return (json.dumps({"custom_id": custom, "method": "POST", "url": endpoint, "body": body},
                       separators=(",", ":")) + "\n").encode()


def line_error(line: dict[str, Any]) -> tuple[str, str] | None:
    """(code, message) of an output or error file line that did not succeed; None for a success."""
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    error = line.get("error") if isinstance(line.get("error"), dict) else None
    if response is not None and response.get("status_code") == 200 and isinstance(response.get("body"), dict):
        return None
    if error is not None:
        return str(error.get("code") or ""), str(error.get("message") or "the request failed")
    body = response.get("body") if response is not None else None
    detail: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = body["error"]
    status = response.get("status_code") if response is not None else None
    return str(detail.get("code") or ""), f"HTTP {status}: {detail.get('message') or 'the request failed'}"
