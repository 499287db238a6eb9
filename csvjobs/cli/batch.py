"""Commands that bring a file in and follow it: upload, progress, batches, cleanup, template."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from csvjobs.cli.common import (
    JsonOption,
    UserOption,
    _batch_id,
    _channels,
    _print_json,
    _settings,
    app,
    err,
    out,
)
from csvjobs.errors import InputError

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
    from csvjobs.examples import EXAMPLE_CSV
    from csvjobs.ingest.column_mapping import parse_map_options
    from csvjobs.ingest.language import alt_language_tags
    from csvjobs.ingest.upload import UploadOptions, upload_csv
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
