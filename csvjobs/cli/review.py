"""Commands that decide on images and batches: approve, reject, regenerate, review, cancel, pause, resume."""

from __future__ import annotations

from typing import Annotated

import typer

from csvjobs.cli.common import (
    BatchArgument,
    UserOption,
    _batch_id,
    _settings,
    app,
    err,
    out,
    parse_rows,
)
from csvjobs.errors import InputError


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
                "flagged by the fidelity check, channel-ready, no placeholder, made from their photo, not redone); "
                "decisions made stay. Spot-check a sample on the review page first.")] = False,
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
              f"product(s) need your eyes (flagged, not channel-ready, placeholders, photo unusable or redone): "
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
