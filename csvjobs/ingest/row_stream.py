"""Reading an upload's rows: parse, map and validate a CSV file, collecting errors instead of stopping at the
first, and encode the valid rows for COPY. Kept apart from ingest.py, and light on imports, because a large
upload runs it in a child process (parser_process.py) that should start fast."""

from __future__ import annotations

import contextlib
import gc
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from csvjobs.errors import InputError
from csvjobs.ingest.column_mapping import ColumnMapping, RowMapper, build_mapping, normalise_header
from csvjobs.ingest.copy_encoding import SIGNATURE, TRAILER, RowEncoder
from csvjobs.ingest.csv_format import CsvReader, detect_format
from csvjobs.ingest.photos import LocalPhotos

MAX_LISTED_ERRORS = 20


class ReadOptions(BaseModel):
    """How to read a file's rows: where it is, how to map its columns, and what every row gets."""

    path: Path
    preset: str = "auto"
    column_map: dict[str, str] = {}
    country: str = ""
    delimiter: str | None = None
    encoding: str | None = None
    max_retries: int = 3
    photo_max_bytes: int = 20 * 1024 * 1024
    # Variants that look the same (see RowMapper.appearance) share the first one's images, unless per_variant.
    per_variant: bool = False
    look_words: tuple[str, ...] = ("colour", "color", "material", "pattern", "finish", "print")


NOTHING_TO_DESCRIBE = "nothing to describe: title, description and product_type are all empty"


def describable(product: dict[str, str]) -> bool:
    """Whether a mapped product has something for the pipeline to describe (a title, description or type)."""
    return bool(product["title"] or product["description"] or product["product_type"])


@dataclass
class RowError:
    """One invalid row: where and what."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.message}"


class RowStream:
    """Reads, maps and validates the rows of a file, collecting errors instead of stopping at the first."""

    def __init__(self, options: ReadOptions) -> None:
        self.options = options
        self.format = detect_format(options.path, options.delimiter, options.encoding)
        self.reader = CsvReader(options.path, self.format)
        self.errors: list[RowError] = []
        self.error_count = 0
        self.skipped_rows = 0
        # Shopify's image-only rows (an extra photo of the product above): left out, their numbers kept to say so.
        self.image_only_rows: list[int] = []
        self.headers: list[str] = []
        self.mapping: ColumnMapping | None = None
        self.photos = LocalPhotos(options.path, options.photo_max_bytes)
        self.photo_rows = 0
        self.reused_rows = 0
        self.reused_photo_rows = 0
        self._first_row_of_look: dict[str, int] = {}

    def __enter__(self) -> RowStream:
        self.reader.__enter__()
        self._read_header()
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.__exit__(*exc)

    def _read_header(self) -> None:
        path = self.options.path
        for _line, values in self.reader.records():
            if any(v.strip() for v in values):
                self.headers = [h.replace("\ufeff", "").strip() for h in values]
                break
        else:
            raise InputError(f"{path}: the file has no header row and no data; it looks empty")
        seen: dict[str, int] = {}
        for position, header in enumerate(self.headers, start=1):
            if not header:
                continue
            key = normalise_header(header)
            if key in seen:
                raise InputError(
                    f"{path}, line 1: duplicate column name {header!r} (columns {seen[key]} and {position}); "
                    "rename one of them so every column has its own name"
                )
            seen[key] = position
        self.mapping = build_mapping(self.headers, self.options.preset, self.options.column_map)
        self._mapper = RowMapper(self.mapping, self.options.country.strip())
        self._photo_column = self.mapping.describe().get("image_url", "")
        self._share_looks = not self.options.per_variant and self.mapping.preset in ("shopify", "woocommerce")
        self._row_number = 0
        self._saw_data = False

    def _reject(self, line: int, column: str, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(RowError(line, column, message))

    def products(self) -> Iterator[tuple[int, list[str], dict[str, str]]]:
        """(row number, values, mapped product) of every valid row in file order; invalid rows are recorded in
        errors and left out."""
        for starts, rows in self.reader.chunks():
            yield from self._valid_rows(starts, rows)
        self._check_saw_data()

    def copy_data(
        self, batch_id: uuid.UUID, max_retries: int, *, chunked: bool = True, rows_per_chunk: int = 1000
    ) -> Iterator[bytes]:
        """The valid rows as binary COPY data for COPY_SQL, signature and trailer included, in chunks.

        chunked=False encodes every row on its own, which encode_chunk must match byte for byte; tests use it.
        """
        assert self.mapping is not None
        encoder = RowEncoder(self.mapping, batch_id, max_retries, self.options.country.strip())
        encode = encoder.encode
        yield SIGNATURE
        for starts, rows in self.reader.chunks(rows_per_chunk):
            data = encoder.encode_chunk(rows, self._row_number + 1) if chunked else None
            if data is not None:
                self._row_number += len(rows)
                self._saw_data = True
            else:
                data = b"".join([encode(number, values, product)
                                 for number, values, product in self._valid_rows(starts, rows)])
            if data:
                yield data
        self._check_saw_data()
        yield TRAILER

    def _valid_rows(self, starts: list[int], rows: list[list[str]]) -> Iterator[tuple[int, list[str], dict[str, str]]]:
        map_row = self._mapper.map
        image_row = self._mapper.is_shopify_image_row if self._mapper.mapping.preset == "shopify" else None
        width = len(self.headers)
        for line, values in zip(starts, rows, strict=True):
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # blank line
            self._saw_data = True
            self._row_number += 1
            if len(values) != width:
                self._reject(
                    line,
                    "",
                    f"has {len(values)} fields but the header has {width}; a delimiter or quote is probably "
                    "missing or extra on this line",
                )
                continue
            if image_row is not None and image_row(values):
                self.skipped_rows += 1
                if len(self.image_only_rows) < MAX_LISTED_ERRORS:
                    self.image_only_rows.append(self._row_number)
                continue
            product = map_row(values)
            # A plain rule rather than a pydantic model per row: a model costs a third of a large upload's time.
            if not describable(product):
                self._reject(line, "", NOTHING_TO_DESCRIBE)
                continue
            photo = product["image_url"]
            if photo:
                problem = self.photos.check(photo)
                if problem is not None:
                    self._reject(line, self._photo_column, problem)
                    continue
                self.photo_rows += 1
            if self._share_looks:
                key = self._mapper.appearance(values, product, self.options.look_words)
                if key is not None:
                    first = self._first_row_of_look.setdefault(key, self._row_number)
                    if first != self._row_number:
                        product["reuses_row"] = str(first)
                        self.reused_rows += 1
                        self.reused_photo_rows += 1 if photo else 0
            yield self._row_number, values, product

    def text_sample(self, rows: int = 200) -> tuple[list[str], bool]:
        """The titles and descriptions of the first valid rows (what the products' language is read from), and
        whether the file maps a country column. Reads the file from its start again; this stream is spent."""
        texts: list[str] = []
        for number, (_row, _values, product) in enumerate(self.products(), start=1):
            texts.extend((product.get("title") or "", product.get("description") or ""))
            if number >= rows:
                break
        assert self.mapping is not None
        return texts, "country" in self.mapping.describe()

    def _check_saw_data(self) -> None:
        if not self._saw_data:
            raise InputError(
                f"{self.options.path}: the file has a header row but no data rows; add at least one product"
            )

    def absorb(self, summary: dict[str, Any]) -> None:
        """Take over the errors and counts of the same file parsed in a child process (see parser_process.py)."""
        self.errors = [RowError(*error) for error in summary["errors"]]
        self.error_count = summary["error_count"]
        self.skipped_rows = summary["skipped_rows"]
        self.image_only_rows = list(summary["image_only_rows"])
        self.photo_rows = summary["photo_rows"]
        self.photos.files = dict(summary["photos"])
        self.reused_rows = summary["reused_rows"]
        self.reused_photo_rows = summary["reused_photo_rows"]

    @property
    def photo_column(self) -> str:
        """The column the rows' photos came from ("" when none)."""
        return self._photo_column


def copy_in_child(
    options: ReadOptions, batch_id: uuid.UUID
) -> Generator[tuple[bytes, int], None, dict[str, Any]]:
    """The parser process's work: (COPY data, bytes read) for the whole file, then its errors and counts."""
    with RowStream(options) as stream, collector_paused():
        for chunk in stream.copy_data(batch_id, options.max_retries):
            yield chunk, stream.reader.position
        return {
            "errors": [(e.line, e.column, e.message) for e in stream.errors],
            "error_count": stream.error_count,
            "skipped_rows": stream.skipped_rows,
            "image_only_rows": stream.image_only_rows,
            "photo_rows": stream.photo_rows,
            "photos": stream.photos.files,
            "reused_rows": stream.reused_rows,
            "reused_photo_rows": stream.reused_photo_rows,
        }


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (parsing makes millions of short-lived containers but no cycles)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


