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

import csv
import functools
import tempfile
import unicodedata
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import InputError
from csvjobs.ingest.csv_format import CsvReader, detect_format
from csvjobs.models import ImageStyle
from csvjobs.operate import queries
from csvjobs.operate.cells import generated_cell
from csvjobs.operate.export import SHOP_FORMATS, ExportReport, check_output, output_file
from csvjobs.operate.result_shapes import alt_text_for, image_for, image_location, review_state, tags_of
from csvjobs.shops.columns import (
    SHOPIFY_CURRENT_NAMES,
    SHOPIFY_LEGACY_NAMES,
    canonical_index,
    is_current_shopify,
    normalise_header,
)
from csvjobs.shops.urls import ImageUrls
from csvjobs.storage.contract import Storage
from csvjobs.storage.keys import is_remote_photo, readable_name
from csvjobs.storage.registry import open_storage
from csvjobs.users import resolve_user_id

ALT_TEXT_LIMIT = 512  # Shopify's limit for Image Alt Text
APPROVED_ONLY = ("images of this batch have been reviewed, so only approved images are in the file (--all puts "
                 "in every current image)")
SHOPIFY_HINT = ("import it in Shopify under Products > Import, ticking 'Overwrite products with matching handles' "
                "(and nothing else): the file lists each product's existing images first, in their order, then the "
                "new ones, so the images are added and nothing else of the product changes")
WOOCOMMERCE_HINT = ("import it in WooCommerce under Products > Import, ticking 'Update existing products' (and "
                    "leaving 'Map CSV fields' as it proposes): products are matched by ID or SKU, their existing "
                    "images and tags stay and the new ones are added")
WOOCOMMERCE_HEADERS = ["ID", "SKU", "Images", "Tags"]


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


def slug(text: str) -> str:
    """A handle as Shopify makes one from a title: lowercase ASCII words joined by hyphens."""
    return readable_name(text, "", limit=None)


@dataclass
class ShopExportOptions:
    """What the user allowed a shop file to do."""

    handle_column: str | None = None
    replace_images: bool = False
    include_placeholders: bool = False
    variant_images: bool = False
    require_photo: bool = False


@dataclass
class ShopExportNotes:
    """What the user should hear about a shop file besides its row count."""

    placeholders: set[str] = field(default_factory=set)  # the placeholder images' keys (each counted once)
    without_photo: int = 0  # rows whose photo (in the file) could not be fetched or used
    no_photo_given: int = 0  # rows the file gave no photo
    skipped_without_photo: int = 0
    lines: list[str] = field(default_factory=list)

    def finish(self, options: ShopExportOptions) -> None:
        """Refuse placeholders unless allowed; say how many rows' images were made without their photo."""
        if self.placeholders and not options.include_placeholders:
            raise InputError(
                f"{len(self.placeholders)} image(s) in this file are placeholders from the offline provider (no image "
                "model made them), and placeholders never go into a shop file unless you pass "
                "--include-placeholders; run `csvjobs work` with an OpenAI key (or `csvjobs regenerate`) to make "
                "real images first")
        if self.skipped_without_photo:
            self.lines.append(f"{self.skipped_without_photo} row(s) whose images were made without the product's "
                              "photo were left out (--require-photo)")
        else:
            if self.without_photo:
                self.lines.append(f"warning: {self.without_photo} row(s) had their images made without the "
                                  "product's photo (the file gave one, but it could not be fetched or used), so the "
                                  "product in them is the model's idea of it: review them, or pass --require-photo "
                                  "to leave them out")
            if self.no_photo_given:
                self.lines.append(f"{self.no_photo_given} row(s) had no photo in the file: their images were made "
                                  "from the text alone (--require-photo leaves them out)")


@dataclass
class NewImage:
    """A generated image of a product, once per product however many rows share it."""

    url: str
    alt: str


def chosen_images(row: dict[str, Any], approved_only: bool, options: ShopExportOptions,
                  notes: ShopExportNotes) -> list[tuple[ImageStyle, dict[str, Any]]]:
    """(style, image) of a completed row's images that go to a shop (a file or a push): approved ones once the batch
    is reviewed (or an approved earlier version), none of a row made without its photo under --require-photo."""
    chosen: list[tuple[ImageStyle, dict[str, Any]]] = []
    for style in ImageStyle:
        image = image_for(row["generated_images"], style)
        if approved_only and review_state(row.get("review"), style) != "approved":
            # The newest image is current until one is approved: after a redo that is not approved (yet), the
            # approved earlier version is what the shop gets; with none, the style is left out.
            earlier = (row.get("approved_versions") or {}).get(style.value)
            if not isinstance(earlier, dict):
                continue
            image = earlier
        if image_location(image):
            chosen.append((style, image))
    if chosen and any(image.get("edited") is False for _style, image in chosen):
        # A photo the file gave that could not be fetched or used, or no photo at all: said apart.
        if str((row.get("product") or {}).get("image_url") or "").strip():
            notes.without_photo += 1
        else:
            notes.no_photo_given += 1
        if options.require_photo:
            notes.skipped_without_photo += 1
            return []
    for _style, image in chosen:
        if image.get("placeholder"):
            notes.placeholders.add(str(image.get("sha256") or image_location(image)))
    return chosen


def _images(row: dict[str, Any], urls: ImageUrls, options: ShopExportOptions,
            notes: ShopExportNotes) -> list[tuple[ImageStyle, str, str, str]]:
    """(style, dedupe key, URL, alt text) of a completed row's images that go into a shop file."""
    found = []
    for style, image in chosen_images(row, urls.approved_only, options, notes):
        path = image_location(image)
        url = path if is_remote_photo(path) else urls.url(path)
        found.append((style, str(image.get("sha256") or path), url,
                      alt_text_for(row["generated_prompts"], style, row.get("review"))))
    return found


def _read_source(storage: Storage, storage_path: str | None, preset: str) -> tuple[list[str], list[dict[str, str]]]:
    """The uploaded source file's header and its rows as {canonical column: value} (it holds what the batch
    leaves out: Shopify's image-only rows, every column as the shop exported it)."""
    if not storage_path:
        return [], []
    with tempfile.TemporaryDirectory(prefix="csvjobs-export-") as tmp:
        path = Path(tmp) / "source.csv"
        path.write_bytes(storage.read_bytes(storage_path))
        with CsvReader(path, detect_format(path)) as reader:
            records = reader.records()
            header = next((values for _line, values in records if any(v.strip() for v in values)), None)
            if header is None:
                return [], []
            header = [h.replace("\ufeff", "").strip() for h in header]
            index = canonical_index(header, preset)
            rows = []
            for _line, values in records:
                if not any(v.strip() for v in values):
                    continue
                rows.append({name: values[i].strip() if i < len(values) else "" for name, i in index.items()})
    return header, rows


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



# --- Shopify ------------------------------------------------------------------------------------------------


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
    header, rows = _read_source(storage, storage_path, "shopify")
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


def never_saw_images(shop: str, why: str) -> InputError:
    """The refusal to write a file whose import would replace images csvjobs never saw."""
    option = {"Shopify": "Overwrite products with matching handles", "WooCommerce": "Update existing products"}[shop]
    return InputError(
        f"csvjobs never saw this shop's current images ({why}), and importing with '{option}' replaces a product's "
        "images with the ones the file lists: the shop's own photos would be deleted. Upload a fresh product export "
        f"from the shop instead ({shop}: Products > Export; it lists every product's images and variants) and "
        "export that batch; or pass --replace-images if replacing them is what you want")


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
        images = _images(row, urls, options, notes)
        for _style, key, url, alt in images:
            if url not in product.seen:
                name = alt or f"{product.title} {_style.shopper_words}"
                product.add_new(key, NewImage(url, generated_cell(name)[:ALT_TEXT_LIMIT]))
        white = next((url for style, _key, url, _alt in images if style is ImageStyle.SINGLE_WHITE_BACKGROUND), "")
        values = tuple(value_of(data, f"option{n} value", "shopify") for n in (1, 2, 3)) if from_shopify else ()
        if white and any(values):
            product.variant_images.setdefault(values, white)
    return list(products.values()), bool(source and source.current_format)


@functools.lru_cache(maxsize=64)
def _key_of(headers: tuple[str, ...], name: str, preset: str) -> str | None:
    i = canonical_index(list(headers), preset).get(normalise_header(name))
    return headers[i] if i is not None else None


def value_of(row_data: dict[str, Any], name: str, preset: str) -> str:
    """A source column's value by its canonical name (the row_data keys are the file's own headers)."""
    key = _key_of(tuple(row_data), name, preset)
    return str(row_data[key] or "").strip() if key is not None else ""


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


# --- WooCommerce --------------------------------------------------------------------------------------------


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
        images = _images(row, urls, options, notes)
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
