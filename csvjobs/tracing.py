"""OpenTelemetry traces of the worker pool, when the OpenTelemetry SDK is installed (`pip install 'csvjobs[otel]'`)
and configured: the only module that imports opentelemetry.

Configured means OpenTelemetry's own environment variables, read by each worker process when it starts:
OTEL_TRACES_EXPORTER (`otlp`, sent over OTLP/HTTP, or `console`) or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true turns it off; OTEL_SERVICE_NAME names the service
(csvjobs-worker by default). Without them, every function here does nothing (a worker pays one check per row).

The spans follow OpenTelemetry's messaging conventions, with csv_row_jobs as the destination: a claim is a
`receive csv_row_jobs` span (messaging.batch.message_count rows); each row a `process csv_row_jobs` span, a child of
its claim's, from the start of its work to its result (its outcome in csvjobs.outcome, an error status when it
failed or goes back for a retry); each request to the AI provider a client span (`POST`, with the HTTP conventions'
attributes) inside its row's; and each report of results a `settle csv_row_jobs` span linked to the rows it
reports."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

DESTINATION = "csv_row_jobs"
_BASE = {"messaging.system": "csvjobs", "messaging.destination.name": DESTINATION}

_tracer: Any = None  # an opentelemetry Tracer once setup() found the SDK configured
_provider: Any = None


def configured(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether OpenTelemetry's environment asks for traces (the SDK's own default exporter, otlp, is not taken
    as a request: an installed SDK alone must not make every worker send to localhost:4318)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def setup(say: Any = None) -> bool:
    """Start sending this process's spans when OpenTelemetry is configured and installed; whether it does."""
    global _tracer, _provider
    if _tracer is not None or not configured():
        return _tracer is not None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        if say is not None:
            say("OpenTelemetry is configured (OTEL_* variables) but its SDK is not installed: no traces "
                "(pip install 'csvjobs[otel]')")
        return False
    exporter: SpanExporter
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            if say is not None:
                say("OTLP traces need opentelemetry-exporter-otlp-proto-http: no traces "
                    "(pip install 'csvjobs[otel]')")
            return False
        exporter = OTLPSpanExporter()  # endpoint, headers and timeout from the OTEL_EXPORTER_OTLP_* variables
    service = os.environ.get("OTEL_SERVICE_NAME") or "csvjobs-worker"
    _provider = TracerProvider(resource=Resource.create({"service.name": service}))
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    _tracer = _provider.get_tracer("csvjobs")
    trace.set_tracer_provider(_provider)
    return True


def shutdown() -> None:
    """Send the spans still buffered (a worker calls it as it exits)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


def enabled() -> bool:
    """Whether spans are being recorded in this process."""
    return _tracer is not None


@contextlib.contextmanager
def claim_span(worker_id: str) -> Iterator[Any]:
    """A claim (`receive csv_row_jobs`); yields the span (None when tracing is off), which the caller gives the
    number of rows claimed (claimed()) and the rows' spans as their parent."""
    if _tracer is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    attributes = {**_BASE, "messaging.operation.type": "receive", "messaging.operation.name": "claim",
                  "messaging.consumer.group.name": "csvjobs", "messaging.client.id": worker_id}
    with _tracer.start_as_current_span(f"receive {DESTINATION}", kind=SpanKind.CLIENT,
                                       attributes=attributes) as span:
        yield span


def claimed(span: Any, rows: int) -> None:
    """How many rows a claim got."""
    if span is not None:
        span.set_attribute("messaging.batch.message_count", rows)


@contextlib.contextmanager
def row_span(claim: Any, job_id: int, batch_id: Any, row_number: int, attempt: int) -> Iterator[Any]:
    """One row's work (`process csv_row_jobs`), current while it runs so that provider requests nest in it; a
    child of its claim's span. Yields the span (None when tracing is off) for finished()."""
    if _tracer is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    attributes = {**_BASE, "messaging.operation.type": "process", "messaging.operation.name": "process",
                  "messaging.message.id": str(job_id), "csvjobs.batch_id": str(batch_id),
                  "csvjobs.row_number": row_number, "csvjobs.attempt": attempt}
    parent = trace.set_span_in_context(claim) if claim is not None else None
    with _tracer.start_as_current_span(f"process {DESTINATION}", context=parent, kind=SpanKind.CONSUMER,
                                       attributes=attributes) as span:
        yield span


def finished(span: Any, outcome: str, error: str | None = None) -> None:
    """A row's outcome (completed, failed, retried); failed and retried rows mark their span as an error."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("csvjobs.outcome", outcome)
    if outcome != "completed":
        span.set_attribute("error.type", outcome)
        span.set_status(Status(StatusCode.ERROR, (error or outcome)[:200]))


def context_of(span: Any) -> Any:
    """What a later span links to (None when tracing is off)."""
    return span.get_span_context() if span is not None else None


@contextlib.contextmanager
def report_span(rows: int, links: list[Any]) -> Iterator[None]:
    """A report of finished rows (`settle csv_row_jobs`), linked to the rows' spans."""
    if _tracer is None:
        yield
        return
    from opentelemetry.trace import Link, SpanKind

    attributes = {**_BASE, "messaging.operation.type": "settle", "messaging.operation.name": "report",
                  "messaging.batch.message_count": rows}
    with _tracer.start_as_current_span(f"settle {DESTINATION}", kind=SpanKind.CLIENT, attributes=attributes,
                                       links=[Link(c) for c in links if c is not None]):
        yield


class RequestSpans:
    """httpx event hooks that make a client span of every answered request to the AI provider, inside the row's
    span (httpx has no hook for a request that gets no answer, a timeout or a refused connection: such a request
    leaves no span; its error reaches the row's log and, past its retries, the row's span)."""

    async def started(self, request: Any) -> None:
        """Open the request's span."""
        if _tracer is None:
            return
        from opentelemetry.trace import SpanKind

        url = request.url
        request.extensions["csvjobs_span"] = _tracer.start_span(
            request.method, kind=SpanKind.CLIENT,
            # The path and host only: a query string may carry what a span must not (a signed URL's token).
            attributes={"http.request.method": request.method, "server.address": url.host,
                        "server.port": url.port or (443 if url.scheme == "https" else 80),
                        "url.full": f"{url.scheme}://{url.host}{url.path}"})

    async def answered(self, response: Any) -> None:
        """Close the request's span with its status."""
        span = response.request.extensions.pop("csvjobs_span", None)
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 400:
            span.set_attribute("error.type", str(response.status_code))
            span.set_status(Status(StatusCode.ERROR))
        span.end()
