"""Bulk decisions stay linear: approving every image of a 100,000-row batch (look-alike variants among them) runs
plans that read each row a bounded number of times, whatever the statistics say, and write one narrow row per row
decided (csv_row_reviews), never the wide job row. The plans of every statement inside the review functions are
read from auto_explain (sent to this session as notices), so a rewrite that puts a function call or a parameter
array back into a row filter fails here, not at a merchant's 10-minute approve."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from support.helpers import USER_A, as_user

pytestmark = pytest.mark.slow
ROWS = 100_000


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _big_batch(conn: psycopg.Connection) -> uuid.UUID:
    """A completed batch of ROWS rows with two images each; every tenth row a look-alike of the row before."""
    batch = uuid.uuid4()
    with conn.transaction():
        conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status)"
                     " VALUES (%s, %s, 'big.csv', 'big.csv', %s, 'completed')", [batch, USER_A, ROWS])
        conn.execute(
            "INSERT INTO csv_row_jobs (batch_id, row_number, row_data, status, completed_at, generated_images)"
            " SELECT %s, g, json_build_object('title', 'P' || g), 'completed', now(), jsonb_build_array("
            " jsonb_build_object('style', 'lifestyle_emotional', 'storage_path', 'csv-images/x/' || g || '/a.png'),"
            " jsonb_build_object('style', 'single_white_background', 'storage_path', 'csv-images/x/' || g"
            " || '/b.png')) FROM generate_series(1, %s) g", [batch, ROWS])
        conn.execute("ANALYZE csv_row_jobs")
        conn.execute("UPDATE csv_row_jobs j SET reuses_job = o.id,"
                     " usage = jsonb_build_object('reuses_row', o.row_number)"
                     " FROM csv_row_jobs o WHERE j.batch_id = %s AND o.batch_id = j.batch_id"
                     " AND j.row_number %% 10 = 0 AND o.row_number = j.row_number - 1", [batch])
    conn.execute("ANALYZE csv_row_jobs")
    return batch


def test_approving_100000_rows_reads_each_row_a_bounded_number_of_times(conn: psycopg.Connection) -> None:
    batch = _big_batch(conn)
    plans: list[dict[str, Any]] = []

    def collect(notice: psycopg.errors.Diagnostic) -> None:
        text = notice.message_primary or ""
        if "plan:" in text:
            plans.append(json.loads(text.split("plan:", 1)[1])["Plan"])

    # Statistics that say no decision exists (as after a first bulk decision, before autovacuum has looked): a
    # planner trusting them would loop over the decisions table once for every row.
    conn.execute("ANALYZE csv_row_reviews")
    conn.add_notice_handler(collect)
    for setting in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_nested_statements = on", "SET auto_explain.log_analyze = on",
                    "SET auto_explain.log_timing = off", "SET auto_explain.log_format = json",
                    "SET auto_explain.log_level = notice", "SET client_min_messages = notice"):
        conn.execute(setting)
    # By row numbers (the sharing worked out in the same passes), every row, and everything that needs no eyes:
    # each a first decision (rows written) or a changed one (rows updated).
    calls = [("SELECT review_csv_images(%s, %s, NULL, 'approve') AS n", [batch, list(range(1, ROWS + 1))]),
             ("SELECT review_csv_images(%s, NULL, NULL, 'reject') AS n", [batch]),
             ("SELECT review_csv_images(%s, NULL, NULL, 'clear') AS n", [batch]),
             ("SELECT approve_csv_unflagged_images(%s) AS n", [batch])]
    for sql, params in calls:
        with conn.transaction():
            as_user(conn, USER_A)
            changed = conn.execute(sql, params).fetchone()
        assert changed is not None and changed["n"] == 2 * ROWS, sql
    assert plans, "auto_explain sent no plans"
    for plan in plans:
        for node in _nodes(plan):
            touched = node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
            assert touched <= 3 * ROWS, (node["Node Type"], touched)
            for key in ("Filter", "Join Filter", "Recheck Cond"):
                # "x = ANY (...)" over a parameter array, or a function called per row: both are quadratic here
                # (an array written in the statement, and "ANY (x = (hashed SubPlan))", are hashed, and fine; so is
                # an index searched for each element, "Index Cond: (id = ANY (...))").
                assert not re.search(r"= ANY \((?!'\{)", node.get(key, "")), (node["Node Type"], key, node[key])
                assert "csv_review_" not in node.get(key, ""), (node["Node Type"], key, node[key])
            # (rewriting 100,000 wide job rows was most of a 5-9 s decision)
            assert not (node["Node Type"] == "ModifyTable" and node.get("Relation Name") == "csv_row_jobs"), node
            if node["Node Type"] == "Nested Loop":
                inner = node["Plans"][1]
                assert not (inner["Node Type"] == "Seq Scan" and inner.get("Actual Loops", 1) > 1), node
