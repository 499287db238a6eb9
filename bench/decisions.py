"""Bulk decisions on a large batch: `approve`/`reject` of every image of 100,000 rows (200,000 images), by every
row and by row numbers, and `approve --unflagged`, each in its own transaction (commit included), against two
baselines measured in the same run on the same rows: reading the batch's rows once, and rewriting every job row
once (what a decision cost when it was stored on the job row itself).

    python bench/decisions.py [--rows 100000] [--rounds 3]

The rows are as wide as a finished row is (row data, prompts, images, tags). Prints seconds per call (median of
the rounds) and the ratio to each baseline. Target: under 2 s a call at 100,000 rows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable

import psycopg
from harness import fresh_database, server
from psycopg.rows import dict_row

USER = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")


def make_batch(conn: psycopg.Connection, rows: int) -> uuid.UUID:
    """A completed batch of `rows` rows as wide as finished ones, every tenth a look-alike of the row before."""
    batch = uuid.uuid4()
    conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status)"
                 " VALUES (%s, %s, 'bench.csv', 'bench.csv', %s, 'completed')", [batch, USER, rows])
    conn.execute(
        "INSERT INTO csv_row_jobs (batch_id, row_number, row_data, status, completed_at, generated_images,"
        " generated_prompts, generated_tags, trigger_text, usage)"
        " SELECT %s, g, json_build_object('title', 'Product ' || g, 'body', repeat('lorem ipsum dolor ', 40)),"
        " 'completed', now(), jsonb_build_array("
        "  jsonb_build_object('style', 'lifestyle_emotional', 'storage_path', 'csv-images/x/' || g || '/a.png',"
        "                     'edited', true, 'checks', '{\"amazon\": {\"passed\": true}}'::jsonb),"
        "  jsonb_build_object('style', 'single_white_background', 'storage_path', 'csv-images/x/' || g || '/b.png',"
        "                     'edited', true)),"
        " jsonb_build_object('lifestyle_emotional', repeat('a warm scene ', 30),"
        "                    'single_white_background', repeat('white ', 30)),"
        " '[\"mug\", \"kitchen\", \"gift\"]'::jsonb, repeat('trigger ', 20), '{\"tokens\": 100}'::jsonb"
        " FROM generate_series(1, %s) g", [batch, rows])
    conn.execute("UPDATE csv_row_jobs j SET reuses_job = o.id, usage = jsonb_build_object('reuses_row', o.row_number)"
                 " FROM csv_row_jobs o WHERE j.batch_id = %s AND o.batch_id = j.batch_id"
                 " AND j.row_number %% 10 = 0 AND o.row_number = j.row_number - 1", [batch])
    conn.execute("VACUUM ANALYZE csv_row_jobs")
    return batch


def timed(conn: psycopg.Connection, sql: str, params: list, as_user: bool) -> float:
    """Seconds for one statement in its own transaction, commit included."""
    started = time.monotonic()
    with conn.transaction():
        if as_user:
            conn.execute("SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', %s, true)",
                         [json.dumps({"sub": str(USER), "role": "authenticated"})])
        conn.execute(sql, params)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with server() as admin, fresh_database(admin) as url, \
            psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        batch = make_batch(conn, args.rows)
        numbers = list(range(1, args.rows + 1))
        calls: dict[str, Callable[[], float]] = {
            "baseline: read the batch's rows": lambda: timed(
                conn, "SELECT count(*) FROM csv_row_jobs WHERE batch_id = %s AND generated_images IS NOT NULL",
                [batch], False),
            "approve every row (first decision)": lambda: timed(
                conn, "SELECT review_csv_images(%s, NULL, NULL, 'approve')", [batch], True),
            "reject every row (changed decision)": lambda: timed(
                conn, "SELECT review_csv_images(%s, NULL, NULL, 'reject')", [batch], True),
            "approve --rows 1-N": lambda: timed(
                conn, "SELECT review_csv_images(%s, %s::integer[], NULL, 'approve')", [batch, numbers], True),
            "clear every row": lambda: timed(
                conn, "SELECT review_csv_images(%s, NULL, NULL, 'clear')", [batch], True),
            "approve --unflagged": lambda: timed(conn, "SELECT approve_csv_unflagged_images(%s)", [batch], True),
            # (last: it leaves a dead version of every job row, vacuumed before the next round)
            "baseline: rewrite every job row": lambda: timed(
                conn, "UPDATE csv_row_jobs SET updated_at = now() WHERE batch_id = %s", [batch], False),
        }
        seconds: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            conn.execute("DELETE FROM csv_row_reviews WHERE batch_id = %s", [batch])
            conn.execute("VACUUM ANALYZE csv_row_reviews")
            conn.execute("VACUUM ANALYZE csv_row_jobs")
            for name, call in calls.items():
                seconds[name].append(call())
    read = statistics.median(seconds["baseline: read the batch's rows"])
    rewrite = statistics.median(seconds["baseline: rewrite every job row"])
    print(f"{args.rows:,} rows ({2 * args.rows:,} images), median of {args.rounds} rounds")
    print(f"{'call':40} {'seconds':>8} {'x read':>8} {'x rewrite':>10}")
    for name, values in sorted(seconds.items(), key=lambda item: not item[0].startswith("baseline")):
        median = statistics.median(values)
        print(f"{name:40} {median:8.2f} {median / read:8.1f} {median / rewrite:10.2f}")


if __name__ == "__main__":
    main()
