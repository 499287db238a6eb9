"""Prometheus metrics of the worker pool: the only module that imports prometheus_client.

Worker processes count what they do (rows finished by outcome, their durations, provider requests by endpoint and
status and their latency, spend, images paid for, cut out and reused). With `work --metrics-port` the supervisor
sets PROMETHEUS_MULTIPROC_DIR before it starts them, so prometheus_client's multiprocess mode keeps their samples in
files there, and serves /metrics summed over every process, plus the queue's state read from the database at each
scrape (rows by status, the age of the oldest pending row). Names follow Prometheus' conventions (base units,
_total for counters); the queue-latency gauge is OpenTelemetry's messaging idea of time spent waiting in a queue."""

from __future__ import annotations

import collections
import functools
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_DURATIONS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)

ROWS_FINISHED = Counter("csvjobs_rows_finished_total", "Rows this pool finished, by outcome (completed, failed, "
                        "or retried: back to pending for a later attempt).", ["outcome"])
ROW_DURATION = Histogram("csvjobs_row_duration_seconds", "Time from a row's claim to its result.",
                         buckets=_DURATIONS)
PROVIDER_REQUESTS = Counter("csvjobs_provider_requests_total", "Requests to the AI provider, by endpoint and HTTP "
                            "status (429 and 5xx included).", ["endpoint", "status"])
PROVIDER_LATENCY = Histogram("csvjobs_provider_request_duration_seconds", "Latency of requests to the AI "
                             "provider, by endpoint.", ["endpoint"], buckets=_DURATIONS)
COST = Counter("csvjobs_cost_usd_total", "What the rows this pool finished cost, in USD.")
IMAGES = Counter("csvjobs_images_total", "Images of finished rows: paid (made by a model), cut_out (from the "
                 "product's photo, free) and reused (from a look-alike row, free).", ["kind"])


@functools.cache
def _finished(outcome: str) -> Any:
    # labels() checks and locks on every call; a pool counts every row it finishes.
    return ROWS_FINISHED.labels(outcome)


class FinishedRow(NamedTuple):
    """One reported row, as the metrics count it."""

    outcome: str
    seconds: float | None
    cost: float | None
    images: Iterable[dict[str, Any]] = ()
    reused: bool = False


def rows_finished(rows: Iterable[FinishedRow]) -> None:
    """Count the rows of one report: the counters move once per report (each move of a multiprocess value takes
    a lock and writes its file), the duration histogram once per row."""
    outcomes: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    cost = 0.0
    for row in rows:
        outcomes[row.outcome] += 1
        if row.seconds is not None:
            ROW_DURATION.observe(row.seconds)
        cost += row.cost or 0.0
        for image in row.images:
            kind = "reused" if row.reused else "cut_out" if image.get("route") == "cutout" else "paid"
            if kind != "paid" or not image.get("placeholder"):
                kinds[kind] += 1
    for outcome, count in outcomes.items():
        _finished(outcome).inc(count)
    if cost:
        COST.inc(cost)
    for kind, count in kinds.items():
        IMAGES.labels(kind).inc(count)


_ID_SEGMENT = re.compile(r"/[A-Za-z]+[-_][A-Za-z0-9_-]+")


def provider_request(path: str, status: int | str, seconds: float) -> None:
    """Count one request to the provider; ids in its path (file-..., batch_...) are folded into {id}."""
    endpoint = _ID_SEGMENT.sub("/{id}", path)
    PROVIDER_REQUESTS.labels(endpoint, str(status)).inc()
    PROVIDER_LATENCY.labels(endpoint).observe(seconds)


class RequestTimer:
    """httpx event hooks that count every provider request (the openai SDK's client takes them)."""

    async def started(self, request: Any) -> None:
        """Note when a request leaves."""
        request.extensions["csvjobs_started"] = time.monotonic()

    async def answered(self, response: Any) -> None:
        """Count the answer, with its latency."""
        started = response.request.extensions.get("csvjobs_started", time.monotonic())
        provider_request(response.request.url.path, response.status_code, time.monotonic() - started)


class QueueCollector(Collector):
    """Gauges read from the database at each scrape: rows by status and the oldest pending row's age."""

    def __init__(self, read: Callable[[], tuple[dict[str, int], float]]) -> None:
        self.read = read

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """The queue's state now (nothing, when the database cannot be read: a scrape must not fail)."""
        try:
            rows, oldest = self.read()
        except Exception:
            return []
        by_status = GaugeMetricFamily("csvjobs_rows", "Rows of active batches by status.", labels=["status"])
        for status, count in sorted(rows.items()):
            by_status.add_metric([status], count)
        age = GaugeMetricFamily("csvjobs_oldest_pending_seconds", "Age of the oldest pending row of an active "
                                "batch (0 when none is waiting).", value=oldest)
        return [by_status, age]


class MetricsServer:
    """/metrics of a pool: its processes' samples (multiprocess mode) and the queue's state."""

    def __init__(self, port: int, host: str, read_queue: Callable[[], tuple[dict[str, int], float]]) -> None:
        self.directory = tempfile.mkdtemp(prefix="csvjobs-metrics-")
        # Read by prometheus_client in every worker process the supervisor starts from now on (spawned: they
        # import it afresh and see this variable).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.directory
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        registry.register(QueueCollector(read_queue))
        self.server, self.thread = start_http_server(port, addr=host, registry=registry)

    def process_dead(self, pid: int) -> None:
        """Forget a dead process's live gauges (its counters stay in the sums)."""
        multiprocess.mark_process_dead(pid, self.directory)

    def close(self) -> None:
        """Stop serving and remove the samples."""
        self.server.shutdown()
        self.server.server_close()
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        shutil.rmtree(self.directory, ignore_errors=True)

