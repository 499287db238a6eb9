"""Upload speed and memory: a generated product CSV through `csvjobs upload`, against a bare
`COPY ... FROM STDIN` of the same file into a text staging table, measured in the same run.

    python bench/upload.py [--rows 1000000]

Prints rows/s for both, the time ratio (target: upload under 4x the bare COPY) and the upload process's peak
memory (target: under 150 MB whatever the file size). Both are measured --rounds times, alternating, and the
best and median of each are reported, because one run on a shared machine can be off by a second.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from harness import fresh_database, server

COLUMNS = ["country", "product_type", "size", "mpn", "title", "description", "vendor", "price", "tags"]
COUNTRIES = ["US", "DE", "FR", "BR", "JP", "GB", "IT", "CA"]
TYPES = ["Running shoes", "Coffee mug", "Backpack", "Sunglasses", "Rain jacket", "Wool socks", "Tea kettle"]
WORDS = ("light durable soft warm classic modern handmade organic recycled waterproof breathable compact "
         "premium everyday travel outdoor kitchen office gift").split()


def generate(path: Path, rows: int) -> None:
    """A realistic product CSV (~200 bytes a row), quoted where a description holds a comma."""
    rng = random.Random(7)
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(",".join(COLUMNS) + "\n")
        for i in range(rows):
            words = " ".join(rng.choices(WORDS, k=14))
            f.write(f'{rng.choice(COUNTRIES)},{rng.choice(TYPES)},{rng.randint(1, 50)},MPN-{i:08d},'
                    f'Product {i},"A {words}, made to last",Acme,{rng.randint(5, 500)}.99,"tag{i % 50}, sale"\n')


def bare_copy(url: str, path: Path) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE staging (" + ", ".join(f"{c} text" for c in COLUMNS) + ")")
        started = time.perf_counter()
        with conn.transaction(), conn.cursor().copy(
            "COPY staging FROM STDIN WITH (FORMAT csv, HEADER true)"
        ) as copy, path.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                copy.write(chunk)
        return time.perf_counter() - started


def csvjobs_upload(url: str, path: Path, home: Path) -> tuple[float, float]:
    env = dict(os.environ, CSVJOBS_DATABASE_URL=url, CSVJOBS_HOME=str(home))
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "csvjobs", "upload", str(path), "--json"], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak <= before:
        print("note: peak memory of the upload is not above earlier children's; the figure is an upper bound")
    return seconds, peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure both this many times, alternating (the machine is shared and noisy)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="csvjobs-bench-upload-") as tmp:
        path = Path(tmp) / "products.csv"
        generate(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        copies: list[float] = []
        uploads: list[float] = []
        peaks: list[float] = []
        with server() as admin:
            for round_number in range(args.rounds):
                with fresh_database(admin, migrate=False) as url:
                    copies.append(bare_copy(url, path))
                with fresh_database(admin) as url:
                    seconds, peak_mb = csvjobs_upload(url, path, Path(tmp) / f"home{round_number}")
                    uploads.append(seconds)
                    peaks.append(peak_mb)
                    with psycopg.connect(url) as conn:
                        row = conn.execute("SELECT count(*) FROM csv_row_jobs").fetchone()
                        assert row is not None and row[0] == args.rows, row
                print(f"round {round_number + 1}: bare COPY {copies[-1]:.2f} s, csvjobs upload {uploads[-1]:.2f} s",
                      flush=True)
        copy_best, upload_best = min(copies), min(uploads)
        copy_median, upload_median = statistics.median(copies), statistics.median(uploads)
        print(f"file: {args.rows} rows, {size_mb:.0f} MB; {args.rounds} rounds, best (median)")
        print(f"bare COPY:       {copy_best:7.2f} s ({copy_median:.2f})  {args.rows / copy_best:>10,.0f} rows/s")
        print(f"csvjobs upload:  {upload_best:7.2f} s ({upload_median:.2f})  {args.rows / upload_best:>10,.0f} rows/s")
        print(f"ratio (upload time / bare COPY time): {upload_best / copy_best:.2f} best, "
              f"{upload_median / copy_median:.2f} median  (target < 4)")
        print(f"upload peak memory: {max(peaks):.0f} MB  (target < 150)")


if __name__ == "__main__":
    main()
