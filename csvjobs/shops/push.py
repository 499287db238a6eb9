"""Push: add a batch's images to the shop's existing products through the shop's own API, each image once.

The live shop is read first (every image a product has now, including those added after the source export), and
only images are added, after the product's own, with their alt text: nothing the shop has is removed, reordered or
changed. Exactly once: the ledger (csv_pushes) is written before the shop is asked and after it answers; a re-run
skips what the ledger says is there, and finds an image a cut-off push had sent by the marker in its file name (the
first 16 hex digits of its SHA-256). An image regenerated after it was pushed goes up as a new version only with
--replace-pushed, which then takes off exactly the media csvjobs added for the earlier one."""

from __future__ import annotations

import hashlib
import mimetypes
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from csvjobs import db
from csvjobs.config import Settings
from csvjobs.errors import CsvJobsError, InputError
from csvjobs.models import ImageStyle
from csvjobs.operate import queries as operate_queries
from csvjobs.operate.result_shapes import alt_text_for, image_location
from csvjobs.shops.contract import (
    Added,
    Credentials,
    ImageToAdd,
    LiveProduct,
    ProductRef,
    ShopAccessError,
    ShopClient,
    ShopError,
    ShopName,
    Store,
)
from csvjobs.shops.export_rules import (
    ALT_TEXT_LIMIT,
    ShopExportNotes,
    ShopExportOptions,
    chosen_images,
    slug,
    value_of,
)
from csvjobs.shops.queries import Ledger
from csvjobs.shops.shopify import ShopifyClient
from csvjobs.shops.woocommerce import WooCommerceClient
from csvjobs.storage.contract import Storage
from csvjobs.storage.registry import open_storage
from csvjobs.users import resolve_user_id

MARKER_DIGITS = 16
# Products whose images are sent before waiting for the shop to process them all: the shop works on them side by
# side, and a cut-off push loses at most this many products' confirmations (a re-run finds their images).
PROCESSING_GROUP = 25


class PushOptions(BaseModel):
    """What the user asked push to do."""

    shop: ShopName
    store: str
    credentials_file: Path | None = None
    all_images: bool = False
    dry_run: bool = False
    replace_pushed: bool = False
    variant_images: bool = False
    require_photo: bool = False
    handle_column: str | None = None


class PlannedImage(BaseModel):
    """One generated image bound for one product."""

    row_number: int
    style: ImageStyle
    storage_path: str
    alt: str


class PlannedProduct(BaseModel):
    """One shop product and the images it gets (look-alike rows' shared images once)."""

    ref: ProductRef
    title: str = ""
    images: list[PlannedImage] = Field(default_factory=list)
    # WooCommerce --variant-images: (variation, its row's white image) set as the variation's own image.
    variations: list[tuple[ProductRef, PlannedImage]] = Field(default_factory=list)


class ProductOutcome(BaseModel):
    """What push did to one product."""

    product: str
    product_id: str = ""
    added: int = 0
    already_pushed: int = 0
    replaced: int = 0
    held_back: int = 0  # regenerated since pushed, left alone without --replace-pushed
    failed: int = 0
    would_add: list[str] = Field(default_factory=list)  # --dry-run: the images' file names
    errors: list[str] = Field(default_factory=list)


class PushReport(BaseModel):
    """What a push did, for the summary and `push --json`."""

    shop: ShopName
    store: str
    batch_id: uuid.UUID
    dry_run: bool
    method: str
    products: int = 0
    images_added: int = 0
    already_pushed: int = 0
    replaced: int = 0
    held_back: int = 0
    failed: int = 0
    requests: int = 0
    throttled: int = 0
    seconds: float = 0.0
    outcomes: list[ProductOutcome] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing failed."""
        return self.failed == 0 and not any(o.errors for o in self.outcomes)

    def count(self, outcome: ProductOutcome) -> None:
        """Add one product's outcome to the totals."""
        self.outcomes.append(outcome)
        self.products += 1
        self.images_added += outcome.added
        self.already_pushed += outcome.already_pushed
        self.replaced += outcome.replaced
        self.held_back += outcome.held_back
        self.failed += outcome.failed + (1 if outcome.errors and not outcome.failed else 0)


ClientFactory = Callable[[ShopName, Store, Credentials], ShopClient]


def open_client(shop: ShopName, store: Store, credentials: Credentials) -> ShopClient:
    """The shop's API client."""
    if shop == "shopify":
        return ShopifyClient(store, credentials)
    return WooCommerceClient(store, credentials)


def push_batch(settings: Settings, batch_id: uuid.UUID, options: PushOptions, *,
               on_product: Callable[[ProductOutcome, int], None] | None = None,
               client_factory: ClientFactory = open_client) -> PushReport:
    """Add the batch's images to the shop's products (or, with dry_run, say what would be added)."""
    store = Store.parse(options.shop, options.store)
    if options.variant_images and options.shop == "shopify":
        raise InputError("--variant-images is for push woocommerce: csvjobs does not change Shopify variants")
    if options.handle_column and options.shop != "shopify":
        raise InputError("--handle-column is for push shopify")
    credentials = None if options.dry_run else Credentials.load(options.shop, options.credentials_file)
    user_id = resolve_user_id(settings)
    storage = open_storage(settings)
    _target, conn = db.open_database(settings, application_name="csvjobs-push")
    started = time.monotonic()
    with conn:
        notes = ShopExportNotes()
        products, reviewed = _plan(conn, user_id, batch_id, options, notes)
        notes.finish(ShopExportOptions(require_photo=options.require_photo))  # placeholders: refused here
        report = PushReport(shop=options.shop, store=store.url, batch_id=batch_id, dry_run=options.dry_run,
                            method="one productUpdate per product, staged uploads" if options.shop == "shopify"
                            else "WordPress media uploads, one product update per product")
        if reviewed and not options.all_images:
            report.notes.append("approved images only (the batch has been reviewed; --all pushes every current "
                                "image)")
        report.notes.extend(notes.lines)
        ledger = Ledger(conn, user_id, options.shop, store.url)
        if options.dry_run:
            for product in products:
                outcome = _dry_run(product, storage, ledger)
                report.count(outcome)
                if on_product:
                    on_product(outcome, len(products))
            report.seconds = round(time.monotonic() - started, 2)
            return report
        if not ledger.lock():
            raise InputError(f"another push to {store.url} is running; wait for it to finish")
        assert credentials is not None
        client = client_factory(options.shop, store, credentials)
        sent: list[Sent] = []
        try:
            for product in products:
                done = _send_product(client, ledger, batch_id, product, storage, options)
                if isinstance(done, Sent):
                    sent.append(done)
                    if len(sent) >= PROCESSING_GROUP:
                        _finish(client, ledger, sent, storage)
                        _count_all(report, sent, len(products), on_product)
                        sent = []
                else:
                    _count_all(report, [done], len(products), on_product)
            _finish(client, ledger, sent, storage)
            _count_all(report, sent, len(products), on_product)
        except ShopAccessError as exc:
            raise CsvJobsError(f"{exc}; nothing more was pushed ({report.images_added} image(s) added before "
                               "that; run push again once fixed)") from None
        finally:
            report.requests = int(getattr(client, "requests", 0))
            report.throttled = int(getattr(client, "throttled", 0))
            client.close()
    report.seconds = round(time.monotonic() - started, 2)
    return report


def _count_all(report: PushReport, done: list[Sent] | list[ProductOutcome], total: int,
               on_product: Callable[[ProductOutcome, int], None] | None) -> None:
    for item in done:
        outcome = item.outcome if isinstance(item, Sent) else item
        report.count(outcome)
        if on_product:
            on_product(outcome, total)


# --- what goes where ---------------------------------------------------------------------------------------


def _plan(conn: db.Connection, user_id: uuid.UUID, batch_id: uuid.UUID, options: PushOptions,
          notes: ShopExportNotes) -> tuple[list[PlannedProduct], bool]:
    """Every product of the batch with the images it gets, in the order the file first names it."""
    export_options = ShopExportOptions(require_photo=options.require_photo)
    with db.user_transaction(conn, user_id):
        batch = operate_queries.export_header(conn, batch_id)
        approved_only = bool(batch["reviewed"]) and not options.all_images
        preset = (batch.get("column_mapping") or {}).get("preset", "")
        if options.handle_column and options.handle_column not in batch["csv_headers"]:
            raise InputError(f"--handle-column {options.handle_column!r}: the source has no such column; its "
                             f"columns are {', '.join(batch['csv_headers'][:40])}")
        products: dict[str, PlannedProduct] = {}
        seen: dict[str, set[str]] = {}
        for row in operate_queries.export_rows(conn, batch_id):
            if row["status"] != "completed":
                continue
            chosen = chosen_images(row, approved_only, export_options, notes)
            if not chosen:
                continue
            ref, parent, title = _refs(row, options, preset)
            target = parent or ref
            key = target.model_dump_json()
            product = products.setdefault(key, PlannedProduct(ref=target, title=title))
            for style, image in chosen:
                path = image_location(image)
                planned = PlannedImage(row_number=row["row_number"], style=style, storage_path=path,
                                       alt=_alt(row, style, product.title))
                if path not in seen.setdefault(key, set()):
                    seen[key].add(path)
                    product.images.append(planned)
                if parent and options.variant_images and style is ImageStyle.SINGLE_WHITE_BACKGROUND:
                    product.variations.append((ref, planned))
    return list(products.values()), bool(batch["reviewed"])


def _refs(row: dict[str, Any], options: PushOptions, preset: str) -> tuple[ProductRef, ProductRef | None, str]:
    """The row's product (and, for a WooCommerce variation, its parent, which gets the images) and title."""
    data = row["row_data"] or {}
    fields = row["product"] or {}
    title = str(fields.get("title") or "")
    if options.shop == "shopify":
        if options.handle_column:
            handle = str(data.get(options.handle_column) or "").strip()
        elif preset == "shopify":
            handle = value_of(data, "handle", "shopify")
        else:
            handle = slug(title)
        if not handle:
            raise InputError(f"row {row['row_number']} has no Shopify handle (its title gives none); pass "
                             "--handle-column HEADER naming the column that holds each product's handle")
        return ProductRef(handle=handle, product_id=value_of(data, "id", "shopify")), None, title
    ident = value_of(data, "id", "woocommerce")
    sku = value_of(data, "sku", "woocommerce") or str(fields.get("mpn") or "")
    if not ident and not sku:
        raise InputError(f"row {row['row_number']} has neither an ID nor a SKU; WooCommerce cannot match it to a "
                         "product (upload the shop's own export, or --map mpn=HEADER naming the SKU column)")
    parent_value = value_of(data, "parent", "woocommerce")
    parent = None
    if parent_value:
        parent = (ProductRef(product_id=parent_value.removeprefix("id:")) if parent_value.startswith("id:")
                  or parent_value.isdigit() else ProductRef(sku=parent_value))
    return ProductRef(product_id=ident, sku=sku), parent, title


def _alt(row: dict[str, Any], style: ImageStyle, title: str) -> str:
    alt = alt_text_for(row["generated_prompts"], style, row.get("review"))
    return (alt or f"{title} {style.shopper_words}".strip())[:ALT_TEXT_LIMIT]


def _image_to_add(product: PlannedProduct, image: PlannedImage, storage: Storage) -> tuple[str, ImageToAdd]:
    """The image's bytes, its SHA-256 and the file name the shop gets (a readable name, then the marker)."""
    data = storage.read_bytes(image.storage_path)
    sha = hashlib.sha256(data).hexdigest()
    marker = sha[:MARKER_DIGITS]
    suffix = Path(image.storage_path).suffix.lower() or ".png"
    mime = mimetypes.types_map.get(suffix, "image/png")
    name = slug(product.title or product.ref.label)[:60] or "product"
    return sha, ImageToAdd(marker=marker, file_name=f"{name}-{image.style.word}-{marker}{suffix}",
                           mime_type=mime, alt=image.alt, data=data)


# --- doing it ------------------------------------------------------------------------------------------------


def _dry_run(product: PlannedProduct, storage: Storage, ledger: Ledger) -> ProductOutcome:
    """What push would add to one product, without asking the shop (the ledger says what it already has)."""
    outcome = ProductOutcome(product=product.ref.label)
    for image in product.images:
        sha, item = _image_to_add(product, image, storage)
        if ledger.pushed_anywhere(sha):
            outcome.already_pushed += 1
        else:
            outcome.would_add.append(item.file_name)
    return outcome


class Sent(BaseModel):
    """One product's images the shop has taken but may still be processing, and what waits on them."""

    outcome: ProductOutcome
    live: LiveProduct
    product: PlannedProduct
    shas: dict[str, str] = Field(default_factory=dict)  # marker -> SHA-256
    added: list[Added] = Field(default_factory=list)
    replacing: list[dict[str, Any]] = Field(default_factory=list)


def _send_product(client: ShopClient, ledger: Ledger, batch_id: uuid.UUID, product: PlannedProduct,
                  storage: Storage, options: PushOptions) -> Sent | ProductOutcome:
    """Add one product's images once (the shop may still be processing them: see _finish); a shop's refusal fails
    this product only."""
    outcome = ProductOutcome(product=product.ref.label)
    try:
        live = client.find_product(product.ref)
        if live is None:
            outcome.errors.append(f"{client.name} has no product {product.ref.label}")
            outcome.failed = len(product.images)
            return outcome
        outcome.product_id = live.product_id
        live = _settled(client, product.ref, live, ledger, product, storage)
        sent = Sent(outcome=outcome, live=live, product=product)
        pending: list[tuple[str, PlannedImage, ImageToAdd]] = []
        for image in product.images:
            sha, item = _image_to_add(product, image, storage)
            entry = ledger.entry(live.product_id, sha)
            if entry is not None and entry["state"] in ("attached", "ready"):
                # Pushed before: skipped even if the merchant has since taken it off the product.
                outcome.already_pushed += 1
                continue
            found = live.media_for(item.marker)
            if found is not None:
                # On the product already: sent by a push cut off before it could record it (counted as added
                # now), or by another batch with the same image; recorded, never sent again.
                if entry is None:
                    ledger.start(batch_id, image.row_number, image.style.value, live.product_id, sha)
                    outcome.already_pushed += 1
                else:
                    outcome.added += 1
                ledger.record(live.product_id, sha, "ready", found)
                continue
            if entry is not None and entry["state"] == "failed" and entry["media_id"]:
                client.remove_images(live, [entry["media_id"]])  # csvjobs' own media the shop could not process
            earlier = ledger.earlier(batch_id, image.row_number, image.style.value, live.product_id, sha)
            if earlier and not options.replace_pushed:
                outcome.held_back += 1
                continue
            sent.replacing.extend(earlier)
            item.maybe_uploaded = entry is not None and entry["state"] == "started"
            pending.append((sha, image, item))
        if pending:
            for sha, image, _item in pending:
                ledger.start(batch_id, image.row_number, image.style.value, live.product_id, sha)
            sent.shas = {item.marker: sha for sha, _image, item in pending}
            sent.added = client.add_images(live, [item for _sha, _image, item in pending])
            for result in sent.added:
                ledger.record(live.product_id, sent.shas[result.marker], "attached", result.media_id)
        return sent
    except ShopAccessError:
        raise
    except (ShopError, CsvJobsError, OSError) as exc:
        return _failed(outcome, product, exc)


def _finish(client: ShopClient, ledger: Ledger, sent: list[Sent], storage: Storage) -> None:
    """Wait for the shop to process every image sent (all products at once: the shop processes them side by
    side), record each as ready or failed, then take off earlier versions (--replace-pushed) and set variation
    images."""
    added = [a for item in sent for a in item.added]
    if added:
        client.wait_until_processed(added)
    for item in sent:
        outcome, live = item.outcome, item.live
        try:
            for result in item.added:
                sha = item.shas[result.marker]
                if result.status == "ready":
                    ledger.record(live.product_id, sha, "ready")
                    outcome.added += 1
                elif result.status == "failed":
                    ledger.record(live.product_id, sha, "failed", error=result.error)
                    outcome.failed += 1
                    outcome.errors.append(f"an image ({result.marker}) failed in {client.name}'s processing: "
                                          f"{result.error}")
                else:
                    outcome.added += 1
                    outcome.errors.append(f"an image ({result.marker}) is still processing; run push again to "
                                          "check it")
            if item.replacing and not outcome.failed:
                client.remove_images(live, [str(e["media_id"]) for e in item.replacing if e["media_id"]])
                ledger.removed([int(e["id"]) for e in item.replacing])
                outcome.replaced += len(item.replacing)
            for variation, image in item.product.variations:
                sha, _item = _image_to_add(item.product, image, storage)
                entry = ledger.entry(live.product_id, sha)
                if entry is not None and entry["media_id"] and entry["state"] in ("attached", "ready"):
                    client.set_variation_image(live, variation, str(entry["media_id"]))
        except ShopAccessError:
            raise
        except (ShopError, CsvJobsError, OSError) as exc:
            _failed(outcome, item.product, exc)


def _failed(outcome: ProductOutcome, product: PlannedProduct, exc: Exception) -> ProductOutcome:
    outcome.errors.append(str(exc))
    outcome.failed = max(outcome.failed, len(product.images) - outcome.added - outcome.already_pushed
                         - outcome.held_back)
    return outcome


def _settled(client: ShopClient, ref: ProductRef, live: LiveProduct, ledger: Ledger, product: PlannedProduct,
             storage: Storage, *, poll_seconds: float = 1.0, timeout: float = 600.0) -> LiveProduct:
    """The product once the shop has processed its media, when a cut-off push may have sent some of them: an
    image still processing has no file name yet, so it could not be told apart from one to send again."""
    if not live.processing:
        return live
    started = any((ledger.entry(live.product_id, _image_to_add(product, image, storage)[0]) or {}).get("state")
                  in ("started", "attached") for image in product.images)
    deadline = time.monotonic() + timeout
    while started and live.processing and time.monotonic() < deadline:
        time.sleep(poll_seconds)
        live = client.find_product(ref) or live
    return live

