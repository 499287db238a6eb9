"""What every shop file and push shares: which of a row's images go to a shop, the user's options, the notes
said besides the count, and the uploaded source export read back as the shop wrote it."""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csvjobs.errors import InputError
from csvjobs.ingest.csv_format import CsvReader, detect_format
from csvjobs.models import ImageStyle
from csvjobs.operate.result_shapes import alt_text_for, image_for, image_location, review_state
from csvjobs.shops.columns import (
    canonical_index,
    normalise_header,
)
from csvjobs.shops.urls import ImageUrls
from csvjobs.storage.contract import Storage
from csvjobs.storage.keys import is_remote_photo, readable_name

ALT_TEXT_LIMIT = 512  # Shopify's limit for Image Alt Text


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


def shop_images(row: dict[str, Any], urls: ImageUrls, options: ShopExportOptions,
            notes: ShopExportNotes) -> list[tuple[ImageStyle, str, str, str]]:
    """(style, dedupe key, URL, alt text) of a completed row's images that go into a shop file."""
    found = []
    for style, image in chosen_images(row, urls.approved_only, options, notes):
        path = image_location(image)
        url = path if is_remote_photo(path) else urls.url(path)
        found.append((style, str(image.get("sha256") or path), url,
                      alt_text_for(row["generated_prompts"], style, row.get("review"))))
    return found


def read_source(storage: Storage, storage_path: str | None, preset: str) -> tuple[list[str], list[dict[str, str]]]:
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


def never_saw_images(shop: str, why: str) -> InputError:
    """The refusal to write a file whose import would replace images csvjobs never saw."""
    option = {"Shopify": "Overwrite products with matching handles", "WooCommerce": "Update existing products"}[shop]
    return InputError(
        f"csvjobs never saw this shop's current images ({why}), and importing with '{option}' replaces a product's "
        "images with the ones the file lists: the shop's own photos would be deleted. Upload a fresh product export "
        f"from the shop instead ({shop}: Products > Export; it lists every product's images and variants) and "
        "export that batch; or pass --replace-images if replacing them is what you want")


@functools.lru_cache(maxsize=64)
def key_of(headers: tuple[str, ...], name: str, preset: str) -> str | None:
    i = canonical_index(list(headers), preset).get(normalise_header(name))
    return headers[i] if i is not None else None


def value_of(row_data: dict[str, Any], name: str, preset: str) -> str:
    """A source column's value by its canonical name (the row_data keys are the file's own headers)."""
    key = key_of(tuple(row_data), name, preset)
    return str(row_data[key] or "").strip() if key is not None else ""
