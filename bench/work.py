"""Worker pool throughput: `csvjobs work --until-done` on 20,000 rows with the instant (noop) provider at
concurrency 16, against the bare one-job-per-transaction SKIP LOCKED loop of bench/claim.py in the same run; then
a provider that sleeps 200 ms per row at concurrency 64 against the ideal 64 / 0.2 s.

    python bench/work.py [--rows 20000] [--slow-rows 6400]

Targets: the pool at least 50% of the bare loop; the slow provider at least 90% of ideal; peak memory per worker
process under 120 MB.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid

import claim as claim_bench
import psycopg
from harness import fresh_database, server


def load(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status)"
                     " VALUES (%s, %s, 'bench.csv', 'bench.csv', %s, 'queued')", [uuid.uuid4(), uuid.uuid4(), rows])
        conn.execute("INSERT INTO csv_row_jobs (batch_id, row_number, row_data, product, trigger_text)"
                     " SELECT id, g, '{}', '{\"title\": \"x\"}', 'x' FROM csv_batches, generate_series(1, %s) g",
                     [rows])
        conn.execute("VACUUM ANALYZE")


def pool(url: str, rows: int, concurrency: int, provider: str) -> tuple[float, float]:
    """(wall seconds including process start-up, seconds from the first claim to the last result)."""
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, CSVJOBS_DATABASE_URL=url, CSVJOBS_HOME=home)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "csvjobs", "work", "--until-done", "--concurrency", str(concurrency),
                        "--provider", provider, "--max-dedicated", "0"], env=env, check=True,
                       stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        done = conn.execute("SELECT processed_rows, extract(epoch FROM completed_at - started_at)"
                            " FROM csv_batches").fetchone()
        assert done is not None and done[0] == rows, done
    return seconds, float(done[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--slow-rows", type=int, default=6_400)
    parser.add_argument("--baseline-connections", type=int, default=4)
    args = parser.parse_args()
    with server() as admin:
        bare_rate = claim_bench.measure(admin, args.rows, args.baseline_connections, "bare")
        with fresh_database(admin) as url:
            load(url, args.rows)
            wall, busy = pool(url, args.rows, 16, "noop")
        rate = args.rows / busy
        print(f"bare loop ({args.baseline_connections} connections): {bare_rate:8.0f} jobs/s")
        print(f"csvjobs work --concurrency 16, noop: {rate:8.0f} rows/s first claim to last result"
              f" ({args.rows / wall:.0f} rows/s over {wall:.1f} s wall, with start-up)"
              f"  ratio {rate / bare_rate:.2f} (target >= 0.5)")
        with fresh_database(admin) as url:
            load(url, args.slow_rows)
            wall, busy = pool(url, args.slow_rows, 64, "noop:0.2")
        ideal = 64 / 0.2
        slow_rate = args.slow_rows / busy
        print(f"csvjobs work --concurrency 64, 200 ms per row: {slow_rate:6.1f} rows/s first claim to last result"
              f" ({args.slow_rows / wall:.0f} rows/s with start-up) against ideal {ideal:.0f}"
              f"  ratio {slow_rate / ideal:.2f} (target >= 0.9)")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory of the largest process (supervisor or worker): {peak:.0f} MB (target < 120 per worker)")


if __name__ == "__main__":
    main()
