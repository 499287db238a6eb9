"""Paid once, under any failure schedule: the worker in-process with the real OpenAI provider against the loopback
OpenAI-shaped server, which answers failures at once (429 with Retry-After, 500) or after a hang past the client's
timeout, and successes slowly. Over many random schedules, for every row: the images the server served == the
images the row stored == the image calls in the ledger, the prompt calls served == those in the ledger, and the
row's cost == its ledger's sum. Without supervision of a row's calls (asyncio.gather letting the other image run on
after the first fails) the retry asks again for an image still being made, and the first assertion fails."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter
from typing import Any

import pytest
from pydantic import SecretStr
from support.fake_openai import FakeOpenAI, RandomSchedule
from support.helpers import make_batch

from csvjobs.providers.openai import OpenAIProvider
from csvjobs.queue.process import Worker
from csvjobs.queue.runtime import WorkerConfig

pytestmark = pytest.mark.slow

ROWS = 6
# make_batch's row g has the description "product g", which the server's prompts quote.
ROW_OF = re.compile(r"product (\d+)\b")


def tuned(settings, fake: FakeOpenAI):
    return settings.model_copy(update={
        "openai_api_key": SecretStr("sk-test-loopback-0123456789"), "openai_base_url": fake.base_url,
        "openai_timeout_seconds": 1.2, "transient_attempts": 3, "backoff_base_seconds": 0.05,
        "backoff_cap_seconds": 0.2, "heartbeat_seconds": 0.5, "poll_seconds": 0.2, "grace_seconds": 5.0,
        "rpm": 100_000.0, "ipm": 100_000.0})


def row_of(body: dict[str, Any]) -> int:
    text = str(body.get("prompt") or body.get("messages"))
    found = ROW_OF.search(text)
    assert found is not None, text[:200]
    return int(found.group(1))


@pytest.mark.parametrize("seed", range(6))
def test_every_image_the_provider_served_is_stored_and_in_the_ledger_once(database_url, settings, conn,
                                                                          seed: int) -> None:
    fake = FakeOpenAI(schedule=RandomSchedule(seed), retry_after="0.2").start()
    try:
        batch = make_batch(conn, ROWS, max_retries=8)
        fast = tuned(settings, fake)
        config = WorkerConfig(database_url=database_url, settings=fast, worker_id=f"paid-{uuid.uuid4().hex[:6]}",
                              concurrency=4, until_done=True, batch_id=batch)
        worker = Worker(config, provider=OpenAIProvider(fast))
        assert asyncio.run(asyncio.wait_for(worker.run(), 240)) == 0
    finally:
        fake.stop()

    served_images = Counter(row_of(c.body) for c in fake.calls if c.endpoint == "image" and c.status == 200)
    served_prompts = Counter(row_of(c.body) for c in fake.calls if c.endpoint == "chat" and c.status == 200)
    ledger = conn.execute(
        "SELECT row_number, kind, count(*) AS n, sum(cost_usd)::float AS cost FROM csv_paid_calls"
        " WHERE batch_id = %s GROUP BY row_number, kind", [batch]).fetchall()
    paid = {(r["row_number"], r["kind"]): r["n"] for r in ledger}
    rows = conn.execute("SELECT row_number, status, cost_usd::float AS cost, generated_images, checkpoint"
                        " FROM csv_row_jobs WHERE batch_id = %s ORDER BY row_number", [batch]).fetchall()
    assert sum(1 for r in rows if r["status"] == "completed") > 0, "the schedule let nothing through"
    for row in rows:
        n = row["row_number"]
        stored = (len(row["generated_images"] or []) if row["status"] == "completed"
                  else sum(1 for key in row["checkpoint"] if key.startswith("image:")))
        assert served_images[n] == stored == paid.get((n, "image"), 0), (seed, row["status"], served_images[n],
                                                                         stored, paid)
        assert served_prompts[n] == paid.get((n, "prompts"), 0), (seed, served_prompts[n], paid)
        assert row["cost"] == pytest.approx(sum(r["cost"] for r in ledger if r["row_number"] == n), abs=1e-9)
    batch_cost = conn.execute("SELECT cost_usd::float AS c FROM get_csv_batch_progress(%s)", [batch]).fetchone()
    assert batch_cost["c"] == pytest.approx(sum(r["cost"] for r in ledger), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_a_budget_is_used_and_never_passed_under_failures_by_two_workers(database_url, settings, conn,
                                                                         seed: int) -> None:
    """Two workers of two rows each, calls failing at random: what the ledger says was paid never passes the
    budget, and at least 75% of it is used (a budget stops within one call's worst case of its limit)."""
    fake = FakeOpenAI(schedule=RandomSchedule(100 + seed, hang=0.0), retry_after="0.1").start()
    try:
        batch = make_batch(conn, 12, max_retries=8)
        row = (120 * 1.00 + 80 * 5.00 + 2 * (50 * 5.00 + 1056 * 30.00)) / 1e6  # the server's usage, priced
        budget = round(5.5 * row, 6)
        conn.execute("UPDATE csv_batches SET max_cost_usd = %s WHERE id = %s", [budget, batch])
        fast = tuned(settings, fake)

        async def both() -> list[int]:
            workers = [Worker(WorkerConfig(database_url=database_url, settings=fast, concurrency=2, until_done=True,
                                           batch_id=batch, worker_id=f"budget-{n}-{uuid.uuid4().hex[:6]}"),
                              provider=OpenAIProvider(fast)) for n in range(2)]
            return list(await asyncio.gather(*(w.run() for w in workers)))

        assert asyncio.run(asyncio.wait_for(both(), 240)) == [0, 0]
    finally:
        fake.stop()
    paid = conn.execute("SELECT coalesce(sum(cost_usd), 0)::float AS c FROM csv_paid_calls WHERE batch_id = %s",
                        [batch]).fetchone()["c"]
    status = conn.execute("SELECT status FROM csv_batches WHERE id = %s", [batch]).fetchone()["status"]
    assert status == "paused", status
    assert 0.75 * budget <= paid <= budget, (seed, paid, budget)
