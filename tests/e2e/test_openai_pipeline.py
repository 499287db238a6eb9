"""The OpenAI provider, end to end: the real OpenAI SDK in the worker pool talks over HTTP to a loopback
OpenAI-compatible server (fake_openai.py)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from support.fake_openai import FakeOpenAI
from support.helpers import batch_row, job_counts, make_batch
from support.pool import finish, start_pool, wait_for, work

# These start worker pools, servers or CLI processes: run by CI, left out by `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

SECRET = "sk-test-0123456789-do-not-log"


@pytest.fixture
def openai_env(pool_env: dict[str, str], fake: FakeOpenAI) -> dict[str, str]:
    return dict(pool_env, OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=fake.base_url)


def test_a_batch_yields_two_decodable_images_per_row_with_prompts_tags_and_cost(
    openai_env, fake, conn, home: Path
) -> None:
    batch = make_batch(conn, 30)
    err = work(openai_env, "--concurrency", "8")
    assert SECRET not in err
    assert job_counts(conn, batch) == {"completed": 30}
    assert fake.count("chat") == 30 and fake.count("image") == 60
    models = {c.body["model"] for c in fake.calls if c.endpoint == "image"}
    assert models == {"gpt-image-2.6-flare"}
    assert {c.body["model"] for c in fake.calls if c.endpoint == "chat"} == {"gpt-6.1-terra"}
    rows = conn.execute("SELECT row_number, generated_prompts, generated_images, generated_tags, cost_usd"
                        " FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall()
    for row in rows:
        assert row["generated_prompts"]["lifestyle_emotional"]["prompt"].startswith("LIFESTYLE: US product")
        assert row["generated_tags"][0] == "product"
        assert len(row["generated_images"]) == 2
        for image in row["generated_images"]:
            assert image["model"] == "gpt-image-2.6-flare" and image["size"] == "1024x1024"
            data = (home / "storage" / image["storage_path"]).read_bytes()
            assert len(data) == image["bytes"]
            Image.open(io.BytesIO(data)).verify()
        assert float(row["cost_usd"]) > 0
    assert float(batch_row(conn, batch)["cost_usd"]) == pytest.approx(sum(float(r["cost_usd"]) for r in rows))
    everything = conn.execute("SELECT string_agg(j::text, ' ') AS all FROM csv_row_jobs j").fetchone()
    logs = conn.execute("SELECT string_agg(l::text, ' ') AS all FROM csv_processing_logs l").fetchone()
    assert SECRET not in str(everything) and SECRET not in str(logs)


def test_a_killed_worker_between_the_two_images_costs_exactly_one_more_image_call(openai_env, fake, conn) -> None:
    batch = make_batch(conn, 1)
    fake.hang_first_image_when = "WHITE:"
    fake.hang_seconds = 120
    proc = start_pool(openai_env, "--until-done", "--max-dedicated", "0", "--concurrency", "1")

    def lifestyle_saved() -> bool:
        row = conn.execute("SELECT checkpoint FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchone()
        return row is not None and "image:lifestyle_emotional" in row["checkpoint"]

    wait_for(lifestyle_saved, what="the first image's checkpoint")
    wait_for(lambda: fake.count("image") == 2, what="the second image call")
    holder = conn.execute("SELECT w.pid FROM csv_processing_workers w JOIN csv_row_jobs j"
                          " ON j.claimed_by = w.instance_id").fetchone()
    assert holder is not None
    os.kill(holder["pid"], signal.SIGKILL)
    code, err = finish(proc)
    assert code == 0, err
    assert job_counts(conn, batch) == {"completed": 1}
    assert fake.count("chat") == 1
    assert fake.count("image", lambda c: c.body["prompt"].startswith("LIFESTYLE:")) == 1
    assert fake.count("image", lambda c: c.body["prompt"].startswith("WHITE:")) == 2
    reused = conn.execute("SELECT operation FROM csv_processing_logs WHERE operation IN"
                          " ('prompts_reused', 'image_reused') ORDER BY operation").fetchall()
    assert [r["operation"] for r in reused] == ["image_reused", "prompts_reused"]


def test_a_429_pauses_every_workers_image_calls(openai_env, fake, conn) -> None:
    make_batch(conn, 40)
    fake.rate_limit_next_images = 1
    fake.retry_after = "2"
    fake.latency = 0.1
    work(openai_env, "--concurrency", "8", "--processes", "2")
    images = sorted((c for c in fake.calls if c.endpoint == "image"), key=lambda c: c.at)
    limited = next(c for c in images if c.status == 429)
    offsets = [c.at - limited.at for c in images if c.at > limited.at]
    # Without the shared pause, 8 rows in flight at 100 ms a call make dozens of image calls in this window; with
    # it, only a call that was already past its check when the pause was written may slip through (a loaded
    # machine can delay such a call, so a couple are tolerated).
    during = [t for t in offsets if 0.3 < t < 1.9]
    assert len(during) <= 3, during
    assert len([t for t in offsets if t >= 1.9]) > 20  # and the work went on after the pause


def test_the_rate_limit_holds_across_two_pools(openai_env, fake, conn, home: Path) -> None:
    make_batch(conn, 12)
    ipm = 240  # one image every 0.25 s across everything
    env_b = dict(openai_env, CSVJOBS_HOME=str(home.parent / "home-b"))
    pools = [start_pool(env, "--until-done", "--max-dedicated", "0", "--concurrency", "6", "--processes", "1",
                        "--ipm", str(ipm)) for env in (openai_env, env_b)]
    for proc in pools:
        code, err = finish(proc)
        assert code == 0, err
    times = sorted(c.at for c in fake.calls if c.endpoint == "image")
    assert len(times) == 24
    interval = 60 / ipm
    for i in range(len(times) - 4):
        assert times[i + 4] - times[i] >= 4 * interval * 0.8, (i, times[i + 4] - times[i])
    # Both pools really shared the work (the limit was held across them, not by one pool doing everything).
    workers = conn.execute("SELECT count(DISTINCT worker_instance) AS n FROM csv_processing_logs"
                           " WHERE operation = 'row_completed'").fetchone()
    assert workers == {"n": 2}


def test_chaos_at_20_percent_errors_still_completes_every_row(openai_env, fake, conn) -> None:
    batch = make_batch(conn, 20)
    fake.error_rate = 0.2
    work(openai_env, "--concurrency", "8", timeout=240)
    assert job_counts(conn, batch) == {"completed": 20}
    assert any(c.status != 200 for c in fake.calls)


def test_a_content_policy_error_fails_only_that_row(openai_env, fake, conn) -> None:
    batch = make_batch(conn, 5)
    fake.policy_when = "US product 3"
    work(openai_env, "--concurrency", "4")
    rows = {r["row_number"]: r for r in conn.execute(
        "SELECT row_number, status, error_message, retry_count FROM csv_row_jobs WHERE batch_id = %s", [batch])}
    assert rows[3]["status"] == "failed" and rows[3]["retry_count"] == 0
    assert "content policy" in rows[3]["error_message"] and "moderation_blocked" in rows[3]["error_message"]
    assert all(rows[n]["status"] == "completed" for n in (1, 2, 4, 5))


def test_malformed_output_is_asked_again_and_refusals_fail_the_row(openai_env, fake, conn) -> None:
    batch = make_batch(conn, 2)
    fake.malformed_chat_next = 1
    fake.refuse_when = "Product 2"
    work(openai_env, "--concurrency", "1")
    rows = {r["row_number"]: r for r in conn.execute(
        "SELECT row_number, status, error_message FROM csv_row_jobs WHERE batch_id = %s", [batch])}
    assert rows[1]["status"] == "completed"
    assert rows[2]["status"] == "failed" and "refused" in rows[2]["error_message"]
    assert fake.count("chat") == 1 + 1 + 3  # row 1: malformed then good; row 2: three refusals


def test_images_returned_as_data_urls_are_accepted(openai_env, fake, conn, home: Path) -> None:
    batch = make_batch(conn, 2)
    fake.image_as_url = True
    work(openai_env, "--concurrency", "2")
    assert job_counts(conn, batch) == {"completed": 2}
    assert len(list((home / "storage" / "csv-images").rglob("*.png"))) == 4


def test_the_key_never_reaches_help_or_errors(pool_env, fake) -> None:
    env = dict(pool_env, OPENAI_API_KEY=SECRET, OPENAI_BASE_URL=fake.base_url)
    shown = subprocess.run([sys.executable, "-m", "csvjobs", "work", "--help"], env=env, text=True,
                           capture_output=True, timeout=60)
    assert shown.returncode == 0 and "--api-key" in shown.stdout
    assert SECRET not in shown.stdout + shown.stderr
    passed = subprocess.run([sys.executable, "-m", "csvjobs", "work", "--api-key", SECRET, "--provider", "nope"],
                            env=env, text=True, capture_output=True, timeout=60)
    assert passed.returncode == 2 and "unknown provider" in passed.stderr
    assert SECRET not in passed.stdout + passed.stderr and "Traceback" not in passed.stderr
    no_key = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    code, err = finish(start_pool(no_key, "--provider", "openai", "--until-done"), timeout=60)
    assert code == 2 and "OPENAI_API_KEY" in err and "Traceback" not in err


def test_the_key_can_come_from_a_file_or_standard_input(pool_env, fake, conn, tmp_path: Path) -> None:
    make_batch(conn, 1)
    env = dict(pool_env, OPENAI_BASE_URL=fake.base_url)
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    fake.reject_key = True  # so that the pool stops at once, having shown the key to the server
    for args, stdin in ((["--api-key-file", str(key_file)], None), (["--api-key-file", "-"], SECRET + "\n")):
        done = subprocess.run([sys.executable, "-m", "csvjobs", "work", "--provider", "openai", "--until-done",
                               *args], env=env, text=True, capture_output=True, timeout=120, input=stdin)
        assert done.returncode == 2, done.stderr
        assert SECRET not in done.stdout + done.stderr and "Traceback" not in done.stderr
        assert f"Bearer {SECRET}" in fake.authorizations
        fake.authorizations.clear()
    missing = subprocess.run([sys.executable, "-m", "csvjobs", "work", "--api-key-file", str(tmp_path / "none")],
                             env=env, text=True, capture_output=True, timeout=60)
    assert missing.returncode == 2 and "--api-key-file" in missing.stderr and "Traceback" not in missing.stderr
    shown = subprocess.run([sys.executable, "-m", "csvjobs", "work", "--help"], env=env, text=True,
                           capture_output=True, timeout=60)
    assert "OPENAI_API_KEY" in shown.stdout and "process list" in shown.stdout


def _rows_untouched(conn, batch) -> None:
    rows = conn.execute("SELECT status, retry_count, error_message FROM csv_row_jobs WHERE batch_id = %s",
                        [batch]).fetchall()
    assert {(r["status"], r["retry_count"], r["error_message"]) for r in rows} == {("pending", 0, None)}
    assert batch_row(conn, batch)["failed_rows"] == 0


def test_a_rejected_key_stops_the_pool_with_one_line_and_fails_no_row(openai_env, fake, conn) -> None:
    batch = make_batch(conn, 40)
    fake.reject_key = True
    proc = start_pool(openai_env, "--until-done", "--max-dedicated", "0", "--concurrency", "8", "--processes", "2")
    code, err = finish(proc, timeout=60)
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "HTTP 401" in errors[0] and "OPENAI_API_KEY" in errors[0] and "Traceback" not in err
    assert SECRET not in err and "[redacted]" in errors[0]
    # Stopped at the first answers: not one call per row, let alone retries.
    assert fake.count("rejected") <= 8 + 2
    _rows_untouched(conn, batch)
    everything = conn.execute("SELECT string_agg(l::text, ' ') AS all FROM csv_processing_logs l").fetchone()
    assert SECRET not in str(everything) and "provider_refused" in str(everything)


def test_a_retired_image_model_stops_the_pool_naming_the_setting(openai_env, fake, conn) -> None:
    batch = make_batch(conn, 6)
    fake.unknown_models = {"gpt-image-1"}
    env = dict(openai_env, CSVJOBS_IMAGE_MODEL="gpt-image-1")
    code, err = finish(start_pool(env, "--until-done", "--max-dedicated", "0", "--concurrency", "2"), timeout=60)
    assert code == 2, err
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "gpt-image-1" in line and "CSVJOBS_IMAGE_MODEL" in line
    _rows_untouched(conn, batch)
    # The prompts already paid for stay as checkpoints for the next run.
    saved = conn.execute("SELECT count(*) AS n FROM csv_row_jobs WHERE checkpoint ? 'prompts'").fetchone()
    assert saved is not None and saved["n"] >= 1


def test_a_provider_error_that_quotes_the_key_is_scrubbed_everywhere(openai_env, fake, conn) -> None:
    """A 400 (a row-level failure) whose message quotes the key: the row fails, the key is stored nowhere."""
    batch = make_batch(conn, 2)
    fake.policy_when = "US product 1"
    original = fake._image

    def quoting(body):
        status, headers, payload = original(body)
        if status == 400:
            payload["error"]["message"] += f" (request by {SECRET}, sk-proj-abcdefghijklmnop)"
        return status, headers, payload

    fake._image = quoting  # type: ignore[method-assign]
    err = work(openai_env, "--concurrency", "2")
    assert SECRET not in err
    row = conn.execute("SELECT error_message FROM csv_row_jobs WHERE batch_id = %s AND row_number = 1",
                       [batch]).fetchone()
    assert row is not None and "[redacted]" in row["error_message"]
    assert SECRET not in row["error_message"] and "sk-proj-abcdefghijklmnop" not in row["error_message"]
    logs = conn.execute("SELECT string_agg(l::text, ' ') AS all FROM csv_processing_logs l").fetchone()
    assert SECRET not in str(logs) and "sk-proj-abcdefghijklmnop" not in str(logs)
