"""Models of the shops' product importers, as their documentation describes them, for importing csvjobs' export
files in tests and checking what the shop would then hold.

Shopify (help.shopify.com/en/manual/products/import-export/using-csv, "Overwrite existing products"): with
"Overwrite products with matching handles" a row's handle picks the product; columns in the file overwrite the
product's values (a blank cell in a column that is there overwrites with blank, the conservative reading: the page
says so for required columns), columns left out keep them, the images a product's rows list replace its images,
and the variants listed replace its variants (a listed variant keeps the values of columns left out). An unknown
handle creates a product. Both of Shopify's formats are read (today's column names map onto the legacy ones).

WooCommerce (woocommerce.com/document/product-csv-importer-exporter, "Update existing products"): a row is matched
to a product by ID, else SKU; the columns in the file overwrite (Images replaces the gallery, first = featured;
Tags replaces the tags), columns left out keep their values. An unknown ID or SKU creates a product.
"""

from __future__ import annotations

import copy
import csv
import io
from dataclasses import dataclass, field

from csvjobs.shops.columns import shopify_canonical, woocommerce_canonical, woocommerce_language

VARIANT_COLUMNS = ("option1 value", "option2 value", "option3 value", "variant sku", "variant grams",
                   "variant inventory qty", "variant price", "variant compare at price", "variant barcode",
                   "variant image", "variant requires shipping", "variant taxable", "variant weight unit")
IMAGE_COLUMNS = ("image src", "image position", "image alt text")
OPTION_NAMES = ("option1 name", "option2 name", "option3 name")


def _rows(text: str, preset: str) -> tuple[set[str], list[dict[str, str]]]:
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
    header = next(reader)
    language = woocommerce_language(header)
    names = [shopify_canonical(h) if preset == "shopify" else woocommerce_canonical(h, language) for h in header]
    rows = [dict(zip(names, values, strict=True)) for values in reader if any(v.strip() for v in values)]
    return set(names), rows


@dataclass
class ShopifyProduct:
    """What a Shopify store holds of one product."""

    fields: dict[str, str]
    option_names: list[str]
    images: list[tuple[str, str]] = field(default_factory=list)  # (src, alt) in position order
    variants: list[dict[str, str]] = field(default_factory=list)


def _is_variant(row: dict[str, str]) -> bool:
    return any(row.get(c) for c in ("option1 value", "option2 value", "option3 value", "variant sku",
                                     "variant price"))


def _product_columns(columns: set[str]) -> set[str]:
    return columns - {"handle", *VARIANT_COLUMNS, *IMAGE_COLUMNS, *OPTION_NAMES}


def shopify_store(export_text: str) -> dict[str, ShopifyProduct]:
    """The store a Shopify product export (either format) was exported from."""
    columns, rows = _rows(export_text, "shopify")
    store: dict[str, ShopifyProduct] = {}
    images: dict[str, list[tuple[int, int, str, str]]] = {}
    for order, row in enumerate(rows):
        handle = row["handle"]
        if handle not in store:
            store[handle] = ShopifyProduct({c: row[c] for c in _product_columns(columns)},
                                           [row.get(c, "") for c in OPTION_NAMES])
        if _is_variant(row):
            store[handle].variants.append({c: row[c] for c in VARIANT_COLUMNS if c in columns})
        if row.get("image src"):
            images.setdefault(handle, []).append((int(row.get("image position") or 10**6), order, row["image src"],
                                                  row.get("image alt text", "")))
    for handle, listed in images.items():
        store[handle].images = [(src, alt) for _p, _o, src, alt in sorted(listed)]
    return store


def shopify_import(store: dict[str, ShopifyProduct], import_text: str) -> tuple[dict[str, ShopifyProduct], list[str]]:
    """The store after importing a file with "Overwrite products with matching handles"; and the handles the
    import would have created as new products."""
    columns, rows = _rows(import_text, "shopify")
    assert "handle" in columns and "title" in columns, "Shopify needs Handle and Title to update products"
    after = copy.deepcopy(store)
    created: list[str] = []
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(row["handle"], []).append(row)
    for handle, group in groups.items():
        product = after.get(handle)
        if product is None:
            created.append(handle)
            continue
        first = group[0]
        for column in _product_columns(columns):
            product.fields[column] = first[column]  # in the file: overwrites, blank included
        for n, column in enumerate(OPTION_NAMES):
            if column in columns:
                product.option_names[n] = first[column]
        if "image src" in columns:
            listed = [(int(r.get("image position") or 10**6), i, r["image src"], r.get("image alt text", ""))
                      for i, r in enumerate(group) if r["image src"]]
            product.images = [(src, alt) for _p, _i, src, alt in sorted(listed)]
        listed_variants = [r for r in group if _is_variant(r)]
        if listed_variants:
            keep = {tuple(v.get(f"option{n} value", "") for n in (1, 2, 3)): v for v in product.variants}
            product.variants = []
            for row in listed_variants:
                values = tuple(row.get(f"option{n} value", "") for n in (1, 2, 3))
                variant = dict(keep.get(values, {}))
                variant.update({c: row[c] for c in VARIANT_COLUMNS if c in columns})
                product.variants.append(variant)
    return after, created


@dataclass
class WooItem:
    """What a WooCommerce store holds of one product or variation."""

    fields: dict[str, str]

    @property
    def images(self) -> list[str]:
        return [u.strip() for u in self.fields.get("images", "").split(",") if u.strip()]

    @property
    def tags(self) -> list[str]:
        return [t.strip() for t in self.fields.get("tags", "").split(",") if t.strip()]


def woocommerce_store(export_text: str) -> list[WooItem]:
    """The store a WooCommerce export (any language) was exported from, in file order."""
    _columns, rows = _rows(export_text, "woocommerce")
    return [WooItem(dict(row)) for row in rows]


def woocommerce_import(store: list[WooItem], import_text: str) -> tuple[list[WooItem], list[str]]:
    """The store after importing a file with "Update existing products"; and the rows that would have been
    created as new products."""
    columns, rows = _rows(import_text, "woocommerce")
    after = copy.deepcopy(store)
    created: list[str] = []
    for row in rows:
        match = None
        if row.get("id"):
            match = next((item for item in after if item.fields.get("id") == row["id"]), None)
        elif row.get("sku"):
            match = next((item for item in after if item.fields.get("sku") == row["sku"]), None)
        if match is None:
            created.append(row.get("id") or row.get("sku") or "?")
            continue
        for column in columns:
            match.fields[column] = row[column]
    return after, created
