"""`csvjobs export`: one line per row (original columns, trigger text, prompts, image paths, tags, status, error)
as CSV that is safe to open in a spreadsheet, as JSON lines, or as a self-contained HTML gallery."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import InputError
from csvjobs.images.channels import describe_checks
from csvjobs.images.thumbnails import thumbnail_data_uri
from csvjobs.models import ImageStyle, trigger_text
from csvjobs.operate import queries
from csvjobs.operate.cells import neutralise
from csvjobs.operate.result_shapes import (
    alt_text_for,
    image_for,
    image_location,
    prompt_for,
    review_state,
    tags_of,
)
from csvjobs.redact import safe_url
from csvjobs.storage.contract import Storage
from csvjobs.storage.keys import is_remote_photo
from csvjobs.storage.registry import open_storage
from csvjobs.users import resolve_user_id

FORMATS = ("csv", "jsonl", "html", "shopify", "woocommerce")
SHOP_FORMATS = ("shopify", "woocommerce")
RESULT_COLUMNS = [
    "row_number", "status", "error_message", "trigger_text", "lifestyle_emotional_prompt",
    "single_white_background_prompt", "lifestyle_emotional_image", "single_white_background_image", "tags",
    "cost_usd", "photo_source", "reference_photo", "photo_note", "reuses_row", "lifestyle_emotional_review",
    "single_white_background_review", "earlier_versions", "lifestyle_emotional_route", "single_white_background_route",
    "lifestyle_emotional_checks", "single_white_background_checks", "lifestyle_emotional_fidelity",
    "single_white_background_fidelity",
]
def _shown_photo(source: str) -> str:
    """The row's photo as csvjobs shows it: a URL without its userinfo and query values (the file's own column
    keeps it as given)."""
    return safe_url(source) if is_remote_photo(source) else source


def _image_path(images: Any, style: ImageStyle) -> str:
    return image_location(image_for(images, style))


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "row_number": row["row_number"],
        "status": row["status"],
        "error_message": row["error_message"] or "",
        # Stored once a worker has built it; before that, built the same way from the product.
        "trigger_text": row["trigger_text"] or trigger_text(row["product"] or {}),
        "lifestyle_emotional_prompt": prompt_for(row["generated_prompts"], ImageStyle.LIFESTYLE_EMOTIONAL),
        "single_white_background_prompt": prompt_for(row["generated_prompts"], ImageStyle.SINGLE_WHITE_BACKGROUND),
        "lifestyle_emotional_image": _image_path(row["generated_images"], ImageStyle.LIFESTYLE_EMOTIONAL),
        "single_white_background_image": _image_path(row["generated_images"], ImageStyle.SINGLE_WHITE_BACKGROUND),
        "tags": ", ".join(tags_of(row["generated_tags"])),
        "cost_usd": float(row["cost_usd"]) if row["cost_usd"] is not None else "",
        # The catalogue's photo, the reference made from it, and why it could not be used (if it could not).
        "photo_source": _shown_photo((row["product"] or {}).get("image_url", "")),
        "reference_photo": row.get("reference_photo") or "",
        "photo_note": (f"photo not used: {row['photo_problem']}; the images were made from the text alone"
                       if row.get("photo_problem") else ""),
        # A variant that looks like an earlier row shares that row's images (at no cost).
        "reuses_row": image_for(row["generated_images"], ImageStyle.LIFESTYLE_EMOTIONAL).get(
            "reuses_row", ""),
        # The merchant's review of each current image, and how many earlier versions are kept.
        **{f"{style.value}_review": review_state(row.get("review"), style) for style in ImageStyle},
        "earlier_versions": row.get("versions") or 0,
        # What made each image (cut out of the photo, or generated from the photo or text), the batch's channels'
        # verdicts on it, and the fidelity check of an image made from the photo.
        **{f"{style.value}_route": image_for(row["generated_images"], style).get("route") or ""
           for style in ImageStyle},
        **{f"{style.value}_checks": describe_checks(image_for(row["generated_images"], style).get("checks") or {})
           for style in ImageStyle},
        **{f"{style.value}_fidelity": _fidelity(image_for(row["generated_images"], style)) for style in ImageStyle},
    }


def alt_columns(batch: Any) -> list[str]:
    """The alt text columns: each image's, in the batch's language, then in each of its extra languages."""
    return [f"{style.value}_alt_text{suffix}" for suffix in ["", *(f"_{t}" for t in batch.get("alt_languages") or [])]
            for style in ImageStyle]


def _alt_texts(row: dict[str, Any], batch: Any) -> dict[str, str]:
    """Each image's alt text (the merchant's edit wins), and its translations into the batch's extra languages."""
    prompts = row["generated_prompts"] if isinstance(row["generated_prompts"], dict) else {}
    translations = {str(t.get("language")): t for t in prompts.get("translations") or [] if isinstance(t, dict)}
    texts = {f"{style.value}_alt_text": alt_text_for(prompts, style, row.get("review")) if prompts else ""
             for style in ImageStyle}
    for tag in batch.get("alt_languages") or []:
        for style in ImageStyle:
            texts[f"{style.value}_alt_text_{tag}"] = str((translations.get(tag) or {}).get(style.value) or "")
    return texts


def _fidelity(image: dict[str, Any]) -> str:
    verdict = image.get("fidelity")
    if not isinstance(verdict, dict):
        return ""
    return f"{float(verdict.get('score', 0)):.2f} {'ok' if verdict.get('passed') else 'flagged for review'}"


@dataclass
class ExportReport:
    """What an export wrote, and what the user should know about it (shop formats: how the URLs work, which
    import option to choose)."""

    count: int
    what: str = "row(s)"
    notes: list[str] = field(default_factory=list)


def export_batch(
    settings: Settings,
    batch_id: uuid.UUID,
    fmt: str,
    output: Path | None,
    out: TextIO,
) -> ExportReport:
    """Write every row of a batch in the chosen format (csv, jsonl, html) to output (or out); the shop formats
    are shops/export.py's."""
    if fmt not in FORMATS or fmt in SHOP_FORMATS:
        raise InputError(f"--format {fmt!r}: choose {', '.join(FORMATS)}")
    check_output(output, fmt)
    user_id = resolve_user_id(settings)
    storage = open_storage(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-export")
    with conn, db.user_transaction(conn, user_id):
        batch = queries.export_header(conn, batch_id)
        with output_file(output, out) as target:
            rows = queries.export_rows(conn, batch_id)
            writer = {"csv": _write_csv, "jsonl": _write_jsonl, "html": _write_html}[fmt]
            return ExportReport(writer(target, rows, list(batch["csv_headers"]), batch, storage))


def check_output(output: Path | None, fmt: str) -> None:
    """Refuse an output path that is a directory (before any work)."""
    if output is not None and output.is_dir():
        raise InputError(f"{output} is a directory; give a file name such as {output / f'batch.{fmt}'}")


@contextlib.contextmanager
def output_file(output: Path | None, out: TextIO) -> Iterator[TextIO]:
    """The stream to write to: out, or a new file beside output that replaces it only once it is whole.

    The temporary file is made by mkstemp (O_EXCL, a random name, never through a link an attacker planted), and
    removed if anything fails, so a failed export never leaves a half-written file or overwrites another one."""
    if output is None:
        yield out
        return
    handle, name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent or Path("."))
    tmp = Path(name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(handle, 0o666 & ~umask)  # mkstemp makes 0600; the export gets the mode a plain open would give
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as target:
            yield target
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_csv(target: TextIO, rows: Iterator[dict[str, Any]], headers: list[str], batch: Any,
               storage: Storage) -> int:
    writer = csv.writer(target)
    generated = RESULT_COLUMNS + alt_columns(batch)
    original = [h for h in headers if h not in generated]
    writer.writerow([neutralise(h) for h in original + generated])
    count = 0
    for row in rows:
        flat = {**_flat(row), **_alt_texts(row, batch)}
        data = row["row_data"] or {}
        cells = [str(data.get(h, "")) for h in original] + [str(flat[c]) for c in generated]
        writer.writerow([neutralise(cell) for cell in cells])
        count += 1
    return count


def _write_jsonl(target: TextIO, rows: Iterator[dict[str, Any]], headers: list[str], batch: Any,
                 storage: Storage) -> int:
    count = 0
    for row in rows:
        record = {"columns": row["row_data"], **_flat(row), **_alt_texts(row, batch),
                  "tags": tags_of(row["generated_tags"]),
                  "prompts": row["generated_prompts"], "images": row["generated_images"]}
        target.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        count += 1
    return count


_PAGE_HEAD = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;background:#fafafa;color:#222}}
.product{{background:#fff;border:1px solid #ddd;border-radius:8px;padding:1rem;margin:0 0 1.5rem}}
.product.failed{{border-color:#c33}}
.images{{display:flex;gap:1rem;flex-wrap:wrap}}
figure{{margin:0;max-width:32%}} .note{{color:#a60}} img{{max-width:100%;height:auto;border:1px solid #eee}}
figcaption,.prompt{{font-size:.85rem;color:#555}} .tags span{{background:#eef;border-radius:4px;padding:0 .4rem;
margin-right:.3rem;font-size:.8rem}} .error{{color:#c33}}
</style></head><body>
<h1>{title}</h1>
"""


class _Gallery:
    """The gallery's images: a signed URL for remote storage (the page then works from anywhere), a link for an
    image recorded by http(s) URL, else a thumbnail embedded once per distinct image, which every later use of
    the same image (look-alike variants share theirs) points at."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.embedded: dict[str, str] = {}  # storage path -> the id of the <img> holding it

    def img(self, path: str, alt: str) -> str:
        """The <img> element for a stored image ('' when it cannot be read: its caption stays)."""
        esc = html.escape
        if not path:
            return ""
        if is_remote_photo(path):
            return f'<img alt="{esc(alt)}" loading="lazy" src="{esc(path)}">'
        if path in self.embedded:
            return f'<img alt="{esc(alt)}" data-same="{self.embedded[path]}">'
        try:
            link = self.storage.link(path)
            if link:
                return f'<img alt="{esc(alt)}" loading="lazy" src="{esc(link)}">'
            uri = thumbnail_data_uri(self.storage.read_bytes(path))
        except Exception:  # a missing or unreadable image leaves its caption, not a broken export
            return ""
        if uri is None:
            return ""
        ident = self.embedded[path] = f"i{len(self.embedded) + 1}"
        return f'<img id="{ident}" alt="{esc(alt)}" src="{uri}">'


# Later uses of an embedded image take its data from the first (the page holds each image's bytes once).
_SAME_IMAGES = ("<script>for(const i of document.querySelectorAll('img[data-same]'))"
                "i.src=document.getElementById(i.dataset.same).src</script>")


def _write_html(target: TextIO, rows: Iterator[dict[str, Any]], headers: list[str], batch: Any,
                storage: Storage) -> int:
    esc = html.escape
    gallery = _Gallery(storage)
    target.write(_PAGE_HEAD.format(title=esc(f"csvjobs: {batch['original_filename']} ({batch['id']})")))
    count = 0
    for row in rows:
        flat = _flat(row)
        product = row["row_data"] or {}
        name = next((str(v) for k, v in product.items() if k.lower() in ("title", "name", "nome") and v),
                    f"row {row['row_number']}")
        failed = row["status"] == "failed"
        part = io.StringIO()
        part.write(f'<section class="product{" failed" if failed else ""}" id="row-{row["row_number"]}">')
        part.write(f"<h2>{esc(name)} <small>(row {row['row_number']}, {esc(row['status'])})</small></h2>")
        part.write(f'<p class="prompt">{esc(flat["trigger_text"])}</p>')
        if failed:
            part.write(f'<p class="error">failed: {esc(flat["error_message"])}</p>')
        part.write('<div class="images">')
        reference = gallery.img(flat["reference_photo"], "reference photo")
        if reference:
            part.write(f'<figure class="reference">{reference}'
                       "<figcaption><b>the product's photo</b> (reference)</figcaption></figure>")
        elif flat["photo_note"]:
            part.write(f'<p class="note">{esc(flat["photo_note"])}</p>')
        for style in ImageStyle:
            path = _image_path(row["generated_images"], style)
            prompt = prompt_for(row["generated_prompts"], style)
            image = gallery.img(path, style.value)
            if image or prompt:
                state = flat[f"{style.value}_review"]
                part.write(f"<figure>{image}<figcaption><b>{esc(style.value)}</b> ({esc(state)}): {esc(prompt)}"
                           "</figcaption></figure>")
        part.write("</div>")
        tags = tags_of(row["generated_tags"])
        if tags:
            part.write('<p class="tags">' + "".join(f"<span>{esc(t)}</span>" for t in tags) + "</p>")
        part.write("</section>\n")
        target.write(part.getvalue())
        count += 1
    target.write(f"<p>{count} rows</p>{_SAME_IMAGES}</body></html>\n")
    return count
