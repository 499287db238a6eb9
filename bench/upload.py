"""Upload speed and memory: generated product CSVs through `csvjobs upload`, each against a bare
`COPY ... FROM STDIN` of the same file into a text staging table, measured in the same run.

    python bench/upload.py [--rows 1000000] [--rounds 3] [--shapes products,long_text,wide]

Three shapes of plain file: products (9 columns, ~200 bytes a row, --rows rows), long_text (every column mapped,
long quoted text with commas and quotes, ~1 KB a row, a quarter of the rows) and wide (30 columns, 24 of them
unmapped, ~400 bytes a row, half the rows). Prints rows/s for both, the time ratio per shape and for the worst
shape (target: at most 4x the bare COPY, as a median over rounds) and the upload process's peak memory (target:
under 150 MB whatever the file size). Each shape is measured --rounds times, alternating with its COPY, and the
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
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import psycopg
from harness import fresh_database, server

COLUMNS = ["country", "product_type", "size", "mpn", "title", "description", "vendor", "price", "tags"]
COUNTRIES = ["US", "DE", "FR", "BR", "JP", "GB", "IT", "CA"]
TYPES = ["Running shoes", "Coffee mug", "Backpack", "Sunglasses", "Rain jacket", "Wool socks", "Tea kettle"]
WORDS = ("light durable soft warm classic modern handmade organic recycled waterproof breathable compact "
         "premium everyday travel outdoor kitchen office gift").split()
LONG_COLUMNS = ["country", "product_type", "size", "mpn", "title", "description"]
WIDE_COLUMNS = LONG_COLUMNS + [f"extra_{i}" for i in range(24)]


def _products(f: TextIO, rows: int, rng: random.Random) -> list[str]:
    """A realistic product CSV (~200 bytes a row), quoted where a description holds a comma."""
    for i in range(rows):
        words = " ".join(rng.choices(WORDS, k=14))
        f.write(f'{rng.choice(COUNTRIES)},{rng.choice(TYPES)},{rng.randint(1, 50)},MPN-{i:08d},'
                f'Product {i},"A {words}, made to last",Acme,{rng.randint(5, 500)}.99,"tag{i % 50}, sale"\n')
    return COLUMNS


def _long_text(f: TextIO, rows: int, rng: random.Random) -> list[str]:
    """Every column mapped, each a long quoted text with commas and doubled quotes (~1 KB a row)."""
    def text(k: int) -> str:
        return '"' + ", ".join(" ".join(rng.choices(WORDS, k=6)) for _ in range(k)) + ' ""best"" seller"'

    for i in range(rows):
        f.write(f'{rng.choice(COUNTRIES)},{text(4)},"{rng.randint(1, 50)} cm, {rng.randint(1, 9)} kg",'
                f'MPN-{i:08d},{text(6)},{text(20)}\n')
    return LONG_COLUMNS


def _wide(f: TextIO, rows: int, rng: random.Random) -> list[str]:
    """30 columns, 6 of them mapped (~400 bytes a row)."""
    for i in range(rows):
        extras = ",".join(f"{rng.choice(WORDS)}-{rng.randint(0, 9999)}" for _ in range(24))
        words = " ".join(rng.choices(WORDS, k=12))
        f.write(f'{rng.choice(COUNTRIES)},{rng.choice(TYPES)},{rng.randint(1, 50)},MPN-{i:08d},Product {i},'
                f'"A {words}, made to last",{extras}\n')
    return WIDE_COLUMNS


# name: (writer, share of --rows)
SHAPES: dict[str, tuple[Callable[[TextIO, int, random.Random], list[str]], float]] = {
    "products": (_products, 1.0), "long_text": (_long_text, 0.25), "wide": (_wide, 0.5)}


def generate(path: Path, rows: int, shape: str = "products") -> list[str]:
    """Write a file of this shape; returns its columns."""
    writer, _share = SHAPES[shape]
    header = {"products": COLUMNS, "long_text": LONG_COLUMNS, "wide": WIDE_COLUMNS}[shape]
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(",".join(header) + "\n")
        return writer(f, rows, random.Random(7))


def bare_copy(url: str, path: Path, columns: list[str]) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE staging (" + ", ".join(f"{c} text" for c in columns) + ")")
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


def measure(admin: str, path: Path, columns: list[str], rows: int, rounds: int, home: Path) -> tuple[
        list[float], list[float], float]:
    """(bare COPY seconds, upload seconds, peak MB) over the rounds, alternating."""
    copies: list[float] = []
    uploads: list[float] = []
    peaks: list[float] = []
    for round_number in range(rounds):
        with fresh_database(admin, migrate=False) as url:
            copies.append(bare_copy(url, path, columns))
        with fresh_database(admin) as url:
            seconds, peak_mb = csvjobs_upload(url, path, home / f"{path.stem}{round_number}")
            uploads.append(seconds)
            peaks.append(peak_mb)
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM csv_row_jobs").fetchone()
                assert row is not None and row[0] == rows, row
        print(f"  {path.stem} round {round_number + 1}: bare COPY {copies[-1]:.2f} s, csvjobs upload "
              f"{uploads[-1]:.2f} s", flush=True)
    return copies, uploads, max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure both this many times, alternating (the machine is shared and noisy)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="which of " + ", ".join(SHAPES))
    args = parser.parse_args()
    worst: tuple[float, str] = (0.0, "")
    peak = 0.0
    with tempfile.TemporaryDirectory(prefix="csvjobs-bench-upload-") as tmp, server() as admin:
        for shape in args.shapes.split(","):
            path = Path(tmp) / f"{shape}.csv"
            rows = max(1, int(args.rows * SHAPES[shape][1]))
            columns = generate(path, rows, shape)
            size_mb = path.stat().st_size / 1e6
            copies, uploads, shape_peak = measure(admin, path, columns, rows, args.rounds, Path(tmp))
            path.unlink()
            peak = max(peak, shape_peak)
            copy_best, upload_best = min(copies), min(uploads)
            copy_median, upload_median = statistics.median(copies), statistics.median(uploads)
            ratio = upload_median / copy_median
            worst = max(worst, (ratio, shape))
            print(f"{shape}: {rows} rows, {len(columns)} columns, {size_mb:.0f} MB; {args.rounds} rounds, "
                  "best (median)")
            print(f"  bare COPY:      {copy_best:7.2f} s ({copy_median:.2f})  {rows / copy_best:>10,.0f} rows/s")
            print(f"  csvjobs upload: {upload_best:7.2f} s ({upload_median:.2f})  {rows / upload_best:>10,.0f} rows/s")
            print(f"  ratio (upload time / bare COPY time): {upload_best / copy_best:.2f} best, {ratio:.2f} median"
                  f"  (target <= 4); peak memory {shape_peak:.0f} MB", flush=True)
    print(f"worst shape: {worst[1]}, median ratio {worst[0]:.2f} (target <= 4); upload peak memory {peak:.0f} MB"
          "  (target < 150)")


if __name__ == "__main__":
    main()
