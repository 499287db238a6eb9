"""Upload: a CSV file -> validated product rows -> one batch of row jobs, streamed with COPY, all or nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError, model_validator

from csvjobs import db, pricing
from csvjobs.column_mapping import ColumnMapping, RowMapper, build_mapping, normalise_header, trigger_text
from csvjobs.config import Settings
from csvjobs.csv_format import CsvFormat, CsvReader, detect_format
from csvjobs.errors import InputError
from csvjobs.models import ProductRow
from csvjobs.storage import UPLOADS_BUCKET, open_storage, safe_filename
from csvjobs.users import resolve_user_id

MAX_LISTED_ERRORS = 20


class UploadOptions(BaseModel):
    """What `csvjobs upload` was asked to do."""

    path: Path
    user_id: uuid.UUID | None = None
    preset: str = "auto"
    column_map: dict[str, str] = {}
    country: str = ""
    max_concurrent_jobs: int = 4
    skip_invalid: bool = False
    dry_run: bool = False
    delimiter: str | None = None
    encoding: str | None = None
    max_retries: int = 3

    @model_validator(mode="after")
    def _check(self) -> UploadOptions:
        if self.max_concurrent_jobs < 1:
            raise ValueError("--max-concurrent-jobs must be at least 1")
        return self


class ValidProduct(ProductRow):
    """A product row that passed validation: it has something to describe."""

    @model_validator(mode="after")
    def _describable(self) -> ValidProduct:
        if not (self.title or self.description or self.product_type):
            raise ValueError("nothing to describe: title, description and product_type are all empty")
        return self


@dataclass
class RowError:
    """One invalid row: where and what."""

    line: int
    column: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.message}"


@dataclass
class UploadReport:
    """What an upload created (or, with --dry-run, would create)."""

    batch_id: uuid.UUID | None
    total_rows: int
    skipped_rows: int
    status: str
    storage_path: str | None
    format: CsvFormat
    preset: str
    mapped_columns: dict[str, str]
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    sample_trigger_texts: list[str] = field(default_factory=list)
    dry_run: bool = False
    estimated_cost_usd: float | None = None
    cost_basis: str = ""

    def as_json(self) -> dict[str, Any]:
        """The --json shape."""
        return {
            "batch_id": str(self.batch_id) if self.batch_id else None,
            "total_rows": self.total_rows,
            "skipped_rows": self.skipped_rows,
            "status": self.status,
            "storage_path": self.storage_path,
        }


@dataclass
class PreparedRow:
    """A validated row ready for COPY."""

    row_number: int
    row_data: str
    product: str
    trigger_text: str


class RowStream:
    """Reads, maps and validates the rows of a file, collecting errors instead of stopping at the first."""

    def __init__(self, options: UploadOptions) -> None:
        self.options = options
        self.format = detect_format(options.path, options.delimiter, options.encoding)
        self.reader = CsvReader(options.path, self.format)
        self.errors: list[RowError] = []
        self.error_count = 0
        self.skipped_rows = 0
        self.headers: list[str] = []
        self.mapping: ColumnMapping | None = None

    def __enter__(self) -> RowStream:
        self.reader.__enter__()
        self._records = self.reader.records()
        self._read_header()
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.__exit__(*exc)

    def _read_header(self) -> None:
        path = self.options.path
        for record in self._records:
            if any(v.strip() for v in record.values):
                self.headers = [h.replace("\ufeff", "").strip() for h in record.values]
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

    def _reject(self, line: int, column: str, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_LISTED_ERRORS:
            self.errors.append(RowError(line, column, message))

    def rows(self) -> Iterator[PreparedRow]:
        """Valid rows in file order; invalid ones are recorded in errors and left out."""
        assert self.mapping is not None
        mapper = RowMapper(self.mapping, self.options.country.strip())
        headers = self.headers
        width = len(headers)
        # orjson: the two JSON documents per row are most of upload's Python time with the stdlib encoder.
        dumps = orjson.dumps
        validate = ValidProduct.model_validate
        row_number = 0
        saw_data = False
        for record in self._records:
            values = record.values
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # blank line
            saw_data = True
            row_number += 1
            if len(values) != width:
                self._reject(
                    record.line,
                    "",
                    f"has {len(values)} fields but the header has {width}; a delimiter or quote is probably "
                    "missing or extra on this line",
                )
                continue
            if mapper.is_shopify_image_row(values):
                self.skipped_rows += 1
                continue
            product = mapper.map(values)
            try:
                validate(product)
            except ValidationError as exc:
                for problem in exc.errors():
                    column = self._column_of(str(problem["loc"][0])) if problem["loc"] else ""
                    self._reject(record.line, column, str(problem["msg"]).removeprefix("Value error, "))
                continue
            yield PreparedRow(
                row_number,
                dumps(dict(zip(headers, values, strict=True))).decode(),
                dumps(product).decode(),
                trigger_text(product),
            )
        if not saw_data:
            raise InputError(
                f"{self.options.path}: the file has a header row but no data rows; add at least one product"
            )

    def report(
        self, batch_id: uuid.UUID | None, total: int, status: str, storage_path: str | None, **extra: Any
    ) -> UploadReport:
        """What this stream produced, as an UploadReport."""
        assert self.mapping is not None
        return UploadReport(
            batch_id=batch_id,
            total_rows=total,
            skipped_rows=self.skipped_rows + self.error_count,
            status=status,
            storage_path=storage_path,
            format=self.format,
            preset=self.mapping.preset,
            mapped_columns=self.mapping.describe(),
            errors=self.errors,
            error_count=self.error_count,
            **extra,
        )

    def _column_of(self, field_name: str) -> str:
        assert self.mapping is not None
        sources = self.mapping.sources.get(field_name, [])
        return self.headers[sources[0]] if sources else field_name

def rejection(path: Path, errors: list[RowError], error_count: int) -> InputError:
    """The error that rejects a whole upload, listing the first invalid rows and counting the rest."""
    lines = "\n  ".join(str(e) for e in errors)
    more = error_count - len(errors)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return InputError(
        f"{path}: {error_count} invalid row(s); nothing was uploaded. Fix them, or pass --skip-invalid to "
        f"upload only the valid rows:\n  {lines}{tail}"
    )


def preview_upload(options: UploadOptions, samples: int = 5, settings: Settings | None = None) -> UploadReport:
    """--dry-run: parse, map and validate everything; write nothing."""
    with RowStream(options) as stream:
        total = 0
        texts: list[str] = []
        for row in stream.rows():
            total += 1
            if len(texts) < samples:
                texts.append(row.trigger_text)
        assert stream.mapping is not None
        estimate, basis = None, ""
        if settings is not None:
            per_row = pricing.row_estimate(settings.prompt_model, settings.image_model, settings.image_size,
                                           settings.image_quality)
            estimate = round(per_row * total, 4)
            basis = (f"{total} rows x ${per_row:.4f}: one {settings.prompt_model} call and two "
                     f"{settings.image_model} {settings.image_size} {settings.image_quality} images per row")
            if not pricing.is_priced(settings.prompt_model, settings.image_model):
                basis += " (a model is missing from the price table: counted as free)"
        return stream.report(None, total, "dry-run", None, estimated_cost_usd=estimate, cost_basis=basis,
                             sample_trigger_texts=texts, dry_run=True)


ProgressCallback = Callable[[int, int], None]


def upload_csv(settings: Settings, options: UploadOptions, progress: ProgressCallback | None = None) -> UploadReport:
    """Store the file, create the batch and its row jobs, and queue it; on any failure nothing remains."""
    if options.dry_run:
        report = preview_upload(options, settings=settings)
        if report.error_count and not options.skip_invalid:
            raise rejection(options.path, report.errors, report.error_count)
        return report
    user_id = options.user_id or resolve_user_id(settings)
    with RowStream(options) as stream:
        assert stream.mapping is not None
        storage = open_storage(settings)
        storage.check()
        _target, conn = db.open_database(settings, application_name="csvjobs-upload")
        batch_id = uuid.uuid4()
        original = options.path.name
        key = f"{user_id}/{batch_id}-{safe_filename(original)}"
        storage_path: str | None = None
        try:
            storage_path = storage.put_file(UPLOADS_BUCKET, key, options.path)
            total = _write_batch(conn, stream, options, user_id, batch_id, storage_path, progress)
        except BaseException:
            if storage_path is not None:
                storage.delete(storage_path)
            raise
        finally:
            conn.close()
        return stream.report(batch_id, total, "queued" if total else "completed", storage_path)


def _write_batch(
    conn: db.Connection,
    stream: RowStream,
    options: UploadOptions,
    user_id: uuid.UUID,
    batch_id: uuid.UUID,
    storage_path: str,
    progress: ProgressCallback | None,
) -> int:
    assert stream.mapping is not None
    size = options.path.stat().st_size
    batch = str(batch_id)
    retries = options.max_retries
    try:
        with db.user_transaction(conn, user_id):
            # As the user: row-level security checks that the batch is theirs.
            conn.execute(
                "INSERT INTO csv_batches (id, user_id, filename, original_filename, csv_headers, storage_path,"
                " max_concurrent_jobs, column_mapping) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    batch_id,
                    user_id,
                    storage_path.rsplit("/", 1)[-1],
                    options.path.name,
                    stream.headers,
                    storage_path,
                    options.max_concurrent_jobs,
                    json.dumps({"preset": stream.mapping.preset, "fields": stream.mapping.describe()}),
                ],
            )
            # As the service role for the bulk write: COPY cannot run under row-level security, and every row
            # written here belongs to the batch just created as the user.
            db.become_service_role(conn)
            count = 0
            cursor = conn.cursor()
            # The queued writer sends data from a thread, so parsing the next rows overlaps the server's work.
            with cursor.copy(
                "COPY csv_row_jobs (batch_id, row_number, row_data, product, trigger_text, max_retries) FROM STDIN",
                writer=db.background_copy_writer(cursor),
            ) as copy:
                write = copy.write_row
                for row in stream.rows():
                    write((batch, row.row_number, row.row_data, row.product, row.trigger_text, retries))
                    count += 1
                    if progress is not None and count % 20_000 == 0:
                        progress(stream.reader.position, size)
            if stream.error_count and not options.skip_invalid:
                raise rejection(options.path, stream.errors, stream.error_count)
            conn.execute(
                "SELECT queue_csv_batch(%s::uuid, %s::integer, %s::integer)",
                [batch_id, count, stream.skipped_rows + stream.error_count],
            )
            if progress is not None:
                progress(size, size)
            return count
    except db.PsycopgError as exc:
        raise db.translate_error(exc) from exc


