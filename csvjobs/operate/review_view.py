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

FILTERS = ("all", "to_review", "approved", "rejected", "failed", "regenerating")
STYLE_LABEL = {ImageStyle.LIFESTYLE_EMOTIONAL: "lifestyle", ImageStyle.SINGLE_WHITE_BACKGROUND: "white"}

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
        images.append({"style": style.value, "label": STYLE_LABEL[style], "path": path,
                       "prompt": prompt_for(row["generated_prompts"], style),
                       "review": review_state(row["review"], style),
                       "route": ROUTE_LABEL.get(str(image.get("route") or ""), ""),
                       "made": {k: image[k] for k in ("route", "edited", "reuses_row") if k in image},
                       "checks": describe_checks(image.get("checks") or {}),
                       # made for the batch's channels and failing one of their rules
                       "not_ready": any(not (verdict or {}).get("passed", True)
                                        for verdict in (image.get("checks") or {}).values()),
                       "flagged": bool(image.get("flagged")),
                       "fidelity": f"{float(fidelity.get('score', 0)):.2f}" if fidelity else "",
                       "alt": alt_text_for(row["generated_prompts"], style, row["review"])})
    return {"row": row["row_number"], "title": row["title"] or f"row {row['row_number']}", "status": row["status"],
            "error": row["error_message"] or "", "cost": float(row["cost_usd"] or 0), "images": images,
            "tags": tags_of(row["generated_tags"]), "reference": row["reference_photo"] or "",
            "regenerating": bool(row["regenerating"]), "versions": int(row["versions"] or 0),
            "without_photo": bool(row["without_photo"]) and row["status"] == "completed",
            "photo_problem": row["photo_problem"] or "", "reuses_row": row["reuses_row"]}


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
    return True


# Products a page shows: its images are all a browser fetches at once, whatever the batch's size.
PAGE_SIZE = 48


def group_views(views: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as the merchant decides on them: a look-alike variant that reuses another row's images is shown once,
    with that row ("with rows 3, 4"), since a decision on a shared image is a decision on every row showing it."""
    by_row = {view["row"]: view for view in views}
    groups: dict[int, dict[str, Any]] = {}
    for view in views:
        owner = view["reuses_row"] if view["reuses_row"] in by_row else view["row"]
        group = groups.setdefault(owner, {**by_row[owner], "variants": [], "rows": [owner]})
        if view["row"] != owner:
            group["variants"].append(view["row"])
            group["rows"].append(view["row"])
    return [groups[row] for row in sorted(groups)]


def counts_of(groups: list[dict[str, Any]]) -> dict[str, int]:
    """The heading's counts, over the whole batch (a shared image counts once)."""
    images = [image for g in groups for image in g["images"] if image["path"]]
    return {"products": len(groups), "images": len(images),
            "to_review": sum(1 for g in groups for i in g["images"]
                             if i["path"] and g["status"] == "completed" and i["review"] == "unreviewed"),
            "approved": sum(1 for i in images if i["review"] == "approved"),
            "rejected": sum(1 for i in images if i["review"] == "rejected"),
            "redoing": sum(1 for g in groups if g["regenerating"]),
            "failed": sum(1 for g in groups if g["status"] == "failed"),
            "without_photo": sum(1 for g in groups if g["without_photo"]),
            "not_ready": sum(1 for i in images if i["not_ready"])}


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


def page_groups(groups: list[dict[str, Any]], which: str, page: int) -> tuple[list[dict[str, Any]], int, int]:
    """The products of one page of one filter, the page's number (within range) and the number of pages."""
    shown = [g for g in groups if matches(g, which)]
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page = min(max(1, page), pages)
    return shown[(page - 1) * PAGE_SIZE: page * PAGE_SIZE], page, pages


def page_context(src: Callable[[str], str], groups: list[dict[str, Any]], which: str, page: int,
                 progress: BatchProgress, redo_cost: Callable[[dict[str, Any]], float],
                 versions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What review_rows.html shows for one page of one filter, with the earlier versions of the page's images;
    src turns a storage path into the image's URL (with its read grant), redo_cost an image into what redoing it
    costs."""
    shown, page, pages = page_groups(groups, which, page)
    earlier: dict[int, list[dict[str, Any]]] = {}
    for version in versions or []:
        if version["path"]:
            earlier.setdefault(version["row_number"], []).append(
                {**version, "label": STYLE_LABEL[ImageStyle(version["style"])],
                 "src": src(version["path"])})
    current = []
    for group in shown:
        images = [{**image, "src": src(image["path"]) if image["path"] else "",
                   "redo_cost": redo_cost(image["made"])} for image in group["images"]]
        current.append({**group, "images": images, "earlier": earlier.get(group["row"], []),
                        "reference_src": src(group["reference"]) if group["reference"] else ""})
    return {"which": which, "page": page, "pages": pages, "groups": current, "counts": counts_of(groups),
            "spend": spend_line(progress), "without": sum(1 for g in current if g["without_photo"]),
            "placeholders": placeholder_note(str(progress.batch_id), progress.placeholder_images)
            if progress.placeholder_images else ""}
