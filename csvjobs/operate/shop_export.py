"""Files a shop's own product importer takes, so the generated images land on the existing products.

Shopify (Products > Import, with "Overwrite products with matching handles"): a product CSV with the columns
Shopify documents for updating products (Handle and Title are required; a column left out keeps the product's
value). One row per image (Image Src, Image Position, Image Alt Text of at most 512 characters), and a row per
variant whose own image was made (Option values and Variant Image). Importing images with overwrite replaces a
product's image list, so the product's existing images, as the source file lists them, come first, in their
order; the new ones follow.

WooCommerce (Products > Import, "Update existing products"): ID and SKU to match, Images as comma-separated URLs
(the existing ones from the source first, so the featured image stays), and Tags (the source's, then the model's).
A variation gets its own image.
"""

from __future__ import annotations

import csv
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from csvjobs.errors import InputError
from csvjobs.ingest.column_mapping import normalise_header
from csvjobs.ingest.csv_format import CsvReader, detect_format
from csvjobs.models import ImageStyle
from csvjobs.operate.result_shapes import alt_text_for, image_for, image_location, review_state, tags_of
from csvjobs.operate.shop_urls import ImageUrls
from csvjobs.storage.contract import Storage
from csvjobs.storage.keys import is_remote_photo

SHOPIFY_HEADERS = ["Handle", "Title", "Image Src", "Image Position", "Image Alt Text", "Option1 Name",
                   "Option1 Value", "Option2 Name", "Option2 Value", "Option3 Name", "Option3 Value", "Variant Image"]
WOOCOMMERCE_HEADERS = ["ID", "SKU", "Images", "Tags"]
ALT_TEXT_LIMIT = 512  # Shopify's limit for Image Alt Text
_STYLE_NAMES = {ImageStyle.LIFESTYLE_EMOTIONAL: "in use", ImageStyle.SINGLE_WHITE_BACKGROUND: "on white"}


# WooCommerce exports its headers in the shop's language (and imports them back in it): the columns read here,
# by the names WooCommerce gives them in English and in the languages of its largest stores.
_WOO_ALIASES = {
    "ID": ("ID",),
    "SKU": ("SKU", "REF", "Referencia", "Artikelnummer", "UGS"),
    "Images": ("Images", "Imagens", "Imágenes", "Bilder", "Immagini", "Afbeeldingen"),
    "Tags": ("Tags", "Etiquetas", "Schlagwörter", "Étiquettes", "Tag"),
    "Parent": ("Parent", "Produto ascendente", "Superior", "Übergeordnetes Produkt", "Parent product", "Genitore",
               "Hoofdproduct"),
}


def _column(row_data: dict[str, Any], name: str) -> str:
    """A source column's value, its header matched as upload matches headers (and, for WooCommerce's columns,
    under its localised names too)."""
    wanted = {normalise_header(alias) for alias in _WOO_ALIASES.get(name, (name,))}
    for key, value in row_data.items():
        if normalise_header(key) in wanted:
            return str(value or "").strip()
    return ""


def slug(text: str) -> str:
    """A handle as Shopify makes one from a title: lowercase ASCII words joined by hyphens."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


@dataclass
class NewImage:
    """A generated image of a product, once per product however many rows share it."""

    url: str
    alt: str


@dataclass
class Product:
    """What one shop product gets: its existing images, the new ones, and variant images."""

    handle: str
    title: str
    option_names: list[str] = field(default_factory=list)
    existing: list[tuple[str, str]] = field(default_factory=list)  # (URL, alt text)
    new: list[NewImage] = field(default_factory=list)
    variants: list[tuple[list[str], str]] = field(default_factory=list)  # (option values, image URL)
    seen: set[str] = field(default_factory=set)

    def add_existing(self, url: str, alt: str = "") -> None:
        if url and url not in self.seen:
            self.seen.add(url)
            self.existing.append((url, alt))

    def add_new(self, key: str, image: NewImage) -> None:
        if key not in self.seen:
            self.seen.add(key)
            self.new.append(image)


def _images(row: dict[str, Any], urls: ImageUrls) -> list[tuple[ImageStyle, str, str, str]]:
    """(style, dedupe key, URL, alt text) of a completed row's stored images."""
    found = []
    for style in ImageStyle:
        image = image_for(row["generated_images"], style)
        if urls.approved_only and review_state(row.get("review"), style) != "approved":
            # The newest image is current until one is approved: after a redo that is not approved (yet), the
            # approved earlier version is what the shop gets; with none, the style is left out.
            earlier = (row.get("approved_versions") or {}).get(style.value)
            if not isinstance(earlier, dict):
                continue
            image = earlier
        path = image_location(image)
        if not path:
            continue
        url = path if is_remote_photo(path) else urls.url(path)
        key = str(image.get("sha256") or path)
        found.append((style, key, url, alt_text_for(row["generated_prompts"], style)))
    return found


# --- Shopify ------------------------------------------------------------------------------------------------


def existing_shopify_images(storage: Storage, storage_path: str | None) -> dict[str, list[tuple[str, str]]]:
    """Handle -> (Image Src, Image Alt Text) in Image Position order, from the source file as uploaded (it holds
    the image-only rows that upload leaves out of the batch)."""
    if not storage_path:
        return {}
    with tempfile.TemporaryDirectory(prefix="csvjobs-export-") as tmp:
        path = Path(tmp) / "source.csv"
        path.write_bytes(storage.read_bytes(storage_path))
        with CsvReader(path, detect_format(path)) as reader:
            records = reader.records()
            header = next((values for _line, values in records if any(v.strip() for v in values)), None)
            if header is None:
                return {}
            index = {normalise_header(h.replace("\ufeff", "")): i for i, h in enumerate(header)}
            found: dict[str, list[tuple[int, int, str, str]]] = {}
            for order, (_line, values) in enumerate(records):
                def get(name: str, values: list[str] = values) -> str:
                    i = index.get(name)
                    return values[i].strip() if i is not None and i < len(values) else ""

                handle, src = get("handle"), get("image src")
                if handle and src:
                    position = get("image position")
                    found.setdefault(handle, []).append(
                        (int(position) if position.isdigit() else 10**9, order, src, get("image alt text")))
    return {handle: [(src, alt) for _p, _o, src, alt in sorted(images)] for handle, images in found.items()}


def shopify_products(rows: Iterable[dict[str, Any]], batch: dict[str, Any], storage: Storage, urls: ImageUrls,
                     handle_column: str | None) -> list[Product]:
    """Products in the order they first appear, with their images and variant images."""
    preset = (batch.get("column_mapping") or {}).get("preset", "")
    from_shopify = preset == "shopify" and not handle_column
    if not from_shopify and handle_column is None and not any(
            normalise_header(h) == "title" for h in batch["csv_headers"]) and "title" not in (
            (batch.get("column_mapping") or {}).get("fields") or {}):
        raise InputError("nothing identifies the products in the shop: the source is not a Shopify export and has "
                         "no title to derive a handle from; pass --handle-column HEADER naming the column that "
                         "holds each product's Shopify handle")
    if handle_column and normalise_header(handle_column) not in {normalise_header(h) for h in batch["csv_headers"]}:
        raise InputError(f"--handle-column {handle_column!r}: the source has no such column; its columns are "
                         f"{', '.join(batch['csv_headers'][:40])}")
    existing = existing_shopify_images(storage, batch.get("storage_path")) if from_shopify else {}
    products: dict[str, Product] = {}
    for row in rows:
        data = row["row_data"] or {}
        product_fields = row["product"] or {}
        if from_shopify:
            handle = _column(data, "Handle")
        elif handle_column:
            handle = _column(data, handle_column)
        else:
            handle = slug(product_fields.get("title", ""))
        if not handle:
            raise InputError(f"row {row['row_number']} has no handle (" + (
                "its Handle is empty" if from_shopify else f"its {handle_column!r} is empty" if handle_column
                else "its title gives none") + "); every product needs a stable identifier to be updated")
        product = products.get(handle)
        if product is None:
            title = (_column(data, "Title") if from_shopify else "") or product_fields.get("title", "") or handle
            product = products[handle] = Product(handle, title)
            if from_shopify:
                product.option_names = [_column(data, f"Option{n} Name") for n in (1, 2, 3)]
                for url, alt in existing.get(handle, []):
                    product.add_existing(url, alt)
            elif is_remote_photo(product_fields.get("image_url", "")):
                product.add_existing(product_fields["image_url"])
        if row["status"] != "completed":
            continue
        images = _images(row, urls)
        for style, key, url, alt in images:
            product.add_new(key, NewImage(url, (alt or f"{product.title} {_STYLE_NAMES[style]}")[:ALT_TEXT_LIMIT]))
        values = [_column(data, f"Option{n} Value") for n in (1, 2, 3)] if from_shopify else []
        white = next((url for style, _key, url, _alt in images if style is ImageStyle.SINGLE_WHITE_BACKGROUND), "")
        if any(values) and white and values not in [v for v, _url in product.variants]:
            product.variants.append((values, white))
    return list(products.values())


def write_shopify(target: TextIO, products: list[Product]) -> int:
    """The Shopify product CSV; returns the number of products that get new images."""
    writer = csv.writer(target)
    writer.writerow(SHOPIFY_HEADERS)
    count = 0
    for product in products:
        if not product.new:
            continue
        count += 1
        images = [(url, alt) for url, alt in product.existing] + [(i.url, i.alt) for i in product.new]
        for position, (url, alt) in enumerate(images, start=1):
            writer.writerow([product.handle, product.title if position == 1 else "", url, position,
                             alt[:ALT_TEXT_LIMIT]] + [""] * 7)
        names = product.option_names + [""] * (3 - len(product.option_names))
        if len(product.variants) > 1:  # a product of one variant shows its images; a variant image adds nothing
            for values, url in product.variants:
                cells = [c for name, value in zip(names, values, strict=True) for c in (name, value)]
                writer.writerow([product.handle, "", "", "", "", *cells, url])
    return count


# --- WooCommerce --------------------------------------------------------------------------------------------


def _woo_tags(existing: str, generated: list[str]) -> str:
    tags: dict[str, str] = {}
    for tag in [*existing.split(","), *generated]:
        clean = " ".join(tag.replace(",", " ").split())
        if clean:
            tags.setdefault(clean.lower(), clean)
    return ", ".join(tags.values())


def woocommerce_rows(rows: Iterable[dict[str, Any]], batch: dict[str, Any], urls: ImageUrls) -> Iterator[list[str]]:
    """[ID, SKU, Images, Tags] per product or variation that has new images."""
    headers = {normalise_header(h) for h in batch["csv_headers"]}
    sku_from_mpn = "mpn" in ((batch.get("column_mapping") or {}).get("fields") or {})
    identifiers = {normalise_header(a) for a in (*_WOO_ALIASES["ID"], *_WOO_ALIASES["SKU"])}
    if not headers & identifiers and not sku_from_mpn:
        raise InputError("nothing identifies the products in WooCommerce: the source has no ID or SKU column; "
                         "upload it with --map mpn=HEADER naming the column that holds each product's SKU")
    for row in rows:
        if row["status"] != "completed":
            continue
        data = row["row_data"] or {}
        product_fields = row["product"] or {}
        ident = _column(data, "ID")
        sku = _column(data, "SKU") or product_fields.get("mpn", "")
        if not ident and not sku:
            raise InputError(f"row {row['row_number']} has neither an ID nor a SKU; WooCommerce cannot match it to "
                             "an existing product")
        images = _images(row, urls)
        if not images:
            continue
        if _column(data, "Parent"):
            # A variation has one image: its own white-background image.
            white = next((url for style, _k, url, _a in images if style is ImageStyle.SINGLE_WHITE_BACKGROUND),
                         images[0][2])
            yield [ident, sku, white, ""]
            continue
        existing = [u.strip() for u in _column(data, "Images").split(",") if u.strip()]
        if not existing and is_remote_photo(product_fields.get("image_url", "")):
            existing = [product_fields["image_url"]]
        new = [url for _style, _key, url, _alt in images if url not in existing]
        yield [ident, sku, ", ".join(existing + new), _woo_tags(_column(data, "Tags"), tags_of(row["generated_tags"]))]


def write_woocommerce(target: TextIO, rows: Iterator[list[str]]) -> int:
    """The WooCommerce product CSV; returns the number of products and variations written."""
    writer = csv.writer(target)
    writer.writerow(WOOCOMMERCE_HEADERS)
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
    return count
