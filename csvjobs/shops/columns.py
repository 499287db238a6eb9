"""The names shop exports give their columns, mapped onto one canonical name each.

Shopify has two product CSV formats (help.shopify.com, "Using CSV files to import and export products"): the
legacy one (`Handle, Title, Body (HTML), ..., Image Src, Image Position, Image Alt Text, Variant Image`) and
today's (`URL handle, Title, Description, ..., SKU, Price, Product image URL, Image position, Image alt text,
Variant image URL`). Both read the same once their headers are canonical (the legacy names are), and an export
writes back the names the source used.

WooCommerce's exporter and importer translate their column names into the shop's language (the bundled real
export is Brazilian Portuguese). The tables below give, per language, WooCommerce's names for the columns csvjobs
reads; the canonical name is the English one. Headers are compared after normalise_header (case and spacing).
"""

from __future__ import annotations

import re

_SPACES = re.compile(r"[\s_\-]+")


def normalise_header(header: str) -> str:
    """Headers compare case- and space-insensitively ("Body (HTML)" == "body  (html)" == "BODY_(HTML)")."""
    return _SPACES.sub(" ", header.replace("\ufeff", "")).strip().lower()


# Today's Shopify export -> the legacy name (columns whose names only differ in case need no entry).
SHOPIFY_CURRENT_TO_LEGACY = {
    "url handle": "handle",
    "description": "body (html)",
    "sku": "variant sku",
    "barcode": "variant barcode",
    "price": "variant price",
    "compare at price": "variant compare at price",
    "product image url": "image src",
    "variant image url": "variant image",
    "product category": "product category",
}
# The columns a shop file writes, in each format (the exporter picks the format the source came in).
SHOPIFY_LEGACY_NAMES = {"handle": "Handle", "title": "Title", "image src": "Image Src",
                        "image position": "Image Position", "image alt text": "Image Alt Text",
                        "option name": "Option{n} Name", "option value": "Option{n} Value",
                        "variant image": "Variant Image"}
SHOPIFY_CURRENT_NAMES = {"handle": "URL handle", "title": "Title", "image src": "Product image URL",
                         "image position": "Image position", "image alt text": "Image alt text",
                         "option name": "Option{n} name", "option value": "Option{n} value",
                         "variant image": "Variant image URL"}

# WooCommerce's column names by language (from WooCommerce's translations; pt-BR as in the bundled real export).
_WOO_LOCALISED: dict[str, dict[str, str]] = {
    "pt": {"tipo": "type", "ref": "sku", "nome": "name", "publicado": "published",
           "descrição curta": "short description", "descrição": "description", "preço": "regular price",
           "categorias": "categories", "imagens": "images", "produto ascendente": "parent",
           "posição": "position"},
    "es": {"tipo": "type", "nombre": "name", "descripción corta": "short description", "descripción": "description",
           "precio normal": "regular price", "categorías": "categories", "etiquetas": "tags",
           "imágenes": "images", "superior": "parent"},
    "de": {"typ": "type", "artikelnummer": "sku", "name": "name", "kurzbeschreibung": "short description",
           "beschreibung": "description", "regulärer preis": "regular price", "kategorien": "categories",
           "schlagwörter": "tags", "bilder": "images", "übergeordnetes produkt": "parent"},
    "fr": {"ugs": "sku", "nom": "name", "description courte": "short description",
           "tarif régulier": "regular price", "catégories": "categories", "étiquettes": "tags",
           "parent": "parent"},
    "it": {"tipo": "type", "nome": "name", "breve descrizione": "short description", "descrizione": "description",
           "prezzo di listino": "regular price", "categorie": "categories", "tag": "tags", "immagini": "images",
           "genitore": "parent"},
    "nl": {"naam": "name", "korte beschrijving": "short description", "beschrijving": "description",
           "reguliere prijs": "regular price", "categorieën": "categories", "afbeeldingen": "images",
           "hoofdproduct": "parent"},
}
# "Attribute 1 name" / "Attribute 1 value(s)" in each language, N captured: (name pattern, values pattern).
_WOO_ATTRIBUTE_NAMES = [
    (r"nome do atributo (\d+)", r"valores? do atributo (\d+)"),
    (r"nombre del atributo (\d+)", r"valor\(es\) del atributo (\d+)"),
    (r"name der eigenschaft (\d+)", r"wert\(e\) der eigenschaft (\d+)"),
    (r"nom de l['’]attribut (\d+)", r"valeur\(s\) de l['’]attribut (\d+)"),
    (r"nome dell['’]attributo (\d+)", r"valore\(i\) dell['’]attributo (\d+)"),
    (r"attribuut (\d+) naam", r"attribuut (\d+) waarde\(n\)"),
]
_WOO_ATTRIBUTES = [(re.compile(f"^{pattern}$"), part) for names in _WOO_ATTRIBUTE_NAMES
                   for pattern, part in zip(names, ("name", "value(s)"), strict=True)]


def woocommerce_language(headers: list[str]) -> str | None:
    """The language of a localised WooCommerce export ("pt", "es", ...), or None for English or not WooCommerce.

    A language is recognised when at least four of its names are among the headers, the parent or images
    column among them (so a plain file with a "Nome" column is not taken for one)."""
    names = {normalise_header(h) for h in headers}
    best: tuple[int, str] | None = None
    for language, table in _WOO_LOCALISED.items():
        found = {canonical for localised, canonical in table.items() if localised in names}
        if len(found) >= 4 and found & {"parent", "images"} and found & {"name"}:
            score = (len(found), language)
            best = max(best, score) if best else score
    return best[1] if best else None


def woocommerce_canonical(header: str, language: str | None) -> str:
    """A WooCommerce header's English (canonical, normalised) name."""
    name = normalise_header(header)
    if language is None:
        return name
    table = _WOO_LOCALISED.get(language, {})
    if name in table:
        return table[name]
    for pattern, part in _WOO_ATTRIBUTES:
        match = pattern.match(name)
        if match:
            return f"attribute {match.group(1)} {part}"
    return name


def shopify_canonical(header: str) -> str:
    """A Shopify header's legacy (canonical, normalised) name."""
    name = normalise_header(header)
    return SHOPIFY_CURRENT_TO_LEGACY.get(name, name)


def is_current_shopify(headers: list[str]) -> bool:
    """Whether a Shopify export is in today's format (URL handle) rather than the legacy one (Handle)."""
    names = {normalise_header(h) for h in headers}
    return "url handle" in names and "handle" not in names


def canonical_index(headers: list[str], preset: str) -> dict[str, int]:
    """Canonical (normalised) header name -> its first column, for a preset's file; a file's own name wins over an
    alias (so a legacy file's "Description" never hides its "Body (HTML)")."""
    index: dict[str, int] = {}
    for i, header in enumerate(headers):
        index.setdefault(normalise_header(header), i)
    if preset == "shopify":
        aliases = {i: shopify_canonical(h) for i, h in enumerate(headers)}
    elif preset == "woocommerce":
        language = woocommerce_language(headers)
        aliases = {i: woocommerce_canonical(h, language) for i, h in enumerate(headers)}
    else:
        return index
    own = set(index)
    for i, name in aliases.items():
        if name not in own:
            index.setdefault(name, i)
    return index
