"""The csvjobs command line: each command parses options, calls one core function and renders the result. The
commands live by group in this package's modules; importing them registers them on the app, in the order --help
lists them (the order of a batch's life: in, worked, decided, out), so the imports below keep that order."""

from csvjobs.cli.common import app, main, parse_rows

# isort: split
from csvjobs.cli import batch  # noqa: F401

# isort: split
from csvjobs.cli import work  # noqa: F401

# isort: split
from csvjobs.cli import review  # noqa: F401

# isort: split
from csvjobs.cli import shop  # noqa: F401

# isort: split
from csvjobs.cli import admin  # noqa: F401

__all__ = ["app", "main", "parse_rows"]
