"""What the review page shows, as data: rows as the merchant decides on them (look-alike variants that share images
grouped under the row whose images they are), the filters, the heading's counts and spend, and one page of
products. No HTTP here (review_app.py serves it) and no HTML (templates/ render it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from csvjobs.images.channels import describe_checks
from csvjobs.models import BatchProgress, ImageStyle
from csvjobs.models import Route as ImageRoute
from csvjobs.operate.progress import placeholder_note
from csvjobs.operate.result_shapes import alt_text_for, image_for, image_location, prompt_for, review_state, tags_of

FILTERS = ("all", "to_review", "needs_eyes", "approved", "rejected", "failed", "regenerating")

ROUTE_LABEL = {ImageRoute.CUTOUT.value: "cut out of the product's photo",
               ImageRoute.GENERATED_FROM_PHOTO.value: "generated from the product's photo",
               ImageRoute.GENERATED_FROM_TEXT.value: "generated from text (no photo)"}


def row_view(row: dict[str, Any]) -> dict[str, Any]:
    """One row of review_rows() as the page shows it."""
    images = []
    for style in ImageStyle:
        image = image_for(row["generated_images"], style)
        path = image_location(image)
        fidelity = image.get("fidelity") if isinstance(image.get("fidelity"), dict) else None
        images.append({"style": style.value, "label": style.word, "path": path,
                       "prompt": prompt_for(row["generated_prompts"], style),
                       "review": review_state(row["review"], style),
                       "route": ROUTE_LABEL.get(str(image.get("route") or ""), ""),
                       "made": {k: image[k] for k in ("route", "edited", "reuses_row") if k in image},
                       "checks": describe_checks(image.get("checks") or {}),
                       # made for the batch's channels and failing one of their rules
                       "not_ready": any(not (verdict or {}).get("passed", True)
                                        for verdict in (image.get("checks") or {}).values()),
                       "flagged": bool(image.get("flagged")),
                       "placeholder": bool(image.get("placeholder")),
                       "fidelity": f"{float(fidelity.get('score', 0)):.2f}" if fidelity else "",
                       "alt": alt_text_for(row["generated_prompts"], style, row["review"])})
    return {"row": row["row_number"], "title": row["title"] or f"row {row['row_number']}", "status": row["status"],
            "error": row["error_message"] or "", "cost": float(row["cost_usd"] or 0), "images": images,
            "tags": tags_of(row["generated_tags"]), "reference": row["reference_photo"] or "",
            "regenerating": bool(row["regenerating"]), "versions": int(row["versions"] or 0),
            "without_photo": bool(row["without_photo"]) and row["status"] == "completed",
            "photo_problem": row["photo_problem"] or "", "reuses_row": row["reuses_row"],
            # what review by exception shows first: flagged, not channel-ready, photo unusable, or redone
            "needs_eyes": any(i["flagged"] or i["not_ready"] or i["placeholder"] for i in images if i["path"])
            or bool(row["photo_problem"]) or int(row["versions"] or 0) > 0}


def matches(view: dict[str, Any], which: str) -> bool:
    """Whether a row (or a product's group of rows) belongs under a filter."""
    states = {image["review"] for image in view["images"] if image["path"]}
    if which == "to_review":
        return view["status"] == "completed" and "unreviewed" in states
    if which in ("approved", "rejected"):
        return which in states
    if which == "failed":
        return view["status"] == "failed"
    if which == "regenerating":
        return view["regenerating"]
    if which == "needs_eyes":
        return view["status"] == "completed" and view["needs_eyes"]
    return True


# Products a page shows: its images are all a browser fetches at once, whatever the batch's size.
PAGE_SIZE = 48
# The heading's counts (over the whole batch, a shared image once), as queries.review_page gives them.
COUNTS = ("products", "images", "to_review", "approved", "rejected", "redoing", "failed", "without_photo",
          "not_ready", "needs_eyes")


def product_groups(found: dict[str, Any]) -> list[dict[str, Any]]:
    """One page's rows as the merchant decides on them: each product's own row, with the look-alike variants that
    reuse its images ("with rows 3, 4"), since a decision on a shared image is a decision on every row showing
    it."""
    variants: dict[int, list[int]] = {}
    for variant in found["variants"]:
        variants.setdefault(variant["owner"], []).append(variant["row_number"])
    groups = []
    for row in found["rows"]:
        view = row_view(row)
        shared = variants.get(view["row"], [])
        groups.append({**view, "variants": shared, "rows": [view["row"], *shared]})
    return groups


def spend_line(progress: BatchProgress) -> str:
    """Spend against the estimate and the budget."""
    spend = f"spent ${float(progress.cost_usd):.4f}"
    if progress.estimated_cost_usd is not None:
        spend += f" of an estimated ${float(progress.estimated_cost_usd):.2f}"
    if progress.max_cost_usd is not None:
        spend += f"; budget ${float(progress.max_cost_usd):.2f}"
    if progress.pause_reason and progress.status.value == "paused":
        spend += f"; paused: {progress.pause_reason}"
    return spend


def page_context(src: Callable[[str], str], groups: list[dict[str, Any]], which: str, page: int,
                 found: dict[str, Any], progress: BatchProgress, redo_cost: Callable[[dict[str, Any]], float],
                 versions: list[dict[str, Any]] | None = None, sample_size: int = 0) -> dict[str, Any]:
    """What review_rows.html shows for one page of one filter (queries.review_page's), with the earlier versions
    of the page's images; src turns a storage path into the image's URL (with its read grant), redo_cost an image
    into what redoing it costs."""
    total = found["counts"].get(f"products_{which}", sample_size)
    pages = max(1, -(-total // PAGE_SIZE))
    page = 1 if not found["earlier"] else pages if not found["later"] else min(max(2, page), pages - 1)
    earlier: dict[int, list[dict[str, Any]]] = {}
    for version in versions or []:
        if version["path"]:
            earlier.setdefault(version["row_number"], []).append(
                {**version, "label": ImageStyle(version["style"]).word,
                 "src": src(version["path"])})
    current = []
    for group in groups:
        images = [{**image, "src": src(image["path"]) if image["path"] else "",
                   "redo_cost": redo_cost(image["made"])} for image in group["images"]]
        current.append({**group, "images": images, "earlier": earlier.get(group["row"], []),
                        "reference_src": src(group["reference"]) if group["reference"] else ""})
    return {"which": which, "page": page, "pages": pages, "groups": current, "sample_size": sample_size,
            "counts": {name: found["counts"][name] for name in COUNTS},
            "first_row": groups[0]["row"] if groups else 0, "last_row": groups[-1]["row"] if groups else 0,
            "has_earlier": found["earlier"], "has_later": found["later"],
            "spend": spend_line(progress), "without": sum(1 for g in current if g["without_photo"]),
            "placeholders": placeholder_note(str(progress.batch_id), progress.placeholder_images)
            if progress.placeholder_images else ""}
