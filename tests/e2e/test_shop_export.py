"""Shop import files: the real Shopify and WooCommerce samples through upload, work and export, parsed back and
checked column by column against the formats the importers document; URLs a shop can fetch (moto's S3 server,
the presigned URLs fetched over HTTP); and the refusals (local storage, no stable product identifier)."""

from __future__ import annotations

import csv
import io
import json
import urllib.request
from pathlib import Path

import pytest
from support.helpers import REAL_DATA, cli
from support.photo_server import PhotoServer
from support.s3 import S3
from support.shop import BASE, parse, upload_and_work

from csvjobs.shops.export_rules import ALT_TEXT_LIMIT, slug
from csvjobs.shops.shopify_export import SHOPIFY_VARIANT_HEADERS
from csvjobs.shops.woocommerce_export import WOOCOMMERCE_HEADERS

pytestmark = pytest.mark.slow
needs_real_data = pytest.mark.skipif(not REAL_DATA.exists(), reason="shared/data/real is not present")


@needs_real_data
def test_the_real_shopify_export_becomes_a_shopify_import_file(env, conn, tmp_path: Path) -> None:
    photos = PhotoServer().start()
    try:
        source = (REAL_DATA / "shopify_product_template.csv").read_text(encoding="utf-8")
        local = tmp_path / "shopify.csv"
        local.write_text(source.replace("https://burst.shopifycdn.com", photos.base), encoding="utf-8")
        separate = cli(env, "upload", str(local), "--dry-run", "--per-variant", "--json")
        assert separate.returncode == 0 and json.loads(separate.stdout)["reused_rows"] == 0
        shown = cli(env, "upload", str(local), "--dry-run")
        assert "variants: 8 row(s) look like an earlier row of their product" in shown.stdout
        batch = upload_and_work(env, local)
    finally:
        photos.stop()
    reused = conn.execute(
        "SELECT j.row_number, j.cost_usd, j.generated_images, l.row_number AS leader, l.generated_images AS theirs"
        " FROM csv_row_jobs j JOIN csv_row_jobs l ON l.id = j.reuses_job WHERE j.batch_id = %s", [batch]).fetchall()
    assert len(reused) == 8
    for row in reused:
        assert float(row["cost_usd"]) == 0
        assert [i["storage_path"] for i in row["generated_images"]] == [i["storage_path"] for i in row["theirs"]]
        assert all(i["reuses_row"] == row["leader"] for i in row["generated_images"])
    logged = conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE operation = 'images_reused'"
                          " AND batch_id = %s", [batch]).fetchone()
    assert logged == {"n": 8}
    out = tmp_path / "images.csv"
    result = cli(env, "export", str(batch), "--format", "shopify", "--base-url", BASE, "-o", str(out),
                 "--include-placeholders", "--variant-images")
    assert result.returncode == 0, result.stderr
    assert "Overwrite products with matching handles" in result.stderr and f"under {BASE}/" in result.stderr
    headers, rows = parse(out.read_text(encoding="utf-8"))
    assert headers == SHOPIFY_VARIANT_HEADERS

    source_rows = list(csv.DictReader(io.StringIO(local.read_text(encoding="utf-8"))))
    handles = list(dict.fromkeys(r["Handle"] for r in source_rows))
    assert list(dict.fromkeys(r["Handle"] for r in rows)) == handles
    for handle in handles:
        mine = [r for r in rows if r["Handle"] == handle]
        image_rows = [r for r in mine if r["Image Src"]]
        existing = list(dict.fromkeys(r["Image Src"] for r in source_rows if r["Handle"] == handle and r["Image Src"]))
        # The product's own images first, in their order, then the new ones after them.
        assert [r["Image Src"] for r in image_rows[:len(existing)]] == existing
        assert [int(r["Image Position"]) for r in image_rows] == list(range(1, len(image_rows) + 1))
        new = image_rows[len(existing):]
        assert new and all(r["Image Src"].startswith(BASE + "/csv-images/") for r in new)
        assert all(0 < len(r["Image Alt Text"]) <= ALT_TEXT_LIMIT for r in new)
        assert len({r["Image Src"] for r in new}) == len(new)  # each image once per product
        # Title on the product's first row only (Shopify's required column for updates).
        assert mine[0]["Title"] == next(r["Title"] for r in source_rows if r["Handle"] == handle and r["Title"])
        assert all(r["Title"] == "" for r in mine[1:])
    shirt = [r for r in rows if r["Handle"] == "example-shirt"]
    # 12 variants in 4 colours and 3 sizes: sizes share their colour's images, so 4 x 2 new images, not 12 x 2.
    assert len([r for r in shirt if r["Image Src"]]) == 6 + 8
    variants = [r for r in shirt if r["Option1 Value"]]  # laid out as Shopify's export: beside the images
    assert len(variants) == 12 and all(r["Option1 Name"] == "Color" and r["Option2 Name"] == "Size"
                                       and r["Variant Image"] for r in variants)
    assert len({r["Variant Image"] for r in variants}) == 4
    assert {r["Variant Image"] for r in variants} <= {r["Image Src"] for r in shirt}
    by_colour = {(r["Option1 Value"], r["Variant Image"]) for r in variants}
    assert len({colour for colour, _url in by_colour}) == 4 == len(by_colour)
    assert "file://" not in out.read_text() and str(env["CSVJOBS_HOME"]) not in out.read_text()


@needs_real_data
def test_the_real_woocommerce_export_becomes_a_woocommerce_import_file(env, conn, tmp_path: Path) -> None:
    batch = upload_and_work(env, REAL_DATA / "woocommerce_ptbr_products.csv", "--map", "title=Nome", "--map",
                            "description=Descrição", "--map", "product_type=Categorias", "--map", "mpn=REF")
    out = tmp_path / "woo.csv"
    result = cli(env, "export", str(batch), "--format", "woocommerce", "--base-url", BASE, "-o", str(out),
                 "--include-placeholders", "--variant-images")
    assert result.returncode == 0, result.stderr
    assert "Update existing products" in result.stderr
    headers, rows = parse(out.read_text(encoding="utf-8"))
    assert headers == WOOCOMMERCE_HEADERS
    source = list(csv.DictReader(io.StringIO((REAL_DATA / "woocommerce_ptbr_products.csv").read_text("utf-8-sig"))))
    assert rows and {r["ID"] for r in rows} <= {r["ID"] for r in source}
    variations = 0
    for row in rows:
        original = next(r for r in source if r["ID"] == row["ID"])
        images = [u.strip() for u in row["Images"].split(",")]
        assert all(u.startswith(BASE + "/csv-images/") for u in images)
        if original["Produto ascendente"]:  # a variation (pt-BR for Parent): its one image, its own
            variations += 1
            assert len(images) == 1 and images[0].endswith("-white.png") and row["Tags"] == ""
        else:  # a parent: its own two images, and those of its variations that do not share its look
            assert len(images) >= 2 and row["Tags"]
    assert variations > 0
    default = cli(env, "export", str(batch), "--format", "woocommerce", "--base-url", BASE, "--include-placeholders")
    assert default.returncode == 0, default.stderr
    rows = parse(default.stdout)[1]
    assert rows and not any(next(r for r in source if r["ID"] == row["ID"])["Produto ascendente"] for row in rows)


def test_local_storage_has_no_url_a_shop_can_fetch(env, conn, tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    source.write_text("title,description\nMug,Big mug\n")
    batch = upload_and_work(env, source)
    out = tmp_path / "images.csv"
    result = cli(env, "export", str(batch), "--format", "shopify", "-o", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "local storage" in result.stderr and "CSVJOBS_PUBLIC_BASE_URL" in result.stderr
    assert "--base-url" in result.stderr and not out.exists()
    woo = cli(env, "export", str(batch), "--format", "woocommerce", "--base-url", BASE)
    assert woo.returncode == 2 and "no ID or SKU" in woo.stderr
    shop = cli(env, "export", str(batch), "--format", "shopify", "--base-url", BASE, "--replace-images",
               "--include-placeholders")
    assert shop.returncode == 0, shop.stderr
    _headers, rows = parse(shop.stdout)
    assert {r["Handle"] for r in rows} == {slug("Mug")} == {"mug"}


def test_a_source_without_a_stable_identifier_is_refused(env, conn, tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    source.write_text("product_type,description\nMug,Big mug\n")
    batch = upload_and_work(env, source)
    result = cli(env, "export", str(batch), "--format", "shopify", "--base-url", BASE, "--replace-images")
    assert result.returncode == 2 and "--handle-column" in result.stderr
    by_column = cli(env, "export", str(batch), "--format", "shopify", "--base-url", BASE, "--replace-images",
                    "--include-placeholders", "--handle-column", "product_type")
    assert by_column.returncode == 0, by_column.stderr
    assert {r["Handle"] for r in parse(by_column.stdout)[1]} == {"Mug"}


def test_presigned_s3_urls_are_fetched_by_the_shop(s3_env, s3: S3, conn, tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    source.write_text("title,description,mpn\nMug,Big mug,M-1\nBowl,Salad bowl,B-2\n")
    batch = upload_and_work(s3_env, source)
    result = cli(s3_env, "export", str(batch), "--format", "woocommerce", "--replace-images", "--include-placeholders")
    assert result.returncode == 0, result.stderr
    assert "presigned and expire on" in result.stderr and "import before" in result.stderr
    _headers, rows = parse(result.stdout)
    assert [r["SKU"] for r in rows] == ["M-1", "B-2"]
    for row in rows:
        urls = [u.strip() for u in row["Images"].split(",")]
        assert len(urls) == 2
        for url in urls:
            with urllib.request.urlopen(url, timeout=30) as response:  # what the shop's importer does
                assert response.status == 200 and response.read(8) == b"\x89PNG\r\n\x1a\n"
    public = cli(dict(s3_env, CSVJOBS_PUBLIC_BASE_URL="https://images.example.test"), "export", str(batch),
                 "--format", "woocommerce", "--replace-images", "--include-placeholders")
    assert public.returncode == 0, public.stderr
    assert all(u.strip().startswith("https://images.example.test/csv-images/")
               for r in parse(public.stdout)[1] for u in r["Images"].split(","))


def test_woocommerce_keeps_the_existing_images_first_and_merges_tags(env, conn, tmp_path: Path) -> None:
    photos = PhotoServer().start()  # the shop's own images, on loopback (tests reach nothing else)
    shop = photos.base
    source = tmp_path / "woo.csv"
    source.write_text(
        "ID,Type,SKU,Name,Categories,Regular price,Images,Tags,Parent\n"
        f'10,variable,MUG,Mug,Kitchen,,"{shop}/mug.png, {shop}/mug.jpg","kitchen, Ceramic",\n'
        "11,variation,MUG-RED,Mug - Red,,12,,,id:10\n")
    try:
        batch = upload_and_work(env, source)
    finally:
        photos.stop()
    result = cli(env, "export", str(batch), "--format", "woocommerce", "--base-url", BASE, "--include-placeholders",
                 "--variant-images")
    assert result.returncode == 0, result.stderr
    _headers, rows = parse(result.stdout)
    parent, variation = rows
    images = [u.strip() for u in parent["Images"].split(",")]
    assert images[:2] == [f"{shop}/mug.png", f"{shop}/mug.jpg"]
    assert len(images) == 4 and all(u.startswith(BASE) for u in images[2:])
    tags = [t.strip() for t in parent["Tags"].split(",")]
    assert tags[:2] == ["kitchen", "Ceramic"] and len(tags) > 2 and len({t.lower() for t in tags}) == len(tags)
    assert (parent["ID"], parent["SKU"], variation["ID"], variation["SKU"]) == ("10", "MUG", "11", "MUG-RED")
    assert variation["Images"].startswith(BASE) and "," not in variation["Images"]


SPELLINGS = ["=HYPERLINK(1)", "\n=CMD()", "\u00a0=CMD()", "\u200b=CMD()", "\ufeff+SUM(1)", " @x", "\t-2",
             "\uff1dCMD()", "\uff0b1", "\uff0d1", "\uff20x", "\r=1"]


def test_every_formula_spelling_in_generated_cells_is_neutralised(env, conn, tmp_path: Path) -> None:
    from csvjobs.operate.cells import starts_like_formula

    source = tmp_path / "shop.csv"
    lines = ["Handle,Title,Body (HTML),Tags,Image Src"]
    lines += [f"item-{n},Item {n},<p>thing {n}</p>,=own-tag,https://cdn.example/own-{n}.png"
              for n in range(len(SPELLINGS))]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    batch = upload_and_work(env, source)
    # Generated text that starts like a formula, every way a spreadsheet would take it.
    for n, spelling in enumerate(SPELLINGS, start=1):
        conn.execute("UPDATE csv_row_jobs SET generated_prompts = jsonb_set(jsonb_set(generated_prompts,"
                     " '{lifestyle_emotional,alt_text}', to_jsonb(%s::text)), '{single_white_background,alt_text}',"
                     " to_jsonb(%s::text)), generated_tags = jsonb_build_array(%s::text)"
                     " WHERE batch_id = %s AND row_number = %s",
                     [spelling + " alt", spelling + " white", spelling + "tag", batch, n])
    out = tmp_path / "images.csv"
    result = cli(env, "export", str(batch), "--format", "shopify", "--base-url", BASE, "-o", str(out),
                 "--include-placeholders")
    assert result.returncode == 0, result.stderr
    _headers, rows = parse(out.read_text(encoding="utf-8"))
    alts = [r["Image Alt Text"] for r in rows if r["Image Alt Text"]]
    assert len(alts) >= 2 * len(SPELLINGS)
    assert not [a for a in alts if starts_like_formula(a)], alts
    # The shop's own values are written exactly (its own image URL).
    assert any(r["Image Src"] == "https://cdn.example/own-0.png" for r in rows)
    # csvjobs' own CSV export quotes every risky cell, generated or the file's own.
    plain = tmp_path / "rows.csv"
    assert cli(env, "export", str(batch), "--format", "csv", "-o", str(plain)).returncode == 0
    for row in csv.reader(plain.open(encoding="utf-8")):
        assert not [cell for cell in row if starts_like_formula(cell)], row
