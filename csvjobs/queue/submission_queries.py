"""The submission loop's calls to the database (sql/submissions.sql), as typed functions with named parameters:
rows given to submissions, leases, state changes, splits, releases and the end of a submission."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from csvjobs import db
from csvjobs.models import SubmissionState, SubmissionStep


class Submission(BaseModel):
    """One row of csv_openai_submissions: an input file, and the OpenAI batch made of it."""

    id: int
    batch_id: uuid.UUID
    step: SubmissionStep
    endpoint: str | None = None
    state: SubmissionState
    submission_key: uuid.UUID
    row_job_ids: list[int]
    request_count: int | None = None
    input_file_id: str | None = None
    openai_batch_id: str | None = None
    openai_status: str | None = None
    created_at: datetime

    @property
    def holder(self) -> str:
        """The claimed_by of the rows this submission holds (csv_openai_submission_holder)."""
        return f"openai-batch:{self.id}"


async def open_submission(conn: db.AsyncConnection, *, worker_id: str, batch_id: uuid.UUID, step: SubmissionStep,
                          job_ids: list[int]) -> None:
    """Give rows the worker holds to a new submission of their batch at step."""
    await conn.execute("SELECT open_csv_openai_submission(%s, %s::uuid, %s, %s::bigint[])",
                       [worker_id, batch_id, step.value, job_ids])


async def lease_submissions(conn: db.AsyncConnection, *, worker_id: str, lease_seconds: float, limit: int,
                            batch_id: uuid.UUID | None, user_id: uuid.UUID | None) -> list[Submission]:
    """Lease up to limit submissions that are due."""
    cur = await conn.execute("SELECT * FROM lease_csv_openai_submissions(%s, %s::numeric, %s::integer, %s::uuid,"
                             " %s::uuid)", [worker_id, lease_seconds, limit, batch_id, user_id])
    return [Submission.model_validate(row) for row in await cur.fetchall()]


async def update_submission(conn: db.AsyncConnection, *, submission_id: int, worker_id: str, changes: dict[str, Any],
                            lease_seconds: float, next_check_seconds: float | None) -> bool:
    """Record changes and renew the lease; False when another worker holds the lease now."""
    cur = await conn.execute("SELECT update_csv_openai_submission(%s::bigint, %s, %s::jsonb, %s::numeric,"
                             " %s::numeric) AS ok",
                             [submission_id, worker_id, json.dumps(changes), lease_seconds, next_check_seconds])
    row = await cur.fetchone()
    return bool(row and row["ok"])


async def split_submission(conn: db.AsyncConnection, *, submission_id: int, worker_id: str, step: SubmissionStep,
                           job_ids: list[int]) -> None:
    """Move some of a submission's rows to a new submission at step."""
    await conn.execute("SELECT split_csv_openai_submission(%s::bigint, %s, %s, %s::bigint[])",
                       [submission_id, worker_id, step.value, job_ids])


async def release_submission_rows(conn: db.AsyncConnection, *, submission_id: int, worker_id: str,
                                  job_ids: list[int], count_retry: bool, reason: str) -> None:
    """Give rows of a submission back to pending (counting a retry or not), saying why."""
    await conn.execute("SELECT * FROM release_csv_openai_submission_rows(%s::bigint, %s, %s::bigint[], %s, %s)",
                       [submission_id, worker_id, job_ids, count_retry, reason])


async def finish_submission(conn: db.AsyncConnection, *, submission_id: int, worker_id: str,
                            outcome: dict[str, Any]) -> None:
    """Mark a submission done, with what its collection did."""
    await conn.execute("SELECT finish_csv_openai_submission(%s::bigint, %s, %s::jsonb)",
                       [submission_id, worker_id, json.dumps(outcome)])


async def release_submission_leases(conn: db.AsyncConnection, *, worker_id: str) -> None:
    """Let go of every lease this worker holds, so another worker goes on at once."""
    await conn.execute("SELECT release_csv_openai_submission_leases(%s)", [worker_id])
