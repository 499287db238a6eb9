"""The pool against PgQueuer: drain 20,000 no-op jobs with PgQueuer (asyncpg driver, 5 consumers, batch 10, its
drain mode) and with `csvjobs work --concurrency 16 --provider noop`, on the same PostgreSQL in the same run, each
timed from its first claim to its last result. PgQueuer is a dev-only bench dependency:

    pip install -e '.[bench]'
    python bench/pgqueuer_drain.py [--rows 20000] [--consumers 5] [--rounds 3] [--path user|sql]

--path user (the default) measures as users run it: the rows come from `csvjobs upload` of a generated 20,000-row
CSV (no VACUUM ANALYZE after it) and `csvjobs work` runs with its defaults (dedicated workers included), while
PgQueuer's jobs carry the same payload bytes as the CSV's rows. --path sql loads rows by SQL with empty payloads,
after VACUUM ANALYZE, and runs without dedicated workers (the friendlier path earlier stops measured).

csvjobs' workers commit their claims without waiting for the disk (CSVJOBS_ASYNC_CLAIMS, on by default; see
sql/claim.sql); PgQueuer's every commit waits. CSVJOBS_ASYNC_CLAIMS=false in the environment measures csvjobs with
every claim waiting too.

Prints each round's rates and the ratio csvjobs / PgQueuer (target >= 1), and where csvjobs' time goes: round
trips and log rows per row (from pg_stat_database and the log table).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path

import psycopg
import psycopg.conninfo
from harness import fresh_database, server, upload, write_csv
from work import load, pool


def _asyncpg_dsn(conninfo: str) -> str:
    """asyncpg wants a postgresql:// URL; the harness hands out libpq conninfo strings."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    query = urllib.parse.urlencode({k: v for k, v in parts.items() if k in ("host", "port", "password") and v})
    return f"postgresql://{parts.get('user') or 'postgres'}@/{parts['dbname']}?{query}"


def work_as_users_run(url: str, rows: int, concurrency: int) -> float:
    """`csvjobs work --until-done --concurrency N --provider noop` with every other default; seconds from the
    first claim to the last result."""
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, CSVJOBS_DATABASE_URL=url, CSVJOBS_HOME=home)
        subprocess.run([sys.executable, "-m", "csvjobs", "work", "--until-done", "--concurrency", str(concurrency),
                        "--provider", "noop"], env=env, check=True, stderr=subprocess.DEVNULL)
    with psycopg.connect(url) as conn:
        done = conn.execute("SELECT processed_rows, extract(epoch FROM completed_at - started_at)"
                            " FROM csv_batches").fetchone()
    assert done is not None and done[0] == rows, done
    return float(done[1])


async def _pgqueuer_drain(conninfo: str, rows: int, consumers: int, batch_size: int,
                          payloads: list[bytes] | None = None) -> float:
    import asyncpg
    from pgqueuer import PgQueuer, QueueManager
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    url = _asyncpg_dsn(conninfo)
    setup = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(setup))
    await queries.install()
    for start in range(0, rows, 1000):
        n = min(1000, rows - start)
        chunk = payloads[start:start + n] if payloads is not None else [None] * n
        await queries.enqueue(["noop"] * n, chunk, [0] * n)
    await setup.close()

    first: list[float] = []
    last = [0.0]

    async def consumer() -> None:
        conn = await asyncpg.connect(url)
        qm = QueueManager(Queries(AsyncpgDriver(conn)))

        @qm.entrypoint("noop")
        async def noop(job: object) -> None:
            now = time.perf_counter()
            if not first:
                first.append(now)
            last[0] = max(last[0], now)

        await qm.run(batch_size=batch_size, mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))
        last[0] = max(last[0], time.perf_counter())  # completions are flushed before drain mode returns
        await conn.close()

    _ = PgQueuer  # imported so that a missing or renamed API fails here, not in the middle of the run
    await asyncio.gather(*(consumer() for _ in range(consumers)))
    check = await asyncpg.connect(url)
    left = await check.fetchval("SELECT count(*) FROM pgqueuer")
    await check.close()
    assert left == 0, f"PgQueuer left {left} jobs"
    return rows / (last[0] - first[0])


def _round_trips(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                           " WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--consumers", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--path", choices=("user", "sql"), default="user")
    args = parser.parse_args()
    ratios: list[float] = []
    with server() as admin, tempfile.TemporaryDirectory() as tmp:
        csv_path, payloads = write_csv(Path(tmp), args.rows)
        for round_ in range(1, args.rounds + 1):
            with fresh_database(admin, migrate=False) as url:
                theirs = asyncio.run(_pgqueuer_drain(url, args.rows, args.consumers, args.batch_size,
                                                     payloads if args.path == "user" else None))
            with fresh_database(admin) as url:
                if args.path == "user":
                    upload(url, csv_path)
                else:
                    load(url, args.rows)
                before = _round_trips(url)
                if args.path == "user":
                    busy = work_as_users_run(url, args.rows, args.concurrency)
                else:
                    _wall, busy = pool(url, args.rows, args.concurrency, "noop")
                transactions = _round_trips(url) - before
                with psycopg.connect(url) as conn:
                    logs = conn.execute("SELECT count(*) FROM csv_processing_logs").fetchone()
            ours = args.rows / busy
            ratios.append(ours / theirs)
            print(f"round {round_}: PgQueuer (asyncpg, {args.consumers} consumers, batch {args.batch_size}) "
                  f"{theirs:7.0f} jobs/s; csvjobs work --concurrency {args.concurrency} noop {ours:7.0f} rows/s; "
                  f"ratio {ours / theirs:.2f} (target >= 1); {transactions / args.rows:.2f} transactions and "
                  f"{(logs[0] if logs else 0) / args.rows:.2f} log rows per row", flush=True)
    print(f"median ratio {statistics.median(ratios):.2f}, worst {min(ratios):.2f}")


if __name__ == "__main__":
    main()
