"""push: a batch's images added to the live shop's products through the shop's own API (loopback servers written
from the documentation, support/shop_apis.py), each image once, with alt text, nothing the shop has removed,
reordered or changed, including images added after the source export: after a throttled run, a 5xx, a product the
shop does not have, an image the shop cannot process, a wrong token, a re-run, a regenerated image, and a push
killed (-9) at any request and run again."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from support.helpers import REAL_DATA, USER_A
from support.shop_apis import SIGNATURE, FakeShopify, FakeWooCommerce, Media, png, pushable_batch

from csvjobs.shops.columns import canonical_index

SHOPIFY_HEADERS = ["Handle", "Title", "Option1 Name", "Option1 Value", "Image Src", "Image Position",
                   "Image Alt Text"]
CDN = "https://cdn.shopify.test/s/files/1/0001/files"
TOKEN = "shpat_test_0123456789abcdef"
WOO_PASSWORD = "abcd EFGH ijkl MNOP qrst UVWX"
needs_real_data = pytest.mark.skipif(not REAL_DATA.exists(), reason="shared/data/real is not present")


def shopify_rows() -> list[dict[str, str]]:
    """A Shopify export: a shirt in two colours (two rows, each with images), a hat, and pants."""
    def row(handle: str, title: str, colour: str = "", src: str = "", position: str = "") -> dict[str, str]:
        return {"Handle": handle, "Title": title, "Option1 Name": "Color" if colour else "", "Option1 Value": colour,
                "Image Src": src, "Image Position": position, "Image Alt Text": f"{title} photo" if src else ""}
    return [row("shirt", "Shirt", "Green", f"{CDN}/shirt-1.jpg", "1"), row("shirt", "", "Blue", f"{CDN}/shirt-2.jpg",
                                                                         "2"),
            row("hat", "Hat", "", f"{CDN}/hat.jpg", "1"), row("pants", "Pants")]


def seed_shopify(shop: FakeShopify) -> dict[str, list[tuple[str, str, str]]]:
    """The shop as the export saw it, plus an image added to the shirt and the pants after it: what each product
    has before the push, as (media id, file name, alt)."""
    shop.add_product("shirt", "Shirt", [(f"{CDN}/shirt-1.jpg", "Shirt photo"), (f"{CDN}/shirt-2.jpg", "Shirt photo"),
                                        (f"{CDN}/shirt-added-later.jpg", "Added later")])
    shop.add_product("hat", "Hat", [(f"{CDN}/hat.jpg", "Hat photo")])
    shop.add_product("pants", "Pants", [(f"{CDN}/pants-added-later.jpg", "")])
    return snapshot(shop)


def snapshot(shop: FakeShopify) -> dict[str, list[tuple[str, str, str]]]:
    return {p.handle: [(m.id, m.file_name, m.alt) for m in p.media] for p in shop.products.values()}


def assert_only_added(before: dict[str, list[tuple[str, str, str]]], shop: FakeShopify,
                      expected_new: dict[str, int]) -> None:
    """Every product keeps its media (ids, order, alt) first; the new ones follow, each once, with alt text, and
    every one processed."""
    for handle, media in before.items():
        now = shop.by_handle(handle).media
        assert [(m.id, m.file_name, m.alt) for m in now[:len(media)]] == media, handle
        new = now[len(media):]
        assert len(new) == expected_new.get(handle, 0), (handle, [m.file_name for m in new])
        assert len({m.data for m in new}) == len(new), f"{handle}: an image added twice"
        assert all(m.alt and shop.status(m) == "READY" for m in new), handle


@pytest.fixture
def shopify() -> Any:
    shop = FakeShopify(token=TOKEN, ready_after=0.05).start()
    yield shop
    shop.stop()


@pytest.fixture
def woo() -> Any:
    shop = FakeWooCommerce(password=WOO_PASSWORD).start()
    yield shop
    shop.stop()


@pytest.fixture
def push_env(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("CSVJOBS_USER_ID", str(USER_A))
    monkeypatch.setenv("SHOPIFY_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("WOOCOMMERCE_USER", "shopmanager")
    monkeypatch.setenv("WOOCOMMERCE_APP_PASSWORD", WOO_PASSWORD)
    return settings


def shopify_batch(conn: Any, settings: Any, **kwargs: Any) -> uuid.UUID:
    return pushable_batch(conn, settings.home, USER_A, SHOPIFY_HEADERS, shopify_rows(), preset="shopify",
                          title="Title", **kwargs)


def no_secrets(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text and SIGNATURE not in text and WOO_PASSWORD not in text
        assert WOO_PASSWORD.replace(" ", "") not in text


def test_shopify_push_adds_each_image_once_and_keeps_everything_the_shop_has(conn, push_env, run_cli,
                                                                           shopify: FakeShopify) -> None:
    before = seed_shopify(shopify)
    batch = shopify_batch(conn, push_env)
    result = run_cli("push", "shopify", str(batch), "--store", shopify.base, "--json")
    assert result.code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["images_added"] == 8 and report["failed"] == 0
    assert_only_added(before, shopify, {"shirt": 4, "hat": 2, "pants": 2})
    shirt = shopify.by_handle("shirt").media
    assert shirt[3].alt == "Shirt lifestyle_emotional alt" and "shirt-lifestyle-" in shirt[3].file_name
    assert "productSet" not in shopify.operations
    no_secrets(result.stdout, result.stderr)

    again = run_cli("push", "shopify", str(batch), "--store", shopify.base)
    assert again.code == 0, again.stderr
    assert "0 image(s) added, 8 already there" in again.stdout
    assert_only_added(before, shopify, {"shirt": 4, "hat": 2, "pants": 2})


@pytest.mark.slow
def test_a_throttled_store_and_5xx_answers_still_finish_once(conn, push_env, run_cli) -> None:
    # A bucket that holds one product read and little more, drained by someone else when the push starts.
    shop = FakeShopify(token=TOKEN, bucket=60, restore=60, ready_after=0.05).start()
    try:
        before = seed_shopify(shop)
        batch = shopify_batch(conn, push_env)
        shop.available, shop.refilled_at = 0, time.monotonic()
        shop.fail_next_5xx = 1
        result = run_cli("push", "shopify", str(batch), "--store", shop.base, "--json")
        assert result.code == 0, result.stdout + result.stderr
        assert json.loads(result.stdout)["throttled"] >= 1 and shop.throttled >= 1
        assert_only_added(before, shop, {"shirt": 4, "hat": 2, "pants": 2})
    finally:
        shop.stop()


def test_failures_are_said_per_product_and_the_rest_is_pushed(conn, push_env, run_cli,
                                                             shopify: FakeShopify) -> None:
    before = seed_shopify(shopify)
    del shopify.products[shopify.by_handle("hat").id]  # a product the shop no longer has
    before.pop("hat")
    batch = shopify_batch(conn, push_env)
    # One image the shop cannot process (the stored file is not an image).
    (push_env.home / "storage" / f"csv-images/{USER_A}/{batch}/2/single_white_background.png").write_bytes(b"x" * 40)
    result = run_cli("push", "shopify", str(batch), "--store", shopify.base)
    assert result.code == 1
    assert "hat: Shopify has no product hat" in result.stderr
    assert "failed in Shopify's processing: INVALID_IMAGE_FILE" in result.stderr
    assert "5 image(s) added" in result.stdout and "3 failed" in result.stdout
    no_secrets(result.stdout, result.stderr)
    shirt = shopify.by_handle("shirt").media
    assert [m.id for m in shirt[:3]] == [m[0] for m in before["shirt"]]


def test_a_wrong_token_is_one_clear_line_and_never_echoed(conn, push_env, run_cli, shopify: FakeShopify,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seed_shopify(shopify)
    batch = shopify_batch(conn, push_env)
    monkeypatch.setenv("SHOPIFY_ACCESS_TOKEN", "shpat_wrong_token_value_42")
    result = run_cli("push", "shopify", str(batch), "--store", shopify.base)
    assert result.code == 2
    assert "Shopify refused the access token (HTTP 401)" in result.stderr
    assert "shpat_wrong_token_value_42" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    monkeypatch.delenv("SHOPIFY_ACCESS_TOKEN")
    missing = run_cli("push", "shopify", str(batch), "--store", shopify.base)
    assert missing.code == 2 and "no SHOPIFY_ACCESS_TOKEN in the environment" in missing.stderr
    for store, why in (("http://shop.example.com", "https only"), ("https://user:pw@x.myshopify.com", "user name"),
                       ("https://shop.example.com", "NAME.myshopify.com")):
        refused = run_cli("push", "shopify", str(batch), "--store", store)
        assert refused.code == 2 and why in refused.stderr, refused.stderr
        assert "pw@" not in refused.stderr


def test_a_regenerated_image_is_replaced_only_when_asked_and_only_its_own_media(conn, push_env, run_cli,
                                                                               shopify: FakeShopify) -> None:
    before = seed_shopify(shopify)
    batch = shopify_batch(conn, push_env)
    assert run_cli("push", "shopify", str(batch), "--store", shopify.base).code == 0
    pushed = snapshot(shopify)
    # The hat's white image made again (a reviewer's redo): a new file with new bytes.
    path = f"csv-images/{USER_A}/{batch}/3/single_white_background-v2.png"
    target = push_env.home / "storage" / path
    target.write_bytes(png(99_999))
    with conn.transaction():
        conn.execute("UPDATE csv_row_jobs SET generated_images = jsonb_set(generated_images, '{1,storage_path}',"
                     " to_jsonb(%s::text)) WHERE batch_id = %s AND row_number = 3", [path, batch])
    held = run_cli("push", "shopify", str(batch), "--store", shopify.base)
    assert held.code == 0 and "1 changed since pushed" in held.stdout
    assert snapshot(shopify) == pushed
    replaced = run_cli("push", "shopify", str(batch), "--store", shopify.base, "--replace-pushed", "--json")
    assert replaced.code == 0, replaced.stderr
    assert json.loads(replaced.stdout)["replaced"] == 1
    hat = snapshot(shopify)["hat"]
    old_white = pushed["hat"][2]
    assert old_white not in hat and hat[:2] == pushed["hat"][:2] and len(hat) == 3
    assert {h: m for h, m in snapshot(shopify).items() if h != "hat"} == {
        h: m for h, m in pushed.items() if h != "hat"}
    assert before["hat"][0] in hat


def test_dry_run_asks_no_shop_and_placeholders_are_refused(conn, push_env, run_cli, shopify: FakeShopify,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    seed_shopify(shopify)
    batch = shopify_batch(conn, push_env)
    monkeypatch.delenv("SHOPIFY_ACCESS_TOKEN")
    dry = run_cli("push", "shopify", str(batch), "--store", shopify.base, "--dry-run")
    assert dry.code == 0, dry.stderr
    assert "shirt: would add 4 image(s)" in dry.stdout and "8 image(s) would be added to 3 product(s)" in dry.stdout
    assert shopify.requests == 0
    placeholders = shopify_batch(conn, push_env, placeholders=True, seed=7)
    refused = run_cli("push", "shopify", str(placeholders), "--store", shopify.base, "--dry-run")
    assert refused.code == 2 and "placeholders" in refused.stderr


@pytest.mark.slow
def test_approved_images_only_once_the_batch_is_reviewed(conn, push_env, run_cli, shopify: FakeShopify) -> None:
    before = seed_shopify(shopify)
    batch = shopify_batch(conn, push_env)
    with conn.transaction():
        conn.execute("INSERT INTO csv_row_reviews (row_job_id, batch_id, review) SELECT id, batch_id,"
                     " '{\"lifestyle_emotional\": {\"state\": \"approved\"},"
                     " \"single_white_background\": {\"state\": \"rejected\"}}' FROM csv_row_jobs"
                     " WHERE batch_id = %s AND row_number = 3", [batch])
    result = run_cli("push", "shopify", str(batch), "--store", shopify.base)
    assert result.code == 0, result.stderr
    assert "approved images only" in result.stderr
    assert_only_added(before, shopify, {"hat": 1})


# --- WooCommerce -------------------------------------------------------------------------------------------

WOO_HEADERS = ["ID", "Type", "SKU", "Name", "Parent", "Images"]
WP = "https://shop.example.com/wp-content/uploads/2026/01"


def seed_woo(shop: FakeWooCommerce) -> dict[int, list[str]]:
    shop.add_product(10, "Mug", "MUG-1", [f"{WP}/mug.jpg", f"{WP}/mug-2.jpg", f"{WP}/mug-added-later.jpg"])
    shop.add_product(20, "Tee", "TEE", [f"{WP}/tee.jpg"])
    shop.add_product(21, "Tee - Red", "TEE-R", [f"{WP}/tee-red.jpg"], parent=20)
    return {i: shop.image_urls(i) for i in (10, 20)}


def woo_rows() -> list[dict[str, str]]:
    return [{"ID": "10", "Type": "simple", "SKU": "MUG-1", "Name": "Mug", "Parent": "",
             "Images": f"{WP}/mug.jpg, {WP}/mug-2.jpg"},
            {"ID": "20", "Type": "variable", "SKU": "TEE", "Name": "Tee", "Parent": "", "Images": f"{WP}/tee.jpg"},
            {"ID": "21", "Type": "variation", "SKU": "TEE-R", "Name": "Tee - Red", "Parent": "id:20",
             "Images": f"{WP}/tee-red.jpg"}]


def test_woocommerce_push_appends_to_the_live_list_once_with_alt_text(conn, push_env, run_cli,
                                                                      woo: FakeWooCommerce) -> None:
    before = seed_woo(woo)
    red_image = woo.products[21].image
    batch = pushable_batch(conn, push_env.home, USER_A, WOO_HEADERS, woo_rows(), preset="woocommerce", title="Name")
    result = run_cli("push", "woocommerce", str(batch), "--store", woo.base, "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["images_added"] == 6
    for ident, urls in before.items():
        now = woo.image_urls(ident)
        assert now[:len(urls)] == urls
        assert len(now) == len(urls) + (2 if ident == 10 else 4)  # the variation's images go to its parent
        new = [woo.media[m] for m in woo.products[ident].images[len(urls):]]
        assert all(m.alt.endswith(" alt") and m.data for m in new)
    assert woo.products[21].image == red_image  # a variation's own image is left alone by default
    no_secrets(result.stdout, result.stderr)
    again = run_cli("push", "woocommerce", str(batch), "--store", woo.base)
    assert again.code == 0 and "0 image(s) added, 6 already there" in again.stdout
    assert len(woo.media) == 5 + 6
    variant = run_cli("push", "woocommerce", str(batch), "--store", woo.base, "--variant-images")
    assert variant.code == 0, variant.stderr
    assert woo.media[woo.products[21].image].source_url.rsplit("/", 1)[-1].startswith("tee-red-white-")
    wrong = run_cli("push", "woocommerce", str(batch), "--store", woo.base, "--credentials-file",
                    str(write_credentials(push_env.home, "WOOCOMMERCE_USER=shopmanager\n"
                                          "WOOCOMMERCE_APP_PASSWORD=not-the-password\n")))
    assert wrong.code == 2 and "HTTP 401" in wrong.stderr and "not-the-password" not in wrong.stderr


def write_credentials(home: Path, text: str) -> Path:
    path = home / "shop.env"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- killed at any request and run again -------------------------------------------------------------------


def _push_process(env: dict[str, str], shop: str, batch: uuid.UUID, store: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "csvjobs", "push", shop, str(batch), "--store", store],
                            env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _env(pool_env: dict[str, str]) -> dict[str, str]:
    return dict(pool_env, CSVJOBS_USER_ID=str(USER_A), SHOPIFY_ACCESS_TOKEN=TOKEN, WOOCOMMERCE_USER="shopmanager",
                WOOCOMMERCE_APP_PASSWORD=WOO_PASSWORD)


# Where a push is killed: the shop has done what the request asked and the answer never arrives (the Nth request
# doing that), or at a random request. The adds are where a push that trusted only its ledger would send again.
SHOPIFY_KILLS = [("CsvjobsAddMedia", 1), ("CsvjobsAddMedia", 2), ("CsvjobsAddMedia", 3), ("CsvjobsStage", 2),
                 ("upload", 3), ("CsvjobsMediaStatus", 1), ("CsvjobsFindProduct", 2), ("", 7), ("", 12)]
WOO_KILLS = [("media-upload", 1), ("media-upload", 3), ("product-update", 1), ("product-update", 2),
             ("product-read", 3), ("", 9)]


def _hold(shop: FakeShopify | FakeWooCommerce, operation: str, nth: int) -> None:
    if operation:
        shop.held.operation, shop.held.nth = operation, nth
    else:
        shop.held.at = random.Random(nth).randint(1, 15)  # both pushes make 17 or more requests


@pytest.mark.slow
@pytest.mark.parametrize(("operation", "nth"), SHOPIFY_KILLS)
def test_a_shopify_push_killed_at_any_request_finishes_once_when_run_again(conn, pool_env, home, operation: str,
                                                                          nth: int) -> None:
    env = _env(pool_env)
    shop = FakeShopify(token=TOKEN, ready_after=0.3).start()
    try:
        before = seed_shopify(shop)
        batch = pushable_batch(conn, home, USER_A, SHOPIFY_HEADERS, shopify_rows(), preset="shopify", title="Title")
        _hold(shop, operation, nth)
        first = _push_process(env, "shopify", batch, shop.base)
        assert shop.held.reached.wait(30), "the push never reached the request to kill it at"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        shop.held.release.set()
        second = subprocess.run([sys.executable, "-m", "csvjobs", "push", "shopify", str(batch), "--store",
                                 shop.base, "--json"], env=env, text=True, capture_output=True, timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        assert_only_added(before, shop, {"shirt": 4, "hat": 2, "pants": 2})
    finally:
        shop.stop()


@pytest.mark.slow
@pytest.mark.parametrize(("operation", "nth"), WOO_KILLS)
def test_a_woocommerce_push_killed_at_any_request_finishes_once_when_run_again(conn, pool_env, home, operation: str,
                                                                               nth: int) -> None:
    env = _env(pool_env)
    shop = FakeWooCommerce(password=WOO_PASSWORD).start()
    try:
        before = seed_woo(shop)
        batch = pushable_batch(conn, home, USER_A, WOO_HEADERS, woo_rows(), preset="woocommerce", title="Name")
        _hold(shop, operation, nth)
        first = _push_process(env, "woocommerce", batch, shop.base)
        assert shop.held.reached.wait(30), "the push never reached the request to kill it at"
        # While one push to the store is under way, another is refused rather than adding the same images.
        second_at_once = subprocess.run([sys.executable, "-m", "csvjobs", "push", "woocommerce", str(batch),
                                         "--store", shop.base], env=env, text=True, capture_output=True, timeout=60)
        assert second_at_once.returncode == 2 and "another push to" in second_at_once.stderr
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        shop.held.release.set()
        second = subprocess.run([sys.executable, "-m", "csvjobs", "push", "woocommerce", str(batch), "--store",
                                 shop.base], env=env, text=True, capture_output=True, timeout=120)
        assert second.returncode == 0, second.stdout + second.stderr
        for ident, urls in before.items():
            now = shop.products[ident].images
            assert shop.image_urls(ident)[:len(urls)] == urls
            assert len(now) == len(urls) + (2 if ident == 10 else 4)
            assert len({shop.media[m].data for m in now[len(urls):]}) == len(now) - len(urls)
        # No media left behind unattached: each upload is on its product.
        attached = {m for p in shop.products.values() for m in p.images} | {p.image for p in shop.products.values()}
        assert set(shop.media) <= attached
    finally:
        shop.stop()


# --- the real exports --------------------------------------------------------------------------------------


def _real_rows(name: str) -> tuple[list[str], list[dict[str, str]]]:
    text = (REAL_DATA / name).read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


@pytest.mark.slow
@needs_real_data
def test_the_real_shopify_export_keeps_every_image_the_store_has(conn, push_env, run_cli,
                                                                shopify: FakeShopify) -> None:
    headers, rows = _real_rows("shopify_product_template.csv")
    shopify.seed_from_export((REAL_DATA / "shopify_product_template.csv").read_text(encoding="utf-8"))
    for number, product in enumerate(shopify.products.values()):  # added in the store after the export
        product.media.append(Media(f"gid://shopify/MediaImage/9{number}", "later", f"added-later-{number}.jpg", 0.0))
    before = snapshot(shopify)
    batch = pushable_batch(conn, push_env.home, USER_A, headers, rows, preset="shopify", title="Title")
    result = run_cli("push", "shopify", str(batch), "--store", shopify.base, "--json")
    assert result.code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["products"] == len(before) and report["images_added"] == 2 * len(rows)
    for handle, media in before.items():
        assert snapshot(shopify)[handle][:len(media)] == media


@pytest.mark.slow
@needs_real_data
def test_the_real_ptbr_woocommerce_export_goes_to_parents_by_id(conn, push_env, run_cli,
                                                               woo: FakeWooCommerce) -> None:
    headers, rows = _real_rows("woocommerce_ptbr_products.csv")
    index = canonical_index(headers, "woocommerce")
    ident, parent, name = headers[index["id"]], headers[index["parent"]], headers[index["name"]]
    for row in rows:
        parent_id = int(row[parent].removeprefix("id:")) if row[parent] else 0
        woo.add_product(int(row[ident]), row[name], "", [f"{WP}/{row[ident]}.jpg"], parent=parent_id)
    before = {i: woo.image_urls(i) for i, p in woo.products.items() if not p.parent_id}
    batch = pushable_batch(conn, push_env.home, USER_A, headers, rows, preset="woocommerce", title=name)
    result = run_cli("push", "woocommerce", str(batch), "--store", woo.base, "--json")
    assert result.code == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["images_added"] == 2 * len(rows)
    for product_id, urls in before.items():
        assert woo.image_urls(product_id)[:len(urls)] == urls
    assert sum(len(woo.products[i].images) - len(u) for i, u in before.items()) == 2 * len(rows)
