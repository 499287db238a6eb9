"""Shopify's import file: each product's existing images (from the source export, in Image Position order, with
their alt text) and then the new ones, in today's column names or the legacy ones; variants only when setting
variant images (see shops/export.py for what the importer does with a file)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from csvjobs.errors import InputError
from csvjobs.models import ImageStyle
from csvjobs.operate.cells import generated_cell
from csvjobs.shops.columns import (
    SHOPIFY_CURRENT_NAMES,
    SHOPIFY_LEGACY_NAMES,
    is_current_shopify,
    normalise_header,
)
from csvjobs.shops.export_rules import (
    ALT_TEXT_LIMIT,
    NewImage,
    ShopExportNotes,
    ShopExportOptions,
    never_saw_images,
    read_source,
    shop_images,
    slug,
    value_of,
)
from csvjobs.shops.urls import ImageUrls
from csvjobs.storage.contract import Storage
from csvjobs.storage.keys import is_remote_photo

SHOPIFY_HINT = ("import it in Shopify under Products > Import, ticking 'Overwrite products with matching handles' "
                "(and nothing else): the file lists each product's existing images first, in their order, then the "
                "new ones, so the images are added and nothing else of the product changes")


def shopify_headers(current: bool, variants: bool = False) -> list[str]:
    """The columns of a Shopify file, in today's format or the legacy one; the option and variant image columns
    only when the file sets variant images (a column in the file overwrites, so none is there unless needed)."""
    names = SHOPIFY_CURRENT_NAMES if current else SHOPIFY_LEGACY_NAMES
    headers = [names["handle"], names["title"], names["image src"], names["image position"], names["image alt text"]]
    if variants:
        headers += [names[part].format(n=n) for n in (1, 2, 3) for part in ("option name", "option value")]
        headers.append(names["variant image"])
    return headers


SHOPIFY_HEADERS = shopify_headers(current=False)
SHOPIFY_VARIANT_HEADERS = shopify_headers(current=False, variants=True)


@dataclass
class Product:
    """What one shop product has (from the source export) and gets."""

    handle: str
    title: str
    option_names: list[str] = field(default_factory=lambda: ["", "", ""])
    existing: list[tuple[str, str]] = field(default_factory=list)  # (URL, alt text) in position order
    variants: list[tuple[list[str], str]] = field(default_factory=list)  # (option values, variant image) as listed
    new: list[NewImage] = field(default_factory=list)
    variant_images: dict[tuple[str, ...], str] = field(default_factory=dict)  # option values -> new white image
    seen: set[str] = field(default_factory=set)

    def add_new(self, key: str, image: NewImage) -> None:
        """Add a generated image once, however many rows share it."""
        if key not in self.seen:
            self.seen.add(key)
            self.new.append(image)


@dataclass
class ShopifySource:
    """What a Shopify export said of each product: images, variants, title; and in which format it came."""

    current_format: bool
    has_images: bool
    products: dict[str, Product]


def read_shopify_source(storage: Storage, storage_path: str | None) -> ShopifySource:
    """Every product of an uploaded Shopify export (either format): its title, images in Image Position order with
    their alt text, option names and variants as listed."""
    header, rows = read_source(storage, storage_path, "shopify")
    names = {normalise_header(h) for h in header}
    has_images = bool(names & {"image src", "product image url"})
    products: dict[str, Product] = {}
    images: dict[str, list[tuple[int, int, str, str]]] = {}
    for order, row in enumerate(rows):
        handle = row.get("handle", "")
        if not handle:
            continue
        product = products.get(handle)
        if product is None:
            product = products[handle] = Product(handle, row.get("title", ""))
        if row.get("title") and not product.title:
            product.title = row["title"]
        if any(row.get(f"option{n} name") for n in (1, 2, 3)) and not any(product.option_names):
            product.option_names = [row.get(f"option{n} name", "") for n in (1, 2, 3)]
        values = [row.get(f"option{n} value", "") for n in (1, 2, 3)]
        if any(values) or row.get("variant sku") or row.get("variant price"):
            product.variants.append((values, row.get("variant image", "")))
        src = row.get("image src", "")
        if src:
            position = row.get("image position", "")
            images.setdefault(handle, []).append(
                (int(position) if position.isdigit() else 10**9, order, src, row.get("image alt text", "")))
    for handle, listed in images.items():
        seen: set[str] = set()
        for _position, _order, src, alt in sorted(listed):
            if src not in seen:
                seen.add(src)
                products[handle].existing.append((src, alt))
    return ShopifySource(is_current_shopify(header), has_images, products)


def shopify_products(rows: Iterable[dict[str, Any]], batch: dict[str, Any], storage: Storage, urls: ImageUrls,
                     options: ShopExportOptions, notes: ShopExportNotes) -> tuple[list[Product], bool]:
    """Products in the order they first appear, with their images and variant images; and whether the file
    should use today's Shopify format."""
    preset = (batch.get("column_mapping") or {}).get("preset", "")
    handle_column = options.handle_column
    from_shopify = preset == "shopify" and not handle_column
    headers = [normalise_header(h) for h in batch["csv_headers"]]
    if not from_shopify and handle_column is None and "title" not in headers and "title" not in (
            (batch.get("column_mapping") or {}).get("fields") or {}):
        raise InputError("nothing identifies the products in the shop: the source is not a Shopify export and has "
                         "no title to derive a handle from; pass --handle-column HEADER naming the column that "
                         "holds each product's Shopify handle")
    if handle_column and normalise_header(handle_column) not in headers:
        raise InputError(f"--handle-column {handle_column!r}: the source has no such column; its columns are "
                         f"{', '.join(batch['csv_headers'][:40])}")
    source = read_shopify_source(storage, batch.get("storage_path")) if from_shopify else None
    if not options.replace_images and (source is None or not source.has_images):
        why = ("the source export has no image columns" if source is not None
               else "the source is not a Shopify product export, so it does not list their images")
        raise never_saw_images("Shopify", why)
    if options.variant_images and source is None:
        raise InputError("--variant-images needs a Shopify product export as the source: an import that sets "
                         "variant images lists the product's variants, which replace the shop's, and only an "
                         "export lists them all; upload a fresh export from the shop, or leave the option out")
    products: dict[str, Product] = {}
    for row in rows:
        data = row["row_data"] or {}
        product_fields = row["product"] or {}
        if from_shopify:
            handle = value_of(data, "handle", "shopify")
        elif handle_column:
            handle = value_of(data, handle_column, "plain")
        else:
            handle = slug(product_fields.get("title", ""))
        if not handle:
            raise InputError(f"row {row['row_number']} has no handle (" + (
                "its handle is empty" if from_shopify else f"its {handle_column!r} is empty" if handle_column
                else "its title gives none") + "); every product needs a stable identifier to be updated")
        product = products.get(handle)
        if product is None:
            known = source.products.get(handle) if source is not None else None
            if known is not None:
                product = known
            else:
                product = Product(handle, product_fields.get("title", "") or handle)
                if is_remote_photo(product_fields.get("image_url", "")):
                    product.existing.append((product_fields["image_url"], ""))
                    product.seen.add(product_fields["image_url"])
            product.seen.update(url for url, _alt in product.existing)
            products[handle] = product
        if row["status"] != "completed":
            continue
        images = shop_images(row, urls, options, notes)
        for _style, key, url, alt in images:
            if url not in product.seen:
                name = alt or f"{product.title} {_style.shopper_words}"
                product.add_new(key, NewImage(url, generated_cell(name)[:ALT_TEXT_LIMIT]))
        white = next((url for style, _key, url, _alt in images if style is ImageStyle.SINGLE_WHITE_BACKGROUND), "")
        values = tuple(value_of(data, f"option{n} value", "shopify") for n in (1, 2, 3)) if from_shopify else ()
        if white and any(values):
            product.variant_images.setdefault(values, white)
    return list(products.values()), bool(source and source.current_format)


def write_shopify(target: TextIO, products: list[Product], *, current_format: bool = False,
                  variant_images: bool = False) -> int:
    """The Shopify product CSV; returns the number of products that get new images.

    Rows are laid out as Shopify's own export lays them out: the product's first row carries its Title, its first
    image and (with variant images) its first variant; further rows carry further images and variants."""
    writer = csv.writer(target)
    writer.writerow(shopify_headers(current_format, variants=variant_images))
    count = 0
    for product in products:
        if not product.new:
            continue
        count += 1
        images = [*product.existing, *((i.url, i.alt) for i in product.new)]
        # Listed variants replace the product's variants: with variant images, list every one the export lists,
        # as it lists them, with its new white image or the image it already has.
        variants = product.variants if variant_images else []
        for i in range(max(len(images), len(variants))):
            url, alt = images[i] if i < len(images) else ("", "")
            # Title exactly as the shop has it (a blank Title would overwrite it) on the product's first row.
            cells: list[Any] = [product.handle, product.title if i == 0 else "", url, i + 1 if url else "",
                                alt[:ALT_TEXT_LIMIT]]
            if variant_images:
                if i < len(variants):
                    values, existing_image = variants[i]
                    image = product.variant_images.get(tuple(values), existing_image)
                    cells += [c for name, value in zip(product.option_names, values, strict=True)
                              for c in (name, value)]
                    cells.append(image)
                else:
                    cells += [""] * 7
            writer.writerow(cells)
    return count
