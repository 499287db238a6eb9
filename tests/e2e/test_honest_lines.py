"""Lines that say what happened: upload's photo count and left-out rows with their reason, ranges across left-out
rows, cut-outs counted once per image, the shop export's photo warnings only for rows they concern and its line
on images added to the shop after the source export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.helpers import REVIEW_OF_ROW, cli
from support.pool import finish, start_pool

pytestmark = pytest.mark.slow
BASE = "https://cdn.example.com/shop/"


def shopify_file(tmp_path: Path, photos) -> Path:
    """A mug in three sizes (look-alikes: one photo, the size alone differs), an image-only row with a second photo
    of it (row 4), and a bowl without a photo."""
    lines = [
        "Handle,Title,Body (HTML),Vendor,Type,Option1 Name,Option1 Value,Variant SKU,Image Src",
        f"mug,Mug,<p>A glazed mug</p>,Acme,Mugs,Size,S,MUG-S,{photos.base}/mug.png",
        "mug,,,,,Size,M,MUG-M,",
        "mug,,,,,Size,L,MUG-L,",
        f"mug,,,,,,,,{photos.base}/mug.jpg",
        "bowl,Bowl,<p>A salad bowl</p>,Acme,Bowls,Title,Default Title,BOWL,",
    ]
    path = tmp_path / "products_export.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_upload_work_review_and_export_lines_say_what_happened(env, photos, conn, tmp_path: Path) -> None:
    up = cli(env, "upload", str(shopify_file(tmp_path, photos)))
    assert up.returncode == 0, up.stderr
    assert ("1 row(s) left out: 1 image-only row(s) of a Shopify export (an extra photo of the product above, not a "
            "product: row(s) 4)") in up.stderr
    assert ("photos: 3 of 4 row(s) have one, from Image Src; both images of those rows are made from the product's "
            "photo, the other 1 row(s)' from the text") in up.stdout
    batch = re.search(r"batch ([0-9a-f-]{36})", up.stdout).group(1)  # type: ignore[union-attr]

    code, err = finish(start_pool(env, "--until-done", "--max-dedicated", "0"))
    assert code == 0, err
    # The mug's white image is cut out once and shown by its two look-alikes: one cut-out, not three.
    # Each image once: the images add up to two per completed row.
    bill = re.search(r"(\d+) row\(s\) completed.*images: (\d+) generated, 1 cut out of product photos, 4 reused "
                     r"from look-alike rows \((\d+) in all\); 0 image call\(s\) paid for", err)
    assert bill is not None, err
    completed, generated, total = (int(n) for n in bill.groups())
    assert generated + 1 + 4 == total == 2 * completed, err

    # A range across the left-out row applies to the rows around it and names it; past the last row is an error.
    approved = cli(env, "approve", batch, "--rows", "3-5", "--style", "lifestyle")
    assert approved.returncode == 0, approved.stderr
    assert "(row(s) 4 of the file were left out at upload, so they are not in the batch)" in approved.stdout
    stored = {r["row_number"]: r["review"] for r in conn.execute(
        f"SELECT row_number, {REVIEW_OF_ROW}"
        " FROM csv_row_jobs WHERE batch_id = %s", [batch]).fetchall()}
    assert stored[5]["lifestyle_emotional"]["state"] == "approved"
    beyond = cli(env, "approve", batch, "--rows", "5-6")
    assert beyond.returncode == 2 and "has no row 6" in beyond.stderr and "Traceback" not in beyond.stderr

    out = tmp_path / "shop.csv"
    exported = cli(env, "export", batch, "--format", "shopify", "--base-url", BASE, "--all",
                   "--include-placeholders", "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    said = exported.stdout + exported.stderr
    # The bowl never had a photo: no warning that a photo "could not be fetched or used".
    assert "could not be fetched or used" not in said
    assert "1 row(s) had no photo in the file: their images were made from the text alone" in said
    assert ("importer replaces each product's images with the ones this file lists (products_export.csv's images "
            "plus the new ones)") in said


def test_a_photo_column_with_no_photo_says_so(env, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("title,description,image_url\nMug,a mug,\nBowl,a bowl,\n", encoding="utf-8")
    up = cli(env, "upload", str(path), "--dry-run")
    assert up.returncode == 0, up.stderr
    assert "photos: none of the 2 row(s) has one (image_url is empty): images are made from the text alone" in \
        up.stdout
    assert "made from the product's photo" not in up.stdout
    as_json = json.loads(cli(env, "upload", str(path), "--dry-run", "--json").stdout)
    assert as_json["photo_rows"] == 0
