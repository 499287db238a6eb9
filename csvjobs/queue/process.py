"""One worker process: the runtime, the synchronous loop, and, when the provider can use OpenAI's Batch API,
the submission loop beside it; signals, the exit code, and the entry point the supervisor starts."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from csvjobs import db, tracing
from csvjobs.errors import DatabaseError
from csvjobs.models import ProcessingMode, WorkerStatus
from csvjobs.providers.contract import BatchCapable, Provider
from csvjobs.providers.registry import load_provider
from csvjobs.queue import queries, submission_queries
from csvjobs.queue.runtime import EXIT_POOL_STOPS, SchemaNewerError, WorkerConfig, WorkerRuntime, make_worker_id, say
from csvjobs.queue.sync_loop import SyncLoop


class Worker:
    """The loops of one process over one runtime."""

    def __init__(self, config: WorkerConfig, provider: Provider | None = None) -> None:
        self.runtime = WorkerRuntime(config)
        self.provider = provider

    @property
    def stats(self) -> Any:
        """What the worker did (processed, failed, lost rows)."""
        return self.runtime.stats

    @property
    def fatal(self) -> str | None:
        """Why the whole pool must stop, if it must."""
        return self.runtime.fatal

    def request_stop(self) -> None:
        """First call: finish what is in flight; second: let go at once."""
        self.runtime.request_stop()

    async def run(self) -> int:
        """Work until stopped (or, with until_done, until no work is left); returns the exit code."""
        rt = self.runtime
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, rt.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError, AttributeError):
            loop.add_signal_handler(signal.SIGUSR1, rt.let_go)
        tracing.setup(rt.say)
        if self.provider is None:
            self.provider = load_provider(rt.config.provider, rt.settings)
        provider = self.provider
        extra = {}
        try:
            await rt.heartbeat(WorkerStatus.IDLE)
            # The provider says through the contract whether it can use a batch API; the submission loop (and the
            # openai SDK it needs, a second of CPU to import) is loaded only then.
            if isinstance(provider, BatchCapable):
                from csvjobs.queue.submission_loop import SubmissionLoop

                extra["submissions"] = SubmissionLoop(rt, provider).run()
            elif await rt.db_call(functools.partial(queries.outstanding_rows, mode=ProcessingMode.OPENAI_BATCH,
                                                    batch_id=rt.config.batch_id, user_id=rt.config.user_id)):
                rt.say("batches uploaded with --openai-batch are waiting; they go through OpenAI's Batch API, which "
                       "needs the openai provider (this worker leaves them alone)")
            sync = SyncLoop(rt, provider, serves_openai_batches=bool(extra))
            rt.start_side_tasks(extra)
            try:
                await sync.run()
            finally:
                await sync.drain()
        except SchemaNewerError:
            pass  # stop_pool has the reason; the supervisor tells it once
        finally:
            await rt.stop_side_tasks()
            await rt.close(self._release)
            await provider.aclose()
            tracing.shutdown()
        return EXIT_POOL_STOPS if rt.fatal else 0

    async def _release(self, conn: db.AsyncConnection) -> None:
        worker_id = self.runtime.config.worker_id
        await queries.release_held_rows(conn, worker_id=worker_id, count_retry=False, keep=[])
        # Another worker goes on with this one's submissions at once, not when their lease runs out.
        await submission_queries.release_submission_leases(conn, worker_id=worker_id)


def run_worker(config: WorkerConfig, on_fatal: Callable[[str], None] | None = None) -> int:
    """Entry point of a worker process; on_fatal hears why the whole pool must stop, if it must."""
    worker = Worker(config)
    code = asyncio.run(worker.run())
    if worker.fatal is not None and on_fatal is not None:
        on_fatal(worker.fatal)
    return code


def child_main(config: WorkerConfig, fatal: Any = None) -> None:
    """multiprocessing target: run in a process group of its own, so the supervisor alone handles Ctrl-C.
    fatal is a queue on which the reason the pool must stop goes to the supervisor."""
    os.setpgrp()
    config.worker_id = make_worker_id(os.getpid(), config.worker_suffix)
    try:
        code = run_worker(config, fatal.put if fatal is not None else None)
    except KeyboardInterrupt:
        code = 0
    except DatabaseError as exc:
        say(f"worker {config.worker_id}: {exc}")
        code = 3
    sys.exit(code)
