"""Commands that run and operate the workers: work, logs, workers, retry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from csvjobs.cli.common import (
    JsonOption,
    UserOption,
    _batch_id,
    _parse_uuid,
    _read_api_key,
    _settings,
    app,
    err,
    out,
    parse_rows,
)
from csvjobs.errors import InputError

# --- work -----------------------------------------------------------------------------------------------------


@app.command()
def work(
    ctx: typer.Context,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Rows in flight at once across the pool (default 4, CSVJOBS_CONCURRENCY).")
    ] = None,
    processes: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: min(concurrency, CPU count)).")
    ] = None,
    batch: Annotated[str | None, typer.Option(help="Work only on this batch (a dedicated worker).")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Work only on this user's batches.")] = None,
    until_done: Annotated[bool, typer.Option(help="Exit 0 once no pending or claimed row remains.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(min=1, max=65535, help="Serve Prometheus metrics at http://HOST:PORT/metrics while the pool "
                     "runs, summed over its processes (default CSVJOBS_METRICS_PORT: none)."),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(help="The address the metrics listen on (default CSVJOBS_METRICS_HOST, 127.0.0.1; 0.0.0.0 "
                     "for a Prometheus on another machine)."),
    ] = None,
    provider: Annotated[
        str | None,
        typer.Option(help="openai, offline, noop[:SECONDS] or module:attribute (default: openai with a key)."),
    ] = None,
    dedicated_threshold: Annotated[
        int | None, typer.Option(min=0, help="Batches with more rows than this get a dedicated worker (default 20).")
    ] = None,
    max_dedicated: Annotated[
        int | None, typer.Option(min=0, help="At most this many dedicated workers (default 2).")
    ] = None,
    claim_timeout: Annotated[
        float | None, typer.Option(min=0.01, help="Minutes before a silent worker's rows are taken back (default 5).")
    ] = None,
    grace_period: Annotated[
        float | None, typer.Option(min=0, help="Seconds rows in flight get to finish after Ctrl-C (default 30).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", help="OpenAI API key; never logged, but any local user can read it in the "
                     "process list: prefer OPENAI_API_KEY (the safe default) or --api-key-file.",
                     show_default=False),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help="Read the OpenAI API key from this file, or from standard input with "
                     "'-' (keeps it out of the process list).", show_default=False),
    ] = None,
    rpm: Annotated[
        float | None, typer.Option(min=0, help="Prompt-model requests per minute, shared by all workers (0: none).")
    ] = None,
    ipm: Annotated[
        float | None, typer.Option(min=0, help="Images per minute, shared by all workers on all machines (0: none).")
    ] = None,
    image_size: Annotated[str | None, typer.Option(help="Image size, e.g. 1024x1024 (CSVJOBS_IMAGE_SIZE).")] = None,
    image_quality: Annotated[
        str | None, typer.Option(help="low, medium, high, xhigh, max or auto (CSVJOBS_IMAGE_QUALITY).")
    ] = None,
    require_photo: Annotated[
        bool | None,
        typer.Option("--require-photo", help="Fail rows whose product photo cannot be used, instead of making "
                     "their images from the text alone (CSVJOBS_REQUIRE_PHOTO).", show_default=False),
    ] = None,
) -> None:
    """Process row jobs with a pool of worker processes. Every option also has a CSVJOBS_* setting.

    Example: csvjobs work --concurrency 4 --until-done
    """
    from pydantic import SecretStr

    from csvjobs.queue.supervisor import PoolOptions, run_pool

    if api_key_file is not None:
        if api_key:
            raise InputError("give the key once: --api-key or --api-key-file, not both")
        api_key = _read_api_key(api_key_file)
    settings = _settings(
        ctx,
        openai_api_key=SecretStr(api_key) if api_key else None,
        rpm=rpm,
        ipm=ipm,
        image_size=image_size,
        image_quality=image_quality,
        concurrency=concurrency,
        processes=processes,
        dedicated_threshold=dedicated_threshold,
        max_dedicated=max_dedicated,
        claim_timeout_minutes=claim_timeout,
        grace_seconds=grace_period,
        require_photo=require_photo,
    )
    options = PoolOptions(
        batch_id=_batch_id(ctx, batch, what="--batch"),
        user_id=_parse_uuid(user, "--user"),
        until_done=until_done,
        provider=provider,
        metrics_port=metrics_port if metrics_port is not None else settings.metrics_port,
        metrics_host=metrics_host or settings.metrics_host,
    )
    result = run_pool(settings, options)
    if result.summary is not None:
        from csvjobs.operate.progress import render_run_summary

        render_run_summary(err, result.summary)
    raise typer.Exit(result.code)


@app.command()
def logs(
    ctx: typer.Context,
    batch: Annotated[str | None, typer.Argument(help="Batch id (default: all your batches).")] = None,
    level: Annotated[str | None, typer.Option(help="This level and above: DEBUG, INFO, WARN, ERROR, FATAL.")] = None,
    operation: Annotated[str | None, typer.Option(help="Only this operation, e.g. row_failed.")] = None,
    row: Annotated[int | None, typer.Option(min=1, help="Only this row number.")] = None,
    since: Annotated[str | None, typer.Option(help="Only the last 30s, 10m, 2h or 1d.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many (the newest).")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new rows as they are written.")] = False,
    user: UserOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Show what happened, newest last.

    Example: csvjobs logs 3f0c... --level ERROR --since 1h
    """
    from csvjobs.operate.logs import LogFilter, follow_logs, parse_since, read_logs
    from csvjobs.operate.progress import print_log

    settings = _settings(ctx, user)
    filt = LogFilter(
        batch_id=_batch_id(ctx, batch, user),
        level=level,
        operation=operation,
        row=row,
        since=parse_since(since) if since else None,
        limit=limit,
    )
    filt.levels()  # validate before touching the database
    entries = follow_logs(settings, filt) if follow else iter(read_logs(settings, filt))
    for entry in entries:
        print_log(out, entry, as_json=as_json)


@app.command()
def workers(
    ctx: typer.Context,
    all_workers: Annotated[bool, typer.Option("--all", help="Include stopped workers.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Show worker health: status, last heartbeat, jobs now and in total; stale ones are marked.

    Example: csvjobs workers
    """
    from csvjobs.operate.progress import render_workers
    from csvjobs.operate.workers import list_workers

    render_workers(out, list_workers(_settings(ctx), include_stopped=all_workers), as_json=as_json)


@app.command()
def retry(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id.")],
    rows: Annotated[
        str | None, typer.Option(help="Only these row numbers, comma-separated (default: every failed row).")
    ] = None,
    user: UserOption = None,
) -> None:
    """Put failed rows back to pending (their saved prompts and images are kept, not paid again).

    Example: csvjobs retry 3f0c... --rows 4,17
    """
    from csvjobs.operate.batch_control import retry_rows

    numbers = parse_rows(rows)
    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    count = retry_rows(_settings(ctx, user), batch_id, numbers)
    out.print(f"{count} failed row(s) of {batch_id} back to pending" + ("; run `csvjobs work`" if count else ""))
