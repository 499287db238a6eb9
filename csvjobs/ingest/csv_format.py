"""Reading CSV files users really have: detect encoding and delimiter, refuse what is not CSV, stream records."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csvjobs.errors import InputError

MAX_FIELD_CHARS = 1024 * 1024
DELIMITERS = (",", ";", "\t", "|")
_CHUNK = 1024 * 1024

# Signatures of files that are often renamed to .csv by mistake.
_NOT_CSV = (
    (b"PK\x03\x04", "an Excel workbook (.xlsx) or another zip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Excel workbook (.xls)"),
    (b"%PDF", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip archive"),
)

csv.field_size_limit(MAX_FIELD_CHARS)


@dataclass(frozen=True)
class CsvFormat:
    """How to read a file: its text encoding and field delimiter."""

    encoding: str
    delimiter: str

    @property
    def label(self) -> str:
        """A short human description, e.g. "utf-8-sig, ';'"."""
        names = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}
        return f"{self.encoding}, {names.get(self.delimiter, repr(self.delimiter))}-separated"


def check_path(path: Path) -> None:
    """A clear error for a missing file, a directory or an unreadable file."""
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path (the current directory is used for relative paths)")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a CSV file; give the path of the .csv file inside it")
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror}") from exc


def detect_format(path: Path, delimiter: str | None = None, encoding: str | None = None) -> CsvFormat:
    """Detect the encoding (UTF-8 with or without BOM, UTF-16 with BOM, else Windows-1252 / Latin-1) and delimiter."""
    check_path(path)
    with path.open("rb") as f:
        head = f.read(64 * 1024)
    if not head:
        raise InputError(f"{path}: the file is empty; a CSV needs a header row and at least one data row")
    for magic, what in _NOT_CSV:
        if head.startswith(magic):
            raise InputError(
                f"{path}: this is {what}, not a CSV file; export it as CSV "
                "(in Excel: File > Save As > CSV UTF-8) and upload that"
            )
    chosen = encoding or _detect_encoding(path, head)
    try:
        codecs.lookup(chosen)
    except LookupError as exc:
        raise InputError(f"unknown encoding {chosen!r}; use a Python codec name such as utf-8 or cp1252") from exc
    if delimiter is None:
        delimiter = _detect_delimiter(head, chosen)
    elif len(delimiter) != 1:
        raise InputError(f"the delimiter must be one character, not {delimiter!r}")
    return CsvFormat(chosen, delimiter)


def _lines_before(path: Path, size: int) -> int:
    """How many line breaks the first size bytes of the file hold."""
    count = 0
    with path.open("rb") as f:
        while size > 0 and (chunk := f.read(min(_CHUNK, size))):
            count += chunk.count(b"\n")
            size -= len(chunk)
    return count


def _detect_encoding(path: Path, head: bytes) -> str:
    if head.startswith(codecs.BOM_UTF8):
        encoding = "utf-8-sig"
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    else:
        encoding = "utf-8"
    # One streamed pass over the whole file: a file can be valid UTF-8 for megabytes and then not, and a NUL
    # byte means a binary file (or UTF-16 without a BOM), which the csv module would choke on mid-way.
    # It runs before the upload starts, so it is kept to fast scans: the line number is counted only for an error,
    # and a chunk of plain ASCII (with no multi-byte character left open before it) is valid without decoding it.
    decoder = codecs.getincrementaldecoder("utf-8")()
    valid_utf8 = True
    offset = 0
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            nul = chunk.find(b"\x00")
            if nul >= 0:
                line = 1 + _lines_before(path, offset) + chunk.count(b"\n", 0, nul)
                raise InputError(
                    f"{path}, line {line}: the file contains a NUL byte, so it is binary or UTF-16 without a "
                    "byte-order mark, not a CSV text file; re-export it as CSV UTF-8"
                )
            offset += len(chunk)
            if valid_utf8 and not (chunk.isascii() and not decoder.getstate()[0]):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    valid_utf8 = False
        if valid_utf8:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                valid_utf8 = False
    if valid_utf8:
        return encoding
    # Not UTF-8: the legacy single-byte encodings spreadsheets write. Windows-1252 leaves five bytes undefined;
    # a file using them can only be Latin-1.
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            try:
                chunk.decode("cp1252")
            except UnicodeDecodeError:
                return "latin-1"
    return "cp1252"


def _detect_delimiter(head: bytes, encoding: str) -> str:
    text = head.decode(encoding, errors="ignore")
    header = _first_record(text)
    counts = {d: _count_outside_quotes(header, d) for d in DELIMITERS}
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else ","


def _first_record(text: str) -> str:
    in_quotes = False
    for i, ch in enumerate(text):
        if ch == '"':
            in_quotes = not in_quotes
        elif ch in "\r\n" and not in_quotes:
            return text[:i]
    return text


def _count_outside_quotes(line: str, delimiter: str) -> int:
    count, in_quotes = 0, False
    for ch in line:
        if ch == '"':
            in_quotes = not in_quotes
        elif ch == delimiter and not in_quotes:
            count += 1
    return count


class CsvReader:
    """Streams records of a file with a known format; errors name the file and line."""

    def __init__(self, path: Path, fmt: CsvFormat) -> None:
        self.path = path
        self.format = fmt
        self._file: io.TextIOWrapper | None = None
        self._raw: io.BufferedReader | None = None
        self._reader: Any = None  # the csv module's reader, created on first read
        self._next_line = 1

    def __enter__(self) -> CsvReader:
        self._raw = self.path.open("rb")
        self._file = io.TextIOWrapper(self._raw, encoding=self.format.encoding, newline="", errors="strict")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    @property
    def position(self) -> int:
        """Bytes consumed so far (approximate; for progress bars)."""
        if self._raw is None:
            return 0
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def records(self) -> Iterator[tuple[int, list[str]]]:
        """Every record as (the line it starts on, its values), from where reading stopped; the header comes first."""
        for starts, rows in self.chunks(1):
            yield starts[0], rows[0]

    def chunks(self, size: int = 1000) -> Iterator[tuple[list[int], list[list[str]]]]:
        """Records in lists of up to size, with the line each starts on, from where reading stopped.

        Lists rather than one record at a time, so that callers can process a thousand rows in one go.
        """
        assert self._file is not None, "use CsvReader as a context manager"
        if self._reader is None:
            self._reader = csv.reader(self._file, delimiter=self.format.delimiter, strict=True)
        reader = self._reader
        starts: list[int] = []
        rows: list[list[str]] = []
        next_line = self._next_line
        try:
            for values in reader:
                starts.append(next_line)
                rows.append(values)
                next_line = reader.line_num + 1
                if len(rows) >= size:
                    self._next_line = next_line
                    yield starts, rows
                    starts, rows = [], []
        except csv.Error as exc:
            raise InputError(self._explain(exc, next_line)) from exc
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{self.path}, near line {next_line}: cannot decode the text as {self.format.encoding}; "
                "pass --encoding with the file's real encoding"
            ) from exc
        self._next_line = next_line
        if rows:
            yield starts, rows

    def _explain(self, exc: csv.Error, line: int) -> str:
        message = str(exc)
        where = f"{self.path}, line {line}"
        if "field larger than field limit" in message:
            return (
                f"{where}: a field is larger than {MAX_FIELD_CHARS // 1024 // 1024} MiB; this usually means a "
                "quote that is never closed, or data that does not belong in a CSV cell"
            )
        if "unexpected end of data" in message or "EOF" in message:
            return (
                f"{where}: a quoted field starts here and is never closed; add the missing closing quote (\") "
                "or double the quotes inside the field (\"\")"
            )
        if "NUL" in message:
            return f"{where}: the line contains a NUL byte; the file is not CSV text"
        return f"{where}: malformed CSV ({message}); check the quoting on this line"
