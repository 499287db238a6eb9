"""Encoding validated rows as PostgreSQL binary COPY data for csv_row_jobs, a row or a thousand rows at a time.

Binary, because the server then copies each field instead of scanning text for escapes. Each job row carries its
batch_id, row_number, row_data (the row as a JSON object in the file's column order), product (only the mapped
fields that differ from the row_data value they are read from, NULL when none do; see 009_lean_row_jobs.sql) and
max_retries.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterable
from itertools import chain, repeat
from operator import itemgetter

import orjson

from csvjobs.ingest.column_mapping import ColumnMapping, getter
from csvjobs.models import PIPELINE_FIELDS

COPY_COLUMNS = ("batch_id", "row_number", "row_data", "product", "max_retries")
COPY_SQL = f"COPY csv_row_jobs ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT binary)"
SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)

_int4 = struct.Struct(">i").pack
_number_and_length = struct.Struct(">ii").pack
# What an ASCII value may not hold to be taken as is: controls (all whitespace but the space among them), markup.
_REFUSED_ASCII = bytes(range(1, 32)) + b"<&"
_JSON_ESCAPED = bytes(range(32)) + b'"\\'


class RowEncoder:
    """Encodes one validated row at a time; and, where the mapping allows, whole chunks of rows (encode_chunk)."""

    def __init__(self, mapping: ColumnMapping, batch_id: uuid.UUID, max_retries: int, default_country: str) -> None:
        headers = mapping.headers
        self._headers = headers
        keys = mapping.row_data_keys()
        self._keyed = tuple(keys)
        key_index = [headers.index(keys[name]) for name in self._keyed]
        self._product_values = getter(self._keyed)
        self._raw_values = getter(key_index)
        self._unkeyed = tuple(name for name in PIPELINE_FIELDS if name not in keys)
        # Per row: field count, then each field preceded by its length: batch_id (uuid), row_number (int4),
        # row_data (json: the text), product (jsonb: a version byte, then the text), max_retries (int4).
        self.row_start = struct.pack(">hi", len(COPY_COLUMNS), 16) + batch_id.bytes + _int4(4)
        self._row_end = _int4(4) + _int4(max_retries)
        self._no_product_end = _int4(-1) + self._row_end  # a NULL product: nothing of its own
        self._chunk_plan = _ChunkPlan.for_mapping(mapping, key_index, default_country, self)

    def product_field(self, own: dict[str, str] | None) -> bytes:
        """The product field and the rest of the row after it."""
        if not own:
            return self._no_product_end
        stored = orjson.dumps(own)
        return _int4(len(stored) + 1) + b"\x01" + stored + self._row_end

    def encode(self, row_number: int, values: list[str], product: dict[str, str]) -> bytes:
        """One row: its values as row_data, and of the mapped product only what row_data does not already say."""
        row_data = orjson.dumps(dict(zip(self._headers, values, strict=False)))
        own = None
        raw = self._raw_values(values)
        if self._product_values(product) != raw:
            own = {name: product[name] for name, value in zip(self._keyed, raw, strict=True) if product[name] != value}
        for name in self._unkeyed:
            if product[name]:
                own = own or {}
                own[name] = product[name]
        if "reuses_row" in product:  # a variant sharing an earlier row's images (see RowMapper.appearance)
            own = own or {}
            own["reuses_row"] = product["reuses_row"]
        return self.row_start + _number_and_length(row_number, len(row_data)) + row_data + self.product_field(own)

    def encode_chunk(self, rows: list[list[str]], first_row_number: int) -> bytes | None:
        """Rows that all map to exactly their own values, encoded without a Python step per row; else None.

        None means "encode these one by one": a row is ragged or blank, a mapped value is not already its own
        clean text (HTML, an entity, surrounding or repeated whitespace, any other whitespace character), a row
        has nothing to describe, or the preset fills rows from other rows. The result is byte for byte what
        encode() gives for the same rows (tests compare the two).
        """
        plan = self._chunk_plan
        return None if plan is None else plan.encode(rows, first_row_number)


class _ChunkPlan:
    """What encode_chunk needs to know about a mapping, decided once per upload."""

    def __init__(self, encoder: RowEncoder, width: int, columns: list[int], describing: list[int],
                 country: int | None, product_end: bytes, headers: list[str]) -> None:
        self.encoder = encoder
        self.width = width
        # The mapped values of a row as one tuple (itemgetter gives a bare value for a single index).
        self.columns: Callable[[list[str]], tuple[str, ...]] = (
            itemgetter(*columns) if len(columns) > 1 else lambda row: tuple(row[i] for i in columns))
        self.describing = [itemgetter(i) for i in describing]
        self.country = itemgetter(country) if country is not None else None
        self.product_end = product_end
        self.headers = headers
        # With a repeated header (several blank ones) the dict keeps one value per key; the template would not.
        self.template = _json_object_template(headers) if len(set(headers)) == len(headers) else None

    def row_data(self, rows: list[list[str]]) -> list[bytes]:
        """Each row as a JSON object, byte for byte as orjson writes it, without a Python step per row."""
        # When no value needs a JSON escape (most catalogues), %-formatting a template is several times faster than
        # a dict per row. orjson escapes exactly the C0 controls, the quote and the backslash; here \x00 only
        # separates values, so it is counted out.
        text = "\x00".join(map("\x00".join, rows)).encode()
        escapes = len(text) - len(text.translate(None, _JSON_ESCAPED)) - (len(rows) * len(self.headers) - 1)
        if self.template is not None and escapes == 0:
            return list(map(str.encode, map(self.template.__mod__, map(tuple, rows))))
        return list(map(orjson.dumps, map(dict, map(zip, repeat(self.headers), rows))))

    @classmethod
    def for_mapping(cls, mapping: ColumnMapping, key_index: list[int], default_country: str,
                    encoder: RowEncoder) -> _ChunkPlan | None:
        """A plan when every mapped field is one column read as is (no preset filling rows from others)."""
        if mapping.preset in ("shopify", "woocommerce") or len(mapping.headers) < 2:
            return None
        keys = mapping.row_data_keys()
        if mapping.sources.get("image_url"):
            return None  # photos are checked row by row (a path must name a file beside the CSV)
        for name in PIPELINE_FIELDS:
            sources = mapping.sources.get(name, [])
            if len(sources) > 1 or (sources and name not in keys):
                return None
        index = {name: mapping.sources[name][0] for name in keys}
        describing = [index[name] for name in ("title", "description", "product_type") if name in index]
        country_column = index.get("country")
        product_end = encoder.product_field({"country": default_country} if default_country and
                                            country_column is None else None)
        return cls(encoder, len(mapping.headers), key_index, describing,
                   country_column if default_country else None, product_end, mapping.headers)

    def encode(self, rows: list[list[str]], first_row_number: int) -> bytes | None:
        if set(map(len, rows)) != {self.width}:
            return None
        if not _plain_values(map("\x00".join, map(self.columns, rows))):
            return None
        # Every row has something to describe: any() over each row's describing values.
        if not all(map(any, zip(*(map(column, rows) for column in self.describing), strict=True))):
            return None
        if self.country is not None and "" in map(self.country, rows):
            return None  # some rows take the --country default: encode those one by one
        row_data = self.row_data(rows)
        numbers = range(first_row_number, first_row_number + len(rows))
        heads = map(_number_and_length, numbers, map(len, row_data))
        return b"".join(chain.from_iterable(zip(repeat(self.encoder.row_start), heads, row_data,
                                                repeat(self.product_end))))


def _json_object_template(headers: list[str]) -> str:
    """A %-template that gives, for values needing no JSON escapes, what orjson gives for the row as an object."""
    return "{" + ",".join(orjson.dumps(h).decode().replace("%", "%%") + ':"%s"' for h in headers) + "}"


def _plain_values(values: Iterable[str]) -> bool:
    """Whether every value is text that strip() and whitespace normalisation leave alone, with no HTML markup."""
    text = "\x00".join(values)  # the CSV reader never returns NUL, so it separates values unambiguously
    if text.startswith(" ") or text.endswith(" "):
        return False
    # A space beside a space or a separator, found with one scan where the text allows: with separators made
    # spaces, none of them can hide; only when one shows (an empty value also makes two) are they told apart.
    if "  " in text.replace("\x00", " ") and ("  " in text or "\x00 " in text or " \x00" in text):
        return False
    if text.isascii():
        # One pass for every refused byte: the markup characters and the controls (which include all whitespace
        # but the space; the other controls are refused needlessly but are rare).
        data = text.encode("ascii")
        return len(data.translate(None, _REFUSED_ASCII)) == len(data)
    if "<" in text or "&" in text:
        return False
    # Every whitespace character but the space is non-printable, as is the separator.
    return text.replace("\x00", "a").isprintable()
