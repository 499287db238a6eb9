"""Claim and complete 20,000 no-op jobs through the SQL functions with 1, 4 and 16 connections, against a bare
`UPDATE ... FOR UPDATE SKIP LOCKED` loop measured in the same run. Prints jobs/s and the ratio.

    python bench/claim.py [--jobs 20000] [--connections 1,4,16]

Two ways through the functions: one job per call (claim_next_csv_row_job + update_csv_row_job_result, the
contract's calls, as a worker written in another language makes them), and the set-based companions with 10 jobs
per call (what `csvjobs work` uses). Every way keeps fencing, a log line per row and exact counters (checked at the
end). Targets: one job per call at least 0.5 of the bare loop at 4 and at 16 connections; sets above it.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from collections.abc import Callable

import psycopg
from harness import fresh_database, server

BARE_SETUP = """
CREATE TABLE bare_jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, status text NOT NULL DEFAULT 'pending',
                        claimed_by text, payload jsonb);
CREATE INDEX bare_jobs_pending ON bare_jobs (id) WHERE status = 'pending';
"""
BARE_CLAIM = """
UPDATE bare_jobs SET status = 'claimed', claimed_by = %s
WHERE id = (SELECT id FROM bare_jobs WHERE status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
BARE_DONE = "UPDATE bare_jobs SET status = 'completed' WHERE id = %s"


def run_threads(
    url: str, connections: int, body: Callable[[psycopg.Connection, str], int], as_service: bool
) -> tuple[int, float]:
    done: list[int] = []
    barrier = threading.Barrier(connections + 1)

    def worker(i: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            if as_service:
                conn.execute("SELECT set_config('role', 'service_role', false)")
            barrier.wait()
            done.append(body(conn, f"bench-{i}"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return sum(done), time.perf_counter() - started


def bare(conn: psycopg.Connection, name: str) -> int:
    n = 0
    while True:
        with conn.transaction():
            row = conn.execute(BARE_CLAIM, [name]).fetchone()
        if row is None:
            return n
        with conn.transaction():
            conn.execute(BARE_DONE, [row[0]])
        n += 1


def single(conn: psycopg.Connection, name: str) -> int:
    n = 0
    while True:
        row = conn.execute("SELECT job_id, attempt FROM claim_next_csv_row_job(%s)", [name]).fetchone()
        if row is None:
            return n
        conn.execute(
            "SELECT update_csv_row_job_result(%s, 'completed', p_worker_id => %s, p_attempt => %s)",
            [row[0], name, row[1]],
        )
        n += 1


def set_based(size: int) -> Callable[[psycopg.Connection, str], int]:
    def body(conn: psycopg.Connection, name: str) -> int:
        n = 0
        while True:
            rows = conn.execute(
                "SELECT job_id, attempt FROM claim_csv_row_jobs(%s, NULL, 5, %s)", [name, size]
            ).fetchall()
            if not rows:
                return n
            results = [{"job_id": r[0], "attempt": r[1], "status": "completed"} for r in rows]
            conn.execute("SELECT count(*) FROM update_csv_row_job_results(%s, %s::jsonb)",
                         [name, json.dumps(results)])
            n += len(rows)

    return body


def load_jobs(url: str, jobs: int, bare_table: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        if bare_table:
            conn.execute(BARE_SETUP)
            conn.execute("INSERT INTO bare_jobs (payload) SELECT jsonb_build_object('n', g)"
                         " FROM generate_series(1, %s) g", [jobs])
        else:
            batch = uuid.uuid4()
            conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status)"
                         " VALUES (%s, %s, 'bench.csv', 'bench.csv', %s, 'queued')", [batch, uuid.uuid4(), jobs])
            conn.execute("INSERT INTO csv_row_jobs (batch_id, row_number, row_data) SELECT %s, g,"
                         " jsonb_build_object('n', g) FROM generate_series(1, %s) g", [batch, jobs])
        conn.execute("VACUUM ANALYZE")


def measure(admin: str, jobs: int, connections: int, kind: str) -> float:
    body = {"bare": bare, "single": single, "set10": set_based(10)}[kind]
    with fresh_database(admin, migrate=kind != "bare") as url:
        load_jobs(url, jobs, bare_table=kind == "bare")
        n, seconds = run_threads(url, connections, body, as_service=kind != "bare")
        assert n == jobs, f"{kind}: processed {n} of {jobs}"
        if kind != "bare":
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT processed_rows, status FROM csv_batches").fetchone()
                assert row == (jobs, "completed"), row
        return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--connections", default="1,4,16")
    args = parser.parse_args()
    levels = [int(c) for c in args.connections.split(",")]
    with server() as admin:
        print(f"{'conns':>5} {'bare jobs/s':>12} {'single jobs/s':>14} {'ratio':>6} {'set10 jobs/s':>13} {'ratio':>6}")
        for c in levels:
            rates = {kind: measure(admin, args.jobs, c, kind) for kind in ("bare", "single", "set10")}
            print(f"{c:>5} {rates['bare']:>12.0f} {rates['single']:>14.0f} {rates['single'] / rates['bare']:>6.2f}"
                  f" {rates['set10']:>13.0f} {rates['set10'] / rates['bare']:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
