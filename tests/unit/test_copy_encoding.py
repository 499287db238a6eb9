"""The upload's COPY encoding: a thousand rows at a time must give exactly what encoding each row on its own gives,
and what it writes must come back as the product the mapping made."""

from __future__ import annotations

import csv
import io
import json
import random
import uuid
from pathlib import Path

import psycopg
import pytest
from support.helpers import REAL_DATA

from csvjobs.ingest.column_mapping import RowMapper
from csvjobs.ingest.copy_encoding import COPY_SQL, RowEncoder
from csvjobs.ingest.row_stream import ReadOptions, RowStream

BATCH = uuid.UUID("0f0f0f0f-0000-4000-8000-000000000001")
HEADER = ["country", "product_type", "size", "mpn", "title", "description", "vendor"]
# Values that the chunked path must refuse (their mapped value is not the raw text) next to plain ones.
TRICKY = ["", " ", "plain", "two  spaces", " lead", "trail ", "tab\there", "line\nbreak", "cr\r\nlf", "nb\xa0sp",
          "em\u2003space", "<b>bold</b>", "Tom &amp; Jerry", "Café crème", "日本語", "x\x1fy", "soft\xadhyphen",
          'quote "inside"', "back\\slash", "comma, inside"]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def encoded(path: Path, chunked: bool, **options: object) -> bytes:
    with RowStream(ReadOptions(path=path, **options)) as stream:  # type: ignore[arg-type]
        return b"".join(stream.copy_data(BATCH, 3, chunked=chunked, rows_per_chunk=5))


def random_rows(seed: int, count: int) -> list[list[str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        if rng.random() < 0.7:  # most rows plain, so most chunks of five are all plain
            rows.append(["US", "Mug", str(i % 9), f"M-{i}", f"Mug {i}", f"A mug, number {i}", "Acme"])
        else:
            rows.append([rng.choice(TRICKY) for _ in HEADER])
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("country", ["", "BR"])
def test_chunks_encode_exactly_as_rows_do(tmp_path: Path, seed: int, country: str) -> None:
    path = write_csv(tmp_path / "p.csv", random_rows(seed, 400))
    assert encoded(path, chunked=True, country=country) == encoded(path, chunked=False, country=country)


def test_chunks_encode_exactly_as_rows_do_without_a_country_column(tmp_path: Path) -> None:
    header = ["title", "description", "price"]
    rows = [[f"T{i}", "Nice" if i % 7 else "<p>Nice</p>", str(i)] for i in range(60)]
    path = write_csv(tmp_path / "p.csv", rows, header)
    for country in ("", "DE"):
        assert encoded(path, chunked=True, country=country) == encoded(path, chunked=False, country=country)


def test_chunked_path_is_taken_for_plain_rows_and_refused_for_others(tmp_path: Path) -> None:
    plain = [["US", "Mug", "1", "M-1", "Mug", "A mug", "Acme"]] * 3
    path = write_csv(tmp_path / "p.csv", plain)
    with RowStream(ReadOptions(path=path)) as stream:
        assert stream.mapping is not None
        encoder = RowEncoder(stream.mapping, BATCH, 3, "")
        mapper = RowMapper(stream.mapping)
        fast = encoder.encode_chunk(plain, 1)
        assert fast == b"".join(encoder.encode(n, row, mapper.map(row)) for n, row in enumerate(plain, start=1))
        for bad in TRICKY[1:2] + TRICKY[3:13]:
            row = ["US", "Mug", "1", "M-1", bad, "A mug", "Acme"]
            assert encoder.encode_chunk([*plain, row], 1) is None, bad
        assert encoder.encode_chunk([*plain, ["US", "Mug"]], 1) is None  # ragged
        assert encoder.encode_chunk([*plain, ["US", "", "1", "M", "", "", "x"]], 1) is None  # nothing to describe


@pytest.mark.parametrize("name", ["shopify_product_template.csv", "woocommerce_ptbr_products.csv"])
@pytest.mark.parametrize("preset", ["auto", "plain"])
def test_real_exports_encode_the_same_both_ways(name: str, preset: str) -> None:
    path = REAL_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is not on this machine")
    column_map = {"title": "Nome", "description": "Descrição", "product_type": "Categorias", "mpn": "REF"}
    options: dict[str, object] = {"column_map": column_map} if name.startswith("woo") else {}
    if preset == "plain":  # the presets never take the chunked path; as plain files they may
        options["column_map"] = column_map if name.startswith("woo") else {"title": "Title", "description":
                                                                           "Body (HTML)", "mpn": "Variant SKU"}
    options["preset"] = preset
    assert encoded(path, chunked=True, **options) == encoded(path, chunked=False, **options)


def test_what_is_written_comes_back_as_the_mapped_product(conn: psycopg.Connection, tmp_path: Path) -> None:
    """COPY the encoded rows into a real table; csv_row_job_product() must rebuild every mapped product."""
    path = write_csv(tmp_path / "p.csv", random_rows(9, 120))
    with RowStream(ReadOptions(path=path, country="FR")) as stream:
        assert stream.mapping is not None
        mapping = stream.mapping
        with conn.transaction():
            conn.execute(
                "INSERT INTO csv_batches (id, user_id, filename, original_filename, column_mapping)"
                " VALUES (%s, gen_random_uuid(), 'p.csv', 'p.csv', %s)",
                [BATCH, json.dumps({"row_data_keys": mapping.row_data_keys()})],
            )
            with conn.cursor().copy(COPY_SQL) as copy:
                for chunk in stream.copy_data(BATCH, 3, rows_per_chunk=7):
                    copy.write(chunk)
    mapper = RowMapper(mapping, "FR")
    with RowStream(ReadOptions(path=path, country="FR")) as again:
        expected = {number: product for number, _values, product in again.products()}
    rows = conn.execute(
        "SELECT j.row_number, j.row_data, j.product AS stored,"
        " csv_row_job_product(j.row_data, j.product, b.column_mapping) AS product"
        " FROM csv_row_jobs j JOIN csv_batches b ON b.id = j.batch_id ORDER BY j.row_number"
    ).fetchall()
    assert {r["row_number"]: r["product"] for r in rows} == expected
    assert len(rows) == len(expected) > 60
    for row in rows:
        assert list(row["row_data"]) == HEADER  # the file's column order, kept by the json column
        assert mapper.map(list(row["row_data"].values())) == row["product"]
    # Plain rows store nothing of their own; rows with HTML, odd spacing or no country store just that.
    assert sum(1 for r in rows if r["stored"] is None) > 40
    assert any(r["stored"] for r in rows)
