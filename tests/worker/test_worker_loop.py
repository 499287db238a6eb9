"""The worker's loops in-process, against a real PostgreSQL, with a scripted provider: retries with backoff, the
bound on finished rows held unreported, report wake-ups, shutdown, a side task that dies, and a database upgraded
past the code. No subprocess: what fails here fails on the line that broke."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import psycopg
from support.helpers import job_counts, make_batch

from csvjobs.config import Settings
from csvjobs.errors import TransientError
from csvjobs.models import WorkerStatus
from csvjobs.providers.contract import RowContext, RowOutcome
from csvjobs.providers.noop import NoopProvider
from csvjobs.queue.process import Worker
from csvjobs.queue.runtime import EXIT_POOL_STOPS, WorkerConfig


class Scripted(NoopProvider):
    """A provider that runs a script per call: raise, wait on an event, or succeed."""

    def __init__(self, script: Any = None) -> None:
        super().__init__(0.0)
        self.script = script
        self.calls: list[int] = []
        self.gate: asyncio.Event | None = None

    async def process(self, ctx: RowContext) -> RowOutcome:
        self.calls.append(ctx.job.row_number)
        if self.script is not None:
            self.script(ctx.job.row_number, self.calls.count(ctx.job.row_number))
        if self.gate is not None:
            await self.gate.wait()
        return await super().process(ctx)


def config(database_url: str, settings: Settings, tune: dict[str, Any] | None = None,
           **changes: Any) -> WorkerConfig:
    fast = settings.model_copy(update={"heartbeat_seconds": 0.2, "poll_seconds": 0.2, "grace_seconds": 5.0,
                                       "backoff_base_seconds": 0.01, "backoff_cap_seconds": 0.05, **(tune or {})})
    return WorkerConfig(database_url=database_url, settings=fast, worker_id=f"test-{uuid.uuid4().hex[:6]}",
                        **changes)


def run(worker: Worker, timeout: float = 60) -> int:
    return asyncio.run(asyncio.wait_for(worker.run(), timeout))


def test_transient_errors_back_off_and_succeed_in_the_worker(database_url, settings, conn) -> None:
    batch = make_batch(conn, 3)

    def twice(_row: int, call: int) -> None:
        if call <= 2:
            raise TransientError("HTTP 503", retry_after=0.01)

    provider = Scripted(twice)
    worker = Worker(config(database_url, settings, concurrency=2, until_done=True), provider)
    assert run(worker) == 0
    assert sorted(provider.calls) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert job_counts(conn, batch) == {"completed": 3}
    warnings = conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE operation = 'transient_error'"
                            " AND log_level = 'WARN' AND batch_id = %s", [batch]).fetchone()
    assert warnings == {"n": 6}


def test_finished_rows_held_unreported_stay_within_the_bound(database_url, settings, conn) -> None:
    """While reports cannot land, the claim loop stops at concurrency + 4 reports' worth of finished rows."""
    make_batch(conn, 60)
    provider = Scripted()
    cfg = config(database_url, settings, concurrency=2, tune={"report_batch_size": 3})
    worker = Worker(cfg, provider)
    rt = worker.runtime
    peak = 0

    async def scenario() -> None:
        nonlocal peak
        blocked = asyncio.Event()

        async def never(*_args: Any, **_kwargs: Any) -> None:  # reports that never land
            await blocked.wait()

        rt.flush = never  # type: ignore[method-assign]
        task = asyncio.create_task(worker.run())
        bound = cfg.concurrency + 4 * cfg.settings.report_batch_size
        # Until the bound is reached, however long a slow machine takes (not a fixed number of looks), then a
        # further moment in which a loop that ignored the bound would go past it.
        deadline = time.monotonic() + 60
        while len(rt.unreported) < bound and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.02)
        for _ in range(15):
            peak = max(peak, len(rt.unreported))
            await asyncio.sleep(0.02)
        rt.let_go()
        blocked.set()
        await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    bound = cfg.concurrency + 4 * cfg.settings.report_batch_size
    assert peak == bound  # it got there, and no further
    assert len(provider.calls) == bound


def test_a_landed_report_wakes_the_claim_loop(database_url, settings, conn) -> None:
    """At the bound, the claim loop sleeps; the report that frees it wakes it at once, not after a poll (ten
    minutes here, and not until_done, whose waits are capped at a second: a missed wake-up would hang the test)."""
    batch = make_batch(conn, 12)
    cfg = config(database_url, settings, concurrency=1, tune={"report_batch_size": 1, "poll_seconds": 600.0})
    worker = Worker(cfg, Scripted())

    async def scenario() -> None:
        task = asyncio.create_task(worker.run())
        while job_counts(conn, batch) != {"completed": 12}:
            await asyncio.sleep(0.05)
        worker.request_stop()
        assert await task == 0

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_shutdown_gives_back_rows_in_flight_without_a_retry(database_url, settings, conn) -> None:
    batch = make_batch(conn, 4)
    provider = Scripted()
    provider.gate = asyncio.Event()  # rows never finish on their own
    worker = Worker(config(database_url, settings, concurrency=4, tune={"grace_seconds": 0.2}), provider)

    async def scenario() -> int:
        task = asyncio.create_task(worker.run())
        while len(worker.runtime.running) < 4:
            await asyncio.sleep(0.02)
        worker.request_stop()
        return await asyncio.wait_for(task, 30)

    assert asyncio.run(scenario()) == 0
    assert job_counts(conn, batch) == {"pending": 4}
    rows = conn.execute("SELECT retry_count, claimed_by FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall()
    assert {(r["retry_count"], r["claimed_by"]) for r in rows} == {(0, None)}
    status = conn.execute("SELECT status FROM csv_processing_workers WHERE instance_id = %s",
                          [worker.runtime.config.worker_id]).fetchone()
    assert status == {"status": WorkerStatus.STOPPED.value}


def test_a_dead_heartbeat_task_stops_the_worker(database_url, settings, conn, capsys) -> None:
    """Without heartbeats, cleanup would take this worker's rows while it works on them: it stops instead."""
    batch = make_batch(conn, 2)
    provider = Scripted()
    provider.gate = asyncio.Event()
    worker = Worker(config(database_url, settings, concurrency=2, tune={"grace_seconds": 0.2}), provider)
    rt = worker.runtime
    beats = 0
    original = rt.heartbeat

    async def failing(status: WorkerStatus) -> None:
        nonlocal beats
        beats += 1
        if beats > 1 and status is not WorkerStatus.STOPPED:
            raise RuntimeError("a bug in the heartbeat")
        await original(status)

    rt.heartbeat = failing  # type: ignore[method-assign]
    assert run(worker, timeout=30) == 0
    assert "heartbeat task stopped (RuntimeError: a bug in the heartbeat)" in capsys.readouterr().err
    assert job_counts(conn, batch) == {"pending": 2}


def test_a_database_upgraded_past_the_code_stops_the_pool_with_one_line(database_url, settings, conn) -> None:
    make_batch(conn, 3)
    conn.execute("ALTER FUNCTION claim_csv_row_jobs(text, uuid, numeric, integer, uuid, text, boolean)"
                 " RENAME TO claim_csv_row_jobs_v2")
    provider = Scripted()
    worker = Worker(config(database_url, settings, concurrency=2, until_done=True), provider)
    assert run(worker, timeout=30) == EXIT_POOL_STOPS
    assert worker.fatal is not None and "was upgraded past this csvjobs" in worker.fatal
    assert "upgrade csvjobs on this machine" in worker.fatal and provider.calls == []


def test_the_worker_fence_drops_a_result_of_another_worker(database_url, conn) -> None:
    """The set-based result is fenced on the worker as well as the attempt: the right attempt reported by the
    wrong worker changes nothing."""
    batch = make_batch(conn, 1)
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w1', 'idle')")
    (job,) = conn.execute("SELECT * FROM claim_csv_row_jobs('w1', NULL, 5, 1)").fetchall()
    results = psycopg.types.json.Jsonb([{"job_id": job["job_id"], "attempt": job["attempt"], "status": "completed"}])
    (row,) = conn.execute("SELECT * FROM update_csv_row_job_results('w2', %s)", [results]).fetchall()
    assert row["applied"] is False
    assert job_counts(conn, batch) == {"claimed": 1}
    (row,) = conn.execute("SELECT * FROM update_csv_row_job_results('w1', %s)", [results]).fetchall()
    assert row["applied"] is True
    assert job_counts(conn, batch) == {"completed": 1}


def test_quick_rows_are_claimed_and_reported_in_sets(database_url, settings, conn) -> None:
    """A claim or a report costs the database about as much for one row as for eight. Claiming the moment one
    slot frees settles into alternating claims of one row and of seven (two claims per eight rows), and reporting
    whenever no row is running reports each claim's rows on their own; the loop instead waits a moment for more
    slots and the reporter for more rows."""
    rows, concurrency = 240, 8
    batch = make_batch(conn, rows)
    cfg = config(database_url, settings, concurrency=concurrency, until_done=True,
                 # (a report of up to 64 rows every 200 ms: the bound on rows held unreported, concurrency + 4
                 # reports' worth, stays above the batch, so no claim is cut short by it)
                 tune={"report_delay_seconds": 0.2, "report_batch_size": 64})
    worker = Worker(cfg, Scripted())
    assert run(worker) == 0
    assert job_counts(conn, batch) == {"completed": rows}
    sets = rows // concurrency
    assert sets <= worker.stats.claims <= sets + 3, worker.stats.claims
    # Each report carries the rows of several claims (200 ms of them), not one claim's.
    assert worker.stats.reports * 4 <= worker.stats.claims, (worker.stats.reports, worker.stats.claims)


def test_a_claim_the_database_forgot_is_dropped_and_the_row_done_once(database_url, settings, conn) -> None:
    """Quick claims (sql/claim.sql) may be forgotten by a server that crashes: the rows are pending again with
    their attempt unchanged, so this worker can claim them again with the same claim token. After reconnecting,
    it drops the work it was doing on them, and each row is completed once (by its second claim)."""
    batch = make_batch(conn, 3)
    provider = Scripted()
    provider.gate = asyncio.Event()
    worker = Worker(config(database_url, settings, concurrency=3, until_done=True), provider)
    rt = worker.runtime

    async def scenario() -> int:
        task = asyncio.create_task(worker.run())
        while len(provider.calls) < 3:
            await asyncio.sleep(0.02)
        main = rt._main.conn
        assert main is not None
        assert (await (await main.execute("SHOW csvjobs.async_claims")).fetchone())["csvjobs.async_claims"] == "on"
        # What a crash that lost the claims' commits leaves, and the connection gone with the server.
        conn.execute("UPDATE csv_row_jobs SET status = 'pending', claimed_by = NULL, claimed_at = NULL,"
                     " attempt = attempt - 1 WHERE batch_id = %s", [batch])
        conn.execute("SELECT pg_terminate_backend(%s)", [main.info.backend_pid])
        while rt.stats.lost < 3:
            await asyncio.sleep(0.02)
        assert provider.gate is not None
        provider.gate.set()
        return await task

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == 0
    assert job_counts(conn, batch) == {"completed": 3}
    assert sorted(provider.calls) == [1, 1, 2, 2, 3, 3]
    attempts = conn.execute("SELECT attempt FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall()
    assert {r["attempt"] for r in attempts} == {1}  # the same claim token both times
    assert rt.stats.processed == 3


def test_a_worker_asked_for_durable_claims_does_not_opt_in(database_url, settings, conn) -> None:
    make_batch(conn, 1)
    worker = Worker(config(database_url, settings, tune={"async_claims": False}), Scripted())

    async def scenario() -> str:
        rt = worker.runtime
        cur = await rt.db_call(lambda c: c.execute("SELECT current_setting('csvjobs.async_claims', true) AS v"))
        row = await cur.fetchone()
        assert rt._main.conn is not None
        await rt._main.conn.close()
        return row["v"]

    assert asyncio.run(scenario()) in (None, "")
