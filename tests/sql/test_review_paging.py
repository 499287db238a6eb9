"""The review page reads one page at a time: queries.review_page returns one page of products under a filter (a
look-alike variant with the row it reuses), keyset on the row number both ways, and the heading's counts, which
agree with counting every row."""

from __future__ import annotations

import random
from typing import Any

import psycopg
from support.helpers import REVIEW_OF_ROW, USER_A, completed_batch

from csvjobs.operate import queries
from csvjobs.operate.review_view import FILTERS, matches, row_view

ROWS = 300
SIZE = 48


def _shape(conn: psycopg.Connection, batch: Any) -> None:
    """Random decisions, failures, redos and look-alike variants (every 7th row reuses the row before)."""
    rng = random.Random(5)
    with conn.transaction():
        for number in range(1, ROWS + 1):
            states = {s: rng.choice(["approved", "rejected", None, None]) for s in
                      ("lifestyle_emotional", "single_white_background")}
            review = {s: {"state": v} for s, v in states.items() if v}
            conn.execute(
                "INSERT INTO csv_row_reviews (row_job_id, batch_id, review) SELECT id, batch_id, %s::jsonb"
                " FROM csv_row_jobs WHERE batch_id = %s AND row_number = %s",
                [psycopg.types.json.Jsonb(review), batch, number])
            conn.execute(
                "UPDATE csv_row_jobs SET status = %s,"
                " checkpoint = CASE WHEN %s THEN '{\"regenerate\": {}}'::jsonb ELSE checkpoint END,"
                " usage = CASE WHEN %s THEN jsonb_build_object('reuses_row', %s::int - 1) ELSE usage END"
                " WHERE batch_id = %s AND row_number = %s",
                ["failed" if number % 29 == 0 else "completed",
                 number % 31 == 0, number % 7 == 0, number, batch, number])


def test_pages_walk_every_product_once_both_ways_and_the_counts_add_up(conn: psycopg.Connection) -> None:
    batch = completed_batch(conn, ROWS)
    _shape(conn, batch)
    every = [row_view(r) for r in queries.review_rows(conn, USER_A, batch)]
    products = [v for v in every if v["reuses_row"] is None]
    for which in FILTERS:
        expected = [v["row"] for v in products if matches(v, which)]
        seen: list[int] = []
        after = None
        while True:
            found = queries.review_page(conn, USER_A, batch, which, after=after, size=SIZE)
            rows = [r["row_number"] for r in found["rows"]]
            assert len(rows) <= SIZE
            seen += rows
            assert found["counts"][f"products_{which}"] == len(expected)
            for variant in found["variants"]:  # a page's variants are those of its products
                assert variant["owner"] in rows and variant["row_number"] == variant["owner"] + 1
            if not found["later"]:
                break
            assert len(rows) == SIZE
            after = rows[-1]
        assert seen == expected, which
        # And back from the end, a page at a time.
        back: list[int] = []
        before = None if not seen else seen[-1] + 1
        while before is not None:
            found = queries.review_page(conn, USER_A, batch, which, before=before, size=SIZE)
            rows = [r["row_number"] for r in found["rows"]]
            back = rows + back
            before = rows[0] if found["earlier"] and rows else None
        assert back == expected, which
    counts = queries.review_page(conn, USER_A, batch, "all", size=SIZE)["counts"]
    images = [i for v in products for i in v["images"] if i["path"]]
    assert counts["products"] == len(products) and counts["images"] == len(images)
    assert counts["approved"] == sum(i["review"] == "approved" for i in images)
    assert counts["rejected"] == sum(i["review"] == "rejected" for i in images)
    assert counts["to_review"] == sum(i["review"] == "unreviewed" for v in products for i in v["images"]
                                      if i["path"] and v["status"] == "completed")
    assert counts["failed"] == sum(v["status"] == "failed" for v in products)
    assert counts["redoing"] == sum(v["regenerating"] for v in products)


def _needing_eyes(conn: psycopg.Connection, batch: Any) -> set[int]:
    """Give rows every reason to need eyes: a flagged image, a channel rule failed, an unusable photo, a redo."""
    reasons = {
        3: "UPDATE csv_row_jobs SET generated_images = jsonb_set(generated_images, '{0,flagged}', 'true')",
        5: "UPDATE csv_row_jobs SET generated_images = jsonb_set(generated_images, '{1,checks}',"
           " '{\"amazon\": {\"passed\": false}, \"google\": {\"passed\": true}}')",
        8: "UPDATE csv_row_jobs SET checkpoint = '{\"reference_error\": \"the photo URL answered HTTP 404\"}'",
    }
    with conn.transaction():
        for number, change in reasons.items():
            conn.execute(change + " WHERE batch_id = %s AND row_number = %s", [batch, number])
        conn.execute("INSERT INTO csv_image_versions (batch_id, row_job_id, row_number, style, version, image)"
                     " SELECT batch_id, id, row_number, 'lifestyle_emotional', 1, '{}' FROM csv_row_jobs"
                     " WHERE batch_id = %s AND row_number = 12", [batch])
        # Checks that all pass, and a reviewed row: no reason for eyes.
        conn.execute("UPDATE csv_row_jobs SET generated_images = jsonb_set(generated_images, '{1,checks}',"
                     " '{\"amazon\": {\"passed\": true}}') WHERE batch_id = %s AND row_number = 6", [batch])
    return {3, 5, 8, 12}


def test_review_by_exception_approves_what_needs_no_eyes_and_keeps_every_decision(conn: psycopg.Connection) -> None:
    batch = completed_batch(conn, 20)
    flagged = _needing_eyes(conn, batch)
    assert queries.review_images(conn, USER_A, batch, [2], "single_white_background", "reject") == 1
    assert queries.review_images(conn, USER_A, batch, [4], None, "approve") == 2
    found = queries.review_page(conn, USER_A, batch, "needs_eyes")
    assert {r["row_number"] for r in found["rows"]} == flagged and found["counts"]["needs_eyes"] == len(flagged)
    # The page's sample: products that need no eyes, the same for the same seed.
    sample = queries.review_page(conn, USER_A, batch, queries.SAMPLE, sample=("seed-1", 5))
    rows = [r["row_number"] for r in sample["rows"]]
    assert len(rows) == 5 and not set(rows) & flagged
    assert [r["row_number"] for r in queries.review_page(conn, USER_A, batch, queries.SAMPLE,
                                                         sample=("seed-1", 5))["rows"]] == rows
    # 16 products need no eyes: 32 images, less the rejected one and the two approved before.
    assert queries.approve_unflagged(conn, USER_A, batch) == 32 - 1 - 2
    states = {(r["row_number"], style): ((r["review"] or {}).get(style) or {}).get("state", "unreviewed")
              for r in conn.execute(f"SELECT row_number, {REVIEW_OF_ROW}"
                                    " FROM csv_row_jobs WHERE batch_id = %s",
                                    [batch]).fetchall()
              for style in ("lifestyle_emotional", "single_white_background")}
    for (row, style), state in states.items():
        if row in flagged:
            assert state == "unreviewed", (row, style)
        elif (row, style) == (2, "single_white_background"):
            assert state == "rejected"
        else:
            assert state == "approved", (row, style)
    assert queries.approve_unflagged(conn, USER_A, batch) == 0  # nothing twice


def test_placeholders_need_eyes_and_are_never_approved_in_bulk(conn: psycopg.Connection) -> None:
    batch = completed_batch(conn, 4)
    with conn.transaction():
        conn.execute("UPDATE csv_row_jobs SET generated_images = jsonb_set(generated_images, '{0,placeholder}',"
                     " 'true') WHERE batch_id = %s AND row_number = 2", [batch])
    assert [r["row_number"] for r in queries.review_page(conn, USER_A, batch, "needs_eyes")["rows"]] == [2]
    assert queries.approve_unflagged(conn, USER_A, batch) == 6
    review = conn.execute(f"SELECT {REVIEW_OF_ROW}"
                          " FROM csv_row_jobs WHERE batch_id = %s AND row_number = 2",
                          [batch]).fetchone()["review"]
    assert not review
