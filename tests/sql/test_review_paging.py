"""The review page reads one page at a time: queries.review_page returns one page of products under a filter (a
look-alike variant with the row it reuses), keyset on the row number both ways, and the heading's counts, which
agree with counting every row."""

from __future__ import annotations

import random
from typing import Any

import psycopg
from support.helpers import USER_A, completed_batch

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
                "UPDATE csv_row_jobs SET review = %s::jsonb, status = %s,"
                " checkpoint = CASE WHEN %s THEN '{\"regenerate\": {}}'::jsonb ELSE checkpoint END,"
                " usage = CASE WHEN %s THEN jsonb_build_object('reuses_row', %s::int - 1) ELSE usage END"
                " WHERE batch_id = %s AND row_number = %s",
                [psycopg.types.json.Jsonb(review), "failed" if number % 29 == 0 else "completed",
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
