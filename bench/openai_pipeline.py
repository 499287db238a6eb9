"""The OpenAI pipeline under a binding images-per-minute limit: 200 rows at concurrency 32 against a loopback
OpenAI-compatible server (tests/support/fake_openai.py) answering every call after a fixed 500 ms. Prints the measured
images per minute against the configured limit (target: at least 95%) and the rows that failed (target: none).

    python bench/openai_pipeline.py [--rows 200] [--ipm 1200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from harness import fresh_database, server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.fake_openai import FakeOpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--ipm", type=float, default=1200)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    fake = FakeOpenAI(latency=0.5).start()
    try:
        with server() as admin, fresh_database(admin) as url, tempfile.TemporaryDirectory() as home:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status)"
                             " VALUES (%s, %s, 'b.csv', 'b.csv', %s, 'queued')", [uuid.uuid4(), uuid.uuid4(),
                                                                                  args.rows])
                conn.execute("INSERT INTO csv_row_jobs (batch_id, row_number, row_data, product, trigger_text)"
                             " SELECT id, g, '{}', jsonb_build_object('title', 'Product ' || g), 'Product ' || g"
                             " FROM csv_batches, generate_series(1, %s) g", [args.rows])
            env = dict(os.environ, CSVJOBS_DATABASE_URL=url, CSVJOBS_HOME=home, OPENAI_API_KEY="sk-bench",
                       OPENAI_BASE_URL=fake.base_url)
            subprocess.run([sys.executable, "-m", "csvjobs", "work", "--until-done", "--concurrency",
                            str(args.concurrency), "--ipm", str(args.ipm), "--max-dedicated", "0"],
                           env=env, check=True, stderr=subprocess.DEVNULL)
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT successful_rows, failed_rows FROM csv_batches").fetchone()
                assert row is not None
        times = sorted(c.at for c in fake.calls if c.endpoint == "image" and c.status == 200)
        limited = sum(1 for c in fake.calls if c.status == 429)
        per_minute = (len(times) - 1) / (times[-1] - times[0]) * 60
        print(f"{args.rows} rows, concurrency {args.concurrency}, 500 ms per call, limit {args.ipm:.0f} images/min")
        print(f"measured: {per_minute:.0f} images/min = {per_minute / args.ipm:.1%} of the limit (target >= 95%)")
        print(f"rows completed: {row[0]}, failed: {row[1]}, 429 answers: {limited}")
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
