"""OpenAI's Batch API, end to end: `csvjobs work` drives batches uploaded with --openai-batch through the Files and
Batch APIs of the loopback OpenAI-compatible server (fake_openai.py), which runs each batch after a delay."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from helpers import batch_row, job_counts, make_batch
from PIL import Image
from test_worker_pool import finish, start_pool, wait_for

pytestmark = pytest.mark.slow

SECRET = "sk-test-batch-0123456789-do-not-log"
SYNC_CALLS = ("chat", "image", "edit")


@pytest.fixture
def batch_env(pool_env: dict[str, str], fake: FakeOpenAI) -> dict[str, str]:
    return dict(pool_env, OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=fake.base_url,
                CSVJOBS_OPENAI_BATCH_POLL_SECONDS="0.3", CSVJOBS_POLL_SECONDS="0.3")


def work(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    code, err = finish(start_pool(env, "--until-done", *args), timeout=timeout)
    assert code == 0, err
    return err


def sync_calls(fake: FakeOpenAI) -> int:
    return sum(fake.count(endpoint) for endpoint in SYNC_CALLS)


def test_a_batch_goes_through_both_steps_with_no_synchronous_call(batch_env, fake, conn, home: Path) -> None:
    batch = make_batch(conn, 12, mode="openai_batch")
    other = make_batch(conn, 3)  # an ordinary batch beside it is processed call by call as before
    err = work(batch_env, "--concurrency", "4")
    assert SECRET not in err
    assert job_counts(conn, batch) == {"completed": 12}
    assert job_counts(conn, other) == {"completed": 3}
    assert fake.count("chat") == 3 and fake.count("image") == 6  # the ordinary batch's calls, and no more
    assert fake.count("batch_chat") == 12 and fake.count("batch_image") == 24
    creates = [c.body for c in fake.calls if c.endpoint == "batches.create"]
    assert sorted(c["endpoint"] for c in creates) == ["/v1/chat/completions", "/v1/images/generations"]
    rows = conn.execute("SELECT generated_prompts, generated_images, generated_tags, cost_usd, usage"
                        " FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall()
    sync_cost = conn.execute("SELECT cost_usd FROM csv_row_jobs WHERE batch_id = %s LIMIT 1", [other]).fetchone()
    for row in rows:
        assert row["generated_prompts"]["lifestyle_emotional"]["prompt"].startswith("LIFESTYLE: US product")
        assert {image["style"] for image in row["generated_images"]} == {"lifestyle_emotional",
                                                                         "single_white_background"}
        for image in row["generated_images"]:
            data = (home / "storage" / image["storage_path"]).read_bytes()
            Image.open(io.BytesIO(data)).verify()
            if image["style"] == "single_white_background":
                assert image["pure_white"] is True
        # The same usage as a synchronous row, at half the price.
        assert float(row["cost_usd"]) == pytest.approx(float(sync_cost["cost_usd"]) / 2)
    assert float(batch_row(conn, batch)["cost_usd"]) == pytest.approx(sum(float(r["cost_usd"]) for r in rows))
    subs = conn.execute("SELECT step, state, openai_status, request_count, request_counts FROM csv_openai_batches"
                        " WHERE batch_id = %s ORDER BY id", [batch]).fetchall()
    assert [(s["step"], s["state"], s["openai_status"], s["request_count"]) for s in subs] == [
        ("prompts", "done", "completed", 12), ("images", "done", "completed", 24)]
    assert batch_row(conn, batch)["status"] == "completed"
