"""Buckets and keys: which logical buckets exist and which keys are safe in them. Storage paths in the database are
backend-neutral, "{bucket}/{key}", e.g. csv-images/{user_id}/{batch_id}/3-lifestyle_emotional.png; every backend
checks keys here, so no key can leave its folder whatever the backend."""

from __future__ import annotations

import hashlib
import re
import unicodedata

UPLOADS_BUCKET = "csv-uploads"
TEMPLATES_BUCKET = "csv-templates"
IMAGES_BUCKET = "csv-images"
BUCKETS = (UPLOADS_BUCKET, TEMPLATES_BUCKET, IMAGES_BUCKET)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, default: str = "upload.csv") -> str:
    """A file name that cannot leave its folder: no separators, no leading dots, printable ASCII, bounded length."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).strip("._")[:120]
    return cleaned or default


def readable_name(text: str, default: str = "product", limit: int | None = 60) -> str:
    """Lowercase ASCII words joined by hyphens, as Shopify makes a handle from a title ("blue-mug" for "Blue Mug!"),
    cut to `limit` characters (None: whole, as a handle must be)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return (words[:limit].rstrip("-") if limit is not None else words) or default


def check_key(bucket: str, key: str) -> list[str]:
    """The key's parts, after refusing unknown buckets and anything that could escape a folder."""
    if bucket not in BUCKETS:
        raise ValueError(f"unknown bucket {bucket!r}")
    parts = [part for part in key.split("/") if part]
    if not parts or any(part in (".", "..") or part != safe_filename(part, "") for part in parts):
        raise ValueError(f"unsafe storage key {key!r}")
    return parts


def is_remote_photo(source: str) -> bool:
    """Whether a catalogue's photo value is a URL to fetch (http or https) rather than a file beside the CSV."""
    return source.lower().startswith(("http://", "https://"))


def uploaded_photo_key(user_id: object, batch_id: object, relative_path: str) -> str:
    """The key (in csv-uploads) of a photo file that `upload` stored with its batch, from the path the CSV gives:
    csv-uploads/{user_id}/{batch_id}/photos/{hash}-{name}. The hash of the whole path keeps two files with the
    same name in different folders apart; the name keeps it readable."""
    normalised = relative_path.replace("\\", "/").strip()
    while normalised.startswith("./"):
        normalised = normalised[2:]
    digest = hashlib.sha256(normalised.encode()).hexdigest()[:16]
    return f"{user_id}/{batch_id}/photos/{digest}-{safe_filename(normalised, 'photo')}"
