"""Commands that take a batch out: export (files, galleries, shop imports) and push (into the shop's API)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from csvjobs.cli.common import (
    BatchArgument,
    JsonOption,
    UserOption,
    _batch_id,
    _print_json,
    _settings,
    app,
    err,
    out,
    push_app,
)
from csvjobs.errors import InputError


@app.command()
def export(
    ctx: typer.Context,
    batch: Annotated[str, typer.Argument(help="Batch id.")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")] = None,
    fmt: Annotated[
        str,
        typer.Option("--format", help="csv, jsonl, html (a self-contained gallery), or shopify / woocommerce (a "
                     "file the shop's product importer takes, adding the images to your products)."),
    ] = "csv",
    base_url: Annotated[
        str | None,
        typer.Option("--base-url", help="Shop formats: the public URL your storage is served under (default: "
                     "CSVJOBS_PUBLIC_BASE_URL, else presigned S3 URLs)."),
    ] = None,
    handle_column: Annotated[
        str | None,
        typer.Option("--handle-column", help="Shopify: the source column holding each product's handle (default: "
                     "Handle in a Shopify export, else a handle derived from the title)."),
    ] = None,
    all_images: Annotated[
        bool, typer.Option("--all", help="Shop formats: every current image, even after a review (default: once "
                           "any image is reviewed, approved images only).")
    ] = False,
    replace_images: Annotated[
        bool, typer.Option("--replace-images", help="Shop formats: write the file even though the source did not "
                           "list the shop's current images, accepting that the import replaces them.")
    ] = False,
    include_placeholders: Annotated[
        bool, typer.Option("--include-placeholders", help="Shop formats: let the offline provider's placeholder "
                           "images into the file (refused by default).")
    ] = False,
    variant_images: Annotated[
        bool, typer.Option("--variant-images/--no-variant-images", help="Shop formats: set each variant's image "
                           "to its new white image (lists every variant as the source export lists them). "
                           "Default: off, so no variant is touched.")
    ] = False,
    require_photo: Annotated[
        bool, typer.Option("--require-photo", help="Shop formats: leave out rows whose images were made without "
                           "the product's photo.")
    ] = False,
    user: UserOption = None,
) -> None:
    """Export a batch: every row with its prompts, images, tags, status and error, or a shop import file.

    Example: csvjobs export 3f0c... --format shopify -o images.csv   (or --format html -o gallery.html)
    """
    from csvjobs.operate.export import SHOP_FORMATS, export_batch
    from csvjobs.shops.export import ShopExportOptions, export_shop_file

    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    shop = ShopExportOptions(handle_column=handle_column, replace_images=replace_images,
                             include_placeholders=include_placeholders, variant_images=variant_images,
                             require_photo=require_photo)
    if fmt in SHOP_FORMATS:
        report = export_shop_file(_settings(ctx, user), batch_id, fmt, output, sys.stdout, base_url=base_url,
                                  options=shop, all_images=all_images)
    else:
        if shop != ShopExportOptions():
            raise InputError("--handle-column, --replace-images, --include-placeholders, --variant-images and "
                             "--require-photo are for --format shopify and woocommerce")
        report = export_batch(_settings(ctx, user), batch_id, fmt, output, sys.stdout)
    if output is not None:
        err.print(f"wrote {report.count} {report.what} to {output}")
    for note in report.notes:
        err.print(note)


StoreOption = Annotated[str, typer.Option("--store", help="The shop's address: NAME.myshopify.com (Shopify) or "
                                           "the site's URL (WooCommerce).")]
CredentialsOption = Annotated[Path | None, typer.Option(
    "--credentials-file", help="A file of KEY=VALUE lines holding the credentials (default: the environment).")]
PushAllOption = Annotated[bool, typer.Option(
    "--all", help="Every current image, even after a review (default: once any image is reviewed, approved only).")]
DryRunOption = Annotated[bool, typer.Option(
    "--dry-run", help="List per product what would be added; asks no shop and changes nothing.")]
ReplaceOption = Annotated[bool, typer.Option(
    "--replace-pushed", help="Push an image regenerated since it was pushed, taking off the earlier version "
    "csvjobs added (and nothing else).")]
RequirePhotoOption = Annotated[bool, typer.Option(
    "--require-photo", help="Leave out rows whose images were made without the product's photo.")]


@push_app.command("shopify")
def push_shopify(
    ctx: typer.Context,
    batch: BatchArgument,
    store: StoreOption,
    credentials_file: CredentialsOption = None,
    all_images: PushAllOption = False,
    dry_run: DryRunOption = False,
    replace_pushed: ReplaceOption = False,
    require_photo: RequirePhotoOption = False,
    handle_column: Annotated[str | None, typer.Option(
        "--handle-column", help="The source column holding each product's handle (default: the Shopify export's "
        "handle, else one derived from the title).")] = None,
    as_json: JsonOption = False,
    user: UserOption = None,
) -> None:
    """Add a batch's images to the Shopify store's products (matched by handle), each once, with alt text.

    Credentials: SHOPIFY_ACCESS_TOKEN (an Admin API token with write_products and write_files).
    Example: csvjobs push shopify 3f0c... --store my-shop.myshopify.com
    """
    from csvjobs.shops.push import PushOptions

    _push(ctx, batch, user, as_json, PushOptions(
        shop="shopify", store=store, credentials_file=credentials_file, all_images=all_images, dry_run=dry_run,
        replace_pushed=replace_pushed, require_photo=require_photo, handle_column=handle_column))


@push_app.command("woocommerce")
def push_woocommerce(
    ctx: typer.Context,
    batch: BatchArgument,
    store: StoreOption,
    credentials_file: CredentialsOption = None,
    all_images: PushAllOption = False,
    dry_run: DryRunOption = False,
    replace_pushed: ReplaceOption = False,
    require_photo: RequirePhotoOption = False,
    variant_images: Annotated[bool, typer.Option(
        "--variant-images/--no-variant-images", help="Set each variation's own image to its new white image "
        "(default: off; a variation's images go to its parent's gallery).")] = False,
    as_json: JsonOption = False,
    user: UserOption = None,
) -> None:
    """Add a batch's images to the WooCommerce shop's products (matched by ID, else SKU), each once, with alt text.

    Credentials: WOOCOMMERCE_USER and WOOCOMMERCE_APP_PASSWORD (a WordPress application password).
    Example: csvjobs push woocommerce 3f0c... --store https://shop.example.com
    """
    from csvjobs.shops.push import PushOptions

    _push(ctx, batch, user, as_json, PushOptions(
        shop="woocommerce", store=store, credentials_file=credentials_file, all_images=all_images, dry_run=dry_run,
        replace_pushed=replace_pushed, require_photo=require_photo, variant_images=variant_images))


def _push(ctx: typer.Context, batch: str, user: str | None, as_json: bool, options: Any) -> None:
    """Run a push with a progress bar, then print its summary (or JSON); exit 1 when anything failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from csvjobs.shops.push import push_batch

    batch_id = _batch_id(ctx, batch, user)
    assert batch_id is not None
    progress = Progress(TextColumn("pushing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err, transient=True, disable=as_json or not err.is_terminal)
    task = progress.add_task("push", total=None)

    def advance(_outcome: Any, total: int) -> None:
        progress.update(task, total=total, advance=1)

    with progress:
        report = push_batch(_settings(ctx, user), batch_id, options, on_product=advance)
    if as_json:
        _print_json(report.model_dump(mode="json"))
    else:
        for outcome in report.outcomes:
            if report.dry_run and outcome.would_add:
                out.print(f"{outcome.product}: would add {len(outcome.would_add)} image(s): "
                          f"{', '.join(outcome.would_add)}")
            for problem in outcome.errors:
                err.print(Text(f"{outcome.product}: {problem}", style="red"))
        for note in report.notes:
            err.print(note)
        if report.dry_run:
            would = sum(len(o.would_add) for o in report.outcomes)
            out.print(f"dry run: {would} image(s) would be added to {report.products} product(s) at {report.store}; "
                      f"{report.already_pushed} already pushed; nothing was sent")
        else:
            out.print(f"pushed to {report.store}: {report.products} product(s), {report.images_added} image(s) "
                      f"added, {report.already_pushed} already there, {report.replaced} replaced, "
                      f"{report.held_back} changed since pushed (--replace-pushed sends them), {report.failed} "
                      f"failed; {report.method}; {report.requests} request(s), {report.throttled} throttled, "
                      f"{report.seconds:.1f}s")
    if not report.ok:
        raise typer.Exit(1)
