"""`csvjobs upload`: files users really have, bad input, all-or-nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from pathlib import Path

import psycopg
import pytest
from support.helpers import REAL_DATA, claim

from csvjobs.config import Settings
from csvjobs.errors import InputError
from csvjobs.ingest.child_producer import ChildProcessFailed
from csvjobs.ingest.upload import CHILD_PARSER_MIN_BYTES, UploadOptions, upload_csv
from csvjobs.models import ClaimedRow, trigger_text

HEADER = "country,product_type,size,mpn,title,description\n"


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def stored_files(settings: Settings) -> list[Path]:
    root = settings.storage_root / "csv-uploads"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def assert_nothing_written(conn: psycopg.Connection, settings: Settings) -> None:
    assert conn.execute("SELECT count(*) AS n FROM csv_batches").fetchone() == {"n": 0}
    assert conn.execute("SELECT count(*) AS n FROM csv_row_jobs").fetchone() == {"n": 0}
    assert stored_files(settings) == []


def jobs(conn: psycopg.Connection) -> list[dict]:
    """Each job as a worker gets it: the whole product (stored fields merged with row_data) and its trigger text."""
    rows = conn.execute(
        "SELECT j.row_number, j.row_data, j.product AS stored_product, j.trigger_text AS stored_trigger_text,"
        " csv_row_job_product(j.row_data, j.product, b.column_mapping) AS product"
        " FROM csv_row_jobs j JOIN csv_batches b ON b.id = j.batch_id ORDER BY j.row_number"
    ).fetchall()
    for row in rows:
        row["trigger_text"] = trigger_text(row["product"])
    return rows


def test_upload_creates_a_queued_batch_with_one_job_per_row(run_cli, conn, settings, tmp_path) -> None:
    csv_file = write(tmp_path / "p.csv", HEADER + "US,Shoes,42,RS-1,Runner,Fast shoe\nDE,Mug,,M-2,Mug,\n")
    result = run_cli("upload", str(csv_file), "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["total_rows"] == 2 and data["skipped_rows"] == 0 and data["status"] == "queued"
    batch = conn.execute("SELECT * FROM csv_batches").fetchone()
    assert batch is not None and str(batch["id"]) == data["batch_id"]
    assert batch["status"] == "queued" and batch["total_rows"] == 2
    assert batch["csv_headers"] == ["country", "product_type", "size", "mpn", "title", "description"]
    assert batch["original_filename"] == "p.csv" and batch["storage_path"] == data["storage_path"]
    user_dir = data["storage_path"].split("/")[1]
    assert user_dir == str(batch["user_id"])
    stored = settings.storage_root / data["storage_path"]
    assert stored.read_bytes() == csv_file.read_bytes()
    rows = jobs(conn)
    assert rows[0]["trigger_text"] == "US Shoes 42 RS-1 Fast shoe"
    assert rows[1]["trigger_text"] == "DE Mug M-2"
    assert rows[0]["row_data"]["title"] == "Runner"
    ops = [r["operation"] for r in conn.execute("SELECT operation FROM csv_processing_logs")]
    assert ops == ["batch_queued"]


def test_human_output_names_the_batch_and_the_next_step(run_cli, tmp_path) -> None:
    result = run_cli("upload", str(write(tmp_path / "p.csv", HEADER + "US,Shoes,42,RS-1,Runner,Fast\n")))
    assert result.code == 0
    assert "1 row(s) queued" in result.stdout and "csvjobs work" in result.stdout


@pytest.mark.parametrize(
    ("name", "content", "encoding", "expected_title"),
    [
        ("bom.csv", "\ufeff" + HEADER + "BR,Café,P,X1,Pão de queijo,Delícia\n", "utf-8", "Pão de queijo"),
        ("cp1252.csv", HEADER + "FR,Thé,M,T1,Crème brûlée “deluxe”,Très bon\n", "cp1252", "Crème brûlée “deluxe”"),
        ("latin1.csv", HEADER + "DE,Größe,L,G1,Grüße\x81,Schön\n", "latin-1", "Grüße\x81"),
        ("semicolon.csv", HEADER.replace(",", ";") + "IT;Olio;1 L;O1;Olio, extra;Buono; davvero\n".replace(
            "Buono; davvero", '"Buono; davvero"'), "utf-8", "Olio, extra"),
        ("tab.tsv", HEADER.replace(",", "\t") + "JP\tTea\t1\tT9\tSencha, green\tFresh\n", "utf-8", "Sencha, green"),
        ("crlf.csv", (HEADER + 'US,Bag,M,B1,"Bag ""Pro""","Line one\nline two, with comma"\n').replace("\n", "\r\n"),
         "utf-8", 'Bag "Pro"'),
    ],
)
def test_encodings_and_dialects(run_cli, conn, tmp_path, name, content, encoding, expected_title) -> None:
    result = run_cli("upload", str(write(tmp_path / name, content, encoding)))
    assert result.code == 0, result.stderr
    [row] = jobs(conn)
    assert row["product"]["title"] == expected_title
    if name == "crlf.csv":
        assert row["product"]["description"] == "Line one line two, with comma"
        assert row["row_data"]["description"] == "Line one\r\nline two, with comma"


def test_headers_match_case_and_space_insensitively(run_cli, conn, tmp_path) -> None:
    content = " Country ,PRODUCT TYPE,Size,MPN,Title,Description\nUS,Lamp,S,L1,Glow,Warm light\n"
    assert run_cli("upload", str(write(tmp_path / "p.csv", content))).code == 0
    assert jobs(conn)[0]["trigger_text"] == "US Lamp S L1 Warm light"


SHOPIFY = (
    "Handle,Title,Body (HTML),Vendor,Type,Tags,Option1 Name,Option1 Value,Option2 Name,Option2 Value,"
    "Variant SKU,Variant Price,Image Src\n"
    'tee,Cotton Tee,"<p>Soft <strong>organic</strong> cotton &amp; more</p>",Acme,Shirts,"a, b",Color,Green,'
    "Size,S,TEE-G-S,20,http://x/1.jpg\n"
    "tee,,,,,,,Green,,M,TEE-G-M,20,\n"
    "tee,,,,,,,,,,,,http://x/2.jpg\n"
    "cap,Wool Cap,Warm cap,Acme,Hats,,Size,One size,,,CAP-1,15,\n"
)


def test_shopify_export_fills_variants_from_their_product_and_skips_image_rows(run_cli, conn, tmp_path) -> None:
    result = run_cli("upload", str(write(tmp_path / "shopify.csv", SHOPIFY)), "--country", "US", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["skipped_rows"] == 1
    rows = jobs(conn)
    assert [r["product"]["mpn"] for r in rows] == ["TEE-G-S", "TEE-G-M", "CAP-1"]
    assert rows[1]["product"]["title"] == "Cotton Tee"
    assert rows[1]["product"]["description"] == "Soft organic cotton & more"
    assert rows[1]["product"]["size"] == "M"
    assert rows[2]["product"]["size"] == "One size"
    assert rows[1]["trigger_text"] == "US Shirts M TEE-G-M Soft organic cotton & more"
    # Unmapped columns stay in row_data, exactly as in the file.
    assert rows[0]["row_data"]["Vendor"] == "Acme" and rows[0]["row_data"]["Tags"] == "a, b"


WOO = (
    "ID,Type,SKU,Name,Published,Short description,Description,Categories,Parent,Attribute 1 name,"
    "Attribute 1 value(s),Regular price\n"
    '10,variable,HOOD,Hoodie,1,Warm,"<p>Fleece hoodie</p>","Clothing > Hoodies",,Size,"S, M",\n'
    "11,variation,HOOD-S,Hoodie - S,1,,,,id:10,Size,S,40\n"
    "12,simple,BEAN,Beanie,1,Knitted beanie,,Accessories,,,,12\n"
)


def test_woocommerce_export_fills_variations_from_their_parent(run_cli, conn, tmp_path) -> None:
    result = run_cli("upload", str(write(tmp_path / "woo.csv", WOO)), "--preset", "woocommerce")
    assert result.code == 0, result.stderr
    rows = jobs(conn)
    assert rows[1]["product"] == {"country": "", "product_type": "Clothing > Hoodies", "size": "S",
                                  "mpn": "HOOD-S", "description": "Fleece hoodie", "title": "Hoodie - S",
                                  "image_url": "", "reuses_row": "1"}  # looks like its parent: shares its images
    assert rows[2]["product"]["description"] == "Knitted beanie"
    batch = conn.execute("SELECT column_mapping FROM csv_batches").fetchone()
    assert batch is not None and batch["column_mapping"]["preset"] == "woocommerce"


def test_map_option_maps_any_header(run_cli, conn, tmp_path) -> None:
    content = "Nome;Descrição;Categoria;Código\nCamiseta;Algodão;Roupas;C1\n"
    result = run_cli("upload", str(write(tmp_path / "pt.csv", content)), "--map", "title=Nome",
                     "--map", "description=descrição", "--map", "product_type=Categoria", "--map", "mpn=Código",
                     "--country", "BR")
    assert result.code == 0, result.stderr
    assert jobs(conn)[0]["trigger_text"] == "BR Roupas C1 Algodão"


@pytest.mark.skipif(not REAL_DATA.exists(), reason="shared/data/real is not present")
def test_real_shopify_template_export(run_cli, conn) -> None:
    result = run_cli("upload", str(REAL_DATA / "shopify_product_template.csv"), "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["total_rows"] == 16 and data["skipped_rows"] == 1
    rows = jobs(conn)
    assert all(r["product"]["title"] for r in rows)
    green_m = next(r for r in rows if r["product"]["mpn"] == "SRT_COT_122")
    assert green_m["product"]["title"] == "Example T-Shirt" and green_m["product"]["size"] == "M"
    assert "<p>" not in green_m["product"]["description"]


@pytest.mark.skipif(not REAL_DATA.exists(), reason="shared/data/real is not present")
def test_real_brazilian_woocommerce_export_with_bom_uploads_without_map(run_cli, conn) -> None:
    path = str(REAL_DATA / "woocommerce_ptbr_products.csv")
    result = run_cli("upload", path, "--country", "BR", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["total_rows"] == 11
    assert "preset: woocommerce" in run_cli("upload", path, "--dry-run").stdout
    rows = jobs(conn)
    assert rows[0]["row_data"]["ID"] == "65"  # the BOM is not part of the first header
    assert rows[0]["product"]["title"] == "Single date registration"
    assert rows[0]["product"]["description"].startswith("Lorem ipsum")
    # "Sem categoria" is WooCommerce's default category in Portuguese: no product type at all.
    assert rows[0]["product"]["mpn"] == "" and rows[0]["product"]["product_type"] == ""
    # A variation (Produto ascendente id:65) is described by its parent's fields, not by its country alone.
    assert rows[1]["product"]["title"] and rows[1]["product"]["description"]
    mapped = run_cli("upload", path, "--map", "title=Nome", "--map", "description=Descrição",
                     "--map", "product_type=Categorias", "--map", "mpn=REF", "--country", "BR", "--json")
    assert mapped.code == 0, mapped.stderr


def test_dry_run_validates_and_writes_nothing(run_cli, conn, settings, tmp_path) -> None:
    csv_file = write(tmp_path / "p.csv", HEADER + "US,Shoes,42,RS-1,Runner,Fast shoe\n")
    result = run_cli("upload", str(csv_file), "--dry-run")
    assert result.code == 0, result.stderr
    assert "1 row(s) would be created" in result.stdout and "US Shoes 42 RS-1 Fast shoe" in result.stdout
    assert_nothing_written(conn, settings)


def test_invalid_rows_reject_the_upload_with_line_and_column(run_cli, conn, settings, tmp_path) -> None:
    lines = [HEADER.strip()] + ["US,,,X,,"] * 25 + ["US,Shoes,1,Y,Ok,Fine"]
    result = run_cli("upload", str(write(tmp_path / "bad.csv", "\n".join(lines) + "\n")))
    assert result.code == 2
    assert "25 invalid row(s)" in result.stderr and "line 2" in result.stderr and "nothing to describe" in result.stderr
    assert "... and 5 more" in result.stderr and "Traceback" not in result.stderr
    assert_nothing_written(conn, settings)


def test_skip_invalid_uploads_the_valid_rows(run_cli, conn, tmp_path) -> None:
    content = HEADER + "US,,,X,,\nUS,Shoes,1,Y,Ok,Fine\nUS,Shoes,1\n"
    result = run_cli("upload", str(write(tmp_path / "p.csv", content)), "--skip-invalid", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["total_rows"] == 1 and data["skipped_rows"] == 2
    assert [r["row_number"] for r in jobs(conn)] == [2]


EXCEL = b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 100


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "empty"),
        ("header_only.csv", HEADER.encode(), "no data rows"),
        ("no_header.csv", b"1,2,3\n4,5,6\n", "header row"),
        ("dupes.csv", b"title,Title,description\na,b,c\n", "duplicate column name"),
        ("ragged.csv", (HEADER + "US,Shoes,1,X,T,D,extra\n").encode(), "has 7 fields but the header has 6"),
        ("nul.csv", (HEADER + "US,Sh\x00oes,1,X,T,D\n").encode(), "NUL byte"),
        ("quote.csv", (HEADER + 'US,"Shoes,1,X,T,D\nUS,Bag,1,Y,T,D\n').encode(), "never closed"),
        ("huge.csv", (HEADER + "US,Shoes,1,X,T," + "x" * (1024 * 1024 + 10) + "\n").encode(), "larger than"),
        ("excel.csv", EXCEL, "Excel workbook"),
    ],
)
def test_bad_files_get_a_clear_error_and_nothing_is_written(
    run_cli, conn, settings, tmp_path, name, content, message
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    result = run_cli("upload", str(path))
    assert result.code == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("error:") == 1
    assert_nothing_written(conn, settings)


def test_missing_file_directory_and_unknown_mapping(run_cli, conn, settings, tmp_path) -> None:
    missing = run_cli("upload", str(tmp_path / "nope.csv"))
    assert missing.code == 2 and "no such file" in missing.stderr
    directory = run_cli("upload", str(tmp_path))
    assert directory.code == 2 and "is a directory" in directory.stderr
    csv_file = write(tmp_path / "p.csv", HEADER + "US,Shoes,42,RS-1,Runner,Fast shoe\n")
    unknown = run_cli("upload", str(csv_file), "--map", "title=Nome")
    assert unknown.code == 2 and "no column 'Nome'" in unknown.stderr and "'country'" in unknown.stderr
    bad_field = run_cli("upload", str(csv_file), "--map", "colour=title")
    assert bad_field.code == 2 and "unknown field" in bad_field.stderr
    bad_user = run_cli("upload", str(csv_file), "--user", "bob")
    assert bad_user.code == 2 and "not a valid id" in bad_user.stderr
    assert_nothing_written(conn, settings)


def big_csv(path: Path, rows: int) -> Path:
    with path.open("w") as f:
        f.write(HEADER)
        for i in range(rows):
            f.write(f"US,Shoes,42,SKU-{i},Runner {i},A fast shoe\n")
    return path


def test_a_lost_connection_mid_upload_leaves_nothing(settings, conn, tmp_path) -> None:
    path = big_csv(tmp_path / "big.csv", 50_000)

    def kill_backend(done: int, total: int) -> None:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = 'csvjobs-upload'")

    from csvjobs.errors import DatabaseError

    with pytest.raises(DatabaseError):
        upload_csv(settings, UploadOptions(path=path), progress=kill_backend)
    assert_nothing_written(conn, settings)


def test_interrupt_mid_upload_leaves_nothing(settings, conn, tmp_path) -> None:
    path = big_csv(tmp_path / "big.csv", 30_000)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upload_csv(settings, UploadOptions(path=path), progress=interrupt)
    assert_nothing_written(conn, settings)


def test_each_user_uploads_into_their_own_folder(settings, conn, tmp_path) -> None:
    path = write(tmp_path / "../weird name;rm -rf.csv", HEADER + "US,Shoes,42,RS-1,Runner,Fast shoe\n")
    other = uuid.uuid4()
    report = upload_csv(settings, UploadOptions(path=path, user_id=other))
    assert report.storage_path is not None
    bucket, user_dir, filename = report.storage_path.split("/")
    assert (bucket, user_dir) == ("csv-uploads", str(other))
    assert "/" not in filename and ";" not in filename and " " not in filename
    assert (settings.storage_root / report.storage_path).is_file()


def multi_line_csv(path: Path, rows: int, tail: str) -> Path:
    """rows valid rows, every third with a quoted two-line description, then tail."""
    with path.open("w", newline="") as f:
        f.write(HEADER)
        for i in range(rows):
            description = '"First line\nsecond line"' if i % 3 == 0 else "One line"
            f.write(f"US,Shoes,42,SKU-{i},Runner {i},{description}\n")
        f.write(tail)
    return path


def test_errors_deep_in_a_large_file_name_the_right_line_and_leave_nothing(run_cli, conn, settings, tmp_path) -> None:
    """Rows are read a thousand at a time; a bad row after several chunks still names its own line."""
    rows = 2500
    line_after = 1 + rows + (rows + 2) // 3 + 1  # the header, each row, the extra line of every third
    ragged = multi_line_csv(tmp_path / "ragged.csv", rows, "US,Shoes,1\n")
    result = run_cli("upload", str(ragged))
    assert result.code == 2 and f"line {line_after}: has 3 fields" in result.stderr, result.stderr
    assert_nothing_written(conn, settings)

    unclosed = multi_line_csv(tmp_path / "unclosed.csv", rows, 'US,"Shoes,1,X,T,D\n')
    result = run_cli("upload", str(unclosed))
    assert result.code == 2 and f"line {line_after}: a quoted field starts here" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert_nothing_written(conn, settings)

    result = run_cli("upload", str(ragged), "--skip-invalid", "--json")
    assert result.code == 0 and json.loads(result.stdout)["total_rows"] == rows


def test_a_claimed_upload_row_carries_its_whole_product(run_cli, conn, tmp_path) -> None:
    """What a worker claims is the mapped product, whether a field was stored with the job or read from row_data."""
    content = ("title,description,product_type,size,mpn\n"
               "Lamp,Warm light,Lighting,S,L1\n"
               'Chair,"<p>Oak &amp; <b>linen</b></p>",Furniture,,C1\n')
    result = run_cli("upload", str(write(tmp_path / "p.csv", content)), "--country", "PT", "--json")
    assert result.code == 0, result.stderr
    conn.execute("SELECT * FROM update_csv_worker_heartbeat('w', 'idle')")
    claimed = {row["row_number"]: ClaimedRow.model_validate(row) for row in claim(conn, "w", limit=5)}
    assert claimed[1].product == {"country": "PT", "product_type": "Lighting", "size": "S", "mpn": "L1",
                                  "description": "Warm light", "title": "Lamp", "image_url": ""}
    assert claimed[2].product["description"] == "Oak & linen" and claimed[2].product["size"] == ""
    assert claimed[2].row_data["description"] == "<p>Oak &amp; <b>linen</b></p>"
    assert trigger_text(claimed[1].product) == "PT Lighting S L1 Warm light"
    stored = {r["row_number"]: r["stored_product"] for r in jobs(conn)}
    assert stored == {1: {"country": "PT"}, 2: {"country": "PT", "description": "Oak & linen"}}


def upload_rows(conn: psycopg.Connection) -> list[tuple]:
    return [(r["row_number"], r["row_data"], r["product"]) for r in jobs(conn)]


@pytest.mark.slow  # starts a parser process
# long: chunks bigger than the pipe's buffer; longer: each chunk bigger than all the parent reads ahead
@pytest.mark.parametrize("long_text", ["", "x" * 1500, "y" * 26_000])
def test_parsing_in_a_child_process_uploads_the_same_rows(settings, conn, tmp_path, long_text) -> None:
    rows = [f"US,Shoes,{i % 40},SKU-{i},Runner {i},{'<p>Fast</p>' if i % 5 else 'Fast  shoe'}{long_text}"
            for i in range(3000)]
    rows[1234] = "US,,,X,,"  # nothing to describe
    path = write(tmp_path / "p.csv", HEADER + "\n".join(rows) + "\nUS,Shoes\n")
    options = UploadOptions(path=path, skip_invalid=True)
    in_child = upload_csv(settings, options, parse_in_child=True)
    expected = upload_rows(conn)
    conn.execute("DELETE FROM csv_batches")
    in_process = upload_csv(settings, options, parse_in_child=False)
    assert upload_rows(conn) == expected and len(expected) == 2999
    assert (in_child.total_rows, in_child.skipped_rows, [str(e) for e in in_child.errors]) == (
        in_process.total_rows, in_process.skipped_rows, [str(e) for e in in_process.errors])
    assert [str(e) for e in in_child.errors] == ["line 1236: nothing to describe: title, description and "
                                                 "product_type are all empty",
                                                 "line 3002: has 2 fields but the header has 6; a delimiter or quote "
                                                 "is probably missing or extra on this line"]


@pytest.mark.slow  # starts a parser process
def test_bad_input_found_by_the_child_process_rejects_the_upload(settings, conn, tmp_path) -> None:
    invalid = write(tmp_path / "invalid.csv", HEADER + "US,Shoes,1,A,T,D\n" * 2000 + "US,,,X,,\n")
    with pytest.raises(InputError, match="line 2002: nothing to describe"):
        upload_csv(settings, UploadOptions(path=invalid), parse_in_child=True)
    assert_nothing_written(conn, settings)
    unclosed = write(tmp_path / "unclosed.csv", HEADER + "US,Shoes,1,A,T,D\n" * 2000 + 'US,"Shoes,1,X,T,D\n')
    with pytest.raises(InputError, match="line 2002: a quoted field starts here and is never closed"):
        upload_csv(settings, UploadOptions(path=unclosed), parse_in_child=True)
    assert_nothing_written(conn, settings)


def parser_processes() -> list[int]:
    """Live children of this process running csvjobs.ingest.parser_process (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
            if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"csvjobs.ingest.parser_process" in cmdline:
                found.append(int(stat.parent.name))
    return found


@pytest.mark.slow  # starts a parser process
def test_a_killed_parser_process_fails_the_upload_and_leaves_nothing(settings, conn, tmp_path) -> None:
    path = big_csv(tmp_path / "big.csv", 60_000)

    killed: list[int] = []

    def kill_parser(done: int, total: int) -> None:
        for pid in parser_processes():
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with pytest.raises(ChildProcessFailed, match="stopped unexpectedly"):
        upload_csv(settings, UploadOptions(path=path), progress=kill_parser, parse_in_child=True)
    assert killed
    assert_nothing_written(conn, settings)


@pytest.mark.slow  # starts a parser process
def test_interrupting_an_upload_stops_its_parser_process(settings, conn, tmp_path) -> None:
    path = big_csv(tmp_path / "big.csv", 60_000)

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upload_csv(settings, UploadOptions(path=path), progress=interrupt, parse_in_child=True)
    assert parser_processes() == []
    assert_nothing_written(conn, settings)


@pytest.mark.slow  # starts a parser process
def test_a_large_file_is_parsed_in_a_child_process_by_default(run_cli, conn, tmp_path) -> None:
    rows = CHILD_PARSER_MIN_BYTES // 40 + 1000
    path = big_csv(tmp_path / "big.csv", rows)
    assert path.stat().st_size >= CHILD_PARSER_MIN_BYTES
    result = run_cli("upload", str(path), "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["total_rows"] == rows
    last = conn.execute("SELECT row_number, row_data FROM csv_row_jobs ORDER BY row_number DESC LIMIT 1").fetchone()
    assert last == {"row_number": rows, "row_data": {"country": "US", "product_type": "Shoes", "size": "42",
                                                      "mpn": f"SKU-{rows - 1}", "title": f"Runner {rows - 1}",
                                                      "description": "A fast shoe"}}


def test_the_bundled_example_uploads(run_cli, conn) -> None:
    """The README's first command starts with `csvjobs upload --example`."""
    result = run_cli("upload", "--example", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["total_rows"] == 8
