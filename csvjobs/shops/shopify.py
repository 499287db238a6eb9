"""Shopify's Admin GraphQL API, as push uses it (shopify.dev, Admin GraphQL, version API_VERSION):

- a product is read with `productByIdentifier` (by handle or ID; `productByHandle` is deprecated), its media paged;
- images are sent by staged uploads: `stagedUploadsCreate` (resource IMAGE, PUT: the default), the bytes PUT to the
  target URL with its parameters as headers, then `productUpdate(product: {id}, media: [...])` with each target's
  `resourceUrl` as `originalSource` and the alt text. Since 2024-10 `productUpdate` takes `media` (and `product`
  instead of `input`); `productCreateMedia` is deprecated. `productUpdate` with media adds them after the product's
  own; `productSet` would instead delete every media it is not sent, so it is never used;
- media go UPLOADED, PROCESSING, then READY or FAILED: polled with `nodes(ids:)` until each is done;
- `fileDelete` removes media csvjobs added (--replace-pushed), by the ids its ledger holds.

Rate limits: every answer carries `extensions.cost` (the query's cost and the bucket's `throttleStatus`:
maximumAvailable, currentlyAvailable, restoreRate per second). A request the bucket cannot pay for waits until it
can; a `THROTTLED` error (HTTP 200) waits for the bucket and is sent again; 5xx, 429 and dropped connections are
retried with backoff. The token rides in `X-Shopify-Access-Token` and is never shown: every text a server sends
back passes through scrub() with it."""

from __future__ import annotations

import time
from typing import Any

import httpx

from csvjobs.shops.contract import (
    RETRIES,
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

API_VERSION = "2026-10"
MEDIA_PAGE = 50
STATUS_PAGE = 50
QUERY_COST = 1 + MEDIA_PAGE + 2  # what the bucket is asked for a product read, before Shopify says
MUTATION_COST = 10

FIND_PRODUCT = """query CsvjobsFindProduct($identifier: ProductIdentifierInput!, $first: Int!, $after: String) {
  productByIdentifier(identifier: $identifier) {
    id
    title
    media(first: $first, after: $after) {
      nodes { id status mediaContentType ... on MediaImage { image { url } } }
      pageInfo { hasNextPage endCursor }
    }
  }
}"""

STAGE = """mutation CsvjobsStage($input: [StagedUploadInput!]!) {
  stagedUploadsCreate(input: $input) {
    stagedTargets { url resourceUrl parameters { name value } }
    userErrors { field message }
  }
}"""

ADD_MEDIA = """mutation CsvjobsAddMedia($product: ProductUpdateInput!, $media: [CreateMediaInput!], $count: Int!) {
  productUpdate(product: $product, media: $media) {
    product { id media(last: $count) { nodes { id status alt } } }
    userErrors { field message }
  }
}"""

MEDIA_STATUS = """query CsvjobsMediaStatus($ids: [ID!]!) {
  nodes(ids: $ids) {
    ... on Media { id status mediaErrors { code message } }
    ... on MediaImage { image { url } }
  }
}"""

DELETE_FILES = """mutation CsvjobsDeleteFiles($ids: [ID!]!) {
  fileDelete(fileIds: $ids) { deletedFileIds userErrors { field message } }
}"""

# A staged upload target's parameters for PUT, as the headers the storage behind it expects.
_PARAMETER_HEADERS = {"content_type": "Content-Type", "acl": "x-goog-acl"}


class ShopifyClient:
    """One store's Admin GraphQL API, with its cost bucket honoured."""

    name = "Shopify"

    def __init__(self, store: Store, credentials: Credentials, *, sleep: Sleeper = time.sleep,
                 poll_seconds: float = 2.0, processing_timeout: float = 600.0) -> None:
        assert credentials.shopify_access_token is not None
        self._secrets = credentials.secrets()
        self._url = f"{store.url}/admin/api/{API_VERSION}/graphql.json"
        self._http = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=False, headers={
            "X-Shopify-Access-Token": credentials.shopify_access_token.get_secret_value(),
            "Content-Type": "application/json", "User-Agent": "csvjobs"})
        # The staged targets' storage: signed URLs that authenticate themselves, so the token is never sent there.
        self._uploads = httpx.Client(timeout=httpx.Timeout(120.0, connect=10.0), follow_redirects=False)
        self._sleep = sleep
        self._poll_seconds = poll_seconds
        self._processing_timeout = processing_timeout
        # The bucket as Shopify last described it, and when.
        self._available: float | None = None
        self._restore = 50.0
        self._seen_at = time.monotonic()
        self.requests = 0
        self.throttled = 0

    # --- the protocol ------------------------------------------------------------------------------------

    def find_product(self, ref: ProductRef) -> LiveProduct | None:
        """The product by ID when the source had it, else by handle, with every media it has."""
        if ref.product_id:
            gid = ref.product_id if ref.product_id.startswith("gid://") else f"gid://shopify/Product/{ref.product_id}"
            identifier: dict[str, str] = {"id": gid}
        elif ref.handle:
            identifier = {"handle": ref.handle}
        else:
            return None
        live: LiveProduct | None = None
        after: str | None = None
        while True:
            data = self._graphql(FIND_PRODUCT, {"identifier": identifier, "first": MEDIA_PAGE, "after": after},
                                 QUERY_COST)
            node = data.get("productByIdentifier")
            if not node:
                return None
            if live is None:
                live = LiveProduct(product_id=node["id"], title=node.get("title") or "")
            media = node.get("media") or {}
            for item in media.get("nodes") or []:
                url = ((item.get("image") or {}).get("url")) or ""
                live.images.append(LiveImage(media_id=item["id"], file_name=url, status=item.get("status") or ""))
            page = media.get("pageInfo") or {}
            if not page.get("hasNextPage"):
                return live
            after = page.get("endCursor")

    def add_images(self, product: LiveProduct, images: list[ImageToAdd]) -> list[Added]:
        """Stage and upload each image, then add them all to the product in one productUpdate."""
        if not images:
            return []
        staged = self._graphql(STAGE, {"input": [
            {"resource": "IMAGE", "filename": image.file_name, "mimeType": image.mime_type, "httpMethod": "PUT",
             "fileSize": str(len(image.data))} for image in images]}, MUTATION_COST)["stagedUploadsCreate"]
        self._user_errors(staged, "preparing the upload")
        targets = staged.get("stagedTargets") or []
        if len(targets) != len(images):
            raise ShopError(f"Shopify prepared {len(targets)} upload(s) for {len(images)} image(s)")
        for image, target in zip(images, targets, strict=True):
            self._upload(target, image)
        media = [{"originalSource": target["resourceUrl"], "alt": image.alt, "mediaContentType": "IMAGE"}
                 for image, target in zip(images, targets, strict=True)]
        answer = self._graphql(ADD_MEDIA, {"product": {"id": product.product_id}, "media": media,
                                           "count": len(images)}, MUTATION_COST)["productUpdate"]
        self._user_errors(answer, "adding the images")
        nodes = (((answer.get("product") or {}).get("media") or {}).get("nodes")) or []
        if len(nodes) < len(images):
            raise ShopError(f"Shopify added {len(nodes)} of {len(images)} image(s)")
        return [Added(marker=image.marker, media_id=node["id"])
                for image, node in zip(images, nodes[-len(images):], strict=True)]

    def wait_until_processed(self, added: list[Added]) -> list[Added]:
        """Poll the media (50 a request) until each is READY or FAILED, soon at first and then every
        poll_seconds, or until the wait runs out (those stay "processing")."""
        waiting = {a.media_id: a for a in added if a.status == "processing"}
        deadline = time.monotonic() + self._processing_timeout
        pause = 0.1
        while waiting:
            ids = list(waiting)
            for start in range(0, len(ids), STATUS_PAGE):
                chunk = ids[start:start + STATUS_PAGE]
                data = self._graphql(MEDIA_STATUS, {"ids": chunk}, 1 + len(chunk))
                for node in data.get("nodes") or []:
                    if node and node.get("id") in waiting:
                        self._note_status(waiting, node)
            if not waiting or time.monotonic() > deadline:
                break
            self._sleep(pause)
            pause = min(pause * 2, self._poll_seconds)
        return added

    def _note_status(self, waiting: dict[str, Added], node: dict[str, Any]) -> None:
        status = node.get("status")
        if status == "READY":
            waiting.pop(node["id"]).status = "ready"
        elif status == "FAILED":
            item = waiting.pop(node["id"])
            item.status = "failed"
            errors = node.get("mediaErrors") or []
            item.error = scrub("; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
                               or "Shopify could not process the image", self._secrets)

    def remove_images(self, product: LiveProduct, media_ids: list[str]) -> None:
        """Delete the media csvjobs added (and only those: the ids come from its ledger)."""
        if media_ids:
            answer = self._graphql(DELETE_FILES, {"ids": media_ids}, MUTATION_COST)["fileDelete"]
            self._user_errors(answer, "removing the earlier version")

    def find_uploaded(self, marker: str) -> str | None:
        """Shopify keeps no unattached upload: a staged upload is attached in the same call that creates it."""
        return None

    def set_variation_image(self, product: LiveProduct, variation: ProductRef, media_id: str) -> None:
        """Not done for Shopify: a variant's image is left as it is."""
        raise ShopError("variant images are not set through Shopify's API by csvjobs")

    def close(self) -> None:
        """Close the connections."""
        self._http.close()
        self._uploads.close()

    # --- the wire ----------------------------------------------------------------------------------------

    def _upload(self, target: dict[str, Any], image: ImageToAdd) -> None:
        """PUT the bytes to the staged target (a signed URL: never shown)."""
        headers = {_PARAMETER_HEADERS.get(p["name"], p["name"]): p["value"] for p in target.get("parameters") or []}
        headers.setdefault("Content-Type", image.mime_type)
        for attempt in range(RETRIES):
            try:
                response = self._uploads.put(target["url"], content=image.data, headers=headers)
            except httpx.TransportError:
                self._backoff(attempt)
                continue
            if response.status_code < 300:
                return
            if response.status_code >= 500 or response.status_code == 429:
                self._backoff(attempt)
                continue
            raise ShopError(f"the staged upload of {image.file_name} was refused (HTTP {response.status_code})")
        raise ShopError(f"the staged upload of {image.file_name} kept failing")

    def _graphql(self, query: str, variables: dict[str, Any], cost: float) -> dict[str, Any]:
        """One GraphQL request, paid for from the bucket; its data, or ShopError."""
        attempt = 0
        while True:
            self._wait_for_bucket(cost)
            self.requests += 1
            try:
                response = self._http.post(self._url, json={"query": query, "variables": variables})
            except httpx.TransportError:
                attempt = self._backoff(attempt, "could not be reached")
                continue
            if response.status_code in (401, 403):
                raise ShopAccessError(
                    f"Shopify refused the access token (HTTP {response.status_code}): check SHOPIFY_ACCESS_TOKEN "
                    "and that the app has the write_products and write_files scopes")
            if response.status_code == 404:
                raise ShopAccessError(f"Shopify answered 404 at /admin/api/{API_VERSION}/graphql.json: check "
                                      "--store (NAME.myshopify.com)")
            if response.status_code == 429 or response.status_code >= 500:
                attempt = self._backoff(attempt, f"answered HTTP {response.status_code}",
                                        response.headers.get("Retry-After"))
                continue
            if response.status_code >= 400:
                raise ShopError(f"Shopify answered HTTP {response.status_code}")
            try:
                body = response.json()
            except ValueError:
                attempt = self._backoff(attempt, "answered something that is not JSON")
                continue
            self._note_cost(body.get("extensions") or {})
            errors = body.get("errors") or []
            if any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
                self.throttled += 1
                self._wait_for_bucket(self._requested(body, cost), throttled=True)
                continue
            if errors:
                if any((e.get("extensions") or {}).get("code") == "ACCESS_DENIED" for e in errors):
                    raise ShopAccessError("Shopify denied access: the app needs the write_products and write_files "
                                          "scopes")
                raise ShopError("Shopify: " + scrub("; ".join(str(e.get("message")) for e in errors),
                                                    self._secrets))
            return body.get("data") or {}

    def _backoff(self, attempt: int, what: str = "failed", retry_after: str | None = None) -> int:
        return backoff(attempt, f"the store {what}", self._sleep, retry_after)

    def _note_cost(self, extensions: dict[str, Any]) -> None:
        status = (extensions.get("cost") or {}).get("throttleStatus") or {}
        if "currentlyAvailable" in status:
            self._available = float(status["currentlyAvailable"])
            self._restore = float(status.get("restoreRate") or self._restore) or 1.0
            self._seen_at = time.monotonic()

    @staticmethod
    def _requested(body: dict[str, Any], fallback: float) -> float:
        cost = (body.get("extensions") or {}).get("cost") or {}
        return float(cost.get("requestedQueryCost") or fallback)

    def _wait_for_bucket(self, cost: float, *, throttled: bool = False) -> None:
        """Sleep until the bucket (as last seen, refilled since) holds cost."""
        if self._available is None:
            if throttled:
                self._sleep(1.0)
            return
        now = time.monotonic()
        available = self._available + (now - self._seen_at) * self._restore
        if available < cost:
            self._sleep((cost - available) / self._restore + (0.05 if throttled else 0.0))

    def _user_errors(self, payload: dict[str, Any], doing: str) -> None:
        errors = payload.get("userErrors") or []
        if errors:
            raise ShopError(f"Shopify refused {doing}: " + scrub(
                "; ".join(str(e.get("message")) for e in errors), self._secrets))
