"""Shops on 127.0.0.1 for push's tests, written from the documentation (shopify.dev Admin GraphQL 2026-10;
WooCommerce REST v3 and the WordPress media endpoint), real HTTP servers holding products in memory:

- FakeShopify: `productByIdentifier` with paged `media`, `stagedUploadsCreate` (PUT targets behind a signed URL),
  `productUpdate(product:, media:)` (appends; `input:` is refused as the 2024-10+ schema refuses it), media that go
  UPLOADED -> PROCESSING -> READY (or FAILED for bytes that are not an image) after `ready_after` seconds,
  `nodes(ids:)`, `fileDelete`; a cost bucket (query: 1 + first + ids, mutation: 10) answering THROTTLED with HTTP
  200 and `extensions.cost.throttleStatus` on every answer.
- FakeWooCommerce: products and variations with `images` (an update replaces the list, first = featured; an `id`
  it does not know is refused), `?sku=`, WordPress media uploads (raw body, Content-Disposition) and search,
  HTTP Basic with an application password.

Both can answer 5xx for the next N requests, and can hold the answer to their Nth request (after doing what it
asks) until released, so a test can kill the client exactly between the shop's change and the client's record."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

SIGNATURE = "X-Goog-Signature=0123456789abcdefsecretsignature"


@dataclass
class Held:
    """Hold the answer to request number `at` (1-based, counting every request), or to the `nth` request doing
    `operation` (a GraphQL operation's name, "upload", "media-upload", "media-search", "product-read",
    "product-update"), until `release` is set."""

    at: int = 0
    operation: str = ""
    nth: int = 1
    seen: int = 0
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class _Server:
    """The HTTP plumbing both shops share: a threaded server, request counting, 5xx and held answers."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.requests = 0
        self.fail_next_5xx = 0
        self.held = Held()
        self.operation = ""  # what the request being answered did (set by handle)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes: no delayed-ACK stall between

            def log_message(self, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length", "0") or 0)
                body = self.rfile.read(length) if length else b""
                with fake.lock:
                    fake.requests += 1
                    number = fake.requests
                    fake.operation = ""
                    if fake.fail_next_5xx > 0:
                        fake.fail_next_5xx -= 1
                        status, headers, payload = 503, {"Content-Type": "application/json"}, b'{"error":"busy"}'
                    else:
                        status, headers, payload = fake.handle(self.command, self.path, dict(self.headers), body)
                    hold = number == fake.held.at
                    if fake.held.operation and fake.operation == fake.held.operation:
                        fake.held.seen += 1
                        hold = fake.held.seen == fake.held.nth
                if hold:
                    fake.held.reached.set()
                    fake.held.release.wait(60)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> Any:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.held.release.set()
        self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        raise NotImplementedError


def _json(status: int, value: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(value).encode()


def is_image(data: bytes) -> bool:
    try:
        Image.open(io.BytesIO(data)).verify()
        return True
    except Exception:
        return False


# --- Shopify -----------------------------------------------------------------------------------------------


@dataclass
class Media:
    id: str
    alt: str
    file_name: str
    created: float
    data: bytes | None = None  # None: an image the shop had before (from the export)
    url: str = ""


@dataclass
class ShopifyProduct:
    id: str
    handle: str
    title: str
    media: list[Media] = field(default_factory=list)


class FakeShopify(_Server):
    """One store. Attributes are the switches: token, bucket size and restore rate, processing delay."""

    def __init__(self, *, token: str = "shpat_test_0123456789abcdef", bucket: float = 1000.0, restore: float = 50.0,
                 ready_after: float = 0.2) -> None:
        super().__init__()
        self.token = token
        self.bucket_max = bucket
        self.restore = restore
        self.available = bucket
        self.refilled_at = time.monotonic()
        self.ready_after = ready_after
        self.products: dict[str, ShopifyProduct] = {}
        self.staged: dict[str, tuple[str, str, bytes | None]] = {}  # token -> (file name, mime, bytes)
        self.ids = itertools.count(1000)
        self.throttled = 0
        self.tokens_seen: set[str] = set()
        self.operations: list[str] = []

    # seeding and reading back

    def add_product(self, handle: str, title: str, images: list[tuple[str, str]]) -> ShopifyProduct:
        product = ShopifyProduct(f"gid://shopify/Product/{next(self.ids)}", handle, title)
        for url, alt in images:
            product.media.append(Media(f"gid://shopify/MediaImage/{next(self.ids)}", alt,
                                       url.rsplit("/", 1)[-1].split("?")[0], 0.0, None, url))
        self.products[product.id] = product
        return product

    def seed_from_export(self, text: str) -> None:
        """Every product of a Shopify export (either format) with its images, in Image Position order."""
        rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
        handle_col = "Handle" if rows and "Handle" in rows[0] else "URL handle"
        src_col = "Image Src" if rows and "Image Src" in rows[0] else "Product image URL"
        alt_col = "Image Alt Text" if rows and "Image Alt Text" in rows[0] else "Image alt text"
        seen: dict[str, tuple[str, list[tuple[str, str]]]] = {}
        for row in rows:
            handle = row.get(handle_col, "")
            if not handle:
                continue
            title, images = seen.setdefault(handle, (row.get("Title", ""), []))
            if row.get(src_col) and row[src_col] not in [u for u, _a in images]:
                images.append((row[src_col], row.get(alt_col, "")))
        for handle, (title, images) in seen.items():
            self.add_product(handle, title, images)

    def by_handle(self, handle: str) -> ShopifyProduct:
        return next(p for p in self.products.values() if p.handle == handle)

    def status(self, media: Media) -> str:
        if media.data is None:
            return "READY"
        if time.monotonic() - media.created < self.ready_after:
            return "PROCESSING"
        return "READY" if is_image(media.data) else "FAILED"

    def _node(self, media: Media) -> dict[str, Any]:
        status = self.status(media)
        node: dict[str, Any] = {"id": media.id, "status": status, "alt": media.alt, "mediaContentType": "IMAGE",
                                "mediaErrors": [], "image": None}
        if status == "READY":
            node["image"] = {"url": media.url or f"https://cdn.shopify.test/s/files/1/0001/files/{media.file_name}"
                             "?v=1733550000"}
        if status == "FAILED":
            node["mediaErrors"] = [{"code": "INVALID_IMAGE_FILE", "message": "Image could not be processed."}]
        return node

    # the wire

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        lowered = {k.lower(): v for k, v in headers.items()}
        if path.startswith("/staged-upload/") and method == "PUT":
            key = path.split("/")[2].split("?")[0]
            if key not in self.staged or SIGNATURE not in path:
                return 403, {}, b"<Error><Code>SignatureDoesNotMatch</Code></Error>"
            name, mime, _old = self.staged[key]
            if lowered.get("content-type") != mime:
                return 400, {}, b"<Error><Code>InvalidContentType</Code></Error>"
            self.staged[key] = (name, mime, body)
            self.operation = "upload"
            return 200, {}, b""
        if path != "/admin/api/2026-10/graphql.json" or method != "POST":
            return 404, {}, b"Not Found"
        self.tokens_seen.add(lowered.get("x-shopify-access-token", ""))
        if lowered.get("x-shopify-access-token") != self.token:
            # As a careless server might: the refused token quoted back.
            return _json(401, {"errors": "[API] Invalid API key or access token (unrecognized login or wrong "
                                         f"password): {lowered.get('x-shopify-access-token')}"})
        request = json.loads(body)
        query, variables = request["query"], request.get("variables") or {}
        operation = re.search(r"\b(query|mutation)\s+(\w+)", query)
        kind, name = operation.groups() if operation else ("query", "")
        cost = 10.0 if kind == "mutation" else 1.0 + float(variables.get("first") or 0) + len(variables.get("ids")
                                                                                              or [])
        now = time.monotonic()
        self.available = min(self.bucket_max, self.available + (now - self.refilled_at) * self.restore)
        self.refilled_at = now
        if cost > self.available:
            self.throttled += 1
            return _json(200, {"errors": [{"message": "Throttled", "extensions": {
                "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                "extensions": self._cost(cost, None)})
        self.available -= cost
        self.operations.append(name)
        self.operation = name
        data = self._execute(name, query, variables)
        if isinstance(data, tuple):
            return data
        # The bucket pays what the query really cost (1 per object returned), refunding the rest of the request.
        actual = cost if kind == "mutation" else min(cost, 1.0 + json.dumps(data).count('"id"'))
        self.available = min(self.bucket_max, self.available + cost - actual)
        return _json(200, {"data": data, "extensions": self._cost(cost, actual)})

    def _cost(self, requested: float, actual: float | None) -> dict[str, Any]:
        return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": {
            "maximumAvailable": self.bucket_max, "currentlyAvailable": int(self.available),
            "restoreRate": self.restore}}}

    def _execute(self, name: str, query: str, v: dict[str, Any]) -> Any:
        if "productUpdate(input:" in query.replace(" ", "") or "productCreateMedia" in query:
            return _json(200, {"errors": [{"message": "Field 'productUpdate' doesn't accept argument 'input'"}]})
        if "productSet" in query:
            raise AssertionError("productSet deletes what it is not sent: push must never use it")
        if name == "CsvjobsFindProduct":
            ident = v["identifier"]
            product = (self.products.get(ident["id"]) if "id" in ident else
                       next((p for p in self.products.values() if p.handle == ident.get("handle")), None))
            if product is None:
                return {"productByIdentifier": None}
            start = int(v.get("after") or 0)
            page = product.media[start:start + int(v["first"])]
            end = start + len(page)
            return {"productByIdentifier": {"id": product.id, "title": product.title, "media": {
                "nodes": [self._node(m) for m in page],
                "pageInfo": {"hasNextPage": end < len(product.media), "endCursor": str(end)}}}}
        if name == "CsvjobsStage":
            targets = []
            for item in v["input"]:
                assert item["resource"] == "IMAGE" and item["httpMethod"] == "PUT", item
                key = f"s{next(self.ids)}"
                self.staged[key] = (item["filename"], item["mimeType"], None)
                targets.append({"url": f"{self.base}/staged-upload/{key}?{SIGNATURE}",
                                "resourceUrl": f"{self.base}/staged-resources/{key}/{item['filename']}",
                                "parameters": [{"name": "content_type", "value": item["mimeType"]},
                                               {"name": "acl", "value": "private"}]})
            return {"stagedUploadsCreate": {"stagedTargets": targets, "userErrors": []}}
        if name == "CsvjobsAddMedia":
            product = self.products.get(v["product"]["id"])
            if product is None:
                return {"productUpdate": {"product": None, "userErrors": [
                    {"field": ["id"], "message": "Product does not exist"}]}}
            for item in v.get("media") or []:
                assert item["mediaContentType"] == "IMAGE"
                match = re.search(r"/staged-resources/(\w+)/", item["originalSource"])
                name_, _mime, data = self.staged.get(match.group(1) if match else "", ("", "", None))
                product.media.append(Media(f"gid://shopify/MediaImage/{next(self.ids)}", item.get("alt") or "",
                                           name_, time.monotonic(), data if data is not None else b""))
            count = int(v["count"])
            return {"productUpdate": {"product": {"id": product.id, "media": {
                "nodes": [{"id": m.id, "status": "UPLOADED", "alt": m.alt} for m in product.media[-count:]]}},
                "userErrors": []}}
        if name == "CsvjobsMediaStatus":
            found = {m.id: m for p in self.products.values() for m in p.media}
            return {"nodes": [self._node(found[i]) if i in found else None for i in v["ids"]]}
        if name == "CsvjobsDeleteFiles":
            for product in self.products.values():
                product.media = [m for m in product.media if m.id not in v["ids"]]
            return {"fileDelete": {"deletedFileIds": v["ids"], "userErrors": []}}
        return _json(200, {"errors": [{"message": f"unknown operation {name}"}]})


# --- WooCommerce -------------------------------------------------------------------------------------------


@dataclass
class WooMedia:
    id: int
    source_url: str
    title: str
    alt: str
    data: bytes | None = None


@dataclass
class WooProduct:
    id: int
    name: str
    sku: str
    parent_id: int = 0
    images: list[int] = field(default_factory=list)
    image: int = 0  # a variation's one image
    fields_written: list[dict[str, Any]] = field(default_factory=list)


class FakeWooCommerce(_Server):
    """One WordPress site with WooCommerce."""

    def __init__(self, *, user: str = "shopmanager", password: str = "abcd EFGH ijkl MNOP qrst UVWX") -> None:
        super().__init__()
        self.user, self.password = user, password
        self.products: dict[int, WooProduct] = {}
        self.media: dict[int, WooMedia] = {}
        self.ids = itertools.count(5000)

    def add_media(self, url: str, alt: str = "") -> int:
        media = WooMedia(next(self.ids), url, url.rsplit("/", 1)[-1].rsplit(".", 1)[0], alt)
        self.media[media.id] = media
        return media.id

    def add_product(self, ident: int, name: str, sku: str, images: list[str], parent: int = 0) -> WooProduct:
        product = WooProduct(ident, name, sku, parent, [self.add_media(u) for u in images])
        if parent:
            product.image = product.images[0] if product.images else 0
            product.images = []
        self.products[ident] = product
        return product

    def image_urls(self, ident: int) -> list[str]:
        return [self.media[m].source_url for m in self.products[ident].images]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        lowered = {k.lower(): v for k, v in headers.items()}
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        if lowered.get("authorization") != expected:
            return _json(401, {"code": "rest_not_logged_in", "message": "You are not currently logged in.",
                               "data": {"status": 401}})
        parts = urllib.parse.urlsplit(path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        route = parts.path
        if route == "/wp-json/wp/v2/media" and method == "POST":
            match = re.search(r'filename="([^"]+)"', lowered.get("content-disposition", ""))
            if not match or not is_image(body):
                return _json(500, {"code": "rest_upload_sideload_error",
                                   "message": "Sorry, you are not allowed to upload this file type."})
            name = match.group(1)
            taken = {m.source_url.rsplit("/", 1)[-1] for m in self.media.values()}
            stem, dot, ext = name.rpartition(".")
            n = 0
            while name in taken:
                n += 1
                name = f"{stem}-{n}{dot}{ext}"
            media = WooMedia(next(self.ids), f"{self.base}/wp-content/uploads/2026/12/{name}",
                             query.get("title") or stem, query.get("alt_text", ""), body)
            self.media[media.id] = media
            self.operation = "media-upload"
            return _json(201, self._media_json(media))
        if route == "/wp-json/wp/v2/media" and method == "GET":
            self.operation = "media-search"
            term = query.get("search", "")
            return _json(200, [self._media_json(m) for m in self.media.values()
                               if term in m.title or term in m.source_url][:int(query.get("per_page", 10))])
        match = re.fullmatch(r"/wp-json/wp/v2/media/(\d+)", route)
        if match and method == "DELETE":
            media = self.media.pop(int(match.group(1)), None)
            return _json(200, {"deleted": media is not None})
        if route == "/wp-json/wc/v3/products" and method == "GET":
            return _json(200, [self._product_json(p) for p in self.products.values()
                               if p.sku == query.get("sku") and not p.parent_id])
        match = re.fullmatch(r"/wp-json/wc/v3/products/(\d+)(?:/variations/(\d+))?", route)
        if match:
            product = self.products.get(int(match.group(2) or match.group(1)))
            if product is None or (match.group(2) and product.parent_id != int(match.group(1))):
                return _json(404, {"code": "woocommerce_rest_product_invalid_id", "message": "Invalid ID."})
            if method == "GET":
                self.operation = "product-read"
                return _json(200, self._product_json(product))
            if method == "PUT":
                self.operation = "product-update"
                change = json.loads(body)
                product.fields_written.append(change)
                if "images" in change:
                    ids = []
                    for image in change["images"]:
                        if "id" not in image or int(image["id"]) not in self.media:
                            return _json(400, {"code": "woocommerce_product_invalid_image_id",
                                               "message": f"#{image.get('id')} is an invalid image ID."})
                        if "alt" in image:
                            self.media[int(image["id"])].alt = image["alt"]
                        ids.append(int(image["id"]))
                    product.images = ids
                if "image" in change:
                    product.image = int(change["image"]["id"])
                return _json(200, self._product_json(product))
        return _json(404, {"code": "rest_no_route", "message": "No route was found matching the URL."})

    def _media_json(self, media: WooMedia) -> dict[str, Any]:
        return {"id": media.id, "source_url": media.source_url, "title": {"rendered": media.title},
                "alt_text": media.alt, "media_type": "image"}

    def _product_json(self, product: WooProduct) -> dict[str, Any]:
        def image(ident: int) -> dict[str, Any]:
            media = self.media[ident]
            return {"id": media.id, "src": media.source_url, "name": media.title, "alt": media.alt}

        body: dict[str, Any] = {"id": product.id, "name": product.name, "sku": product.sku,
                                "parent_id": product.parent_id}
        if product.parent_id:
            body["image"] = image(product.image) if product.image in self.media else None
        else:
            body["images"] = [image(i) for i in product.images if i in self.media]
        return body


# --- a batch to push ---------------------------------------------------------------------------------------


def png(seed: int, side: int = 24) -> bytes:
    """A real PNG, different for every seed: one colour, or at a larger side a photo-like gradient with shapes."""
    out = io.BytesIO()
    colour = ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256)
    image = Image.new("RGB", (side, side), colour)
    if side > 64:
        from PIL import ImageDraw

        gradient = Image.linear_gradient("L").resize((side, side)).rotate(seed % 360)
        image = Image.merge("RGB", (gradient, Image.new("L", (side, side), colour[1]), gradient.transpose(0)))
        draw = ImageDraw.Draw(image)
        for n in range(12):
            x, y = (seed * 53 + n * 97) % side, (seed * 29 + n * 61) % side
            draw.ellipse((x, y, x + side // 5, y + side // 7), fill=((n * 40) % 256, 90, (seed + n * 20) % 256))
    image.save(out, "PNG")
    return out.getvalue()


def pushable_batch(conn: Any, home: Any, user_id: Any, headers: list[str], rows: list[dict[str, str]], *,
                   preset: str, title: str, placeholders: bool = False, seed: int = 0, side: int = 24) -> Any:
    """A completed batch written straight in SQL, in the shape an upload of a shop export leaves it (row_data keyed
    by the file's headers, the preset in column_mapping), each row with two real PNGs in local storage and alt
    text."""
    import uuid as _uuid

    batch = _uuid.uuid4()
    mapping = {"preset": preset, "fields": {"title": title}, "row_data_keys": {"title": title}}
    with conn.transaction():
        conn.execute("INSERT INTO csv_batches (id, user_id, filename, original_filename, total_rows, status,"
                     " csv_headers, column_mapping) VALUES (%s, %s, 'shop.csv', 'shop.csv', %s, 'completed', %s, %s)",
                     [batch, user_id, len(rows), headers, json.dumps(mapping)])
        for number, row in enumerate(rows, start=1):
            images = []
            for n, style in enumerate(("lifestyle_emotional", "single_white_background")):
                path = f"csv-images/{user_id}/{batch}/{number}/{style}.png"
                target = home / "storage" / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(png(seed * 1000 + number * 2 + n, side))
                images.append({"style": style, "storage_path": path, "edited": True,
                               **({"placeholder": True} if placeholders else {})})
            prompts = {style: {"prompt": "a scene", "alt_text": f"{row.get(title) or 'product'} {style} alt"}
                       for style in ("lifestyle_emotional", "single_white_background")}
            conn.execute("INSERT INTO csv_row_jobs (batch_id, row_number, row_data, status, completed_at,"
                         " generated_images, generated_prompts) VALUES (%s, %s, %s, 'completed', now(), %s, %s)",
                         [batch, number, json.dumps(row), json.dumps(images), json.dumps(prompts)])
    return batch
