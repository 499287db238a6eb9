"""WooCommerce's REST API (v3) and the WordPress media endpoint, as push uses them (woocommerce.github.io
/woocommerce-rest-api-docs, developer.wordpress.org/rest-api/reference/media):

- a product is read with `GET /wp-json/wc/v3/products/{id}` (or `?sku=`): its `images`, first the featured one;
- an image is uploaded to the media library with `POST /wp-json/wp/v2/media` (the bytes as the body, its file name
  in Content-Disposition, `title` and `alt_text` as parameters). Consumer keys do not authenticate that endpoint,
  so push takes a WordPress application password (HTTP Basic), which both endpoints accept;
- `images` on `PUT /wp-json/wc/v3/products/{id}` replaces the product's list (the first is the featured image), so
  the list sent is the product's own images as just read, by id and nothing else (so nothing about them changes),
  followed by the new ones: nothing is removed or reordered;
- a variation holds one image (`image` on `PUT .../products/{parent}/variations/{id}`), set only when asked.

The password is never shown: every text the site sends back passes through scrub() with it."""

from __future__ import annotations

import time
from typing import Any

import httpx

from csvjobs.shops.contract import (
    Added,
    Credentials,
    ImageToAdd,
    LiveImage,
    LiveProduct,
    ProductRef,
    ShopAccessError,
    ShopError,
    Sleeper,
    Store,
    backoff,
    scrub,
)


class WooCommerceClient:
    """One WooCommerce site's REST API."""

    name = "WooCommerce"

    def __init__(self, store: Store, credentials: Credentials, *, sleep: Sleeper = time.sleep) -> None:
        assert credentials.woocommerce_user and credentials.woocommerce_app_password is not None
        self._secrets = credentials.secrets()
        self._base = store.url
        self._http = httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0), follow_redirects=False,
                                  auth=(credentials.woocommerce_user,
                                        credentials.woocommerce_app_password.get_secret_value()),
                                  headers={"User-Agent": "csvjobs"})
        self._sleep = sleep
        self.requests = 0
        self.throttled = 0

    # --- the protocol ------------------------------------------------------------------------------------

    def find_product(self, ref: ProductRef) -> LiveProduct | None:
        """The product by ID, else by SKU, with its images in the shop's order."""
        if ref.product_id:
            body = self._request("GET", f"/wp-json/wc/v3/products/{_ident(ref.product_id)}", missing_ok=True)
        elif ref.sku:
            found = self._request("GET", "/wp-json/wc/v3/products", params={"sku": ref.sku})
            body = found[0] if isinstance(found, list) and found else None
        else:
            return None
        if not isinstance(body, dict) or "id" not in body:
            return None
        return _live(body)

    def add_images(self, product: LiveProduct, images: list[ImageToAdd]) -> list[Added]:
        """Upload each image to the media library (reusing one a cut-off push left there), then write the
        product's list as its images now followed by the new ones."""
        ids = []
        for image in images:
            media_id = (self.find_uploaded(image.marker) if image.maybe_uploaded else None) or self._upload(image)
            ids.append(media_id)
        self.attach(product, ids)
        return [Added(marker=image.marker, media_id=media_id, status="ready")
                for image, media_id in zip(images, ids, strict=True)]

    def attach(self, product: LiveProduct, media_ids: list[str]) -> None:
        """Append media to the product's images, read again just before, so an image added meanwhile stays."""
        fresh = self.find_product(ProductRef(product_id=product.product_id))
        if fresh is None:
            raise ShopError("the product is no longer in the shop")
        current = [image.media_id for image in fresh.images]
        wanted = current + [m for m in media_ids if m not in current]
        if wanted != current:
            self._request("PUT", f"/wp-json/wc/v3/products/{product.product_id}",
                          json={"images": [{"id": int(m)} for m in wanted]})
        product.images = fresh.images

    def wait_until_processed(self, added: list[Added]) -> list[Added]:
        """WordPress has processed an upload by the time it answers."""
        return added

    def remove_images(self, product: LiveProduct, media_ids: list[str]) -> None:
        """Take csvjobs' own media off the product (its other images keep their order), then out of the library."""
        fresh = self.find_product(ProductRef(product_id=product.product_id))
        if fresh is not None:
            keep = [image.media_id for image in fresh.images if image.media_id not in media_ids]
            if len(keep) != len(fresh.images):
                self._request("PUT", f"/wp-json/wc/v3/products/{product.product_id}",
                              json={"images": [{"id": int(m)} for m in keep]})
        for media_id in media_ids:
            self._request("DELETE", f"/wp-json/wp/v2/media/{media_id}", params={"force": "true"}, missing_ok=True)

    def find_uploaded(self, marker: str) -> str | None:
        """A media item uploaded under marker (by a push cut off before it attached it)."""
        found = self._request("GET", "/wp-json/wp/v2/media", params={"search": marker, "per_page": 20})
        for item in found if isinstance(found, list) else []:
            source = str(item.get("source_url") or "").rsplit("/", 1)[-1]
            title = ((item.get("title") or {}).get("rendered") if isinstance(item.get("title"), dict)
                     else item.get("title"))
            if marker in source or title == marker:
                return str(item["id"])
        return None

    def set_variation_image(self, product: LiveProduct, variation: ProductRef, media_id: str) -> None:
        """Set a variation's own image (it holds one: the one it had is replaced, as asked)."""
        self._request("PUT", f"/wp-json/wc/v3/products/{product.product_id}/variations/"
                      f"{_ident(variation.product_id)}", json={"image": {"id": int(media_id)}})

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    # --- the wire ----------------------------------------------------------------------------------------

    def _upload(self, image: ImageToAdd) -> str:
        body = self._request("POST", "/wp-json/wp/v2/media", content=image.data,
                             params={"title": image.marker, "alt_text": image.alt},
                             headers={"Content-Type": image.mime_type,
                                      "Content-Disposition": f'attachment; filename="{image.file_name}"'})
        if not isinstance(body, dict) or "id" not in body:
            raise ShopError("WordPress did not say which media item it made of the upload")
        return str(body["id"])

    def _request(self, method: str, path: str, *, missing_ok: bool = False, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            self.requests += 1
            try:
                response = self._http.request(method, self._base + path, **kwargs)
            except httpx.TransportError:
                attempt = self._backoff(attempt, "could not be reached")
                continue
            if response.status_code in (401, 403):
                raise ShopAccessError(
                    f"the site refused WOOCOMMERCE_USER and WOOCOMMERCE_APP_PASSWORD (HTTP {response.status_code}"
                    f"{_code(response, self._secrets)}): use a WordPress application password of a user who may "
                    "edit products and upload files")
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code == 429 or response.status_code >= 500:
                self.throttled += response.status_code == 429
                attempt = self._backoff(attempt, f"answered HTTP {response.status_code}",
                                        response.headers.get("Retry-After"))
                continue
            if response.status_code >= 400:
                raise ShopError(f"WooCommerce answered HTTP {response.status_code}{_code(response, self._secrets)}")
            try:
                return response.json()
            except ValueError:
                raise ShopError(f"WooCommerce answered something that is not JSON (HTTP {response.status_code}) "
                                f"at {path.split('?')[0]}: is --store the site's address?") from None

    def _backoff(self, attempt: int, what: str, retry_after: str | None = None) -> int:
        return backoff(attempt, f"the site {what}", self._sleep, retry_after)


def _ident(value: str) -> str:
    """A WooCommerce id as the export writes it (123, or id:123 for a parent), as the URL needs it."""
    text = value.strip().removeprefix("id:")
    if not text.isdigit():
        raise ShopError(f"{value!r} is not a WooCommerce product ID")
    return text


def _live(body: dict[str, Any]) -> LiveProduct:
    images = [LiveImage(media_id=str(image["id"]), file_name=str(image.get("src") or ""))
              for image in body.get("images") or [] if isinstance(image, dict) and image.get("id")]
    return LiveProduct(product_id=str(body["id"]), title=str(body.get("name") or ""), images=images)


def _code(response: httpx.Response, secrets: list[str]) -> str:
    """', code: message' from a WordPress error body, made safe to show."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict) or not body.get("code"):
        return ""
    return ", " + scrub(f"{body.get('code')}: {body.get('message') or ''}", secrets, limit=200)
