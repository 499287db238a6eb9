"""`csvjobs work`: a supervisor that runs worker processes, starts dedicated workers for big batches, restarts
crashed workers with backoff (releasing their rows first), and stops the pool cleanly on Ctrl-C / SIGTERM."""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.process
import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from types import FrameType

from pydantic import BaseModel

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import ConfigError, DatabaseError, InputError
from csvjobs.metrics import MetricsServer
from csvjobs.models import RunSummary
from csvjobs.providers.registry import default_provider_name, load_provider
from csvjobs.queue import queries
from csvjobs.queue.process import child_main
from csvjobs.queue.runtime import EXIT_POOL_STOPS, WorkerConfig, make_worker_id, say
from csvjobs.storage.registry import open_storage


class PoolOptions(BaseModel):
    """What one `csvjobs work` run is for; how (concurrency, processes, timings) comes from Settings."""

    batch_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None
    until_done: bool = False
    provider: str | None = None
    # Serve Prometheus metrics at http://HOST:PORT/metrics while the pool runs (None: not at all).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


def split_concurrency(total: int, processes: int) -> list[int]:
    """Share total rows in flight among processes as evenly as possible (5 over 2 -> [3, 2])."""
    base, extra = divmod(total, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


@dataclass
class _Child:
    """One worker slot: its current process and restart bookkeeping."""

    config: WorkerConfig
    dedicated: bool = False
    process: multiprocessing.process.BaseProcess | None = None
    restarts: int = 0
    restart_at: float = 0.0
    finished: bool = False
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])


class Supervisor:
    """Runs and watches the worker processes of one `csvjobs work`."""

    RESTART_BACKOFF_CAP = 60.0
    DEDICATED_CHECK_SECONDS = 2.0

    def __init__(self, settings: Settings, options: PoolOptions, target: db.DatabaseTarget) -> None:
        self.settings = settings
        self.options = options
        self.target = target
        self.context = multiprocessing.get_context("spawn")
        # Spawned workers inherit the environment: two malloc arenas each (glibc's default is eight a core), so
        # the threads that finish images give freed pixel buffers back instead of each keeping its own (about a
        # fifth less resident memory a worker). An operator's own setting wins.
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
        self.children: list[_Child] = []
        self.stop_requests = 0
        self._conn: db.Connection | None = None
        self._last_dedicated_check = 0.0
        # Why the provider refused us (from the first worker that found out); then the whole pool stops.
        self.fatal_queue = self.context.SimpleQueue()
        self.fatal: str | None = None

    # --- processes --------------------------------------------------------------------------------------------

    def _spawn(self, child: _Child) -> None:
        child.config.worker_suffix = child.suffix
        process = self.context.Process(target=child_main, args=(child.config, self.fatal_queue), daemon=False)
        process.start()
        assert process.pid is not None
        # The child computes the same id from its own pid (see child_main).
        child.config.worker_id = make_worker_id(process.pid, child.suffix)
        child.process = process
        if child.config.batch_id is not None:
            scope = f"batch {child.config.batch_id}"
        elif child.config.user_id is not None:
            scope = f"user {child.config.user_id}'s batches"
        else:
            scope = "any batch"
        say(f"worker {child.config.worker_id}: started ({scope}, {child.config.concurrency} rows at once)")

    def _config(self, concurrency: int, batch_id: uuid.UUID | None, until_done: bool) -> WorkerConfig:
        opts = self.options
        return WorkerConfig(
            database_url=self.target.url,
            settings=self.settings,
            concurrency=concurrency,
            batch_id=batch_id,
            user_id=opts.user_id,
            until_done=until_done,
            provider=opts.provider or default_provider_name(self.settings),
            parent_pid=os.getpid(),
        )

    def start(self) -> None:
        """Start the global workers (or the workers of the one batch asked for)."""
        opts = self.options
        processes = self.settings.processes or max(1, min(self.settings.concurrency, os.cpu_count() or 1))
        for share in split_concurrency(self.settings.concurrency, processes):
            child = _Child(self._config(share, opts.batch_id, opts.until_done))
            self.children.append(child)
            self._spawn(child)

    def _service_conn(self) -> db.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.target, application_name="csvjobs-supervisor")
        return self._conn

    def _reap(self) -> None:
        now = time.monotonic()
        for child in self.children:
            process = child.process
            if child.finished or process is None:
                if not child.finished and process is None and now >= child.restart_at and not self.stop_requests:
                    child.restarts += 1
                    self._spawn(child)
                continue
            if process.is_alive():
                continue
            code = process.exitcode
            child.process = None
            if code == EXIT_POOL_STOPS:
                self._pool_must_stop()
            if code == 0 or self.stop_requests:
                child.finished = True
                continue
            delay = min(self.RESTART_BACKOFF_CAP, 2.0 ** min(child.restarts, 6))
            say(f"worker {child.config.worker_id}: exited with code {code}; releasing its rows and restarting "
                f"in {delay:.0f}s")
            self._release_dead(child.config.worker_id)
            child.suffix = uuid.uuid4().hex[:6]
            child.restart_at = now + delay

    def _pool_must_stop(self) -> None:
        """A worker found that no row can succeed (the provider refuses the key or model, or the database was
        upgraded past this csvjobs): stop every worker at once (their rows go back to pending without a retry
        counted) instead of restarting them; run() then reports the reason."""
        while not self.fatal_queue.empty():
            reason = self.fatal_queue.get()
            self.fatal = self.fatal or reason
        if self.fatal is None:
            self.fatal = "a worker found that no row can succeed (see its output above)"
        if self.stop_requests:
            return
        self.stop_requests += 1
        for child in self.children:
            if child.process is not None and child.process.is_alive() and child.process.pid:
                os.kill(child.process.pid, signal.SIGUSR1)

    def _release_dead(self, worker_id: str) -> None:
        try:
            released, failed = queries.release_worker_jobs(self._service_conn(), worker_id, count_retry=True)
            if released or failed:
                say(f"worker {worker_id}: {released} row(s) back to pending, {failed} failed past their retries")
        except Exception as exc:  # database away: the claim timeout (or cron cleanup) brings the rows back
            self._conn = None
            say(f"could not release the rows of {worker_id} now ({db.first_line(exc)}); "
                "they come back after the claim timeout")

    def _start_dedicated(self) -> None:
        opts = self.options
        now = time.monotonic()
        if opts.batch_id is not None or self.settings.max_dedicated <= 0 or self.stop_requests:
            return
        if now - self._last_dedicated_check < self.DEDICATED_CHECK_SECONDS:
            return
        self._last_dedicated_check = now
        try:
            wanted = queries.batches_needing_dedicated_workers(self._service_conn(), self.settings.dedicated_threshold,
                                                             opts.user_id)
        except Exception as exc:
            self._conn = None
            say(f"supervisor: database unavailable ({db.first_line(exc)}); retrying")
            return
        active = {c.config.batch_id for c in self.children if c.dedicated and not c.finished}
        for batch in wanted:
            if len(active) >= self.settings.max_dedicated:
                break
            if batch["batch_id"] in active:
                continue
            # A batch's max_concurrent_jobs is its owner's request; the operator's --concurrency caps it, so the
            # pool never has more than concurrency x (max_dedicated + 1) rows in flight.
            share = max(1, min(int(batch["max_concurrent_jobs"]), self.settings.concurrency))
            child = _Child(self._config(share, batch["batch_id"], True), dedicated=True)
            self.children.append(child)
            self._spawn(child)
            active.add(batch["batch_id"])

    def _global_done(self) -> bool:
        return all(c.finished for c in self.children if not c.dedicated)

    # --- the loop ---------------------------------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop_requests += 1
        if self.stop_requests == 1:
            say("stopping: no new rows are claimed; rows in flight get to finish (Ctrl-C again to let go at once)")
        else:
            say("letting go at once: unfinished rows go back to pending")
        for child in self.children:
            if child.process is not None and child.process.is_alive() and child.process.pid:
                os.kill(child.process.pid, signal.SIGTERM)

    def run(self) -> int:
        """Supervise until the pool is stopped or, with --until-done, until the work is done."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            while True:
                self._reap()
                self._start_dedicated()
                alive = [c for c in self.children if c.process is not None and c.process.is_alive()]
                if self.stop_requests and not alive:
                    if self.fatal is not None:
                        raise ConfigError(f"{self.fatal}. The pool stopped; rows in flight went back to pending "
                                          "(no retry counted, nothing marked failed)")
                    return 0
                if self.options.until_done and self._global_done() and not alive:
                    return 0
                time.sleep(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._conn is not None:
                self._conn.close()


class PoolResult(BaseModel):
    """How a run ended: its exit code, and what it did."""

    code: int
    summary: RunSummary | None = None


def run_pool(settings: Settings, options: PoolOptions) -> PoolResult:
    """Start the worker pool described by options, supervise it, and say what it did."""
    target, conn = db.open_database(settings, application_name="csvjobs-supervisor")
    with conn:
        # The database's clock, which stamps completed_at: the summary counts rows finished from here on.
        started_at, started = queries.database_now(conn), time.monotonic()
    name = options.provider or default_provider_name(settings)
    # A bad provider name or a missing key fails here, once, rather than in every worker process.
    asyncio.run(load_provider(name, settings).aclose())
    open_storage(settings).check()  # a missing bucket is an error now, not a failure on row 5,000
    if options.provider is None and name == "offline":
        say("no OpenAI API key configured: using the offline provider (template prompts, placeholder images)")
    if options.batch_id is not None and options.user_id is not None:
        raise InputError("--batch and --user cannot be combined; a batch already belongs to one user")
    exporter = None
    if options.metrics_port is not None:
        def read_queue() -> tuple[dict[str, int], float]:
            with db.connect(target, application_name="csvjobs-metrics") as conn:
                return queries.queue_state(conn)

        try:
            exporter = MetricsServer(options.metrics_port, options.metrics_host, read_queue)
        except OSError as exc:
            raise InputError(f"--metrics-port {options.metrics_port}: cannot listen there ({exc.strerror}); choose "
                             "another port") from exc
        say(f"metrics at http://{options.metrics_host}:{options.metrics_port}/metrics")
    try:
        code = Supervisor(settings, options, target).run()
    finally:
        if exporter is not None:
            exporter.close()
    try:
        with db.connect(target, application_name="csvjobs-supervisor") as conn:
            summary = queries.run_summary(conn, since=started_at, seconds=time.monotonic() - started,
                                          batch_id=options.batch_id, user_id=options.user_id)
    except DatabaseError:
        summary = None  # the database went away at the end: the exit code still tells
    return PoolResult(code=code, summary=summary)
