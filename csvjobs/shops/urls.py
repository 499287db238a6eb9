"""URLs a shop's importer can fetch the generated images from. Shopify and WooCommerce download every image URL
in an import file while they import it, from the public internet: a local path or file:// URL would import
nothing, so none is ever written. With S3-compatible storage: a public base URL (a public bucket, or a CDN in
front of it) when one is configured, else presigned URLs that expire (the export says when). --base-url serves
any backend when the merchant hosts the files themselves."""

from __future__ import annotations

import datetime as dt
from urllib.parse import quote

from csvjobs.errors import ConfigError
from csvjobs.storage.contract import Storage

PRESIGNED_DAYS = 7  # the longest an S3 (SigV4) presigned URL may live


class ImageUrls:
    """Turns storage paths into URLs a shop can fetch; `note` says how (and until when) they work."""

    def __init__(self, storage: Storage, base_url: str | None, *, presigned_days: int = PRESIGNED_DAYS) -> None:
        self.storage = storage
        self.base_url = (base_url or "").strip().rstrip("/")
        self.presigned_seconds = presigned_days * 86400
        if self.base_url and not self.base_url.lower().startswith(("https://", "http://")):
            raise ConfigError(f"the base URL {base_url!r} must start with https:// (or http://)")
        if not self.base_url and storage.name == "local":
            raise ConfigError(
                "the images are in local storage, which no shop can fetch from: use S3-compatible storage "
                "(CSVJOBS_STORAGE=s3) with CSVJOBS_PUBLIC_BASE_URL for a public bucket or CDN, or pass --base-url "
                "URL if you serve $CSVJOBS_HOME/storage yourself")
        # Once a batch has been reviewed, shop files carry approved images only (set by the export).
        self.approved_only = False
        self.expires_at: dt.datetime | None = None
        if not self.base_url:
            self.expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.presigned_seconds)

    def url(self, storage_path: str) -> str:
        """The URL of one stored image."""
        if self.base_url:
            return f"{self.base_url}/{quote(storage_path)}"
        link = self.storage.link(storage_path, self.presigned_seconds)
        if not link:
            raise ConfigError(f"the storage backend gives no URL for {storage_path}; pass --base-url")
        return link

    @property
    def note(self) -> str:
        """How the URLs work, for the line the export prints."""
        if self.expires_at is not None:
            return (f"image URLs are presigned and expire on {self.expires_at:%Y-%m-%d %H:%M} UTC: import before "
                    "then (or set CSVJOBS_PUBLIC_BASE_URL for URLs that do not expire)")
        return f"image URLs are under {self.base_url}/"
