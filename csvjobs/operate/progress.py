"""Rendering progress: the upload bar, the upload report, and the batch progress table (live or plain)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.ingest.upload import UploadReport
from csvjobs.models import BatchProgress, OpenAIBatchInfo, ProcessingMode, RunSummary, SubmissionState
from csvjobs.operate import queries
from csvjobs.users import resolve_user_id


@contextlib.contextmanager
def upload_progress(enabled: bool, console: Console) -> Iterator[Callable[[int, int], None] | None]:
    """A byte progress bar for uploads that take more than a moment (only on a terminal)."""
    if not enabled:
        yield None
        return
    bar = Progress(
        TextColumn("uploading"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), console=console,
        transient=True,
    )
    task = bar.add_task("upload", total=None)
    started = time.monotonic()
    shown = False

    def on_progress(done: int, total: int) -> None:
        nonlocal shown
        if not shown and time.monotonic() - started > 0.5:
            bar.start()
            shown = True
        bar.update(task, completed=done, total=total)

    try:
        yield on_progress
    finally:
        if shown:
            bar.stop()


def render_run_summary(console: Console, summary: RunSummary) -> None:
    """The bill at the end of `csvjobs work`: rows, images (each once: generated, cut out or reused), image calls
    paid, cost, time, what is left."""
    images = summary.images_generated + summary.images_cut_out + summary.images_reused
    console.print(Text(
        f"done in {summary.seconds:.0f}s: {summary.completed} row(s) completed, {summary.failed} failed, "
        f"{summary.left} left; images: {summary.images_generated} generated, {summary.images_cut_out} cut out of "
        f"product photos, {summary.images_reused} reused from look-alike rows ({images} in all); "
        f"{summary.images_paid} image call(s) paid for ({summary.image_redos_paid} redo(s)); "
        f"cost ${summary.cost_usd:.4f}",
        style="bold"))
    for batch, reason in summary.paused.items():
        console.print(Text(f"batch {batch[:8]} is paused: {reason}", style="yellow"))
    for batch, images in summary.placeholders.items():
        console.print(Text(f"batch {batch[:8]}: {placeholder_note(batch, images)}", style="yellow"))


def placeholder_note(batch: str, images: int) -> str:
    """What placeholder images are and the way out, said the same everywhere."""
    return (f"{images} placeholder image(s), made without an OpenAI key: they do not show your product; set "
            f"OPENAI_API_KEY, then run `csvjobs regenerate {batch[:8]} --placeholders` and `csvjobs work`")


def render_upload_report(out: Console, err: Console, report: UploadReport) -> None:
    """Tell the user what the upload did and what to run next."""
    mapped = ", ".join(f"{k} <- {v}" for k, v in report.mapped_columns.items())
    if report.dry_run:
        out.print(Text(f"dry run: {report.total_rows} row(s) would be created; nothing was written"))
        out.print(Text(f"format: {report.format.label}; preset: {report.preset}"))
        out.print(Text(f"mapped columns: {mapped}"))
        for text in report.sample_trigger_texts:
            out.print(Text(f"  trigger: {text[:160]}"))
        if report.estimated_cost_usd is not None:
            out.print(Text(f"estimated OpenAI cost: ${report.estimated_standard_cost_usd or 0:.2f} row by row, "
                           f"${report.estimated_batch_cost_usd or 0:.2f} through OpenAI's Batch API "
                           f"(--openai-batch: half the price, within 24 hours) ({report.cost_basis})"))
    else:
        out.print(Text(f"batch {report.batch_id}: {report.total_rows} row(s) queued", style="bold green"))
        if report.processing_mode is ProcessingMode.OPENAI_BATCH:
            out.print(Text("processing: through OpenAI's Batch API (half the price; results within 24 hours); "
                           "`csvjobs work` submits the rows and collects the results"))
        out.print(Text(f"format: {report.format.label}; preset: {report.preset}; mapped: {mapped}"))
        out.print(Text(f"stored as {report.storage_path}"))
        if report.estimated_cost_usd is not None:
            budget = (f"; budget ${report.max_cost_usd:.2f} (the batch pauses rather than spend more)"
                      if report.max_cost_usd is not None else "; no budget (upload --max-cost sets one)")
            span = (f" (between ${report.estimated_cost_low_usd:.2f} and ${report.estimated_cost_high_usd:.2f})"
                    if report.estimated_cost_low_usd is not None and report.estimated_cost_high_usd is not None
                    and report.estimated_cost_high_usd > report.estimated_cost_low_usd else "")
            out.print(Text(f"estimated OpenAI cost: ${report.estimated_cost_usd:.2f}{span}{budget} "
                           f"({report.cost_basis})"))
    if report.language:
        country = (f"; country {report.country_from_language} for every row, from the language's region (the file "
                   "has no country column; --country sets another)" if report.country_from_language else "")
        extra = f"; alt text also in {', '.join(report.alt_languages)}" if report.alt_languages else ""
        out.print(Text(f"language: {report.language_line}{country}{extra}"))
    out.print(Text(_photo_line(report)))
    if report.reused_rows:
        out.print(Text(f"variants: {report.reused_rows} row(s) look like an earlier row of their product (same photo "
                       "and colour, material or pattern; only size or the like differs) and will reuse its images "
                       "at no cost (--per-variant makes images for every row)"))
    if report.skipped_rows:
        err.print(Text(left_out_line(report), style="yellow"))
        for error in report.errors:
            err.print(Text(f"  {error}", style="yellow"))
        more = report.error_count - len(report.errors)
        if more > 0:
            err.print(Text(f"  ... and {more} more", style="yellow"))
    if not report.dry_run and report.total_rows:
        out.print(Text(f"next: csvjobs work --until-done   then: csvjobs progress {report.batch_id}"))


def left_out_line(report: UploadReport) -> str:
    """How many rows were left out, and why."""
    reasons = []
    if report.image_only_rows:
        numbers = ", ".join(str(n) for n in report.image_only_row_numbers)
        more = " ..." if report.image_only_rows > len(report.image_only_row_numbers) else ""
        reasons.append(f"{report.image_only_rows} image-only row(s) of a Shopify export (an extra photo of the "
                       f"product above, not a product: row(s) {numbers}{more})")
    if report.error_count:
        reasons.append(f"{report.error_count} invalid row(s) (--skip-invalid), listed below")
    return f"{report.skipped_rows} row(s) left out: " + "; ".join(reasons) if reasons else \
        f"{report.skipped_rows} row(s) left out"


def _photo_line(report: UploadReport) -> str:
    if not report.photo_column:
        return ("photos: none (no Image Src, Images, image_url, image, image_src or photo column; --map "
                "image_url=HEADER names one): images are made from the text alone")
    stored = f", {report.local_photos} file(s) beside the CSV stored with the batch" if report.local_photos else ""
    if not report.photo_rows:
        return (f"photos: none of the {report.total_rows} row(s) has one ({report.photo_column} is empty): images are "
                "made from the text alone")
    rest = report.total_rows - report.photo_rows
    made = ("both images are made from the product's photo" if not rest else
            f"both images of those rows are made from the product's photo, the other {rest} row(s)' from the text")
    return (f"photos: {report.photo_rows} of {report.total_rows} row(s) have one, from {report.photo_column}"
            f"{stored}; {made}")


def progress_json(p: BatchProgress) -> dict[str, Any]:
    """One batch's progress as JSON-ready data (the function's fields)."""
    data = p.model_dump(mode="json")
    for key in ("percentage", "rows_per_minute", "eta_seconds", "cost_usd"):
        if data.get(key) is not None:
            data[key] = float(data[key])
    return data


def _eta(p: BatchProgress) -> str:
    if p.finished:
        return "done"
    if p.eta_seconds is None:
        return "-"
    return _clock(float(p.eta_seconds))


def _clock(seconds: float) -> str:
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 60}m{whole % 60:02d}s"


def _eta_from_rate(done: int, left: int, elapsed: float | None) -> str:
    """", ETA ..." from the rate observed so far (nothing until something is done)."""
    if done <= 0 or left <= 0 or not elapsed or elapsed <= 0:
        return ""
    return f", ETA {_clock(left * elapsed / done)}"


def describe_openai_batch(info: OpenAIBatchInfo) -> str:
    """One line per OpenAI batch: rows prepared, submitted, collected and completed, what OpenAI says, and an ETA
    for the phase it is in from the rate observed in it."""
    rows = info.rows
    submitted = rows if info.openai_batch_id is not None else 0
    prepared = rows if submitted else min(info.prepared_rows, rows)
    line = (f"{info.step}: {rows} row(s), prepared {prepared}, submitted {submitted}, collected "
            f"{info.collected_rows}, completed {info.completed_rows}")
    if info.openai_batch_id is None:
        if info.state is SubmissionState.PREPARING:
            return line + " (being prepared" + _eta_from_rate(info.prepared_rows, rows - info.prepared_rows,
                                                               info.preparing_seconds) + ")"
        return line + " (being submitted to OpenAI)"
    counts = info.request_counts or {}
    total = counts.get("total", info.requests or 0)
    answered = counts.get("completed", 0) + counts.get("failed", 0)
    line += (f"; OpenAI batch {info.openai_batch_id} {info.openai_status or 'submitted'}, "
             f"{counts.get('completed', 0)}/{total} request(s) done, {counts.get('failed', 0)} failed")
    if info.collecting_seconds is not None:
        return line + " (being collected" + _eta_from_rate(info.collected_rows, rows - info.collected_rows,
                                                            info.collecting_seconds) + ")"
    return line + _eta_from_rate(answered, total - answered, info.submitted_seconds)


def _bar(p: BatchProgress, width: int = 10) -> str:
    filled = int(width * float(p.percentage) / 100)
    return "█" * filled + "░" * (width - filled)


# Columns left out first when the table is wider than the terminal, in that order.
_DROP_ORDER = ("file", "mode", "workers", "no photo", "ok", "estimate $", "in flight", "budget $", "rows/min")
_COLUMNS = ("batch", "file", "mode", "status", "progress", "done", "ok", "failed", "no photo", "in flight",
            "rows/min", "ETA", "workers", "cost $", "estimate $", "budget $")
_MODES = {ProcessingMode.SYNC: "sync", ProcessingMode.OPENAI_BATCH: "OpenAI batch"}


def progress_table(snapshots: list[BatchProgress], width: int = 140) -> Table:
    """The progress table for one or more batches: every cell whole, the least needed columns left out until it
    fits the terminal's width."""
    table = Table(title="Active Batches" if len(snapshots) != 1 else None)
    rows = [_cells(p) for p in snapshots]
    shown = list(_COLUMNS)
    for column in _DROP_ORDER:
        if _table_width(shown, rows) <= width:
            break
        shown.remove(column)
    for column in shown:
        table.add_column(column, no_wrap=True,
                         justify="right" if column not in ("batch", "file", "mode", "status", "progress") else "left")
    waiting: list[str] = []
    for p, cells in zip(snapshots, rows, strict=True):
        table.add_row(*(cells[c] for c in shown))
        waiting.extend(f"{str(p.batch_id)[:8]} {describe_openai_batch(info)}" for info in p.openai_batches)
        if p.pause_reason and p.status.value == "paused":
            waiting.append(f"{str(p.batch_id)[:8]} paused: {p.pause_reason}")
        if p.placeholder_images:
            waiting.append(f"{str(p.batch_id)[:8]} {placeholder_note(str(p.batch_id), p.placeholder_images)}")
    if waiting:
        table.caption = "\n".join(waiting)
    return table


def _table_width(columns: list[str], rows: list[dict[str, str]]) -> int:
    """The width Rich's default table takes: each column's widest cell plus two of padding, plus its borders."""
    return 1 + sum(3 + max(len(c), *(len(r[c]) for r in rows)) for c in columns)


def _cells(p: BatchProgress) -> dict[str, str]:
    return {
        "batch": str(p.batch_id)[:8], "file": p.original_filename[:30],
        "mode": _MODES.get(p.processing_mode, p.processing_mode), "status": p.status.value,
        "progress": f"{_bar(p)} {float(p.percentage):5.1f}%", "done": f"{p.processed_rows}/{p.total_rows}",
        "ok": str(p.successful_rows), "failed": str(p.failed_rows), "no photo": str(p.rows_without_photo),
        "in flight": str(p.in_flight_rows),
        "rows/min": f"{float(p.rows_per_minute):.0f}", "ETA": _eta(p), "workers": str(p.active_workers),
        "cost $": f"{float(p.cost_usd):.4f}",
        "estimate $": f"{float(p.estimated_cost_usd):.2f}" if p.estimated_cost_usd is not None else "-",
        "budget $": f"{float(p.max_cost_usd):.2f}" if p.max_cost_usd is not None else "-",
    }


def plain_line(p: BatchProgress) -> str:
    """One progress line for logs and pipes."""
    return (
        f"{p.batch_id} {p.status.value} {p.processed_rows}/{p.total_rows} ({float(p.percentage):.1f}%) "
        f"ok={p.successful_rows} failed={p.failed_rows} without_photo={p.rows_without_photo} "
        f"in_flight={p.in_flight_rows} "
        f"rate={float(p.rows_per_minute):.0f}/min eta={_eta(p)} cost=${float(p.cost_usd):.4f}"
        + (f" estimate=${float(p.estimated_cost_usd):.2f}" if p.estimated_cost_usd is not None else "")
        + (f" budget=${float(p.max_cost_usd):.2f}" if p.max_cost_usd is not None else "")
        + (f" paused: {p.pause_reason}" if p.pause_reason and p.status.value == "paused" else "")
        + (f" mode={p.processing_mode}" if p.processing_mode != "sync" else "")
        + (f"\n  {placeholder_note(str(p.batch_id), p.placeholder_images)}" if p.placeholder_images else "")
        + "".join(f"\n  {describe_openai_batch(info)}" for info in p.openai_batches)
    )


def _snapshots(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID | None) -> list[BatchProgress]:
    if batch_id is not None:
        return [queries.batch_progress(conn, user_id, batch_id)]
    return queries.active_batches_progress(conn, user_id)


def show_progress(
    settings: Settings, batch_id: uuid.UUID | None, *, watch: bool, as_json: bool, console: Console
) -> None:
    """Print progress once, or follow it (refreshing on NOTIFY) until every batch shown has ended."""
    user_id = resolve_user_id(settings)
    target, conn = db.open_database(settings, application_name="csvjobs-progress")
    with conn:
        snapshots = _snapshots(conn, user_id, batch_id)
        if as_json and not watch:
            data = [progress_json(p) for p in snapshots]
            print(json.dumps(data[0] if batch_id is not None else data))
            return
        if not snapshots:
            console.print("no active batches; `csvjobs upload FILE` starts one")
            return
        if not watch:
            _print_once(console, snapshots, as_json)
            return
        ids = [p.batch_id for p in snapshots]
        with db.connect(target, application_name="csvjobs-progress-listen") as listener:
            db.listen(listener, queries.PROGRESS_CHANNEL)
            if console.is_terminal and not as_json:
                with Live(progress_table(snapshots, console.width), console=console, refresh_per_second=4) as live:
                    final = snapshots
                    for fresh in _follow(conn, listener, user_id, ids):
                        live.update(progress_table(fresh, console.width))
                        final = fresh
                console.print(Group(*(Text(plain_line(p)) for p in final)))
            else:
                last: dict[uuid.UUID, str] = {}
                for fresh in _follow(conn, listener, user_id, ids, initial=snapshots):
                    for p in fresh:
                        line = json.dumps(progress_json(p)) if as_json else plain_line(p)
                        if last.get(p.batch_id) != line:
                            print(line, flush=True)
                            last[p.batch_id] = line


def _print_once(console: Console, snapshots: list[BatchProgress], as_json: bool) -> None:
    if console.is_terminal:
        console.print(progress_table(snapshots, console.width))
    else:
        for p in snapshots:
            print(plain_line(p))


def _follow(
    conn: db.Connection,
    listener: db.Connection,
    user_id: uuid.UUID,
    ids: list[uuid.UUID],
    initial: list[BatchProgress] | None = None,
) -> Iterator[list[BatchProgress]]:
    """Yield fresh snapshots whenever a batch changes (or every few seconds), until all have finished."""
    if initial is not None:
        yield initial
    while True:
        # Waiting on NOTIFY: no busy poll. The timeout keeps rate and ETA moving and covers a lost listener.
        for _ in listener.notifies(timeout=2.0, stop_after=1):
            pass
        snapshots = [queries.batch_progress(conn, user_id, batch) for batch in ids]
        yield snapshots
        if all(p.finished for p in snapshots):
            return


def show_batches(settings: Settings, statuses: list[str] | None, *, as_json: bool, console: Console) -> None:
    """The user's batches, newest first, with progress and failed-row counts."""
    user_id = resolve_user_id(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-batches")
    with conn:
        batches = queries.list_batches(conn, user_id, statuses)
    if as_json:
        print(json.dumps([progress_json(p) for p in batches]))
        return
    if not batches:
        console.print("no batches yet; `csvjobs upload FILE` starts one")
        return
    if console.is_terminal:
        table = progress_table(batches, console.width)
        table.title = "Batches"
        console.print(table)
    else:
        for p in batches:
            print(plain_line(p))


_LEVEL_STYLE = {"DEBUG": "dim", "INFO": "", "WARN": "yellow", "ERROR": "red", "FATAL": "bold red"}


def print_log(console: Console, entry: Any, *, as_json: bool) -> None:
    """One log row: a JSON line, or a coloured line."""
    if as_json:
        print(json.dumps(entry.model_dump(mode="json")), flush=True)
        return
    where = f" row {entry.row_number}" if entry.row_number is not None else ""
    batch = f" {str(entry.batch_id)[:8]}" if entry.batch_id else ""
    line = Text(f"{entry.created_at:%Y-%m-%d %H:%M:%S} {entry.log_level:<5}{batch}{where} {entry.operation}: "
                f"{entry.message}", style=_LEVEL_STYLE.get(entry.log_level, ""))
    console.print(line)
    console.file.flush()


def render_workers(console: Console, workers: list[Any], *, as_json: bool) -> None:
    """The Worker Health view."""
    if as_json:
        print(json.dumps([w.model_dump(mode="json") for w in workers]))
        return
    if not workers:
        console.print("no workers are running; `csvjobs work` starts some")
        return
    table = Table(title="Worker Health")
    for column in ("instance", "status", "last heartbeat", "jobs now", "processed", "failed", "dedicated to"):
        table.add_column(column)
    for w in workers:
        status = f"{w.status} (stale)" if w.stale else w.status
        scope = f"batch {str(w.batch_id)[:8]}" if w.batch_id else (f"user {str(w.user_id)[:8]}" if w.user_id else "-")
        table.add_row(w.instance_id, Text(status, style="red" if w.stale else ""),
                      f"{w.seconds_since_heartbeat:.0f}s ago", str(w.current_job_count),
                      str(w.total_jobs_processed), str(w.total_jobs_failed), scope)
    console.print(table)
