"""What every command shares: the Typer app and its groups, the consoles, the common options, settings and
batch ids from the command line, and the entry point that turns a user's mistake into one red line."""

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
