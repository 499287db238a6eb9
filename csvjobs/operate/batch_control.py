"""Steering a batch as its owner: retry failed rows, cancel, pause, resume (sql/batch_control.sql). Cancelling a
batch also cancels its OpenAI batches (when an OpenAI key is at hand; else the next `csvjobs work` does)."""

from __future__ import annotations

import asyncio
import uuid

from pydantic import BaseModel

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import ConfigError
from csvjobs.operate import queries
from csvjobs.providers.contract import BatchCapable
from csvjobs.providers.registry import load_provider
from csvjobs.users import resolve_user_id


def retry_rows(settings: Settings, batch_id: uuid.UUID, rows: list[int] | None) -> int:
    """Failed rows (all, or the given row numbers) back to pending, keeping their checkpoints."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-control")
    with conn:
        return queries.retry_batch_rows(conn, user_id, batch_id, rows)


class StateChange(BaseModel):
    """A batch's new status, and what became of its OpenAI batches still under way."""

    status: str
    openai_cancelled: list[str] = []
    openai_left: list[str] = []
    openai_problem: str = ""


def change_state(settings: Settings, batch_id: uuid.UUID, action: str, *, max_cost: float | None = None) -> StateChange:
    """cancel, pause or resume a batch (resume with max_cost: with that budget first); cancelling also cancels
    its OpenAI batches still running."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-control")
    with conn:
        if max_cost is not None:
            queries.set_batch_budget(conn, user_id, batch_id, max_cost)
        change = StateChange(status=queries.set_batch_state(conn, user_id, batch_id, action))
        running = queries.running_openai_batches(conn, user_id, batch_id) if change.status == "cancelled" else []
    if not running:
        return change
    if settings.openai_api_key is None:
        change.openai_left = running
        return change
    try:
        change.openai_cancelled = asyncio.run(_cancel_openai_batches(settings, running))
    except Exception as exc:  # an outage or a refused key: the next `csvjobs work` cancels them
        change.openai_left = running
        change.openai_problem = str(exc)
    return change


async def _cancel_openai_batches(settings: Settings, ids: list[str]) -> list[str]:
    provider = load_provider("openai", settings)
    try:
        if not isinstance(provider, BatchCapable):
            raise ConfigError("the openai provider cannot cancel OpenAI batches in this version")
        return await provider.cancel_batches(ids)
    finally:
        await provider.aclose()
