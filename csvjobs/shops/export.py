"""Files a shop's own product importer takes, so the generated images are added to the existing products and
nothing else of the shop changes.

What the importers do with a file (and so what this module relies on):
- Shopify (Products > Import, "Overwrite products with matching handles"; help.shopify.com, "Using CSV files to
  import and export products" and "Overwriting product details"): a product is matched by its handle; the columns
  in the file overwrite, columns left out keep the product's value, and a blank required column (Title) overwrites
  with blank. The images a product's rows list replace its images, and the variants listed replace its variants.
  So a file lists every image the product already has, in its order, with its alt text, then the new ones; it
  names Title (the shop's own, exactly); it lists variants only when asked to set variant images, and then every
  variant the source export lists, with its option values, exactly. Where csvjobs never saw the shop's images (a
  plain CSV, an export without its image rows) no file is written unless the user accepts that the import
  replaces them (--replace-images).
- WooCommerce (Products > Import, "Update existing products"; woocommerce.com, "Product CSV Importer and
  Exporter"): a product is matched by ID or SKU; the columns in the file overwrite; Images lists the product's
  images (the first is the featured one) and Tags its tags. So a product's row lists its existing images first and
  then the new ones, and its existing tags and then the model's. A variation holds one image: its images go to its
  parent's gallery, and its own image is set only when asked (--variant-images).

Columns csvjobs writes itself (alt text, tags) never begin with a character a spreadsheet runs as a formula; the
shop's own values (handle, title, ID, SKU, existing alt text and tags) are written exactly, since the importer
matches on them.
"""


from __future__ import annotations

import uuid
from pathlib import Path
from typing import TextIO

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import InputError
from csvjobs.operate import queries
from csvjobs.operate.export import SHOP_FORMATS, ExportReport, check_output, output_file
from csvjobs.shops.export_rules import ShopExportNotes, ShopExportOptions
from csvjobs.shops.shopify_export import SHOPIFY_HINT, shopify_products, write_shopify
from csvjobs.shops.urls import ImageUrls
from csvjobs.shops.woocommerce_export import WOOCOMMERCE_HINT, woocommerce_products, write_woocommerce
from csvjobs.storage.registry import open_storage
from csvjobs.users import resolve_user_id

APPROVED_ONLY = ("images of this batch have been reviewed, so only approved images are in the file (--all puts "
                 "in every current image)")


def export_shop_file(settings: Settings, batch_id: uuid.UUID, fmt: str, output: Path | None, out: TextIO, *,
                     base_url: str | None = None, options: ShopExportOptions | None = None,
                     all_images: bool = False) -> ExportReport:
    """Write the file a shop's importer takes (shopify, woocommerce), adding the batch's images to the products."""
    options = options or ShopExportOptions()
    if fmt not in SHOP_FORMATS:
        raise InputError(f"--format {fmt!r}: the shop formats are {', '.join(SHOP_FORMATS)}")
    check_output(output, fmt)
    if options.handle_column is not None and fmt != "shopify":
        raise InputError("--handle-column is for --format shopify")
    user_id = resolve_user_id(settings)
    storage = open_storage(settings)
    urls = ImageUrls(storage, base_url or settings.public_base_url)
    _target, conn = db.open_database(settings, application_name="csvjobs-export")
    with conn, db.user_transaction(conn, user_id):
        batch = queries.export_header(conn, batch_id)
        with output_file(output, out) as target:
            rows = queries.export_rows(conn, batch_id)
            approved_only = bool(batch["reviewed"]) and not all_images
            urls.approved_only = approved_only
            notes = ShopExportNotes()
            if fmt == "shopify":
                products, current = shopify_products(rows, batch, storage, urls, options, notes)
                notes.finish(options)
                count = write_shopify(target, products, current_format=current,
                                      variant_images=options.variant_images)
                report = ExportReport(count, "product(s)", [urls.note, SHOPIFY_HINT])
            else:
                items = woocommerce_products(rows, batch, urls, options, notes)
                notes.finish(options)
                report = ExportReport(write_woocommerce(target, items), "product(s) and variation(s)",
                                      [urls.note, WOOCOMMERCE_HINT])
            if approved_only:
                report.notes.append(APPROVED_ONLY)
            if not options.replace_images:
                report.notes.append(stale_source_note(str(batch["original_filename"]), fmt))
            report.notes.extend(notes.lines)
            return report


def stale_source_note(source: str, shop: str) -> str:
    """The one line on what the shop's importer does with images added since the source export was taken."""
    name = "Shopify" if shop == "shopify" else "WooCommerce"
    return (f"note: {name}'s importer replaces each product's images with the ones this file lists ({source}'s "
            f"images plus the new ones), so an image added in the shop after {source} was exported would be "
            "removed; import this file before anyone adds images, export the products again and upload that "
            f"file as a new batch first, or use `csvjobs push {shop}`, which reads the live shop and only adds")
