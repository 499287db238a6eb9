"""Unit tests of the pure functions: format detection, column mapping, HTML to text, the trigger text, pricing,
provider error classification, --since parsing and sharing concurrency. No database, no processes."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import httpx
import openai
import pytest

from csvjobs.errors import InputError, PermanentError, ProviderAccessError, TransientError
from csvjobs.ingest.column_mapping import (
    build_mapping,
    detect_preset,
    html_to_text,
    normalise_header,
    parse_map_options,
)
from csvjobs.ingest.csv_format import detect_format
from csvjobs.models import trigger_text
from csvjobs.operate.logs import parse_since
from csvjobs.providers import pricing
from csvjobs.providers.openai_errors import classify_error
from csvjobs.queue.runtime import backoff_delay
from csvjobs.queue.supervisor import split_concurrency


@pytest.mark.parametrize(("data", "encoding", "delimiter"), [
    (b"\xef\xbb\xbftitle;description\nMug;Big\n", "utf-8-sig", ";"),
    ("title,description\nCaf\u00e9,Cr\u00e8me\n".encode(), "utf-8", ","),
    ("title\tdescription\nCaf\u00e9\tx\n".encode("utf-16"), "utf-16", "\t"),
    ("title|description\nCaf\u00e9|\u20ac 5\n".encode("cp1252"), "cp1252", "|"),
    (b'title,description\n"a;b;c;d",plain\n', "utf-8", ","),
])
def test_format_detection(tmp_path: Path, data: bytes, encoding: str, delimiter: str) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    fmt = detect_format(path)
    assert (fmt.encoding, fmt.delimiter) == (encoding, delimiter)


def test_format_detection_reads_the_whole_file_and_chunk_edges(tmp_path: Path) -> None:
    """Megabytes of ASCII (chunks it does not decode) then a character the file's encoding decides: a UTF-8
    character split across two chunks is still UTF-8, a Windows-1252 byte makes it cp1252, and a NUL byte far
    into the file is reported on its line."""
    ascii_lines = b"title,description\n" + b"Mug,A plain white mug\n" * 100_000  # 2.2 MB, 100,001 lines
    for pad in range(7, 12):  # the 3-byte euro sign before, across (9, 10) and after the 1 MiB chunk edge
        data = b"title,description\n" + b"x" * (1024 * 1024 - 18 - pad) + b",\n" + "Caf\u00e9 \u20ac\n".encode()
        path = tmp_path / f"edge{pad}.csv"
        path.write_bytes(data + ascii_lines[18:])
        assert detect_format(path).encoding == "utf-8"
    legacy = tmp_path / "legacy.csv"
    legacy.write_bytes(ascii_lines + "Th\u00e9,Cr\u00e8me\n".encode("cp1252"))
    assert detect_format(legacy).encoding == "cp1252"
    nul = tmp_path / "nul.csv"
    nul.write_bytes(ascii_lines + b"Mug,bro\x00ken\n")
    with pytest.raises(InputError, match="line 100002: the file contains a NUL byte"):
        detect_format(nul)


def test_format_detection_refuses_what_is_not_a_csv(tmp_path: Path) -> None:
    xlsx = tmp_path / "f.xlsx"
    xlsx.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(InputError, match="not a CSV file"):
        detect_format(xlsx)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        detect_format(empty)
    with pytest.raises(InputError, match="no such file"):
        detect_format(tmp_path / "missing.csv")


def test_headers_presets_and_map_options() -> None:
    assert normalise_header("\ufeffBody  (HTML) ") == "body (html)"
    assert detect_preset(["Handle", "Title", "Body (HTML)", "Vendor"]) == "shopify"
    assert detect_preset(["ID", "SKU", "Name", "Regular price"]) == "woocommerce"
    assert detect_preset(["title", "description"]) == "plain"
    assert parse_map_options(["title=Nome", "Product Type=Categorias"]) == {"title": "Nome",
                                                                            "product_type": "Categorias"}
    for bad in ("title", "title=", "colour=Cor"):
        with pytest.raises(InputError, match="--map"):
            parse_map_options([bad])
    mapping = build_mapping(["Nome", "Descrição", "x"], "auto", {"title": "nome", "description": "DESCRIÇÃO"})
    assert mapping.row_data_keys() == {"title": "Nome", "description": "Descrição"}
    with pytest.raises(InputError, match="no column 'Preço'"):
        build_mapping(["Nome"], "auto", {"title": "Preço"})
    with pytest.raises(InputError, match="title"):
        build_mapping(["sku", "price"], "plain", {})


def test_html_to_text_and_the_trigger_text() -> None:
    assert html_to_text("<p>Big <b>mug</b>&nbsp;&amp; saucer</p><ul><li>one</li><li>two</li></ul>") == \
        "Big mug & saucer one two"
    assert html_to_text("  plain   text ") == "plain text"
    assert html_to_text("<style>p{color:red}</style><script>alert(1)</script>Safe<br>text") == "Safe text"
    assert html_to_text("<td>a</td><td>b</td>") == "a b"
    product = {"country": "BR", "product_type": "Caneca", "size": "", "mpn": "C-1", "description": " Grande ",
               "title": "ignored"}
    assert trigger_text(product) == "BR Caneca C-1 Grande"
    assert trigger_text({}) == ""


def test_pricing_from_usage_and_estimates() -> None:
    assert pricing.prompt_cost("gpt-6.1-terra", {"prompt_tokens": 1_000_000, "completion_tokens": 0}) == 1.0
    assert pricing.prompt_cost("gpt-6.1-terra", {"prompt_tokens": 0, "completion_tokens": 1_000_000}) == 5.0
    assert pricing.prompt_cost("unknown-model", {"prompt_tokens": 10}) == 0.0
    used = {"input_tokens": 1_000_000, "output_tokens": 1_000_000}
    assert pricing.image_cost("gpt-image-2.6-flare", "1024x1024", "medium", used) == 35.0
    medium = pricing.image_cost("gpt-image-2.6-flare", "1024x1024", "medium", None)
    assert medium == pytest.approx(1056 * 30 / 1e6)
    assert pricing.image_cost("gpt-image-2.6-flare", "2048x2048", "medium", None) == pytest.approx(4 * medium)
    row = pricing.row_estimate("gpt-6.1-terra", "gpt-image-2.6-flare", "1024x1024", "medium")
    assert row == pytest.approx((700 * 1 + 600 * 5) / 1e6 + 2 * medium)
    assert pricing.is_priced("gpt-6.1-terra", "gpt-image-2.6-sunburst")
    assert not pricing.is_priced("gpt-6.1-terra", "gpt-image-1")


def _status_error(cls: type[openai.APIStatusError], status: int, code: str | None, message: str,
                  param: str | None = None, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/images/generations")
    response = httpx.Response(status, request=request, headers=headers or {})
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return cls(message, response=response, body=body)


def test_provider_errors_are_sorted_and_scrubbed() -> None:
    key = "sk-test-abcdefghijklmnop"

    def sort(exc: openai.OpenAIError) -> Exception:
        return classify_error(exc, model="gpt-image-2.6-flare", model_setting="CSVJOBS_IMAGE_MODEL", secrets=[key])

    refused = sort(_status_error(openai.AuthenticationError, 401, "invalid_api_key", f"Incorrect API key {key}"))
    assert isinstance(refused, ProviderAccessError) and "OPENAI_API_KEY" in str(refused) and key not in str(refused)
    assert isinstance(sort(_status_error(openai.PermissionDeniedError, 403, None, "org not verified")),
                      ProviderAccessError)
    retired = sort(_status_error(openai.NotFoundError, 404, "model_not_found", "The model does not exist"))
    assert isinstance(retired, ProviderAccessError) and "CSVJOBS_IMAGE_MODEL" in str(retired)
    bad_model = sort(_status_error(openai.BadRequestError, 400, "invalid_value", "Invalid value", param="model"))
    assert isinstance(bad_model, ProviderAccessError)
    limited = sort(_status_error(openai.RateLimitError, 429, "rate_limit_exceeded", "slow down",
                                 headers={"retry-after-ms": "1500"}))
    assert isinstance(limited, TransientError) and limited.retry_after == 1.5
    assert isinstance(sort(_status_error(openai.RateLimitError, 429, "insufficient_quota", "no money")),
                      PermanentError)
    assert isinstance(sort(_status_error(openai.InternalServerError, 503, None, "busy")), TransientError)
    policy = sort(_status_error(openai.BadRequestError, 400, "moderation_blocked", f"blocked ({key})"))
    assert isinstance(policy, PermanentError) and "content policy" in str(policy) and key not in str(policy)
    assert isinstance(sort(openai.APITimeoutError(request=httpx.Request("POST", "http://x"))), TransientError)


def test_since_parsing() -> None:
    assert parse_since("30s") == timedelta(seconds=30)
    assert parse_since(" 10m ") == timedelta(minutes=10)
    assert parse_since("1.5h") == timedelta(minutes=90)
    assert parse_since("2d") == timedelta(days=2)
    for bad in ("", "10", "m", "5 fortnights", "-3m"):
        with pytest.raises(InputError, match="--since"):
            parse_since(bad)


def test_concurrency_is_shared_evenly() -> None:
    assert split_concurrency(5, 2) == [3, 2]
    assert split_concurrency(4, 4) == [1, 1, 1, 1]
    assert sum(split_concurrency(17, 3)) == 17


def test_a_derived_handle_is_the_whole_title_and_file_names_are_bounded() -> None:
    from csvjobs.shops.export_rules import slug
    from csvjobs.storage.keys import readable_name

    title = "Extra Long Organic Cotton Crew Neck T-Shirt With Embroidered Logo - Washed Black Édition"
    assert slug(title) == ("extra-long-organic-cotton-crew-neck-t-shirt-with-embroidered-logo-washed-black-"
                           "edition")
    assert readable_name(title) == "extra-long-organic-cotton-crew-neck-t-shirt-with-embroidered"
    assert readable_name("!!!") == "product" and slug("!!!") == ""


def test_backoff_grows_is_jittered_and_honours_retry_after() -> None:
    delays = [backoff_delay(attempt, 1.0, 30.0) for attempt in range(8) for _ in range(20)]
    assert all(0 <= d <= 30 for d in delays)
    assert max(delays) > 4  # it grows
    assert len({round(d, 6) for d in delays}) > 100  # it is jittered
    assert backoff_delay(0, 1.0, 30.0, retry_after=12.5) == 12.5


def test_woocommerce_default_category_is_no_product_type() -> None:
    from csvjobs.ingest.column_mapping import without_default_category

    assert without_default_category("Sem categoria") == ""
    assert without_default_category("Uncategorized") == ""
    assert without_default_category("Non classé") == ""  # accents and case do not matter
    assert without_default_category("Roupas > Camisetas, Sem categoria") == "Roupas > Camisetas"
    assert without_default_category("Mugs, Kitchen") == "Mugs, Kitchen"
    assert without_default_category("Categoria") == "Categoria"


def test_formula_cells_in_every_spelling() -> None:
    from csvjobs.operate.cells import generated_cell, neutralise, starts_like_formula

    for risky in ("=1", "+1", "-1", "@a", "\t1", "\r1", "\n1", " =1", "\u00a0=1", "\u200b=1", "\ufeff=1",
                  "\u2060+1", "\uff1d1", "\uff0b1", "\uff0d1", "\uff20a", " \u200b \uff1d1"):
        assert starts_like_formula(risky), repr(risky)
        assert neutralise(risky) == "'" + risky
        assert not starts_like_formula(generated_cell(risky)), repr(risky)
    for safe in ("a=1", "1+1", "mug", "", " ", "caf\u00e9", "'=1"):
        assert not starts_like_formula(safe), repr(safe)
        assert neutralise(safe) == safe
    assert generated_cell("\u200b=\uff0b  cosy mug") == "cosy mug"


@pytest.mark.parametrize("width", [100, 120, 160])
def test_the_progress_table_fits_the_terminal_with_every_cell_whole(width: int) -> None:
    import datetime as dt
    import uuid
    from decimal import Decimal

    from rich.console import Console

    from csvjobs.models import BatchProgress
    from csvjobs.operate.progress import progress_table

    now = dt.datetime.now(dt.UTC)
    big = BatchProgress(
        batch_id=uuid.uuid4(), user_id=uuid.uuid4(), original_filename="catalogue-10000-products-export.csv",
        status="processing", total_rows=10000, processed_rows=9999, successful_rows=9990, failed_rows=9,
        skipped_rows=0, pending_rows=1, in_flight_rows=1200, percentage=Decimal("99.50"),
        rows_per_minute=Decimal("1234"), eta_seconds=Decimal("7300"), active_workers=12, cost_usd=Decimal("152.5512"),
        created_at=now, started_at=now, completed_at=None, updated_at=now, processing_mode="openai_batch",
        estimated_cost_usd=Decimal("160.20"), max_cost_usd=Decimal("1000.00"))
    console = Console(width=width, record=True, color_system=None)
    console.print(progress_table([big], width))
    text = console.export_text()
    assert "…" not in text and all(len(line) <= width for line in text.splitlines())
    for cell in ("9999/10000", "152.5512", "2h01m", " 99.5%"):
        assert cell in text, (cell, text)


def test_rows_take_numbers_and_ranges() -> None:
    from csvjobs.cli import parse_rows
    from csvjobs.errors import InputError

    assert parse_rows("1-4,9") == [1, 2, 3, 4, 9]
    assert parse_rows(" 3, 1-2 ,3") == [1, 2, 3]
    assert parse_rows(None) is None
    for bad in ("", "4-1", "a", "0", "1-", "-3"):
        with pytest.raises(InputError, match="--rows"):
            parse_rows(bad)
