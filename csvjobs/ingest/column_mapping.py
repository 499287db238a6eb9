"""Mapping CSV columns onto the pipeline's product fields: presets for Shopify and WooCommerce exports, --map."""

from __future__ import annotations

import html
import json
import operator
import re
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from csvjobs.errors import InputError
from csvjobs.models import PIPELINE_FIELDS, Preset
from csvjobs.shops.columns import canonical_index, normalise_header, woocommerce_language

PRESETS: tuple[str, ...] = tuple(Preset)

_SIZE_NAMES = re.compile(r"^(size|sizes|tamanho|talla|taille|gr[öo](ss|ß)e|taglia|maat|dimensions?)$", re.I)


__all__ = ["ColumnMapping", "RowMapper", "build_mapping", "detect_preset", "normalise_header"]


# For each pipeline field, the preset's columns in order of preference (the first non-empty value wins), by their
# canonical names (shops/columns.py: Shopify's legacy names, WooCommerce's English ones).
_SHOPIFY: dict[str, tuple[str, ...]] = {
    "title": ("Title",),
    "description": ("Body (HTML)", "SEO Description"),
    "product_type": ("Type", "Product Category"),
    "mpn": ("Variant SKU", "Google Shopping / MPN", "Variant Barcode"),
    "size": (),  # from the OptionN Value whose OptionN Name is a size (see ShopifyRows)
    "country": (),
    "image_url": ("Variant Image", "Image Src"),  # a variant's own image, else the product's
}
_WOOCOMMERCE: dict[str, tuple[str, ...]] = {
    "title": ("Name",),
    "description": ("Description", "Short description"),
    "product_type": ("Categories",),
    "mpn": ("SKU", "GTIN, UPC, EAN, or ISBN"),
    "size": (),  # from the "Attribute N value(s)" whose "Attribute N name" is a size
    "country": (),
    "image_url": ("Images",),  # comma-separated URLs: the first is the product's main image
}
_PLAIN: dict[str, tuple[str, ...]] = {name: (name,) for name in PIPELINE_FIELDS} | {
    "image_url": ("image_url", "image", "image_src", "photo"),
}


def detect_preset(headers: list[str]) -> str:
    """Pick the preset whose signature columns the headers have."""
    names = {normalise_header(h) for h in headers}
    if {"handle", "title", "body (html)"} <= names or {"url handle", "title"} <= names:
        return "shopify"  # the legacy export, or today's
    if {"sku", "name"} <= names and ({"regular price", "categories", "type"} & names):
        return "woocommerce"
    if woocommerce_language(headers) is not None:
        return "woocommerce"  # an export in the shop's language
    return "plain"


@dataclass
class ColumnMapping:
    """Which header indexes feed each pipeline field, plus what a preset needs to fill variant rows."""

    headers: list[str]
    preset: str
    sources: dict[str, list[int]] = field(default_factory=dict)
    explicit: dict[str, str] = field(default_factory=dict)

    def row_data_keys(self) -> dict[str, str]:
        """field -> the row_data key (header) its value is read from first, for fields whose header is unique."""
        keys = {}
        for name in PIPELINE_FIELDS:
            idx = self.sources.get(name, [])
            if idx and self.headers[idx[0]] and self.headers.count(self.headers[idx[0]]) == 1:
                keys[name] = self.headers[idx[0]]
        return keys

    def describe(self) -> dict[str, str]:
        """field -> the header(s) it is read from, for --dry-run and the batch record."""
        result = {}
        for name in PIPELINE_FIELDS:
            idx = self.sources.get(name, [])
            if idx:
                result[name] = " | ".join(self.headers[i] for i in idx)
            elif name == "size" and self.preset in ("shopify", "woocommerce"):
                result[name] = "(size option / attribute)"
        return result


def parse_map_options(options: list[str]) -> dict[str, str]:
    """Parse --map FIELD=HEADER options."""
    parsed: dict[str, str] = {}
    for option in options:
        name, sep, header = option.partition("=")
        name = normalise_header(name).replace(" ", "_")
        if not sep or not header.strip():
            raise InputError(f"--map {option!r}: expected FIELD=HEADER, for example --map title=Nome")
        if name not in PIPELINE_FIELDS:
            raise InputError(
                f"--map {option!r}: unknown field {name!r}; the fields are {', '.join(PIPELINE_FIELDS)}"
            )
        parsed[name] = header.strip()
    return parsed


def build_mapping(headers: list[str], preset: str, explicit: dict[str, str]) -> ColumnMapping:
    """Resolve the preset and --map options against the file's headers; unknown headers are a clear error."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    chosen = detect_preset(headers) if preset == "auto" else preset
    index = canonical_index(headers, chosen)
    table = {"shopify": _SHOPIFY, "woocommerce": _WOOCOMMERCE}.get(chosen, _PLAIN)
    mapping = ColumnMapping(headers=headers, preset=chosen, explicit=explicit)
    for name in PIPELINE_FIELDS:
        mapping.sources[name] = [index[normalise_header(h)] for h in table[name] if normalise_header(h) in index]
    for name, header in explicit.items():
        key = normalise_header(header)
        if key not in index:
            listed = ", ".join(repr(h) for h in headers[:60])
            more = f" and {len(headers) - 60} more" if len(headers) > 60 else ""
            raise InputError(
                f"--map {name}={header}: the file has no column {header!r}; its columns are: {listed}{more}"
            )
        mapping.sources[name] = [index[key]]
    if not any(mapping.sources[name] for name in ("title", "description", "product_type")):
        raise InputError(_no_describing_columns(headers))
    return mapping


def _no_describing_columns(headers: list[str]) -> str:
    listed = ", ".join(repr(h) for h in headers[:20])
    looks_like_data = sum(1 for h in headers if re.fullmatch(r"[\d.,\s-]*", h)) > len(headers) // 2
    hint = (
        "the first line looks like data: the file needs a header row"
        if looks_like_data
        else "map one with --map title=HEADER (or description= / product_type=), or use --preset"
    )
    return (
        f"no column to describe the products: none of the headers ({listed}) is title, description or "
        f"product_type; {hint}"
    )


class _TextExtractor(HTMLParser):
    # Block elements end a word; script, style and template hold code, not product text (Shopify descriptions
    # pasted from page builders carry <style> blocks that would otherwise reach the prompt).
    _BREAKS = frozenset(("br", "p", "li", "div", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
                         "table", "section", "article", "blockquote", "hr"))
    _HIDDEN = frozenset(("script", "style", "template", "noscript"))

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN:
            self.hidden = max(0, self.hidden - 1)
            self.parts.append(" ")
        elif tag in self._BREAKS:
            self.parts.append(" ")


_WHITESPACE = re.compile(r"\s+")


def _single_spaced_ascii(value: str) -> bool:
    """True when " ".join(value.split()) would return value unchanged, for ASCII text (else False).

    Most values are plain single-spaced ASCII, and answering that costs a third of splitting and joining them.
    The characters are exactly the ASCII whitespace that str.split() splits on; one-character `in` tests are
    memchr-fast, which any() or a regular expression over the text is not.
    """
    return (
        value.isascii()
        and "  " not in value
        and not value.startswith(" ")
        and not value.endswith(" ")
        and "\n" not in value
        and "\r" not in value
        and "\t" not in value
        and "\x0b" not in value
        and "\x0c" not in value
        and "\x1c" not in value
        and "\x1d" not in value
        and "\x1e" not in value
        and "\x1f" not in value
    )


def html_to_text(value: str) -> str:
    """Reduce HTML (product descriptions) to plain text with normalised whitespace."""
    if "<" not in value and "&" not in value:
        return value if _single_spaced_ascii(value) else " ".join(value.split())
    if "<" not in value:
        return " ".join(html.unescape(value).split())
    parser = _TextExtractor()
    parser.feed(value)
    parser.close()
    return _WHITESPACE.sub(" ", "".join(parts for parts in parser.parts)).strip()


# WooCommerce's default product category, which a product is in when nobody chose one, as each language of the
# shop names it: no product type (the prompt model would be told "Sem categoria" is what the product is).
WOOCOMMERCE_DEFAULT_CATEGORIES = frozenset({
    "uncategorized", "uncategorised", "sem categoria", "sin categoria", "sin categorizar", "unkategorisiert",
    "non classe", "senza categoria", "geen categorie", "ongecategoriseerd", "bez kategorii", "okategoriserad",
    "ukategoriseret", "ukategorisert", "luokittelematon", "kategorisiz", "nezarazeno", "без рубрики",
})


def without_default_category(categories: str) -> str:
    """A WooCommerce categories cell without the shop's default category ("Uncategorized", "Sem categoria")."""
    kept = [part for part in categories.split(",")
            if _folded(part.rsplit(">", 1)[-1]) not in WOOCOMMERCE_DEFAULT_CATEGORIES]
    return ",".join(kept).strip()


def _folded(text: str) -> str:
    """Lower case, accents off, spaces single: how two spellings of a category name are compared."""
    plain = unicodedata.normalize("NFKD", text.casefold())
    return " ".join("".join(c for c in plain if not unicodedata.combining(c)).split())


class RowMapper:
    """Turns one record's values into product fields, remembering what a preset needs across rows.

    Shopify variant rows carry only variant fields: product fields come from the first row of the same Handle,
    which Shopify writes directly above its variants, so only the current product is remembered. WooCommerce
    variations name their parent ("id:65" or a SKU); recent parents are remembered in a bounded cache so memory
    stays flat on any file size.
    """

    _PARENT_CACHE = 50_000

    def __init__(self, mapping: ColumnMapping, default_country: str = "") -> None:
        self.mapping = mapping
        self.default_country = default_country
        self._idx = canonical_index(mapping.headers, mapping.preset)
        self._shopify_product: dict[str, str] = {}
        self._shopify_handle: str | None = None
        self._shopify_option_names: list[str] = []
        self._woo_parents: OrderedDict[str, dict[str, str]] = OrderedDict()
        # Precomputed once, because map() runs for every row of files with millions of rows: the fields read
        # from one column are fetched together by C code; only fields with fallback columns loop in Python.
        sources = {name: tuple(mapping.sources.get(name, ())) for name in PIPELINE_FIELDS}
        single = [(name, s[0]) for name, s in sources.items() if len(s) == 1]
        self._single_names = tuple(name for name, _ in single)
        self._single_get = getter([i for _, i in single])
        self._fallbacks = tuple((name, s) for name, s in sources.items() if len(s) > 1)
        self._empty = {name: "" for name, s in sources.items() if not s}

    def _col(self, values: list[str], name: str) -> str:
        i = self._idx.get(name)
        return values[i].strip() if i is not None and i < len(values) else ""

    def is_shopify_image_row(self, values: list[str]) -> bool:
        """A Shopify row that only adds an image to the product above it: not a product or variant."""
        if self.mapping.preset != "shopify":
            return False
        if self._col(values, "title"):
            return False
        variant_cols = ("variant sku", "option1 value", "option2 value", "option3 value", "variant price")
        return not any(self._col(values, c) for c in variant_cols)

    def map(self, values: list[str]) -> dict[str, str]:
        """Product fields of one record with one value per header (empty strings for missing fields)."""
        product = dict(zip(self._single_names, map(str.strip, self._single_get(values)), strict=True))
        for name, sources in self._fallbacks:
            value = ""
            for i in sources:
                value = values[i].strip()
                if value:
                    break
            product[name] = value
        product.update(self._empty)
        if self.mapping.preset == "shopify":
            self._fill_shopify(values, product)
        elif self.mapping.preset == "woocommerce":
            if "," in product["image_url"] and "image_url" not in self.mapping.explicit:
                product["image_url"] = product["image_url"].split(",", 1)[0].strip()
            self._fill_woocommerce(values, product)
        if product["description"]:
            product["description"] = html_to_text(product["description"])
        if product["title"]:
            product["title"] = html_to_text(product["title"])
        if not product["country"]:
            product["country"] = self.default_country
        return product

    def _fill_shopify(self, values: list[str], product: dict[str, str]) -> None:
        handle = self._col(values, "handle")
        if self._col(values, "title") or handle != self._shopify_handle:
            self._shopify_handle = handle
            self._shopify_product = {k: v for k, v in product.items() if k not in ("mpn", "size")}
            self._shopify_option_names = [self._col(values, f"option{n} name") for n in (1, 2, 3)]
        else:
            for key, value in self._shopify_product.items():
                if not product.get(key):
                    product[key] = value
        if not product["size"] and "size" not in self.mapping.explicit:
            for n, name in enumerate(self._shopify_option_names, start=1):
                if name and _SIZE_NAMES.match(name.strip()):
                    product["size"] = self._col(values, f"option{n} value")
                    break

    def _fill_woocommerce(self, values: list[str], product: dict[str, str]) -> None:
        if product["product_type"] and "product_type" not in self.mapping.explicit:
            product["product_type"] = without_default_category(product["product_type"])
        parent_ref = self._col(values, "parent")
        if parent_ref:
            parent = self._woo_parents.get(parent_ref)
            if parent:
                for key, value in parent.items():
                    if not product.get(key):
                        product[key] = value
        else:
            remembered = {k: v for k, v in product.items() if k not in ("mpn", "size")}
            for ref in (f"id:{self._col(values, 'id')}", self._col(values, "sku")):
                if ref and ref != "id:":
                    self._woo_parents[ref] = remembered
                    self._woo_parents.move_to_end(ref)
            while len(self._woo_parents) > self._PARENT_CACHE:
                self._woo_parents.popitem(last=False)
        if not product["size"] and "size" not in self.mapping.explicit:
            for n in range(1, 10):
                name = self._col(values, f"attribute {n} name")
                if not name:
                    if f"attribute {n} name" not in self._idx:
                        break
                    continue
                if _SIZE_NAMES.match(name):
                    product["size"] = self._col(values, f"attribute {n} value(s)")
                    break


    def appearance(self, values: list[str], product: dict[str, str], look_words: tuple[str, ...]) -> str | None:
        """What a row of a Shopify or WooCommerce product looks like, as a key: the product, its photo and the
        options that change its look (an option whose name contains a look word: colour, material, ...). Rows
        with the same key show the same thing, so they can share images; None outside those presets."""
        looks: list[tuple[str, str]] = []
        if self.mapping.preset == "shopify":
            group = self._col(values, "handle")
            for n, name in enumerate(self._shopify_option_names, start=1):
                if name and _is_look(name, look_words):
                    looks.append((name.lower(), self._col(values, f"option{n} value").lower()))
        elif self.mapping.preset == "woocommerce":
            parent = self._col(values, "parent")
            own = self._col(values, "id")
            group = parent or (f"id:{own}" if own else self._col(values, "sku"))
            for n in range(1, 10):
                name = self._col(values, f"attribute {n} name")
                if name and _is_look(name, look_words):
                    looks.append((name.lower(), self._col(values, f"attribute {n} value(s)").lower()))
        else:
            return None
        if not group:
            return None
        return json.dumps([group, product.get("image_url", ""), sorted(looks)])


def _is_look(option_name: str, look_words: tuple[str, ...]) -> bool:
    name = option_name.lower()
    return any(word in name for word in look_words)


def getter(indexes: Sequence[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """A function giving the values at these indexes (or keys) as a tuple, even for one (itemgetter's is bare)."""
    if not indexes:
        return lambda values: ()
    if len(indexes) == 1:
        only = indexes[0]
        return lambda values: (values[only],)
    return operator.itemgetter(*indexes)
