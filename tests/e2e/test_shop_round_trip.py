"""The round trip into the shop: every export imported into a model of the shop's importer (shop_importers.py)
loses nothing of the shop and changes nothing but adding the new images, in both Shopify formats, after a partial
review, from a plain CSV (refused unless accepted), and from the real pt-BR WooCommerce export."""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import pytest
from support.helpers import REAL_DATA, REVIEW_OF_ROW, cli
from support.photo_server import PhotoServer
from support.shop import BASE, parse, upload_and_work
from support.shop_importers import shopify_import, shopify_store, woocommerce_import, woocommerce_store

from csvjobs.shops.columns import normalise_header

pytestmark = pytest.mark.slow
needs_real_data = pytest.mark.skipif(not REAL_DATA.exists(), reason="shared/data/real is not present")

# The legacy Shopify export's columns under the names today's export gives them.
TODAY = {"Handle": "URL handle", "Body (HTML)": "Description", "Variant SKU": "SKU", "Variant Price": "Price",
         "Variant Barcode": "Barcode", "Variant Compare At Price": "Compare-at price",
         "Image Src": "Product image URL", "Image Position": "Image position", "Image Alt Text": "Image alt text",
         "Variant Image": "Variant image URL", "Product Category": "Product category",
         **{f"Option{n} {part}": f"Option{n} {part.lower()}" for n in (1, 2, 3) for part in ("Name", "Value")}}


def in_todays_format(legacy: str) -> str:
    """The legacy Shopify export rewritten with today's column names."""
    rows = list(csv.reader(io.StringIO(legacy)))
    rows[0] = [TODAY.get(h, h) for h in rows[0]]
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def real_shopify(photos: PhotoServer) -> str:
    """The real export with its photos on the loopback photo server (tests reach nothing else): the export's paths
    answer 404 there, so every row's images are made without its photo."""
    return (REAL_DATA / "shopify_product_template.csv").read_text(encoding="utf-8").replace(
        "https://burst.shopifycdn.com", photos.base)


def export(env: dict[str, str], batch: uuid.UUID, fmt: str, *args: str) -> tuple[int, str, str]:
    result = cli(env, "export", str(batch), "--format", fmt, "--base-url", BASE, *args)
    return result.returncode, result.stdout, result.stderr


def assert_only_images_added(before, after, created, *, variant_images: bool = False) -> int:
    """Every product keeps its fields, variants, images (in order, with alt text); new images come after them.
    Returns the number of new images."""
    assert created == []
    added = 0
    for handle, product in before.items():
        now = after[handle]
        assert now.fields == product.fields, handle
        assert now.option_names == product.option_names, handle
        assert now.images[:len(product.images)] == product.images, handle
        new = now.images[len(product.images):]
        assert all(src.startswith(BASE + "/csv-images/") and alt for src, alt in new), handle
        added += len(new)
        if variant_images:
            assert len(now.variants) == len(product.variants)
            for old, variant in zip(product.variants, now.variants, strict=True):
                assert {k: v for k, v in variant.items() if k != "variant image"} == {
                    k: v for k, v in old.items() if k != "variant image"}, handle
                assert variant.get("variant image", "") in (old.get("variant image", ""), *(s for s, _a in new))
        else:
            assert now.variants == product.variants, handle
    return added


@needs_real_data
@pytest.mark.parametrize("form", ["legacy", "today"])
def test_a_shopify_export_round_trips_adding_images_only(env, conn, tmp_path: Path, form: str,
                                                         photos: PhotoServer) -> None:
    legacy = real_shopify(photos)
    source = legacy if form == "legacy" else in_todays_format(legacy)
    path = tmp_path / "products_export.csv"
    path.write_text(source, encoding="utf-8")
    # Today's format uploads exactly as the legacy one: same rows, products, photos, look-alikes and cost.
    legacy_path = tmp_path / "legacy.csv"
    legacy_path.write_text(legacy, encoding="utf-8")
    dry = [json.loads(cli(env, "upload", str(p), "--dry-run", "--json").stdout) for p in (legacy_path, path)]
    for key in ("total_rows", "skipped_rows", "photo_rows", "reused_rows", "estimated_cost_usd"):
        assert dry[0][key] == dry[1][key], key
    batch = upload_and_work(env, path)
    listed = json.loads(cli(env, "batches", "--json").stdout)
    mine = next(b for b in listed if b["batch_id"] == str(batch))
    assert mine["rows_without_photo"] == mine["successful_rows"] > 0
    code, _out, err = export(env, batch, "shopify", "--include-placeholders", "--require-photo")
    assert code == 0 and "left out (--require-photo)" in err and parse(_out)[1] == []

    code, _out, err = export(env, batch, "shopify")
    assert code == 2 and "placeholders" in err and "--include-placeholders" in err and "Traceback" not in err
    code, out, err = export(env, batch, "shopify", "--include-placeholders")
    assert code == 0, err
    assert "Overwrite products with matching handles" in err and "without the product's photo" in err
    headers, _rows = parse(out)
    assert ("URL handle" in headers) == (form == "today") and ("Handle" in headers) == (form == "legacy")
    assert not any("option" in normalise_header(h) or "variant" in normalise_header(h) for h in headers)
    before = shopify_store(source)
    after, created = shopify_import(before, out)
    # Two new images a look (rows that share a look's images add none).
    looks = dry[1]["total_rows"] - dry[1]["reused_rows"]
    assert assert_only_images_added(before, after, created) == 2 * looks

    code, out, err = export(env, batch, "shopify", "--include-placeholders", "--variant-images")
    assert code == 0, err
    after, created = shopify_import(before, out)
    assert_only_images_added(before, after, created, variant_images=True)
    shirt = after["example-shirt"]
    assert len({v["variant image"] for v in shirt.variants}) == 4  # one white image per colour
    assert {v["variant image"] for v in shirt.variants} <= {src for src, _alt in shirt.images}


@needs_real_data
def test_a_partial_review_round_trips_safely(env, conn, tmp_path: Path, photos: PhotoServer) -> None:
    source = real_shopify(photos)
    path = tmp_path / "products_export.csv"
    path.write_text(source, encoding="utf-8")
    batch = upload_and_work(env, path)
    assert cli(env, "approve", str(batch), "--rows", "1-2").returncode == 0
    assert cli(env, "reject", str(batch), "--rows", "3", "--style", "lifestyle_emotional").returncode == 0
    code, out, err = export(env, batch, "shopify", "--include-placeholders", "--variant-images")
    assert code == 0, err
    before = shopify_store(source)
    after, created = shopify_import(before, out)
    added = assert_only_images_added(before, after, created, variant_images=True)
    looks = json.loads(cli(env, "upload", str(path), "--dry-run", "--json").stdout)
    assert 0 < added < 2 * (looks["total_rows"] - looks["reused_rows"])
    # The file holds exactly the approved images: the rejected one (row 3's lifestyle image, and so the image of
    # every look-alike row sharing it) and the unreviewed ones are left out.
    states: dict[str, set[str]] = {}
    for row in conn.execute(f"SELECT generated_images, {REVIEW_OF_ROW}"
                            " FROM csv_row_jobs WHERE batch_id = %s"
                            " AND status = 'completed'", [batch]).fetchall():
        for image in row["generated_images"]:
            state = ((row["review"] or {}).get(image["style"]) or {}).get("state", "unreviewed")
            states.setdefault(image["storage_path"], set()).add(state)
    assert {"approved", "rejected", "unreviewed"} <= set().union(*states.values())
    for path, seen in states.items():
        assert len(seen) == 1, (path, seen)  # a shared image has one decision
        assert (path in out) == (seen == {"approved"}), (path, seen)


def test_a_plain_csv_is_refused_unless_replacing_is_accepted(env, conn, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('title,description,mpn\n"=HYPERLINK(""http://x.test"")",A mug,-M1\nBowl,Salad bowl,B-2\n')
    batch = upload_and_work(env, path)
    code, out, err = export(env, batch, "shopify", "--include-placeholders")
    assert code == 2 and out == "" and "--replace-images" in err and "export from the shop" in err
    code, out, err = export(env, batch, "woocommerce", "--include-placeholders")
    assert code == 2 and "--replace-images" in err
    code, out, err = export(env, batch, "shopify", "--include-placeholders", "--variant-images", "--replace-images")
    assert code == 2 and "--variant-images" in err
    code, out, err = export(env, batch, "shopify", "--include-placeholders", "--replace-images")
    assert code == 0, err
    _headers, rows = parse(out)
    # Generated cells never start a formula; the shop's own values are exact.
    assert all(not r["Image Alt Text"].startswith(tuple("=+-@\t\r")) for r in rows)
    assert any(r["Image Alt Text"] for r in rows)
    code, out, err = export(env, batch, "woocommerce", "--include-placeholders", "--replace-images")
    assert code == 0, err
    _headers, rows = parse(out)
    assert [r["SKU"] for r in rows] == ["-M1", "B-2"]
    assert all(not t.strip().startswith(tuple("=+-@")) for r in rows for t in r["Tags"].split(","))
    for row in rows:  # readable file names the shop keeps
        names = [u.strip().rsplit("/", 1)[-1] for u in row["Images"].split(",")]
        assert any(n.endswith("-lifestyle.png") for n in names) and any(n.endswith("-white.png") for n in names)
    assert any(n.startswith("bowl-") for r in rows for n in r["Images"].replace(",", "/").split("/"))


@needs_real_data
def test_the_real_ptbr_woocommerce_export_uploads_unmapped_and_round_trips(env, conn, tmp_path: Path) -> None:
    source_path = REAL_DATA / "woocommerce_ptbr_products.csv"
    batch = upload_and_work(env, source_path)
    products = conn.execute("SELECT row_number, csv_row_job_product(j.row_data, j.product, b.column_mapping) AS p"
                            " FROM csv_row_jobs j JOIN csv_batches b ON b.id = j.batch_id WHERE j.batch_id = %s"
                            " ORDER BY row_number", [batch]).fetchall()
    assert all(r["p"]["title"] and r["p"]["description"] for r in products)  # variations filled from parent
    # WooCommerce's default category ("Sem categoria") is no product type: the model is not told it.
    assert not any(r["p"]["product_type"] for r in products)
    preset = conn.execute("SELECT column_mapping->>'preset' AS p FROM csv_batches WHERE id = %s", [batch]).fetchone()
    assert preset == {"p": "woocommerce"}
    code, out, err = export(env, batch, "woocommerce", "--include-placeholders")
    assert code == 0, err
    assert "Update existing products" in err
    source = source_path.read_text(encoding="utf-8-sig")
    before = woocommerce_store(source)
    after, created = woocommerce_import(before, out)
    assert created == []
    added = 0
    for old, new in zip(before, after, strict=True):
        assert new.images[:len(old.images)] == old.images
        assert new.tags[:len(old.tags)] == old.tags
        assert {k: v for k, v in new.fields.items() if k not in ("images", "tags")} == {
            k: v for k, v in old.fields.items() if k not in ("images", "tags")}
        if old.fields["parent"]:
            assert new.fields == old.fields  # a variation is not touched by default
        added += len(new.images) - len(old.images)
    assert added > 0
