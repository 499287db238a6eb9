"""Test fixtures: a real PostgreSQL (the embedded server, or CSVJOBS_TEST_DATABASE_URL), with the schema applied
once to a template database that every test clones (CREATE DATABASE ... TEMPLATE), which takes milliseconds."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row
from support.fake_openai import FakeOpenAI
from support.helpers import USER_A, apply_supabase_default_privileges
from support.photo_server import PhotoServer
from support.s3 import S3

from csvjobs import cli, db
from csvjobs.config import Settings


@dataclass
class Server:
    """An admin URL for a PostgreSQL server the tests may create databases on."""

    admin_url: str
    embedded: bool

    def url_for(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, dbname=dbname)

    def execute(self, sql: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    url = os.environ.get("CSVJOBS_TEST_DATABASE_URL")
    if url:
        yield Server(url, embedded=False)
        return
    pgdata = tmp_path_factory.mktemp("pg") / "pgdata"
    uri = db.start_embedded_server(pgdata)
    try:
        yield Server(uri, embedded=True)
    finally:
        db.stop_embedded_server(pgdata)


@pytest.fixture(scope="session")
def template_db(server: Server) -> Iterator[str]:
    name = f"csvjobs_tpl_{os.getpid()}"
    # Test processes (pytest -n) sharing one server make their templates one at a time: the roles the first
    # creates are the server's, not its database's, and two creating them at once collide.
    with psycopg.connect(server.admin_url, autocommit=True) as guard:
        guard.execute("SELECT pg_advisory_lock(hashtext('csvjobs tests: template databases'))")
        server.execute(f"DROP DATABASE IF EXISTS {name}")
        server.execute(f"CREATE DATABASE {name}")
        with db.connect(server.url_for(name)) as conn:
            # Every test runs on a database with a Supabase project's default privileges, the most open setup
            # csvjobs is installed into.
            apply_supabase_default_privileges(conn)
            db.migrate(conn)
    yield name
    server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(server: Server, template_db: str) -> Iterator[str]:
    """A fresh, fully migrated database for one test."""
    name = f"csvjobs_t_{uuid.uuid4().hex[:12]}"
    server.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    yield server.url_for(name)
    server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def empty_database_url(server: Server) -> Iterator[str]:
    """A fresh database with no schema at all."""
    name = f"csvjobs_e_{uuid.uuid4().hex[:12]}"
    server.execute(f"CREATE DATABASE {name}")
    yield server.url_for(name)
    server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """The loopback OpenAI-compatible server (fake_openai.py), started for one test."""
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[dict]]:
    """A superuser connection to the test database (autocommit, dict rows)."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated $CSVJOBS_HOME, with no database URL or API key leaking in from the environment."""
    path = tmp_path / "home"
    monkeypatch.setenv("CSVJOBS_HOME", str(path))
    for name in ("CSVJOBS_DATABASE_URL", "DATABASE_URL", "OPENAI_API_KEY", "CSVJOBS_OPENAI_API_KEY",
                 "CSVJOBS_USER_ID", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def pool_env(home: Path, database_url: str) -> dict[str, str]:
    """The environment for running `python -m csvjobs` in a subprocess against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CSVJOBS_", "OPENAI_"))}
    tests = str(Path(__file__).resolve().parent)
    # CSVJOBS_LANGUAGE: every CLI process would otherwise load the language detector's model (about a second) to
    # read the products' language; tests of the language itself (test_language.py) take it out.
    env.update(CSVJOBS_HOME=str(home), CSVJOBS_DATABASE_URL=database_url, CSVJOBS_LANGUAGE="en",
               PYTHONPATH=os.pathsep.join([tests, env.get("PYTHONPATH", "")]))
    return env


@pytest.fixture
def settings(home: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings pointing at the test database, with an isolated home."""
    monkeypatch.setenv("CSVJOBS_DATABASE_URL", database_url)
    return Settings()


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], settings: Settings):
    """Run the real CLI entry point in-process and capture what it prints."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def pytest_report_header(config: pytest.Config) -> str:
    where = "CSVJOBS_TEST_DATABASE_URL" if os.environ.get("CSVJOBS_TEST_DATABASE_URL") else "embedded PostgreSQL"
    return f"csvjobs tests against: {where} (python {sys.version.split()[0]})"


@pytest.fixture
def s3() -> Iterator[S3]:
    server = S3()
    server.create_buckets()
    yield server
    server.server.stop()


@pytest.fixture
def s3_env(pool_env: dict[str, str], s3: S3) -> dict[str, str]:
    return dict(pool_env, CSVJOBS_STORAGE="s3", CSVJOBS_S3_ENDPOINT_URL=s3.url, CSVJOBS_S3_BUCKET_PREFIX=s3.prefix,
                CSVJOBS_S3_ADDRESSING_STYLE="path", AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                AWS_DEFAULT_REGION="us-east-1", CSVJOBS_USER_ID=str(USER_A))


@pytest.fixture
def env(pool_env: dict[str, str]) -> dict[str, str]:
    """pool_env for a signed-in user whose photos may come from the loopback photo server."""
    return dict(pool_env, CSVJOBS_USER_ID=str(USER_A), CSVJOBS_ALLOW_PRIVATE_IMAGE_HOSTS="127.0.0.1/32",
                CSVJOBS_PHOTO_TIMEOUT_SECONDS="2")


@pytest.fixture
def openai_env(env: dict[str, str], fake: FakeOpenAI) -> dict[str, str]:
    """env with the openai provider's key and the loopback OpenAI-compatible server."""
    return dict(env, OPENAI_API_KEY="sk-test-loopback-0123456789", OPENAI_BASE_URL=fake.base_url)


@pytest.fixture
def photos() -> Iterator[PhotoServer]:
    """The loopback photo server (support/photo_server.py), started for one test."""
    server = PhotoServer().start()
    yield server
    server.stop()
