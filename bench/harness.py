"""Shared by the benchmarks: a PostgreSQL to measure on (CSVJOBS_BENCH_DATABASE_URL, else a throwaway embedded
server) and a fresh, migrated database per measurement. Benchmarks print ratios against a baseline measured in
the same run, because this machine is shared and noisy."""

from __future__ import annotations

import contextlib
import os
import resource
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
