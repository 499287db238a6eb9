"""Shared by the benchmarks: a PostgreSQL to measure on (CSVJOBS_BENCH_DATABASE_URL, else a throwaway embedded
server) and a fresh, migrated database per measurement. Benchmarks print ratios against a baseline measured in
the same run, because this machine is shared and noisy. Also the generated product file and `csvjobs upload` that
the benchmarks measuring the user's path share."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from csvjobs import db


@contextlib.contextmanager
def server() -> Iterator[str]:
    """An admin URL: the configured server, or an embedded one started for this run and stopped after it."""
    url = os.environ.get("CSVJOBS_BENCH_DATABASE_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory(prefix="csvjobs-bench-") as tmp:
        pgdata = Path(tmp) / "pgdata"
        uri = db.start_embedded_server(pgdata)
        try:
            yield uri
        finally:
            db.stop_embedded_server(pgdata)


@contextlib.contextmanager
def fresh_database(admin_url: str, migrate: bool = True) -> Iterator[str]:
    """A new database (migrated unless told otherwise), dropped afterwards."""
    name = f"csvjobs_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(admin_url, dbname=name)
    try:
        if migrate:
            with db.connect(url) as conn:
                db.migrate(conn)
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def peak_rss_mb(children: bool = False) -> float:
    """Peak resident memory of this process (or of its waited-for children), in MB."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def write_csv(folder: Path, rows: int) -> tuple[Path, list[bytes]]:
    """A product file of `rows` rows, and each row's bytes (the payload of a baseline's jobs)."""
    path = folder / "products.csv"
    lines = [f"Mug {n},A glazed stoneware mug number {n} with a wide handle,Mugs,MUG-{n:06d},US\n".encode()
             for n in range(1, rows + 1)]
    with path.open("wb") as handle:
        handle.write(b"title,description,product_type,mpn,country\n")
        handle.writelines(lines)
    return path, lines


def upload(url: str, path: Path) -> None:
    """`csvjobs upload` of the file, as a user runs it."""
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, CSVJOBS_DATABASE_URL=url, CSVJOBS_HOME=home, CSVJOBS_USER_ID=str(uuid.uuid4()))
        subprocess.run([sys.executable, "-m", "csvjobs", "upload", str(path)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
