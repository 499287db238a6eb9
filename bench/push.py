"""Pushing a batch into a shop: requests per product and seconds per 100 products, against the loopback Shopify
and WooCommerce servers of the tests (tests/support/shop_apis.py), each product with 2 new images and media that
take 0.2 s to process. The baseline is the same push to a Shopify whose cost bucket never runs dry, measured in the
same run; the throttled runs use Shopify's Standard plan bucket (2,000 points, 100 a second restored) and a tight
one (200 points, 50 a second), so the ratio shows what the rate limit costs.

    python bench/push.py [--products 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from harness import fresh_database, server
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.shop_apis import FakeShopify, FakeWooCommerce, pushable_batch

from csvjobs.config import Settings
from csvjobs.shops.push import PushOptions, push_batch

TOKEN = "shpat_bench_0123456789"
PASSWORD = "bench pass word 1234"


def one_push(url: str, shop: str, products: int, bucket: float, restore: float) -> tuple[float, float, int]:
    """(seconds, requests per product, throttled answers) of one push of a fresh batch to a fresh store."""
    user = uuid.uuid4()
    with tempfile.TemporaryDirectory(prefix="csvjobs-bench-push-") as tmp:
        home = Path(tmp)
        os.environ.update(SHOPIFY_ACCESS_TOKEN=TOKEN, WOOCOMMERCE_USER="bench", WOOCOMMERCE_APP_PASSWORD=PASSWORD)
        if shop == "shopify":
            fake: FakeShopify | FakeWooCommerce = FakeShopify(token=TOKEN, bucket=bucket, restore=restore,
                                                              ready_after=0.2)
            headers = ["Handle", "Title"]
            rows = [{"Handle": f"mug-{n}", "Title": f"Mug {n}"} for n in range(products)]
            for n in range(products):
                fake.add_product(f"mug-{n}", f"Mug {n}", [(f"https://cdn.test/mug-{n}.jpg", "")])
            title = "Title"
        else:
            fake = FakeWooCommerce(user="bench", password=PASSWORD)
            headers = ["ID", "SKU", "Name", "Images"]
            rows = [{"ID": str(100 + n), "SKU": f"MUG-{n}", "Name": f"Mug {n}", "Images": ""} for n in range(products)]
            for n in range(products):
                fake.add_product(100 + n, f"Mug {n}", f"MUG-{n}", [f"https://shop.test/mug-{n}.jpg"])
            title = "Name"
        fake.start()
        try:
            with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
                batch = pushable_batch(conn, home, user, headers, rows, preset=shop, title=title)
            settings = Settings(database_url=url, home=home, user_id=user)  # type: ignore[call-arg]
            report = push_batch(settings, batch, PushOptions(shop=shop, store=fake.base))  # type: ignore[arg-type]
            assert report.ok and report.images_added == 2 * products, report
            return report.seconds, report.requests / products, report.throttled
        finally:
            fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs = {"shopify, unthrottled (baseline)": ("shopify", 1e12, 1e12),
            "shopify, Standard bucket 2000 @ 100/s": ("shopify", 2000, 100),
            "shopify, tight bucket 200 @ 50/s": ("shopify", 200, 50),
            "woocommerce": ("woocommerce", 0, 0)}
    with server() as admin, fresh_database(admin) as url:
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
        for _round in range(args.rounds):
            for name, (shop, bucket, restore) in runs.items():
                results[name].append(one_push(url, shop, args.products, bucket, restore))
    baseline = statistics.median(r[0] for r in results["shopify, unthrottled (baseline)"])
    print(f"{args.products} products, 2 new images each, median of {args.rounds} round(s)")
    for name, values in results.items():
        seconds = statistics.median(v[0] for v in values)
        per_100 = seconds * 100 / args.products
        print(f"{name:40s} {per_100:7.2f} s per 100 products  {values[0][1]:5.2f} requests/product  "
              f"{values[0][2]:4d} throttled  x{seconds / baseline:5.2f} of baseline")


if __name__ == "__main__":
    main()
