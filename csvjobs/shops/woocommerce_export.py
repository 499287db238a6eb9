"""WooCommerce's import file: a row per product or variation matched by ID or SKU, its existing images and then
the new ones, its tags merged with the model's (see shops/export.py for what the importer does with a file)."""

from __future__ import annotations

import csv
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from csvjobs.errors import InputError
from csvjobs.models import ImageStyle
from csvjobs.operate.cells import generated_cell
from csvjobs.operate.result_shapes import tags_of
from csvjobs.shops.columns import (
    canonical_index,
)
from csvjobs.shops.export_rules import (
    ShopExportNotes,
    ShopExportOptions,
    never_saw_images,
    shop_images,
    value_of,
)
from csvjobs.shops.urls import ImageUrls
from csvjobs.storage.keys import is_remote_photo

WOOCOMMERCE_HINT = ("import it in WooCommerce under Products > Import, ticking 'Update existing products' (and "
                    "leaving 'Map CSV fields' as it proposes): products are matched by ID or SKU, their existing "
                    "images and tags stay and the new ones are added")
WOOCOMMERCE_HEADERS = ["ID", "SKU", "Images", "Tags"]


@dataclass
class WooProduct:
    """A WooCommerce product or variation, as the source lists it and with what it gets."""

    ident: str
    sku: str
    parent: str
    existing: list[str]
    tags: str
    new: list[str] = field(default_factory=list)
    new_tags: list[str] = field(default_factory=list)
    own_image: str = ""  # a variation's new white image (--variant-images)


def _woo_tags(existing: str, generated: list[str]) -> str:
    """The product's own tags, as the shop wrote them, then the generated ones it does not have yet (compared
    without case or accents: "Café" is "cafe")."""
    tags: dict[str, str] = {}
    for tag in existing.split(","):
        clean = " ".join(tag.split())
        if clean:
            tags.setdefault(_tag_key(clean), clean)
    for tag in generated:
        clean = generated_cell(" ".join(tag.replace(",", " ").split()))
        if clean:
            tags.setdefault(_tag_key(clean), clean)
    return ", ".join(tags.values())


def _tag_key(tag: str) -> str:
    plain = unicodedata.normalize("NFKD", tag.casefold())
    return "".join(c for c in plain if not unicodedata.combining(c))


def woocommerce_products(rows: Iterable[dict[str, Any]], batch: dict[str, Any], urls: ImageUrls,
                         options: ShopExportOptions, notes: ShopExportNotes) -> list[WooProduct]:
    """Products and variations in file order, with their existing and new images and tags."""
    mapping = batch.get("column_mapping") or {}
    preset = mapping.get("preset", "")
    index = canonical_index(list(batch["csv_headers"]), "woocommerce")
    sku_from_mpn = "mpn" in (mapping.get("fields") or {})
    if "id" not in index and "sku" not in index and not sku_from_mpn:
        raise InputError("nothing identifies the products in WooCommerce: the source has no ID or SKU column; "
                         "upload it with --map mpn=HEADER naming the column that holds each product's SKU")
    if "images" not in index and not options.replace_images:
        raise never_saw_images("WooCommerce", "the source has no Images column" if preset == "woocommerce"
                               else "the source is not a WooCommerce product export, so it does not list their "
                               "images")
    if options.variant_images and "parent" not in index:
        raise InputError("--variant-images needs a WooCommerce product export as the source (it names each "
                         "variation's parent); upload a fresh export from the shop, or leave the option out")
    products: dict[str, WooProduct] = {}
    order: list[WooProduct] = []
    for row in rows:
        data = row["row_data"] or {}
        product_fields = row["product"] or {}
        ident = value_of(data, "id", "woocommerce")
        sku = value_of(data, "sku", "woocommerce") or product_fields.get("mpn", "")
        if not ident and not sku:
            raise InputError(f"row {row['row_number']} has neither an ID nor a SKU; WooCommerce cannot match it to "
                             "an existing product")
        existing = [u.strip() for u in value_of(data, "images", "woocommerce").split(",") if u.strip()]
        if "images" not in index and is_remote_photo(product_fields.get("image_url", "")):
            existing = [product_fields["image_url"]]
        item = WooProduct(ident, sku, value_of(data, "parent", "woocommerce"), existing,
                          value_of(data, "tags", "woocommerce"))
        order.append(item)
        for ref in (f"id:{ident}" if ident else "", sku):
            if ref:
                products.setdefault(ref, item)
        if row["status"] != "completed":
            continue
        images = shop_images(row, urls, options, notes)
        if not images:
            continue
        if item.parent:
            parent = products.get(item.parent) or products.get(item.parent.removeprefix("id:"))
            white = next((url for style, _k, url, _a in images if style is ImageStyle.SINGLE_WHITE_BACKGROUND), "")
            if options.variant_images and white:
                item.own_image = white
            if parent is None:
                notes.lines.append(f"row {row['row_number']}: the variation's parent ({item.parent}) is not in the "
                                   "source file, so its other images were left out")
                continue
            target = parent
        else:
            target = item
        for _style, _key, url, _alt in images:
            if url not in target.existing and url not in target.new and url != item.own_image:
                target.new.append(url)
        target.new_tags.extend(tags_of(row["generated_tags"]))
    return order


def write_woocommerce(target: TextIO, products: list[WooProduct]) -> int:
    """The WooCommerce product CSV; returns the number of products and variations written."""
    writer = csv.writer(target)
    writer.writerow(WOOCOMMERCE_HEADERS)
    count = 0
    for item in products:
        if item.parent:
            if item.own_image:  # a variation holds one image: set only when asked (--variant-images)
                writer.writerow([item.ident, item.sku, item.own_image, item.tags])
                count += 1
            continue
        if not item.new:
            continue
        writer.writerow([item.ident, item.sku, ", ".join(item.existing + item.new), _woo_tags(item.tags,
                                                                                                 item.new_tags)])
        count += 1
    return count
