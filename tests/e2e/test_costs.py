"""What it costs, before it is spent: the real worker pool against the loopback OpenAI-compatible server, whose
usage is known, so every cost is known to the cent. Estimates that hold once the account has run a batch (on the
real Shopify sample with its look-alike variants, and on a plain file), a budget that four workers in two
processes never exceed, the bill at the end of a run, and flex processing with its fallback."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from support.helpers import REAL_DATA, cli, job_counts, upload
from support.pool import work

pytestmark = pytest.mark.slow

# The loopback server's usage, priced by hand from OpenAI's published prices (gpt-6.1-terra $1 in / $5 out,
# gpt-image-2.6-flare $5 text in, $8 image in, $30 image out, per 1M tokens): the ledger must say exactly this.
PROMPT = (120 * 1.00 + 80 * 5.00) / 1e6
GENERATION = (50 * 5.00 + 1056 * 30.00) / 1e6
TEXT_ROW = PROMPT + 2 * GENERATION  # 0.06438


@pytest.fixture
def env(openai_env: dict[str, str]) -> dict[str, str]:
    return dict(openai_env, CSVJOBS_POLL_SECONDS="0.3", CSVJOBS_OPENAI_BATCH_POLL_SECONDS="0.3")


def plain_file(tmp_path: Path, rows: int, name: str = "plain.csv") -> Path:
    path = tmp_path / name
    path.write_text("title,description,mpn\n" + "".join(f"Mug {n},A mug numbered {n},M-{n}\n"
                                                         for n in range(1, rows + 1)), encoding="utf-8")
    return path


def cost_of(conn, batch: str) -> float:
    row = conn.execute("SELECT coalesce(sum(cost_usd), 0) AS c FROM csv_row_jobs WHERE batch_id = %s",
                       [batch]).fetchone()
    return float(row["c"])


def paid_for(conn, batch: str) -> float:
    """What the ledger of paid calls says the batch paid."""
    row = conn.execute("SELECT coalesce(sum(cost_usd), 0) AS c FROM csv_paid_calls WHERE batch_id = %s",
                       [batch]).fetchone()
    return float(row["c"])


def mixed_file(tmp_path: Path, name: str, *, text: int, plain: int, cluttered: int, photos) -> Path:
    """Rows without a photo, rows whose photo is a plain studio shot (its white image is cut out, free) and rows
    whose photo is cluttered (both images are paid edits)."""
    lines = ["title,description,mpn,image_url"]
    kinds = [("", "text")] * text + [("/mug.png", "plain")] * plain + [("/clutter.png", "cluttered")] * cluttered
    for n, (path, kind) in enumerate(kinds, start=1):
        lines.append(f"{kind} item {n} of {name},A {kind} thing numbered {n},{name}-{n},"
                     f"{photos.base + path + f'?n={n}' if path else ''}")
    file = tmp_path / f"{name}.csv"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return file


def test_the_ledger_agrees_with_the_usage_the_server_reported(env, conn, tmp_path: Path) -> None:
    batch = upload(env, plain_file(tmp_path, 3))["batch_id"]
    err = work(env)
    costs = [float(r["cost_usd"]) for r in conn.execute(
        "SELECT cost_usd FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall()]
    assert costs == pytest.approx([TEXT_ROW] * 3, abs=1e-9)
    # The bill at the end of the run.
    summary = re.search(r"done in \d+s: (\d+) row\(s\) completed, (\d+) failed, (\d+) left; images: (\d+) generated, "
                        r"(\d+) cut out of product photos, (\d+) reused from look-alike rows \((\d+) in all\); "
                        r"(\d+) image call\(s\) paid for \((\d+) redo\(s\)\); cost \$([\d.]+)", err)
    assert summary is not None, err
    assert summary.groups()[:9] == ("3", "0", "0", "6", "0", "0", "6", "6", "0")
    assert float(summary.group(10)) == pytest.approx(3 * TEXT_ROW, abs=1e-4)


@pytest.mark.skipif(not REAL_DATA.exists(), reason="shared/data/real is not present")
def test_estimates_hold_once_the_account_has_run_a_batch(env, photos, conn, tmp_path: Path) -> None:
    # The real Shopify sample, its photos served from loopback (every URL answers the same studio photo).
    source = (REAL_DATA / "shopify_product_template.csv").read_text(encoding="utf-8")
    shop = tmp_path / "shopify.csv"
    shop.write_text(re.sub(r"https://burst\.shopifycdn\.com", photos.base + "/mug.png?", source), encoding="utf-8")
    plain = plain_file(tmp_path, 6)
    for path in (shop, plain):
        first = upload(env, path)
        work(env, "--concurrency", "4")
        second = upload(env, path)
        # A normal upload estimates as the dry run does, and stores it with the batch.
        assert upload(env, path, "--dry-run")["estimated_cost_usd"] == pytest.approx(second["estimated_cost_usd"])
        work(env, "--concurrency", "4")
        actual = cost_of(conn, second["batch_id"])
        assert actual > 0
        assert abs(second["estimated_cost_usd"] - actual) <= 0.15 * actual, (path.name, second, actual)
        # The account's very first upload has nothing to learn from; every later one learns from its rows.
        assert "learned from" in second["cost_basis"]
        assert ("learned from" in first["cost_basis"]) == (path is plain)
        assert cost_of(conn, first["batch_id"]) == pytest.approx(actual, abs=1e-6)
        if path is shop:
            # Look-alike variants are counted once: they cost nothing.
            assert second["reused_rows"] > 0 and "look-alike variant(s) reuse" in second["cost_basis"]
        stored = conn.execute("SELECT estimated_cost_usd FROM csv_batches WHERE id = %s",
                              [second["batch_id"]]).fetchone()
        assert float(stored["estimated_cost_usd"]) == pytest.approx(second["estimated_cost_usd"])


def test_estimates_hold_on_any_mix_of_routes(env, photos, conn, tmp_path: Path) -> None:
    # A first batch (nothing learned): its cost falls inside the range the upload gave.
    first = upload(env, mixed_file(tmp_path, "first", text=3, plain=4, cluttered=2, photos=photos))
    assert first["estimated_cost_low_usd"] < first["estimated_cost_usd"] < first["estimated_cost_high_usd"]
    work(env, "--concurrency", "4")
    actual = paid_for(conn, first["batch_id"])
    assert first["estimated_cost_low_usd"] <= actual <= first["estimated_cost_high_usd"], (first, actual)
    errors = {}
    # Then different mixes, each estimated from what the account paid before: within 15% whatever the mix.
    for name, kinds, args in (("text", {"text": 6, "plain": 0, "cluttered": 0}, ()),
                              ("photos", {"text": 0, "plain": 5, "cluttered": 2}, ()),
                              ("mixed", {"text": 4, "plain": 2, "cluttered": 1}, ()),
                              ("batchapi", {"text": 3, "plain": 3, "cluttered": 1}, ("--openai-batch",))):
        report = upload(env, mixed_file(tmp_path, name, photos=photos, **kinds), *args)
        work(env, "--concurrency", "4")
        actual = paid_for(conn, report["batch_id"])
        assert actual == pytest.approx(cost_of(conn, report["batch_id"]), abs=1e-9)
        errors[name] = (report["estimated_cost_usd"] - actual) / actual
        assert abs(errors[name]) <= 0.15, (name, report, actual)
        assert report["estimated_cost_low_usd"] <= actual <= report["estimated_cost_high_usd"], (name, report)
    print("estimate error by mix:", {k: f"{v:+.1%}" for k, v in errors.items()})


def test_a_budget_no_row_fits_is_refused_at_upload(env, conn, tmp_path: Path) -> None:
    result = cli(env, "upload", str(plain_file(tmp_path, 3)), "--max-cost", "0.01")
    assert result.returncode == 2
    assert "no row of this file fits that budget; the least a row costs is about $0.06" in result.stderr
    assert "Traceback" not in result.stderr
    assert conn.execute("SELECT count(*) AS n FROM csv_batches").fetchone() == {"n": 0}


def test_one_price_for_a_redo_in_regenerate_the_review_page_and_the_bill(env, conn, tmp_path: Path) -> None:
    import urllib.request

    from support.review import review_server

    batch = upload(env, plain_file(tmp_path, 2))["batch_id"]
    work(env)
    before = paid_for(conn, batch)
    redo = cli(env, "regenerate", batch, "--rows", "1", "--style", "lifestyle")
    assert redo.returncode == 0, redo.stderr
    quoted = re.search(r"about \$([\d.]+) of new images", redo.stdout)
    assert quoted is not None, redo.stdout
    err = work(env)
    billed = re.search(r"cost \$([\d.]+)", err)
    assert billed is not None, err
    grew = paid_for(conn, batch) - before
    assert float(quoted.group(1)) == pytest.approx(GENERATION, abs=1e-4)
    assert float(billed.group(1)) == pytest.approx(float(quoted.group(1)), abs=1e-4)
    assert grew == pytest.approx(float(quoted.group(1)), abs=1e-4)
    assert re.search(r"1 image call\(s\) paid for \(1 redo\(s\)\)", err), err
    with review_server(env, batch) as url:
        shell = urllib.request.urlopen(url, timeout=10).read().decode()
        secret = re.search(r'name="csvjobs-session" content="([^"]+)"', shell)
        assert secret is not None
        request = urllib.request.Request(url.split("?")[0] + "api/page?filter=all&page=1",
                                         headers={"X-Review-Token": secret.group(1)})
        rows = urllib.request.urlopen(request, timeout=10).read().decode()
    shown = [float(v) for v in re.findall(r"Redo \(g\) ~\$([\d.]+)", rows)]
    assert len(shown) == 4 and shown == pytest.approx([float(quoted.group(1))] * 4, abs=1e-4), shown


def test_a_budget_is_used_and_never_exceeded_by_four_workers_in_two_processes(env, conn, tmp_path: Path) -> None:
    budget = round(5.5 * TEXT_ROW, 4)  # about five and a half rows
    report = upload(env, plain_file(tmp_path, 14), "--max-cost", str(budget))
    batch = report["batch_id"]
    assert report["max_cost_usd"] == budget
    err = work(env, "--concurrency", "4", "--processes", "2")
    spent = paid_for(conn, batch)
    counts = job_counts(conn, uuid.UUID(batch))
    assert 0.75 * budget <= spent <= budget, (spent, counts)
    assert spent == pytest.approx(cost_of(conn, batch), abs=1e-9)
    print(f"budget used: ${spent:.4f} of ${budget:.4f} ({spent / budget:.0%})")
    # Said once, by the worker whose call paused it (and the run's bill says where it stands).
    said = [line for line in err.splitlines() if line.startswith("worker ") and "paused" in line]
    assert len(said) == 1 and "paused: budget reached" in said[0], err
    assert counts.get("failed", 0) == 0 and counts.get("pending", 0) >= 14 - 5
    row = conn.execute("SELECT status, pause_reason FROM csv_batches WHERE id = %s", [batch]).fetchone()
    assert row["status"] == "paused" and row["pause_reason"].startswith("budget reached")
    assert f"batch {batch[:8]} is paused: budget reached" in err
    warned = conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE batch_id = %s"
                          " AND operation = 'budget_reached' AND log_level = 'WARN'", [batch]).fetchone()
    assert warned == {"n": 1}
    retried = conn.execute("SELECT coalesce(max(retry_count), 0) AS n FROM csv_row_jobs WHERE batch_id = %s",
                           [batch]).fetchone()
    assert retried == {"n": 0}  # rows the budget held back were not counted as failures
    shown = cli(env, "progress", batch)
    assert "budget reached" in shown.stdout + shown.stderr
    # A higher budget, and the rest is made.
    resumed = cli(env, "resume", batch, "--max-cost", "5")
    assert resumed.returncode == 0, resumed.stderr
    work(env, "--concurrency", "4", "--processes", "2")
    assert job_counts(conn, uuid.UUID(batch)) == {"completed": 14}
    assert cost_of(conn, batch) == pytest.approx(14 * TEXT_ROW, abs=1e-6)


def test_flex_prompts_cost_half_and_fall_back_to_the_standard_tier(env, fake, conn, tmp_path: Path) -> None:
    flex = dict(env, CSVJOBS_PROMPT_SERVICE_TIER="flex", CSVJOBS_FLEX_WAIT_SECONDS="30")
    fake.flex_busy = 2  # no capacity twice, then served by flex
    batch = upload(flex, plain_file(tmp_path, 1, "a.csv"))["batch_id"]
    work(flex, "--concurrency", "1")
    assert cost_of(conn, batch) == pytest.approx(PROMPT / 2 + 2 * GENERATION, abs=1e-9)
    chats = [c for c in fake.calls if c.endpoint == "chat"]
    assert [c.status for c in chats] == [429, 429, 200] and all(c.body["service_tier"] == "flex" for c in chats)

    fake.flex_busy = 10_000  # never any capacity: after the wait, the standard tier, at the standard price
    batch = upload(flex, plain_file(tmp_path, 1, "b.csv"))["batch_id"]
    work(dict(flex, CSVJOBS_FLEX_WAIT_SECONDS="1"), "--concurrency", "1")
    assert cost_of(conn, batch) == pytest.approx(TEXT_ROW, abs=1e-9)
    last = [c for c in fake.calls if c.endpoint == "chat"][-1]
    assert "service_tier" not in last.body and last.status == 200
    fell_back = conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE batch_id = %s"
                             " AND operation = 'flex_fallback'", [batch]).fetchone()
    assert fell_back == {"n": 1}
