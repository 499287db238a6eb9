"""Upload: a CSV file -> validated product rows -> one batch of row jobs, streamed with COPY, all or nothing."""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from csvjobs.config import Settings
from csvjobs.errors import CsvJobsError, InputError
from csvjobs.ingest import language
from csvjobs.ingest.child_producer import ChildProducer
from csvjobs.ingest.copy_encoding import COPY_SQL
from csvjobs.ingest.csv_format import CsvFormat
from csvjobs.ingest.estimate import Estimate, LearnedPrices, check_budget, estimate, learned_prices
from csvjobs.ingest.row_stream import ReadOptions, RowError, RowStream, collector_paused
from csvjobs.models import ProcessingMode, trigger_text
from csvjobs.shops.columns import woocommerce_language
from csvjobs.storage.keys import UPLOADS_BUCKET, safe_filename, uploaded_photo_key
from csvjobs.storage.registry import open_storage
from csvjobs.users import resolve_user_id

if TYPE_CHECKING:
    from csvjobs.db import Connection

__all__ = ["CHILD_PARSER_MIN_BYTES", "UploadOptions", "UploadReport", "preview_upload", "upload_csv"]

# Files at least this big are parsed in a child process while this one feeds COPY; below it, starting a process
# costs about as much as it saves.
CHILD_PARSER_MIN_BYTES = 16 * 1024 * 1024


class UploadOptions(ReadOptions):
    """What `csvjobs upload` was asked to do: how to read the file (ReadOptions), and what to make of it."""

    user_id: uuid.UUID | None = None
    max_concurrent_jobs: int = 4
    skip_invalid: bool = False
    dry_run: bool = False
    # Process the batch through OpenAI's Batch API (half the price, within 24 hours) instead of call by call.
    openai_batch: bool = False
    # The batch's budget in USD (None: none): workers pause the batch rather than spend past it.
    max_cost_usd: float | None = Field(default=None, ge=0)
    # Where the images will be sold (models.Channel values): sizes and rules for the images.
    channels: list[str] = Field(default_factory=list)
    # The language shoppers read (a BCP 47 tag; None: detect it, see ingest/language.py), and extra languages to
    # write alt text in too.
    language: str | None = None
    alt_languages: list[str] = Field(default_factory=list)

    def reading(self) -> ReadOptions:
        """What the row stream needs of these options (and all the parser process is sent)."""
        return ReadOptions.model_validate(self.model_dump(include=set(ReadOptions.model_fields)))

    @model_validator(mode="after")
    def _check(self) -> UploadOptions:
        if self.max_concurrent_jobs < 1:
            raise ValueError("--max-concurrent-jobs must be at least 1")
        return self


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
    # The range the batch's cost falls in: every photo cut out and no redo, to every white image generated and
    # every fidelity redo paid.
    estimated_cost_low_usd: float | None = None
    estimated_cost_high_usd: float | None = None
    # The same rows row by row and at OpenAI's Batch API prices (estimated_cost_usd is in the batch's own mode).
    estimated_standard_cost_usd: float | None = None
    estimated_batch_cost_usd: float | None = None
    estimated_row_cost_usd: float | None = None
    max_cost_usd: float | None = None
    processing_mode: str = "sync"
    channels: list[str] = field(default_factory=list)
    cost_basis: str = ""
    photo_column: str = ""
    photo_rows: int = 0
    local_photos: int = 0
    reused_rows: int = 0
    # Of the rows left out, Shopify's image-only rows (not products), and the first of their row numbers.
    image_only_rows: int = 0
    image_only_row_numbers: list[int] = field(default_factory=list)
    # The language csvjobs writes in for shoppers, how it was chosen, extra alt-text languages, and the country
    # its region gave the rows (when the file has none).
    language: str = ""
    language_line: str = ""
    language_source: str = ""
    alt_languages: list[str] = field(default_factory=list)
    country_from_language: str = ""

    def as_json(self) -> dict[str, Any]:
        """The --json shape."""
        return {
            "batch_id": str(self.batch_id) if self.batch_id else None,
            "total_rows": self.total_rows,
            "skipped_rows": self.skipped_rows,
            "status": self.status,
            "storage_path": self.storage_path,
            "photo_column": self.photo_column or None,
            "photo_rows": self.photo_rows,
            "reused_rows": self.reused_rows,
            "processing_mode": self.processing_mode,
            "channels": self.channels,
            "language": self.language or None,
            "language_source": self.language_source or None,
            "alt_languages": self.alt_languages,
            "country_from_language": self.country_from_language or None,
            **({"estimated_cost_usd": self.estimated_cost_usd,
                "estimated_cost_low_usd": self.estimated_cost_low_usd,
                "estimated_cost_high_usd": self.estimated_cost_high_usd,
                "estimated_standard_cost_usd": self.estimated_standard_cost_usd,
                "estimated_batch_cost_usd": self.estimated_batch_cost_usd, "cost_basis": self.cost_basis}
               if self.estimated_cost_usd is not None else {}),
            "max_cost_usd": self.max_cost_usd,
        }


def _report(stream: RowStream, batch_id: uuid.UUID | None, total: int, status: str, storage_path: str | None,
            **extra: Any) -> UploadReport:
    """What a row stream produced, as an UploadReport."""
    assert stream.mapping is not None
    return UploadReport(
        batch_id=batch_id,
        total_rows=total,
        skipped_rows=stream.skipped_rows + stream.error_count,
        image_only_rows=stream.skipped_rows,
        image_only_row_numbers=stream.image_only_rows,
        status=status,
        storage_path=storage_path,
        format=stream.format,
        preset=stream.mapping.preset,
        mapped_columns=stream.mapping.describe(),
        errors=stream.errors,
        error_count=stream.error_count,
        photo_column=stream.photo_column,
        photo_rows=stream.photo_rows,
        local_photos=len(stream.photos.files),
        reused_rows=stream.reused_rows,
        **extra,
    )


def rejection(path: Path, errors: list[RowError], error_count: int) -> InputError:
    """The error that rejects a whole upload, listing the first invalid rows and counting the rest."""
    lines = "\n  ".join(str(e) for e in errors)
    more = error_count - len(errors)
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return InputError(
        f"{path}: {error_count} invalid row(s); nothing was uploaded. Fix them, or pass --skip-invalid to "
        f"upload only the valid rows:\n  {lines}{tail}"
    )


class LanguagePlan:
    """The batch's language, known at once (the option, the settings, a localised export's headers) or being read
    from the products' text on a thread (loading the detector's model takes about a second: the upload goes on
    meanwhile, and the batch gets its language just before it is queued)."""

    def __init__(self, options: UploadOptions, settings: Settings | None, header_language: str | None,
                 texts: list[str]) -> None:
        self._alt = language.alt_language_tags(options.alt_languages)
        own = settings.language if settings else None
        self._choice: language.LanguageChoice | None = None
        self._future: concurrent.futures.Future[language.LanguageChoice] | None = None
        if options.language or own or header_language in language.WOOCOMMERCE_HEADER_TAGS:
            self._choice = language.choose(options.language, own, header_language, [])
        else:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="csvjobs-language")
            self._future = pool.submit(language.choose, None, None, None, texts)
            pool.shutdown(wait=False)

    @property
    def known(self) -> language.LanguageChoice | None:
        """The choice, when it was known at once (only such a choice can give the rows a country)."""
        return self._choice

    def result(self) -> language.LanguageChoice:
        """The choice (waiting for the text to be read, if it is being read)."""
        if self._choice is None:
            assert self._future is not None
            self._choice = self._future.result()
        return self._choice

    def alt_languages(self) -> list[str]:
        """The extra alt-text languages, the batch's own left out."""
        return [tag for tag in self._alt if tag != self.result().tag]

    def fields(self, country: str) -> dict[str, Any]:
        """The report's language fields."""
        choice = self.result()
        return {"language": choice.tag, "language_source": choice.source, "alt_languages": self.alt_languages(),
                "language_line": choice.describe(), "country_from_language": country}


def choose_language(options: UploadOptions, settings: Settings | None) -> tuple[UploadOptions, LanguagePlan, str]:
    """The batch's language (ingest/language.py) and, when the file has no country column and no --country, the
    country its region gives: the options to upload with (that country as the rows' default), the plan, and the
    country it gave ("" for none)."""
    with RowStream(options.reading()) as probe:
        assert probe.mapping is not None
        header_language = (woocommerce_language(probe.headers) if probe.mapping.preset == "woocommerce" else None)
        texts, has_country = probe.text_sample()
    plan = LanguagePlan(options, settings, header_language, texts)
    known = plan.known
    country = known.region_country if known and not options.country.strip() and not has_country else ""
    return (options.model_copy(update={"country": country}) if country else options), plan, country


def preview_upload(options: UploadOptions, samples: int = 5, settings: Settings | None = None) -> UploadReport:
    """--dry-run: parse, map and validate everything; write nothing."""
    options, plan, country = choose_language(options, settings)
    language_fields = plan.fields(country)
    with RowStream(options.reading()) as stream:
        total = 0
        texts: list[str] = []
        for _row_number, _values, product in stream.products():
            total += 1
            if len(texts) < samples:
                texts.append(trigger_text(product))
        assert stream.mapping is not None
        costs: dict[str, Any] = {}
        if settings is not None:
            costs = _costs(settings, stream, total, options, _learned_for_preview(settings, options))
        return _report(stream, None, total, "dry-run", None, sample_trigger_texts=texts, dry_run=True,
                             processing_mode=_mode(options), channels=list(options.channels), **costs,
                             **language_fields)


def _learned_for_preview(settings: Settings, options: UploadOptions) -> LearnedPrices | None:
    """What this account's recent rows cost, if its database can be reached (a dry run writes nothing, and goes
    on with the published prices when there is no database to read)."""
    from csvjobs import db

    if settings.database_url is None and not db.embedded_server_status(settings.pgdata)["running"]:
        return None  # no database of this account yet (and a dry run does not start one)
    try:
        _target, conn = db.open_database(settings, application_name="csvjobs-estimate")
    except CsvJobsError:
        return None
    with conn:
        user_id = options.user_id or resolve_user_id(settings)
        with db.user_transaction(conn, user_id):
            return learned_prices(conn, user_id, settings)


def _costs(settings: Settings, stream: RowStream, total: int, options: UploadOptions,
           learned: LearnedPrices | None) -> dict[str, Any]:
    """The report's cost fields: the estimate in the batch's mode, row by row and through the Batch API."""
    def at(mode: ProcessingMode) -> Estimate:
        return estimate(settings, rows=total, photo_rows=stream.photo_rows, reused_rows=stream.reused_rows,
                        reused_photo_rows=stream.reused_photo_rows, mode=mode, learned=learned,
                        alt_languages=len(options.alt_languages))

    mine, standard, batch = at(_mode(options)), at(ProcessingMode.SYNC), at(ProcessingMode.OPENAI_BATCH)
    check_budget(mine, options.max_cost_usd)
    return {"estimated_cost_usd": mine.total_usd, "estimated_cost_low_usd": mine.low_usd,
            "estimated_cost_high_usd": mine.high_usd, "estimated_standard_cost_usd": standard.total_usd,
            "estimated_batch_cost_usd": batch.total_usd, "cost_basis": mine.basis,
            "estimated_row_cost_usd": mine.per_row_usd, "max_cost_usd": options.max_cost_usd}


ProgressCallback = Callable[[int, int], None]


def upload_csv(
    settings: Settings,
    options: UploadOptions,
    progress: ProgressCallback | None = None,
    *,
    parse_in_child: bool | None = None,
) -> UploadReport:
    """Store the file, create the batch and its row jobs, and queue it; on any failure nothing remains.

    parse_in_child: parse in a child process while this one feeds COPY (see child_producer.py); by default for
    files of CHILD_PARSER_MIN_BYTES or more.
    """
    options = options.model_copy(update={"photo_max_bytes": settings.photo_max_bytes,
                                         "look_words": settings.look_option_words})
    if options.dry_run:
        report = preview_upload(options, settings=settings)
        if report.error_count and not options.skip_invalid:
            raise rejection(options.path, report.errors, report.error_count)
        return report
    # Before the child parser starts: the language can give the rows their country.
    options, plan, country = choose_language(options, settings)
    batch_id = uuid.uuid4()
    if parse_in_child is None:
        parse_in_child = options.path.is_file() and options.path.stat().st_size >= CHILD_PARSER_MIN_BYTES
    # Started first, so that it parses while this process reads the header, connects and stores the file; a bad
    # file makes both fail the same way, and this process reports it.
    producer = (ChildProducer("csvjobs.ingest.parser_process", [str(batch_id)],
                              options.reading().model_dump_json().encode())
                if parse_in_child else None)
    try:
        report = _upload(settings, options, batch_id, producer, progress, plan)
    finally:
        if producer is not None:
            producer.close()
    for name, value in plan.fields(country).items():
        setattr(report, name, value)
    return report


def _upload(
    settings: Settings,
    options: UploadOptions,
    batch_id: uuid.UUID,
    producer: ChildProducer | None,
    progress: ProgressCallback | None,
    plan: LanguagePlan,
) -> UploadReport:
    from csvjobs import db  # here rather than at the top: psycopg takes a while to import (see upload_csv)

    user_id = options.user_id or resolve_user_id(settings)
    with RowStream(options.reading()) as stream:
        storage = open_storage(settings)
        storage.check()
        storage_path: str | None = None
        stored: list[str] = []
        try:
            _target, conn = db.open_database(settings, application_name="csvjobs-upload")
            try:
                key = f"{user_id}/{batch_id}-{safe_filename(options.path.name)}"
                storage_path = storage.put_file(UPLOADS_BUCKET, key, options.path)
                stored.append(storage_path)

                def store_photos() -> None:
                    # Photo files named by the rows, stored with the batch before it is queued (in the same
                    # transaction's lifetime), where every worker finds them by the path the row gives.
                    for value, path in stream.photos.files.items():
                        stored.append(storage.put_file(UPLOADS_BUCKET, uploaded_photo_key(user_id, batch_id, value),
                                                       Path(path)))

                total, costs = _write_batch(conn, stream, producer, options, user_id, batch_id, storage_path,
                                            progress, store_photos, settings, plan)
            finally:
                conn.close()
        except BaseException:
            for path in stored:
                storage.delete(path)
            raise
        return _report(stream, batch_id, total, "queued" if total else "completed", storage_path,
                             processing_mode=_mode(options), channels=list(options.channels), **costs)


def _mode(options: UploadOptions) -> ProcessingMode:
    return ProcessingMode.OPENAI_BATCH if options.openai_batch else ProcessingMode.SYNC


def _write_batch(
    conn: Connection,
    stream: RowStream,
    producer: ChildProducer | None,
    options: UploadOptions,
    user_id: uuid.UUID,
    batch_id: uuid.UUID,
    storage_path: str,
    progress: ProgressCallback | None,
    store_photos: Callable[[], None],
    settings: Settings,
    plan: LanguagePlan,
) -> tuple[int, dict[str, Any]]:
    """Create the batch, COPY its rows and queue it, in one transaction: (rows written, the report's cost
    fields)."""
    from csvjobs import db
    from csvjobs.ingest import queries

    assert stream.mapping is not None
    size = options.path.stat().st_size
    try:
        with db.user_transaction(conn, user_id):
            # As the user: row-level security checks that the batch is theirs.
            queries.create_batch(
                conn, batch_id=batch_id, user_id=user_id, original_filename=options.path.name,
                headers=stream.headers, storage_path=storage_path, max_concurrent_jobs=options.max_concurrent_jobs,
                processing_mode=_mode(options), channels=options.channels,
                column_mapping={"preset": stream.mapping.preset, "fields": stream.mapping.describe(),
                                "row_data_keys": stream.mapping.row_data_keys()},
            )
            # As the service role for the bulk write: COPY cannot run under row-level security, and every row
            # written here belongs to the batch just created as the user.
            db.become_service_role(conn)
            cursor = conn.cursor()
            chunks: Iterator[bytes | memoryview]
            if producer is None:
                chunks = stream.copy_data(batch_id, options.max_retries)
                position: Callable[[], int] = lambda: stream.reader.position  # noqa: E731
            else:
                chunks = producer.chunks()
                position = lambda: producer.position  # noqa: E731
            with cursor.copy(COPY_SQL) as copy, collector_paused():
                for sent, chunk in enumerate(chunks, start=1):
                    copy.write(chunk)
                    if progress is not None and sent % 20 == 0:
                        progress(position(), size)
                if producer is not None:
                    stream.absorb(producer.result())
            count = cursor.rowcount
            if stream.error_count and not options.skip_invalid:
                raise rejection(options.path, stream.errors, stream.error_count)
            store_photos()
            if stream.reused_rows:
                queries.link_reused_rows(conn, batch_id)
            costs = _costs(settings, stream, count, options, learned_prices(conn, user_id, settings))
            queries.set_batch_costs(conn, batch_id, estimated_cost_usd=costs["estimated_cost_usd"],
                                    estimated_row_cost_usd=costs["estimated_row_cost_usd"],
                                    max_cost_usd=options.max_cost_usd)
            # (read from the products' text meanwhile, when no option or header said it)
            queries.set_batch_language(conn, batch_id, plan.result().tag, plan.alt_languages())
            queries.queue_batch(conn, batch_id, count, stream.skipped_rows + stream.error_count)
            if progress is not None:
                progress(size, size)
            return count, costs
    except db.PsycopgError as exc:
        raise db.translate_error(exc) from exc
