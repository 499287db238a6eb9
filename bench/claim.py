"""Claim and complete 20,000 no-op jobs through the SQL functions with 1, 4 and 16 connections, against a bare
`UPDATE ... FOR UPDATE SKIP LOCKED` loop measured in the same run. Prints jobs/s and the ratio.

    python bench/claim.py [--jobs 20000] [--connections 1,4,16] [--rounds 3] [--path user|sql]

Two ways through the functions: one job per call (claim_next_csv_row_job + update_csv_row_job_result, the
contract's calls, as a worker written in another language makes them), and the set-based companions with 10 jobs
per call (what `csvjobs work` uses). Every way keeps fencing, a log line per row and exact counters (checked at the
end). --path user (the default) loads the jobs as users do, with `csvjobs upload` of a generated product CSV (no
VACUUM ANALYZE after it), and gives the bare loop's jobs the rows' bytes as payload; --path sql inserts rows by
SQL with a tiny payload, after VACUUM ANALYZE. Each level runs --rounds times (bare, single and set10 in turn) and
the median of the same-round ratios is printed. Targets: one job per call at least 0.5 of the bare loop at 4 and
at 16 connections; sets above it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from harness import fresh_database, server, upload, write_csv

BARE_SETUP = """
CREATE TABLE bare_jobs (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, status text NOT NULL DEFAULT 'pending',
                        claimed_by text, payload text);
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
    """The SQL path: rows inserted by SQL with a tiny payload, then VACUUM ANALYZE."""
    with psycopg.connect(url, autocommit=True) as conn:
        if bare_table:
            conn.execute(BARE_SETUP)
            conn.execute("INSERT INTO bare_jobs (payload) SELECT jsonb_build_object('n', g)::text"
                         " FROM generate_series(1, %s) g", [jobs])
        else:
            batch = uuid.uuid4()
            conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status)"
                         " VALUES (%s, %s, 'bench.csv', 'bench.csv', %s, 'queued')", [batch, uuid.uuid4(), jobs])
            conn.execute("INSERT INTO csv_row_jobs (batch_id, row_number, row_data) SELECT %s, g,"
                         " jsonb_build_object('n', g) FROM generate_series(1, %s) g", [batch, jobs])
        conn.execute("VACUUM ANALYZE")


def load_as_users_do(url: str, csv_path: Path, payloads: list[bytes], bare_table: bool) -> None:
    """The user path: `csvjobs upload` of the file (no VACUUM ANALYZE), or the bare table with its rows' bytes."""
    if not bare_table:
        upload(url, csv_path)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(BARE_SETUP)
        with conn.cursor().copy("COPY bare_jobs (payload) FROM STDIN") as copy:
            for payload in payloads:
                copy.write_row([payload.decode()])


def measure(admin: str, jobs: int, connections: int, kind: str,
            user_path: tuple[Path, list[bytes]] | None = None) -> float:
    """jobs/s of one way (bare, single, set10) at this many connections, on a fresh database."""
    body = {"bare": bare, "single": single, "set10": set_based(10)}[kind]
    with fresh_database(admin, migrate=kind != "bare") as url:
        if user_path is None:
            load_jobs(url, jobs, bare_table=kind == "bare")
        else:
            load_as_users_do(url, *user_path, bare_table=kind == "bare")
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--path", choices=("user", "sql"), default="user")
    args = parser.parse_args()
    levels = [int(c) for c in args.connections.split(",")]
    with server() as admin, tempfile.TemporaryDirectory() as tmp:
        user_path = write_csv(Path(tmp), args.jobs) if args.path == "user" else None
        print(f"{'conns':>5} {'bare jobs/s':>12} {'single jobs/s':>14} {'ratio':>6} {'set10 jobs/s':>13} {'ratio':>6}"
              f"  ({args.path} path, medians of {args.rounds} rounds' ratios)")
        for c in levels:
            rounds = [{kind: measure(admin, args.jobs, c, kind, user_path) for kind in ("bare", "single", "set10")}
                      for _ in range(args.rounds)]
            single_ratios = [r["single"] / r["bare"] for r in rounds]
            set_ratios = [r["set10"] / r["bare"] for r in rounds]
            print(f"{c:>5} {statistics.median(r['bare'] for r in rounds):>12.0f}"
                  f" {statistics.median(r['single'] for r in rounds):>14.0f} {statistics.median(single_ratios):>6.2f}"
                  f" {statistics.median(r['set10'] for r in rounds):>13.0f} {statistics.median(set_ratios):>6.2f}"
                  f"  single ratios {', '.join(f'{x:.2f}' for x in single_ratios)}", flush=True)


if __name__ == "__main__":
    main()
