"""What push and a shop's API client say to each other: the shop's address and credentials, a product as the shop
has it now, an image to add, and the errors a shop's answer becomes. A client never removes or reorders what a
product has; it adds images and sets their alt text, and removes only media push names from its own ledger."""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, Protocol

from dotenv import dotenv_values
from pydantic import BaseModel, Field, SecretStr

from csvjobs.errors import ConfigError, InputError
from csvjobs.redact import redact

ShopName = Literal["shopify", "woocommerce"]
LOOPBACK_HOSTS = ("localhost",)


class ShopError(Exception):
    """The shop refused or failed one product's change; the message is safe to show (secrets redacted)."""


class ShopAccessError(ShopError):
    """The shop refused the credentials (HTTP 401/403, or a scope missing): nothing further can be pushed."""


class Store(BaseModel):
    """A shop's base URL, checked: https, or http on a loopback address (a test server)."""

    url: str

    @classmethod
    def parse(cls, shop: ShopName, value: str) -> Store:
        """The store from what the user typed: NAME.myshopify.com, a host, or a full URL."""
        text = value.strip().rstrip("/")
        if not text:
            raise InputError("--store is empty: give the shop's address (Shopify: NAME.myshopify.com; "
                             "WooCommerce: the site's URL, such as https://shop.example.com)")
        if shop == "shopify" and "://" not in text and "." not in text:
            text = f"{text}.myshopify.com"  # the store's name alone
        if "://" not in text:
            text = f"https://{text}"
        try:
            parts = urllib.parse.urlsplit(text)
            host = parts.hostname or ""
            parts.port  # noqa: B018 - a bad port raises here
        except ValueError as exc:
            raise InputError(f"--store {value!r} is not a URL ({exc})") from None
        if parts.username or parts.password:
            raise InputError("--store must not carry a user name or password: credentials come from the "
                             "environment or --credentials-file only")
        if parts.query or parts.fragment or not host:
            raise InputError(f"--store {redact(value)!r}: give the shop's address only (no query or fragment), "
                             "such as https://shop.example.com")
        if parts.scheme == "http" and not _loopback(host):
            raise InputError(f"--store {value!r}: a shop is reached over https only (http is accepted for a test "
                             "server on this machine's loopback address)")
        if parts.scheme not in ("http", "https"):
            raise InputError(f"--store {value!r}: the address must start with https://")
        if shop == "shopify" and parts.scheme == "https" and not host.endswith(".myshopify.com"):
            raise InputError(f"--store {value!r}: a Shopify store's API address is NAME.myshopify.com (your "
                             "store's permanent domain, shown in Settings > Domains), not its public domain")
        return cls(url=urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Credentials(BaseModel):
    """What a shop's API takes, held as secrets (never printed, logged or stored)."""

    shopify_access_token: SecretStr | None = None
    woocommerce_user: str | None = None
    woocommerce_app_password: SecretStr | None = None

    @classmethod
    def load(cls, shop: ShopName, file: Path | None) -> Credentials:
        """From --credentials-file (KEY=VALUE lines) when given, else the environment; refused when missing."""
        if file is not None:
            if not file.is_file():
                raise InputError(f"--credentials-file {file}: no such file")
            values = {k: v for k, v in dotenv_values(file).items() if v}
        else:
            values = {k: os.environ[k] for k in ("SHOPIFY_ACCESS_TOKEN", "WOOCOMMERCE_USER",
                                                  "WOOCOMMERCE_APP_PASSWORD") if os.environ.get(k)}
        where = f"in {file}" if file is not None else "in the environment"
        if shop == "shopify":
            token = values.get("SHOPIFY_ACCESS_TOKEN")
            if not token:
                raise ConfigError(f"no SHOPIFY_ACCESS_TOKEN {where}: create a custom app in the store (Settings > "
                                  "Apps and sales channels > Develop apps) with the write_products and write_files "
                                  "scopes, and set its Admin API access token as SHOPIFY_ACCESS_TOKEN")
            return cls(shopify_access_token=SecretStr(token.strip()))
        user, password = values.get("WOOCOMMERCE_USER"), values.get("WOOCOMMERCE_APP_PASSWORD")
        if not user or not password:
            raise ConfigError(f"no WOOCOMMERCE_USER and WOOCOMMERCE_APP_PASSWORD {where}: create an application "
                              "password for a shop manager (WordPress: Users > Profile > Application Passwords) and "
                              "set the user name and that password")
        return cls(woocommerce_user=user.strip(), woocommerce_app_password=SecretStr(password.strip()))

    def secrets(self) -> list[str]:
        """Every secret value, to take out of anything a shop answers before it is shown."""
        found = [s.get_secret_value() for s in (self.shopify_access_token, self.woocommerce_app_password) if s]
        # An application password is shown with spaces and may be typed without them; both forms go.
        return found + [s.replace(" ", "") for s in found if " " in s]


class LiveImage(BaseModel):
    """One image a product has in the shop now."""

    media_id: str
    # The URL or file name it was uploaded under, once the shop knows it (Shopify: when processing is done).
    file_name: str = ""
    status: str = "READY"


class LiveProduct(BaseModel):
    """A product as the shop has it now."""

    product_id: str
    title: str = ""
    images: list[LiveImage] = Field(default_factory=list)

    def media_for(self, marker: str) -> str | None:
        """The media id of the image uploaded under marker's file name, if the product has one."""
        for image in self.images:
            stem = image.file_name.rsplit("/", 1)[-1].split("?", 1)[0]
            if marker in stem:
                return image.media_id
        return None

    @property
    def processing(self) -> bool:
        """Whether some image has no file name yet (the shop is still processing it)."""
        return any(not image.file_name and image.status not in ("FAILED", "READY") for image in self.images)


class ImageToAdd(BaseModel):
    """One generated image and what the shop is told about it."""

    marker: str  # csvjobs-<hash prefix>: the file name's stem, found again in the shop after a cut-off push
    file_name: str
    mime_type: str
    alt: str
    data: bytes = Field(repr=False)
    # A push cut off after saying it would send this image: the shop may hold an upload of it not yet attached.
    maybe_uploaded: bool = False


class Added(BaseModel):
    """What the shop made of one image: its media id, and its status once processed."""

    marker: str
    media_id: str
    status: Literal["ready", "failed", "processing"] = "processing"
    error: str = ""


class ShopClient(Protocol):
    """A shop's API, as push uses it."""

    name: str

    def find_product(self, ref: ProductRef) -> LiveProduct | None:
        """The product as the shop has it now (every image), or None when the shop has no such product."""
        ...

    def add_images(self, product: LiveProduct, images: list[ImageToAdd]) -> list[Added]:
        """Upload images and add them after the product's own, with their alt text; in the order given."""
        ...

    def wait_until_processed(self, added: list[Added]) -> list[Added]:
        """Wait until the shop has processed each added image (ready or failed)."""
        ...

    def remove_images(self, product: LiveProduct, media_ids: list[str]) -> None:
        """Take these media (csvjobs' own, from the ledger) off the product, leaving every other image as it is."""
        ...

    def find_uploaded(self, marker: str) -> str | None:
        """A file uploaded under marker but not attached (a push cut off in between), to attach instead of a new
        upload; None when the shop keeps no such thing."""
        ...

    def set_variation_image(self, product: LiveProduct, variation: ProductRef, media_id: str) -> None:
        """Set a variation's own image (WooCommerce, --variant-images)."""
        ...

    def close(self) -> None:
        """Close the connections."""
        ...


class ProductRef(BaseModel):
    """How the source names a product: Shopify's handle (and ID when known), WooCommerce's ID or SKU."""

    handle: str = ""
    product_id: str = ""
    sku: str = ""

    @property
    def label(self) -> str:
        """The name a line about this product uses."""
        return self.handle or (f"ID {self.product_id}" if self.product_id else f"SKU {self.sku}")


def scrub(text: str, secrets: Iterable[str], limit: int = 300) -> str:
    """A shop's words made safe to show: secrets and URLs' secret parts taken out, one line, bounded."""
    return " ".join(redact(text, list(secrets)).split())[:limit]


Sleeper = Callable[[float], None]
RETRIES = 6


def backoff(attempt: int, failure: str, sleep: Sleeper, retry_after: str | None = None) -> int:
    """Wait before sending a failed request again (the server's Retry-After when it gave one, else doubling from
    half a second, at most 30 s) and return the next attempt's number; after RETRIES, ShopError saying so."""
    if attempt + 1 >= RETRIES:
        raise ShopError(f"{failure} {RETRIES} times in a row")
    try:
        delay = float(retry_after) if retry_after else 0.5 * 2 ** attempt
    except ValueError:
        delay = 0.5 * 2 ** attempt
    sleep(min(delay, 30.0))
    return attempt + 1
