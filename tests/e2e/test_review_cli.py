"""Reviewing images from the command line, with a worker pool: approve and reject (state in PostgreSQL, under
RLS), redo one image with a note (paying for exactly that image, the old version kept), shop exports carrying
approved images only, and another user's batch refused."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import pytest
from support.fake_openai import FakeOpenAI
from support.helpers import REVIEW_OF_ROW, USER_A, USER_B, cli, job_counts
from support.pool import work as pool_work

# A plain CSV made with the offline provider: the shop export must be told it may replace images and use placeholders.
SHOP_OK = ("--replace-images", "--include-placeholders")
BASE = "https://cdn.example.test/img"


@pytest.fixture
def env(pool_env: dict[str, str], fake: FakeOpenAI) -> dict[str, str]:
    return dict(pool_env, CSVJOBS_USER_ID=str(USER_A), OPENAI_API_KEY="sk-test-review-0123456789",
                OPENAI_BASE_URL=fake.base_url)


def work(env: dict[str, str], *args: str) -> str:
    return pool_work(env, "--concurrency", "3", *args)


@pytest.mark.slow
def test_approve_reject_and_redo_one_image_with_a_note(env, fake, conn, home: Path, tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    source.write_text("title,description,sku\nMug,glazed mug,M1\nBowl,salad bowl,B2\nVase,tall vase,V3\n")
    up = cli(env, "upload", str(source), "--map", "mpn=sku", "--json")
    assert up.returncode == 0, up.stderr
    batch = uuid.UUID(json.loads(up.stdout)["batch_id"])
    work(env)
    calls_before = len(fake.calls)

    assert "2 image(s)" in cli(env, "approve", str(batch), "--rows", "1-2", "--style", "white").stdout
    assert "2 image(s)" in cli(env, "reject", str(batch), "--rows", "3").stdout
    reviews = {r["row_number"]: r["review"] for r in conn.execute(
        f"SELECT row_number, {REVIEW_OF_ROW}"
        " FROM csv_row_jobs WHERE batch_id = %s", [batch])}
    assert reviews[1]["single_white_background"]["state"] == "approved" and "lifestyle_emotional" not in reviews[1]
    assert reviews[1]["single_white_background"]["by"] == str(USER_A)
    assert {s["state"] for s in reviews[3].values()} == {"rejected"}

    # Shop files carry approved images only once a batch has been reviewed; --all carries every current image.
    shop = cli(env, "export", str(batch), "--format", "woocommerce", "--base-url", BASE, *SHOP_OK)
    assert shop.returncode == 0, shop.stderr
    assert "only approved images are in the file" in shop.stderr
    rows = list(csv.DictReader(io.StringIO(shop.stdout)))
    assert [r["SKU"] for r in rows] == ["M1", "B2"]
    assert all(r["Images"].count(",") == 0 and r["Images"].endswith("-white.png") for r in rows)
    everything = list(csv.DictReader(io.StringIO(cli(env, "export", str(batch), "--format", "woocommerce",
                                                     "--base-url", BASE, "--all", *SHOP_OK).stdout)))
    assert len(everything) == 3 and all(r["Images"].count(",") == 1 for r in everything)

    old = conn.execute("SELECT generated_images FROM csv_row_jobs WHERE batch_id = %s AND row_number = 3",
                       [batch]).fetchone()
    assert old is not None
    old_life = next(i for i in old["generated_images"] if i["style"] == "lifestyle_emotional")
    redo = cli(env, "regenerate", str(batch), "--rows", "3", "--style", "lifestyle", "--note",
               "warmer light, no people")
    assert redo.returncode == 0 and "1 row(s)" in redo.stdout, redo.stderr
    assert job_counts(conn, batch) == {"completed": 2, "pending": 1}
    work(env)
    assert job_counts(conn, batch) == {"completed": 3}

    # Exactly one image was paid for: the lifestyle image of row 3, with the note in its prompt.
    new_calls = fake.calls[calls_before:]
    assert [c.endpoint for c in new_calls] == ["image"]
    assert "warmer light, no people" in new_calls[0].body["prompt"]
    row = conn.execute("SELECT generated_images, generated_prompts, checkpoint, cost_usd,"
                       f" {REVIEW_OF_ROW} FROM csv_row_jobs"
                       " WHERE batch_id = %s AND row_number = 3", [batch]).fetchone()
    assert row is not None
    life = next(i for i in row["generated_images"] if i["style"] == "lifestyle_emotional")
    white = next(i for i in row["generated_images"] if i["style"] == "single_white_background")
    assert life["storage_path"] != old_life["storage_path"] and life["storage_path"].endswith("-r2.png")
    assert (home / "storage" / old_life["storage_path"]).exists() and (home / "storage" / life["storage_path"]).exists()
    assert white == next(i for i in old["generated_images"] if i["style"] == "single_white_background")
    assert row["review"] == {"single_white_background": reviews[3]["single_white_background"]}  # redone: unreviewed
    assert "regenerate" not in row["checkpoint"]
    assert "warmer light" in row["generated_prompts"]["lifestyle_emotional"]["prompt"]
    versions = conn.execute("SELECT style, version, review, replaced_note, replaced_by, image FROM csv_image_versions"
                            " WHERE batch_id = %s", [batch]).fetchall()
    assert len(versions) == 1
    kept = versions[0]
    assert (kept["style"], kept["version"], kept["review"]) == ("lifestyle_emotional", 1, "rejected")
    assert kept["replaced_note"] == "warmer light, no people" and kept["replaced_by"] == USER_A
    assert kept["image"]["storage_path"] == old_life["storage_path"]
    exported = list(csv.DictReader(io.StringIO(cli(env, "export", str(batch)).stdout)))
    assert exported[2]["earlier_versions"] == "1" and exported[2]["lifestyle_emotional_review"] == "unreviewed"
    assert exported[0]["single_white_background_review"] == "approved"

    # The newest image is current until one is approved: redo row 1's approved white image, and the shop file
    # keeps the approved earlier version until the new one is approved.
    approved_white = next(i for i in rows_of_images(conn, batch, 1) if i["style"] == "single_white_background")
    assert cli(env, "regenerate", str(batch), "--rows", "1", "--style", "white").returncode == 0
    work(env)
    def shop_images() -> str:
        shop = cli(env, "export", str(batch), "--format", "woocommerce", "--base-url", BASE, *SHOP_OK)
        assert shop.returncode == 0, shop.stderr
        return next(r for r in csv.DictReader(io.StringIO(shop.stdout)) if r["SKU"] == "M1")["Images"]
    assert shop_images() == f"{BASE}/{approved_white['storage_path']}"
    assert cli(env, "approve", str(batch), "--rows", "1", "--style", "white").returncode == 0
    redone = next(i for i in rows_of_images(conn, batch, 1) if i["style"] == "single_white_background")
    assert redone["storage_path"] != approved_white["storage_path"]
    assert shop_images() == f"{BASE}/{redone['storage_path']}"


def rows_of_images(conn, batch: uuid.UUID, row: int) -> list[dict]:
    found = conn.execute("SELECT generated_images FROM csv_row_jobs WHERE batch_id = %s AND row_number = %s",
                         [batch, row]).fetchone()
    assert found is not None
    return list(found["generated_images"])


@pytest.mark.slow
def test_another_users_batch_cannot_be_reviewed(env, conn, tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    source.write_text("title,description\nMug,glazed mug\n")
    up = cli(env, "upload", str(source), "--json")
    batch = json.loads(up.stdout)["batch_id"]
    work(env)
    other = dict(env, CSVJOBS_USER_ID=str(USER_B))
    for args in (["approve", batch], ["reject", batch, "--rows", "1"], ["regenerate", batch, "--rows", "1"]):
        result = cli(other, *args)
        assert result.returncode == 2 and "no such batch" in result.stderr and "Traceback" not in result.stderr
    assert conn.execute("SELECT count(*) AS n FROM csv_row_reviews").fetchone() == {"n": 0}
    assert cli(env, "approve", batch, "--style", "sideways").returncode == 2
