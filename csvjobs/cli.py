"""The csvjobs command line: each command parses options, calls one core function and renders the result."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from csvjobs import __version__
from csvjobs.config import Settings, load_settings
from csvjobs.errors import CsvJobsError, InputError

app = typer.Typer(
    name="csvjobs",
    help="Turn a product catalogue CSV into AI-generated marketing images, one PostgreSQL job per row.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="The database: where it is, its migrations, the embedded server.", no_args_is_help=True)
app.add_typer(db_app, name="db")
storage_app = typer.Typer(help="Object storage: local directories or an S3-compatible service.", no_args_is_help=True)
app.add_typer(storage_app, name="storage")
push_app = typer.Typer(help="Add a batch's images to your shop's products through the shop's own API.",
                       no_args_is_help=True)
app.add_typer(push_app, name="push")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
BatchArgument = Annotated[str, typer.Argument(help="Batch id.")]
UserOption = Annotated[
    str | None,
    typer.Option("--user", help="Act as this user id (a uuid). Default: CSVJOBS_USER_ID, else this machine's id."),
]


def _settings(ctx: typer.Context, user: str | None = None, **overrides: Any) -> Settings:
    obj: dict[str, Any] = ctx.obj or {}
    try:
        return load_settings(
            database_url=obj.get("database_url"),
            home=obj.get("home"),
            user_id=_parse_uuid(user, "--user"),
            **overrides,
        )
    except CsvJobsError:
        raise
    except Exception as exc:  # pydantic's ValidationError for a bad option or environment variable
        raise InputError(f"invalid setting: {_first_error(exc)}") from exc


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg")).removeprefix("Value error, ")
        return f"{where}: {message}" if where else message
    return str(exc).splitlines()[0]


def _batch_id(ctx: typer.Context, value: str | None, user: str | None = None, what: str = "batch") -> uuid.UUID | None:
    """A batch argument: a whole id, or the first characters of one (as progress and logs show them)."""
    if value is None:
        return None
    from csvjobs.operate.batch_ids import resolve_batch

    return resolve_batch(_settings(ctx, user), value, what)


def _parse_uuid(value: str | None, what: str) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError as exc:
        raise InputError(f"{what} {value!r} is not a valid id (expected a uuid like 123e4567-e89b-...)") from exc


def _read_api_key(path: Path) -> str:
    """The key in a file (or on standard input for '-'): its first line, stripped."""
    try:
        text = sys.stdin.readline() if str(path) == "-" else path.read_text(encoding="utf-8").partition("\n")[0]
    except OSError as exc:
        raise InputError(f"--api-key-file {path}: cannot read it ({exc.strerror}); name a file holding the key"
                         ) from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"--api-key-file {path}: not a text file; give a file holding the key") from exc
    key = text.strip()
    if not key:
        raise InputError(f"--api-key-file {path}: no key in it (the first line is empty)")
    return key


def _channels(values: list[str]) -> list[str]:
    """--channel values (or CSVJOBS_CHANNELS) as channel names; a bad one is a one-line error."""
    from csvjobs.models import parse_channels

    try:
        return [c.value for c in parse_channels(values)]
    except ValueError as exc:
        raise InputError(f"--channel: {exc}") from None


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str)) if sys.stdout.isatty() else print(json.dumps(data, default=str))


@app.callback()
def _root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL URL. Default: CSVJOBS_DATABASE_URL, DATABASE_URL, else an embedded server.",
            show_default=False,
        ),
    ] = None,
    home: Annotated[
        Path | None, typer.Option("--home", help="Data directory (default: CSVJOBS_HOME or the user data dir).")
    ] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Turn a product catalogue CSV into AI-generated marketing images, one PostgreSQL job per row."""
    if version:
        print(f"csvjobs {__version__}")
        raise typer.Exit(0)
    ctx.obj = {"database_url": database_url, "home": home}


# --- upload ---------------------------------------------------------------------------------------------------


@app.command()
def upload(
    ctx: typer.Context,
    file: Annotated[
        Path | None, typer.Argument(help="The product CSV (Shopify, WooCommerce or any CSV with a header).")
    ] = None,
    example: Annotated[bool, typer.Option("--example", help="Upload the bundled example CSV (8 products).")] = False,
    user: UserOption = None,
    column_map: Annotated[
        list[str] | None,
        typer.Option("--map", help="Map a field to a header: FIELD=HEADER (repeatable), e.g. --map title=Nome."),
    ] = None,
    preset: Annotated[str, typer.Option(help="Column preset: auto, shopify, woocommerce or plain.")] = "auto",
    country: Annotated[str, typer.Option(help="Country for rows that have none, e.g. BR.")] = "",
    max_concurrent_jobs: Annotated[int, typer.Option(min=1, help="Rows of this batch in flight at once.")] = 4,
    skip_invalid: Annotated[bool, typer.Option(help="Leave invalid rows out instead of rejecting the file.")] = False,
    per_variant: Annotated[
        bool,
        typer.Option("--per-variant", help="Make images for every variant, even those that look like an earlier "
                     "one (by default variants differing only in size or the like share images)."),
    ] = False,
    openai_batch: Annotated[
        bool,
        typer.Option("--openai-batch", help="Process this batch through OpenAI's Batch API: half the price, "
                     "results within 24 hours (`csvjobs work` submits and collects)."),
    ] = False,
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", min=0, help="The batch's budget in USD: workers pause it rather than spend more "
                     "(default CSVJOBS_MAX_COST_USD; `csvjobs resume --max-cost` raises it)."),
    ] = None,
    channel: Annotated[
        list[str] | None,
        typer.Option("--channel", help="Where the images will be sold: amazon, google, shopify, ebay or etsy "
                     "(repeatable; default CSVJOBS_CHANNELS). Images are stored at the size they need and checked "
                     "against their rules."),
    ] = None,
    language: Annotated[
        str | None,
        typer.Option("--language", help="The language shoppers read, a BCP 47 tag such as pt-BR, de or en-GB: alt "
                     "text, tags and any text in an image are written in it (default CSVJOBS_LANGUAGE, else read "
                     "from a localised shop export's headers or the products' text, else en)."),
    ] = None,
    alt_languages: Annotated[
        str | None,
        typer.Option("--alt-languages", help="Also write alt text in these languages, e.g. es,en (costed; exported "
                     "as *_alt_text_es, ...)."),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Parse, map and validate; write nothing.")] = False,
    delimiter: Annotated[str | None, typer.Option(help="Field delimiter (default: detected).")] = None,
    encoding: Annotated[str | None, typer.Option(help="Text encoding (default: detected).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Store a CSV and split it into one job per row.

    Example: csvjobs upload products.csv --country US
    Example: csvjobs upload produtos.csv --language pt-BR --alt-languages en,es
    """
    from csvjobs.ingest.column_mapping import parse_map_options
    from csvjobs.ingest.language import alt_language_tags
    from csvjobs.ingest.upload import UploadOptions, upload_csv
    from csvjobs.operate.maintenance import EXAMPLE_CSV
    from csvjobs.operate.progress import upload_progress

    settings = _settings(ctx, user)
    if example == (file is not None):
        raise InputError("give a CSV file to upload, or --example for the bundled one (not both)")
    options = UploadOptions(
        path=file if file is not None else EXAMPLE_CSV,
        user_id=settings.user_id,
        preset=preset,
        column_map=parse_map_options(column_map or []),
        country=country,
        max_concurrent_jobs=max_concurrent_jobs,
        skip_invalid=skip_invalid,
        per_variant=per_variant,
        openai_batch=openai_batch,
        channels=_channels(channel or [settings.channels]),
        max_cost_usd=max_cost if max_cost is not None else settings.max_cost_usd,
        dry_run=dry_run,
        delimiter=delimiter,
        encoding=encoding,
        language=language,
        alt_languages=alt_language_tags(alt_languages),
    )
    with upload_progress(enabled=not as_json and err.is_terminal and not dry_run, console=err) as on_progress:
        report = upload_csv(settings, options, progress=on_progress)
    if as_json:
        _print_json(report.as_json())
        return
    from csvjobs.operate.progress import render_upload_report

    render_upload_report(out, err, report)


# --- progress, cleanup ----------------------------------------------------------------------------------------


@app.command()
def progress(
    ctx: typer.Context,
    batch: Annotated[str | None, typer.Argument(help="Batch id (default: all your active batches).")] = None,
    user: UserOption = None,
    watch: Annotated[bool | None, typer.Option("--watch/--no-watch", help="Follow until the batch ends.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show a batch's progress (a live table on a terminal).

    Example: csvjobs progress 3f0c...  --watch
    """
    from csvjobs.operate.progress import show_progress

    settings = _settings(ctx, user)
    batch_id = _batch_id(ctx, batch, user)
    follow = (sys.stdout.isatty() and not as_json) if watch is None else watch
    show_progress(settings, batch_id, watch=follow, as_json=as_json, console=out)


@app.command()
def batches(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None, typer.Option("--status", help="Only batches with this status (repeatable).")
    ] = None,
    user: UserOption = None,
    as_json: JsonOption = False,
) -> None:
    """List your batches, newest first, with progress and failed rows.

    Example: csvjobs batches --status processing
    """
    from csvjobs.models import BatchStatus
    from csvjobs.operate.progress import show_batches

    allowed = {s.value for s in BatchStatus}
    for value in status or []:
        if value not in allowed:
            raise InputError(f"--status {value!r} is not a batch status; use one of {', '.join(sorted(allowed))}")
    show_batches(_settings(ctx, user), status or None, as_json=as_json, console=out)


@app.command()
def cleanup(
    ctx: typer.Context,
    timeout_minutes: Annotated[
        float | None,
        typer.Option(min=0, help="Workers silent this long are stopped and their rows released (default 5, "
                     "CSVJOBS_CLAIM_TIMEOUT_MINUTES)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Free rows held by dead workers (run it from cron).

    Example: csvjobs cleanup --timeout-minutes 5   (in a crontab: * * * * * csvjobs cleanup)
    """
    from csvjobs.operate.maintenance import run_cleanup

    settings = _settings(ctx)
    report = run_cleanup(settings, settings.claim_timeout_minutes if timeout_minutes is None else timeout_minutes)
    if as_json:
        _print_json(report.model_dump())
        return
    print(
        f"cleanup: {report.workers_stopped} worker(s) stopped, {report.jobs_released} job(s) released, "
        f"{report.jobs_failed} job(s) failed"
        + (f"; {report.waiting_on_openai} row(s) are waiting on OpenAI's Batch API (not on a dead worker) and "
           "were left alone" if report.waiting_on_openai else "")
    )


# --- database -------------------------------------------------------------------------------------------------


@db_app.command("status")
def db_status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Say where the database is, whether it is up, and which migrations are applied.

    Example: csvjobs db status
    """
    from csvjobs.operate.maintenance import database_status

    status = database_status(_settings(ctx))
    if as_json:
        _print_json(status)
        return
    out.print(f"database: {status['location']} ({'embedded' if status['embedded'] else 'external'})")
    out.print(f"up: {'yes' if status['up'] else 'no'}" + (f" ({status['server_version']})" if status["up"] else ""))
    if status["up"] and "pending_migrations" in status:
        pending = status["pending_migrations"]
        out.print(f"migrations: {len(status['applied_migrations'])} applied, {len(pending)} pending")
        if pending:
            out.print("pending: " + ", ".join(pending) + " (run `csvjobs db migrate`)")
        if status["changed_migrations"]:
            err.print(Text("changed since applied (this database was made by another build of csvjobs; recreate "
                           "it): " + ", ".join(status["changed_migrations"]), style="yellow"))
        if status["functions_to_apply"]:
            newer = status["database_is_newer"]
            out.print(("functions: the database's are newer than this csvjobs (" if newer else
                       "functions to apply: (") + ", ".join(status["functions_to_apply"]) + ")"
                      + ("" if newer else " (run `csvjobs db migrate`)"))
    out.print(f"storage: {status['storage']} ({'ok' if status['storage_ok'] else 'NOT usable'})")
    if not status["storage_ok"]:
        err.print(Text(str(status["storage_error"]), style="red"))
    if status.get("error"):
        err.print(Text(str(status["error"]), style="red"))
    if status.get("error") or not status["storage_ok"]:
        raise typer.Exit(1)


@db_app.command("migrate")
def db_migrate(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Apply pending SQL migrations and changed function files (safe to run again, or twice at once).

    Example: csvjobs db migrate
    """
    from csvjobs.operate.maintenance import migrate_database

    report, location = migrate_database(_settings(ctx))
    migrations = [m.label for m in report.migrations]
    if as_json:
        _print_json({"database": location, "applied": migrations, "functions": report.functions})
        return
    if migrations:
        out.print(f"applied {len(migrations)} migration(s) to {location}: " + ", ".join(migrations))
    if report.functions:
        out.print(f"applied {len(report.functions)} function file(s) to {location}: "
                  + ", ".join(f"{name}.sql" for name in report.functions))
    if not report:
        out.print(f"{location}: already up to date")


@db_app.command("stop")
def db_stop(ctx: typer.Context) -> None:
    """Stop the embedded PostgreSQL server (it starts again on the next command).

    Example: csvjobs db stop
    """
    from csvjobs.operate.maintenance import stop_database

    out.print(stop_database(_settings(ctx)))


@storage_app.command("check")
def storage_check(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Write, read and delete a probe object in every bucket and say what works.

    Example: CSVJOBS_STORAGE=s3 CSVJOBS_S3_ENDPOINT_URL=http://localhost:9000 csvjobs storage check
    """
    from csvjobs.operate.maintenance import check_storage

    where, results = check_storage(_settings(ctx))
    if as_json:
        _print_json({"storage": where, "buckets": dict(results)})
    else:
        out.print(f"storage: {where}")
        for bucket, result in results:
            out.print(Text(f"  {bucket}: {result}", style="green" if result == "ok" else "red"))
    if any(result != "ok" for _bucket, result in results):
        raise typer.Exit(1)


# --- template -------------------------------------------------------------------------------------------------


@app.command()
def template(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the template.")] = Path(
        "csvjobs-template.csv"
    ),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a template CSV with the expected headers and two example rows.

    Example: csvjobs template -o products.csv
    """
    from csvjobs.operate.maintenance import write_template

    path, stored = write_template(_settings(ctx), output, force=force)
    out.print(f"wrote {path}" + (f" (also stored as {stored})" if stored else ""))


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


def parse_rows(rows: str | None) -> list[int] | None:
    """--rows: numbers and ranges separated by commas (1-4,9), or None for every row."""
    if rows is None:
        return None
    numbers: list[int] = []
    try:
        for part in rows.replace(" ", "").split(","):
            if not part:
                continue
            first, dash, last = part.partition("-")
            low, high = int(first), int(last) if dash else int(first)
            if high < low or high - low > 1_000_000:
                raise ValueError(part)
            numbers.extend(range(low, high + 1))
    except ValueError as exc:
        raise InputError(f"--rows {rows!r}: give row numbers and ranges separated by commas, like 1-4,9,17") from exc
    if not numbers or min(numbers) < 1:
        raise InputError(f"--rows {rows!r}: row numbers start at 1")
    return sorted(set(numbers))


def _state_command(ctx: typer.Context, batch: str, user: str | None, action: str,
                   max_cost: float | None = None) -> None:
    from csvjobs.operate.batch_control import change_state

    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    change = change_state(_settings(ctx, user), batch_id, action, max_cost=max_cost)
    out.print(f"batch {batch_id} is now {change.status}")
    if change.openai_cancelled:
        out.print(f"cancelled its OpenAI batches {', '.join(change.openai_cancelled)} (what they finished is kept)")
    if change.openai_left:
        why = f" ({change.openai_problem})" if change.openai_problem else " (no OpenAI key here)"
        err.print(f"its OpenAI batches {', '.join(change.openai_left)} are still running{why}; the next "
                  "`csvjobs work` cancels them")


RowsOption = Annotated[
    str | None, typer.Option("--rows", help="Row numbers and ranges, like 1-4,9 (default: every row).")
]
StyleOption = Annotated[
    str | None, typer.Option("--style", help="lifestyle or white (default: both images).")
]


def _review(ctx: typer.Context, batch: str, rows: str | None, style: str | None, user: str | None,
            action: str) -> None:
    from csvjobs.operate.review import parse_style, review_images

    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    decision = review_images(_settings(ctx, user), batch_id, parse_rows(rows), parse_style(style), action)
    out.print(f"{decision.changed} image(s) of {batch_id} {'approved' if action == 'approve' else 'rejected'}"
              + _left_out(decision.left_out))


def _left_out(rows: list[int]) -> str:
    """What a range that crossed rows the upload left out says about them."""
    if not rows:
        return ""
    shown = ", ".join(str(n) for n in rows[:20]) + (" ..." if len(rows) > 20 else "")
    return f" (row(s) {shown} of the file were left out at upload, so they are not in the batch)"


@app.command()
def approve(ctx: typer.Context, batch: BatchArgument, rows: RowsOption = None, style: StyleOption = None,
            unflagged: Annotated[bool, typer.Option(
                "--unflagged", help="Approve every image still to review of the products that need no eyes (not "
                "flagged by the fidelity check, channel-ready, made from their photo, not redone); decisions "
                "made stay. Spot-check a sample on the review page first.")] = False,
            user: UserOption = None) -> None:
    """Approve images: once any image of a batch is reviewed, shop exports carry approved images only.

    Example: csvjobs approve 3f0c... --rows 1-4,9 --style white   (or --unflagged: review by exception)
    """
    if not unflagged:
        _review(ctx, batch, rows, style, user, "approve")
        return
    from csvjobs.operate.review import approve_unflagged

    if rows is not None or style is not None:
        raise InputError("--unflagged approves every image that needs no eyes: leave out --rows and --style")
    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    result = approve_unflagged(_settings(ctx, user), batch_id)
    out.print(f"{result.changed} image(s) of {batch_id} that need no eyes approved; {result.needs_eyes} "
              f"product(s) need your eyes (flagged, not channel-ready, photo unusable or redone): "
              f"`csvjobs review {str(batch_id)[:8]}` shows them under \"needs eyes\"")


@app.command()
def reject(ctx: typer.Context, batch: BatchArgument, rows: RowsOption = None, style: StyleOption = None,
           user: UserOption = None) -> None:
    """Reject images (they stay, as versions, but shop exports leave them out).

    Example: csvjobs reject 3f0c... --rows 7 --style lifestyle
    """
    _review(ctx, batch, rows, style, user, "reject")


@app.command()
def regenerate(
    ctx: typer.Context,
    batch: BatchArgument,
    rows: Annotated[str | None, typer.Option("--rows", help="Row numbers and ranges, like 1-4,9.")] = None,
    style: StyleOption = None,
    note: Annotated[
        str | None, typer.Option("--note", help="What to change, added to the image's prompt, e.g. 'warmer light'.")
    ] = None,
    placeholders: Annotated[bool, typer.Option(
        "--placeholders", help="Redo exactly the batch's placeholder images (made without an OpenAI key).")] = False,
    user: UserOption = None,
) -> None:
    """Make a new version of images (the old one is kept); run `csvjobs work` to make it.

    Example: csvjobs regenerate 3f0c... --rows 3 --style lifestyle --note "warmer light, no people"
    Example: csvjobs regenerate 3f0c... --placeholders   (after setting OPENAI_API_KEY)
    """
    from csvjobs.operate.review import parse_style, regenerate_images, regenerate_placeholders

    if placeholders == (rows is not None):
        raise InputError("regenerate takes --rows ROWS (the images of those rows) or --placeholders (every "
                         "placeholder image of the batch), one of them")
    if placeholders and (style is not None or note is not None):
        raise InputError("--placeholders redoes every placeholder image as it was asked for; leave out --style "
                         "and --note, or use --rows")
    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    settings = _settings(ctx, user)
    if placeholders:
        redo = regenerate_placeholders(settings, batch_id)
    else:
        numbers = parse_rows(rows)
        assert numbers is not None
        redo = regenerate_images(settings, batch_id, numbers, parse_style(style), note)
    cost = f" (about ${redo.price_usd:.4f} of new images)" if redo.rows else ""
    nothing = " (it has no placeholder images)" if placeholders else " (only completed rows can be redone)"
    out.print(f"{redo.rows} row(s) of {batch_id} queued for new images{cost}" + (
        "; run `csvjobs work` (with OPENAI_API_KEY set)" if redo.rows and placeholders else
        "; run `csvjobs work`" if redo.rows else nothing) + _left_out(redo.left_out))


@app.command()
def review(
    ctx: typer.Context,
    batch: BatchArgument,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default: a free one).")] = None,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the URL without opening a browser.")] = False,
    user: UserOption = None,
) -> None:
    """Open a local page to review a batch: approve, reject, redo images with a note; live while workers run.

    Example: csvjobs review 3f0c...   (then j/k to move, a approve, r reject, g redo)
    """
    import webbrowser

    from csvjobs.operate.review_app import prepare, serve

    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    server = prepare(_settings(ctx, user), batch_id, port)
    out.print(f"reviewing batch {batch_id} at {server.url}  (Ctrl-C to stop)")
    out.file.flush()
    if not no_browser:
        webbrowser.open(server.url)
    serve(server)


@app.command()
def cancel(ctx: typer.Context, batch: BatchArgument, user: UserOption = None) -> None:
    """Stop a batch: pending rows are not handed out; rows in flight finish.

    Example: csvjobs cancel 3f0c...
    """
    _state_command(ctx, batch, user, "cancel")


@app.command()
def pause(ctx: typer.Context, batch: BatchArgument, user: UserOption = None) -> None:
    """Pause a batch: no new rows are handed out until `csvjobs resume`.

    Example: csvjobs pause 3f0c...
    """
    _state_command(ctx, batch, user, "pause")


@app.command()
def resume(
    ctx: typer.Context,
    batch: BatchArgument,
    user: UserOption = None,
    max_cost: Annotated[
        float | None,
        typer.Option("--max-cost", min=0, help="A new budget in USD (for a batch its budget paused)."),
    ] = None,
) -> None:
    """Resume a paused batch (one its budget paused: with a higher --max-cost).

    Example: csvjobs resume 3f0c... --max-cost 25
    """
    _state_command(ctx, batch, user, "resume", max_cost)


@app.command()
def export(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="csv, jsonl, html (a self-contained gallery), or shopify / woocommerce (a "
                     "file the shop's product importer takes, adding the images to your products)."),
    ] = "csv",
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Shop formats: the public URL your storage is served under (default: "
                     "CSVJOBS_PUBLIC_BASE_URL, else presigned S3 URLs)."),
    ] = None,
    handle_column: Annotated[
        str | None,
        typer.Option("--handle-column", help="Shopify: the source column holding each product's handle (default: "
                     "Handle in a Shopify export, else a handle derived from the title)."),
    ] = None,
    all_images: Annotated[
        bool, typer.Option("--all", help="Shop formats: every current image, even after a review (default: once "
                           "any image is reviewed, approved images only).")
    ] = False,
    replace_images: Annotated[
        bool, typer.Option("--replace-images", help="Shop formats: write the file even though the source did not "
                           "list the shop's current images, accepting that the import replaces them.")
    ] = False,
    include_placeholders: Annotated[
        bool, typer.Option("--include-placeholders", help="Shop formats: let the offline provider's placeholder "
                           "images into the file (refused by default).")
    ] = False,
    variant_images: Annotated[
        bool, typer.Option("--variant-images/--no-variant-images", help="Shop formats: set each variant's image "
                           "to its new white image (lists every variant as the source export lists them). "
                           "Default: off, so no variant is touched.")
    ] = False,
    require_photo: Annotated[
        bool, typer.Option("--require-photo", help="Shop formats: leave out rows whose images were made without "
                           "the product's photo.")
    ] = False,
    user: UserOption = None,
) -> None:
    """Export a batch: every row with its prompts, images, tags, status and error, or a shop import file.

    Example: csvjobs export 3f0c... --format shopify -o images.csv   (or --format html -o gallery.html)
    """
    from csvjobs.operate.export import SHOP_FORMATS, export_batch
    from csvjobs.shops.export import ShopExportOptions, export_shop_file

    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    shop = ShopExportOptions(handle_column=handle_column, replace_images=replace_images,
                             include_placeholders=include_placeholders, variant_images=variant_images,
                             require_photo=require_photo)
    if fmt in SHOP_FORMATS:
        report = export_shop_file(_settings(ctx, user), batch_id, fmt, output, sys.stdout, base_url=base_url,
                                  options=shop, all_images=all_images)
    else:
        if shop != ShopExportOptions():
            raise InputError("--handle-column, --replace-images, --include-placeholders, --variant-images and "
                             "--require-photo are for --format shopify and woocommerce")
        report = export_batch(_settings(ctx, user), batch_id, fmt, output, sys.stdout)
    if output is not None:
        err.print(f"wrote {report.count} {report.what} to {output}")
    for note in report.notes:
        err.print(note)


StoreOption = Annotated[str, typer.Option("--store", help="The shop's address: NAME.myshopify.com (Shopify) or "
                                           "the site's URL (WooCommerce).")]
CredentialsOption = Annotated[Path | None, typer.Option(
    "--credentials-file", help="A file of KEY=VALUE lines holding the credentials (default: the environment).")]
PushAllOption = Annotated[bool, typer.Option(
    "--all", help="Every current image, even after a review (default: once any image is reviewed, approved only).")]
DryRunOption = Annotated[bool, typer.Option(
    "--dry-run", help="List per product what would be added; asks no shop and changes nothing.")]
ReplaceOption = Annotated[bool, typer.Option(
    "--replace-pushed", help="Push an image regenerated since it was pushed, taking off the earlier version "
    "csvjobs added (and nothing else).")]
RequirePhotoOption = Annotated[bool, typer.Option(
    "--require-photo", help="Leave out rows whose images were made without the product's photo.")]


@push_app.command("shopify")
def push_shopify(
    ctx: typer.Context,
    batch: BatchArgument,
    store: StoreOption,
    credentials_file: CredentialsOption = None,
    all_images: PushAllOption = False,
    dry_run: DryRunOption = False,
    replace_pushed: ReplaceOption = False,
    require_photo: RequirePhotoOption = False,
    handle_column: Annotated[str | None, typer.Option(
        "--handle-column", help="The source column holding each product's handle (default: the Shopify export's "
        "handle, else one derived from the title).")] = None,
    as_json: JsonOption = False,
    user: UserOption = None,
) -> None:
    """Add a batch's images to the Shopify store's products (matched by handle), each once, with alt text.

    Credentials: SHOPIFY_ACCESS_TOKEN (an Admin API token with write_products and write_files).
    Example: csvjobs push shopify 3f0c... --store my-shop.myshopify.com
    """
    from csvjobs.shops.push import PushOptions

    _push(ctx, batch, user, as_json, PushOptions(
        shop="shopify", store=store, credentials_file=credentials_file, all_images=all_images, dry_run=dry_run,
        replace_pushed=replace_pushed, require_photo=require_photo, handle_column=handle_column))


@push_app.command("woocommerce")
def push_woocommerce(
    ctx: typer.Context,
    batch: BatchArgument,
    store: StoreOption,
    credentials_file: CredentialsOption = None,
    all_images: PushAllOption = False,
    dry_run: DryRunOption = False,
    replace_pushed: ReplaceOption = False,
    require_photo: RequirePhotoOption = False,
    variant_images: Annotated[bool, typer.Option(
        "--variant-images/--no-variant-images", help="Set each variation's own image to its new white image "
        "(default: off; a variation's images go to its parent's gallery).")] = False,
    as_json: JsonOption = False,
    user: UserOption = None,
) -> None:
    """Add a batch's images to the WooCommerce shop's products (matched by ID, else SKU), each once, with alt text.

    Credentials: WOOCOMMERCE_USER and WOOCOMMERCE_APP_PASSWORD (a WordPress application password).
    Example: csvjobs push woocommerce 3f0c... --store https://shop.example.com
    """
    from csvjobs.shops.push import PushOptions

    _push(ctx, batch, user, as_json, PushOptions(
        shop="woocommerce", store=store, credentials_file=credentials_file, all_images=all_images, dry_run=dry_run,
        replace_pushed=replace_pushed, require_photo=require_photo, variant_images=variant_images))


def _push(ctx: typer.Context, batch: str, user: str | None, as_json: bool, options: Any) -> None:
    """Run a push with a progress bar, then print its summary (or JSON); exit 1 when anything failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from csvjobs.shops.push import push_batch

    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    progress = Progress(TextColumn("pushing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=as_json or not err.is_terminal)
    task = progress.add_task("push", total=None)

    def advance(_outcome: Any, total: int) -> None:
        progress.update(task, total=total, advance=1)

    with progress:
        report = push_batch(_settings(ctx, user), batch_id, options, on_product=advance)
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        for outcome in report.outcomes:
            if report.dry_run and outcome.would_add:
                out.print(f"{outcome.product}: would add {len(outcome.would_add)} image(s): "
                          f"{', '.join(outcome.would_add)}")
            for problem in outcome.errors:
                err.print(Text(f"{outcome.product}: {problem}", style="red"))
        for note in report.notes:
            err.print(note)
        if report.dry_run:
            would = sum(len(o.would_add) for o in report.outcomes)
            out.print(f"dry run: {would} image(s) would be added to {report.products} product(s) at {report.store}; "
                      f"{report.already_pushed} already pushed; nothing was sent")
        else:
            out.print(f"pushed to {report.store}: {report.products} product(s), {report.images_added} image(s) "
                      f"added, {report.already_pushed} already there, {report.replaced} replaced, "
                      f"{report.held_back} changed since pushed (--replace-pushed sends them), {report.failed} "
                      f"failed; {report.method}; {report.requests} request(s), {report.throttled} throttled, "
                      f"{report.seconds:.1f}s")
    if not report.ok:
        raise typer.Exit(1)


# --- entry point ----------------------------------------------------------------------------------------------


def main(args: list[str] | None = None) -> None:
    """Run the CLI: user mistakes become one red line and exit code 2, never a traceback."""
    try:
        app(args=args)
    except CsvJobsError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)


def _fail(message: str, code: int) -> NoReturn:
    first, _, rest = message.partition("\n")
    err.print(Text.assemble(("error: ", "bold red"), (first, "red")))
    if rest:
        err.print(Text(rest))
    sys.exit(code)
