"""Product photos end to end: upload a catalogue whose rows name photos (URLs on a loopback photo server, a file
beside the CSV, broken ones), run the real worker pool against the loopback OpenAI-compatible server, and check
that the photos became the references of both images, that broken ones fell back with their reason, that every
white image is pure white to its edges, and that nothing is fetched or paid twice."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import uuid
from pathlib import Path

import pytest
from PIL import Image
from support.helpers import REAL_DATA, USER_A, cli, job_counts
from support.photo_server import photo_bytes
from support.pool import work as pool_work

from csvjobs.images.white_background import is_pure_white_border

pytestmark = pytest.mark.slow


@pytest.fixture
def env(openai_env: dict[str, str]) -> dict[str, str]:
    return dict(openai_env,
                # The generative route for both images, which these tests are about (test_packshot_pipeline.py
                # has the cut-out).
                CSVJOBS_PACKSHOT="generate")


def write_catalogue(folder: Path, rows: list[tuple[str, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "products.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["title", "description", "product_type", "image_url"])
        writer.writerows([(title, description, "Kitchen", photo) for title, description, photo in rows])
    return path


def upload(env: dict[str, str], path: Path, *args: str) -> uuid.UUID:
    result = cli(env, "upload", str(path), "--json", *args)
    assert result.returncode == 0, result.stderr
    return uuid.UUID(json.loads(result.stdout)["batch_id"])


def work(env: dict[str, str], *args: str) -> str:
    return pool_work(env, "--concurrency", "3", *args)


def rows_of(conn, batch: uuid.UUID) -> dict[int, dict]:
    return {r["row_number"]: r for r in conn.execute(
        "SELECT row_number, status, error_message, checkpoint, generated_images, cost_usd FROM csv_row_jobs"
        " WHERE batch_id = %s", [batch])}


def test_photos_become_the_reference_of_both_images(env, fake, photos, conn, home: Path, tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    (shop / "images").mkdir(parents=True)
    (shop / "images" / "bowl.webp").write_bytes(photo_bytes("WEBP", (200, 160, 30)))
    path = write_catalogue(shop, [
        ("Mug", "glazed mug", photos.base + "/mug.png"),
        ("Cup", "tea cup", photos.base + "/mug.jpg"),
        ("Bowl", "salad bowl", "images/bowl.webp"),
        ("Plate", "dinner plate", photos.base + "/missing.png"),
        ("Vase", "tall vase", photos.base + "/page.png"),
        ("Lamp", "desk lamp", ""),
    ])
    shown = cli(env, "upload", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "photos: 5 of 6 row(s) have one, from image_url, 1 file(s) beside the CSV stored with the batch" in \
        shown.stdout
    batch = uuid.UUID(shown.stdout.split()[1].rstrip(":"))
    stored_photo = list((home / "storage" / "csv-uploads" / str(USER_A) / str(batch) / "photos").iterdir())
    assert len(stored_photo) == 1 and stored_photo[0].read_bytes() == (shop / "images" / "bowl.webp").read_bytes()

    # Row 1's images are refused once: it fails after its photo and prompts are saved, to be retried below.
    fake.policy_when = "glazed mug"
    work(env)
    rows = rows_of(conn, batch)
    assert rows[1]["status"] == "failed" and [rows[n]["status"] for n in range(2, 7)] == ["completed"] * 5
    fake.policy_when = None
    assert cli(env, "retry", str(batch)).returncode == 0
    work(env)
    rows = rows_of(conn, batch)
    assert job_counts(conn, batch) == {"completed": 6}

    # Fetched once, prompted once, however often the row ran.
    assert photos.count("/mug.png") == 1 and photos.count("/mug.jpg") == 1
    glazed = [c for c in fake.calls if c.endpoint == "chat" and "glazed mug" in json.dumps(c.body)]
    assert len(glazed) == 1
    reused = conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE operation = 'photo_reused'"
                          " AND row_number = 1 AND batch_id = %s", [batch]).fetchone()
    assert reused == {"n": 1}

    # Rows with a usable photo: the prompt model saw it, and both images are edits carrying its exact bytes.
    for number, description in ((1, "glazed mug"), (2, "tea cup"), (3, "salad bowl")):
        reference = rows[number]["checkpoint"]["reference"]
        assert reference["storage_path"].endswith(f"/{number}-reference.png")
        reference_bytes = (home / "storage" / reference["storage_path"]).read_bytes()
        assert Image.open(io.BytesIO(reference_bytes)).format == "PNG"
        chats = [c for c in fake.calls if c.endpoint == "chat" and description in json.dumps(c.body)]
        content = chats[-1].body["messages"][-1]["content"]
        assert isinstance(content, list) and content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        edits = [c for c in fake.calls if c.endpoint == "edit" and description in c.body["prompt"]
                 and c.status == 200]
        assert len(edits) == 2
        assert all(c.body["_files"]["image"] == reference_bytes for c in edits)
        assert all(c.body["model"] == "gpt-image-2.6-flare" for c in edits)
        assert all(image["edited"] for image in rows[number]["generated_images"])
    # Rows without one: made from text, with the reason logged.
    for number, reason in ((4, "HTTP 404"), (5, "not an image")):
        assert "reference" not in rows[number]["checkpoint"]
        assert reason in rows[number]["checkpoint"]["reference_error"]
        logged = conn.execute("SELECT message FROM csv_processing_logs WHERE operation = 'photo_unusable'"
                              " AND row_number = %s AND batch_id = %s", [number, batch]).fetchone()
        assert logged is not None and reason in logged["message"]
    assert not any(c.endpoint == "edit" and any(d in c.body["prompt"] for d in ("plate", "vase", "lamp"))
                   for c in fake.calls)
    assert fake.count("image", lambda c: c.status == 200) == 6  # rows 4-6, two generations each

    # Every white image is pure white to its edges; an edit's reference input is paid for.
    for row in rows.values():
        white = next(i for i in row["generated_images"] if i["style"] == "single_white_background")
        assert white["pure_white"] is True
        assert is_pure_white_border((home / "storage" / white["storage_path"]).read_bytes())
    assert float(rows[2]["cost_usd"]) > float(rows[6]["cost_usd"])

    # The export carries the photo, its reference and, where it failed, why.
    out = tmp_path / "out.csv"
    assert cli(env, "export", str(batch), "-o", str(out)).returncode == 0
    exported = {int(r["row_number"]): r for r in csv.DictReader(out.open())}
    assert exported[3]["photo_source"] == "images/bowl.webp"
    assert exported[3]["reference_photo"].endswith("/3-reference.png")
    assert "HTTP 404" in exported[4]["photo_note"] and exported[6]["photo_note"] == ""
    page = tmp_path / "gallery.html"
    assert cli(env, "export", str(batch), "--format", "html", "-o", str(page)).returncode == 0
    html = page.read_text()
    assert html.count('alt="reference photo"') == 3 and "photo not used: the photo URL answered HTTP 404" in html


def test_require_photo_fails_rows_whose_photo_cannot_be_used(env, photos, conn, tmp_path: Path) -> None:
    batch = upload(env, write_catalogue(tmp_path / "shop", [
        ("Mug", "glazed mug", photos.base + "/mug.png"),
        ("Plate", "dinner plate", photos.base + "/missing.png"),
        ("Slow", "slow photo", photos.base + "/slow.png"),
    ]))
    work(env, "--require-photo")
    rows = rows_of(conn, batch)
    assert rows[1]["status"] == "completed"
    assert rows[2]["status"] == "failed" and "photo cannot be used: the photo URL answered HTTP 404" in \
        rows[2]["error_message"]
    assert rows[3]["status"] == "failed" and "in time" in rows[3]["error_message"]


def test_a_missing_local_photo_is_an_upload_error_naming_row_and_path(env, conn, tmp_path: Path) -> None:
    path = write_catalogue(tmp_path / "shop", [("Mug", "glazed mug", "images/mug.jpg"),
                                               ("Cup", "tea cup", "../outside.jpg"),
                                               ("Bowl", "salad bowl", "")])
    result = cli(env, "upload", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "line 2, column 'image_url'" in result.stderr and "images/mug.jpg" in result.stderr
    assert "line 3" in result.stderr and "outside the CSV file's folder" in result.stderr
    assert conn.execute("SELECT count(*) AS n FROM csv_batches").fetchone() == {"n": 0}
    skipped = cli(env, "upload", str(path), "--skip-invalid", "--json")
    assert skipped.returncode == 0, skipped.stderr
    assert json.loads(skipped.stdout)["total_rows"] == 1 and json.loads(skipped.stdout)["skipped_rows"] == 2


def test_the_offline_provider_shows_the_photo_in_its_placeholders(pool_env, conn, home: Path, tmp_path) -> None:
    env = dict(pool_env, CSVJOBS_USER_ID=str(USER_A))
    shop = tmp_path / "shop"
    (shop / "img").mkdir(parents=True)
    (shop / "img" / "red.png").write_bytes(photo_bytes("PNG", (220, 20, 20), size=(120, 90)))
    batch = upload(env, write_catalogue(shop, [("Mug", "glazed mug", "img/red.png"), ("Cup", "tea cup", "")]))
    work(env)
    rows = rows_of(conn, batch)
    for number, shows_photo in ((1, True), (2, False)):
        lifestyle = next(i for i in rows[number]["generated_images"] if i["style"] == "lifestyle_emotional")
        image = Image.open(home / "storage" / lifestyle["storage_path"]).convert("RGB")
        colours = {colour for _count, colour in image.getcolors(maxcolors=1_000_000) or []}
        assert ((220, 20, 20) in colours) is shows_photo
        assert lifestyle["edited"] is shows_photo


@pytest.mark.skipif(not REAL_DATA.exists(), reason="shared/data/real is not present")
def test_the_real_shopify_export_completes_every_row_by_fallback(env, photos, conn, tmp_path: Path) -> None:
    """Its photo URLs are on the internet, which tests never reach: they are pointed at the loopback photo
    server, which knows none of them, so every row must fall back to text and say why."""
    text = (REAL_DATA / "shopify_product_template.csv").read_text(encoding="utf-8")
    local = tmp_path / "shopify.csv"
    local.write_text(text.replace("https://burst.shopifycdn.com", photos.base), encoding="utf-8")
    shown = cli(env, "upload", str(local))
    assert shown.returncode == 0, shown.stderr
    assert "from Variant Image | Image Src" in shown.stdout
    batch = uuid.UUID(shown.stdout.split()[1].rstrip(":"))
    work(env)
    rows = rows_of(conn, batch)
    assert rows and {r["status"] for r in rows.values()} == {"completed"}
    # Sizes of one colour share that colour's images (see the shop export tests); every row that made its own
    # images fell back, saying why.
    made = [r for r in rows.values() if not r["generated_images"][0].get("reuses_row")]
    assert len(made) < len(rows)
    assert all("HTTP 404" in r["checkpoint"]["reference_error"] for r in made)
    unusable = conn.execute("SELECT count(*) AS n FROM csv_processing_logs WHERE operation = 'photo_unusable'"
                            " AND batch_id = %s", [batch]).fetchone()
    assert unusable == {"n": len(made)}
    # A variant row asks for its own image (Variant Image), not the product's (Image Src).
    first = conn.execute("SELECT details ->> 'source' AS source FROM csv_processing_logs"
                         " WHERE operation = 'photo_unusable' AND row_number = 1 AND batch_id = %s", [batch]).fetchone()
    expected = next(csv.DictReader(io.StringIO(text)))["Variant Image"].replace("https://burst.shopifycdn.com", "")
    # (shown as every photo URL is shown: its query values replaced)
    shown = expected.split("?")[0] + "?width=[redacted]"
    assert first is not None and first["source"].endswith(shown) and "tshirts.jpg" not in first["source"]


def test_openai_batch_upload_sends_the_photo_with_both_steps(env, fake, photos, conn, home: Path,
                                                               tmp_path: Path) -> None:
    """upload --openai-batch: the dry run shows both prices, the batch lists as an OpenAI batch, the prompt
    lines carry the photo, and rows with a photo become edit requests in their own OpenAI batch."""
    path = write_catalogue(tmp_path / "shop", [
        ("Mug", "glazed mug", photos.base + "/mug.png"),
        ("Lamp", "desk lamp", ""),
        ("Cup", "tea cup", photos.base + "/mug.jpg"),
    ])
    dry = cli(env, "upload", str(path), "--dry-run", "--openai-batch")
    assert dry.returncode == 0, dry.stderr
    prices = re.search(r"estimated OpenAI cost: \$(\d+\.\d+) row by row, \$(\d+\.\d+) through OpenAI's Batch API",
                       dry.stdout)
    assert prices is not None and float(prices.group(2)) == pytest.approx(float(prices.group(1)) / 2, abs=0.006)
    env = dict(env, CSVJOBS_OPENAI_BATCH_POLL_SECONDS="0.3", CSVJOBS_POLL_SECONDS="0.3")
    shown = cli(env, "upload", str(path), "--openai-batch")
    assert shown.returncode == 0 and "through OpenAI's Batch API" in shown.stdout, shown.stderr
    batch = uuid.UUID(shown.stdout.split()[1].rstrip(":"))
    listed = json.loads(cli(env, "batches", "--json").stdout)
    assert [b["processing_mode"] for b in listed if b["batch_id"] == str(batch)] == ["openai_batch"]
    work(env)
    assert job_counts(conn, batch) == {"completed": 3}
    assert sum(fake.count(e) for e in ("chat", "image", "edit")) == 0
    chats = [c for c in fake.calls if c.endpoint == "batch_chat" and "glazed mug" in json.dumps(c.body)]
    assert chats[0].body["messages"][-1]["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    edits = [c for c in fake.calls if c.endpoint == "batch_edit"]
    assert len(edits) == 4 and fake.count("batch_image") == 2
    rows = rows_of(conn, batch)
    for number in (1, 3):
        reference = (home / "storage" / rows[number]["checkpoint"]["reference"]["storage_path"]).read_bytes()
        prompts = rows[number]["checkpoint"]["prompts"]
        texts = {prompts[style]["prompt"] for style in ("lifestyle_emotional", "single_white_background")}
        mine = [c for c in edits if c.body["prompt"] in texts]
        assert len(mine) == 2 and all(c.body["images"][0]["image_url"] == "data:image/png;base64,"
                            + base64.b64encode(reference).decode() for c in mine)
        assert all(image["edited"] for image in rows[number]["generated_images"])
    assert not any(image["edited"] for image in rows[2]["generated_images"])
    endpoints = sorted(c.body["endpoint"] for c in fake.calls if c.endpoint == "batches.create")
    assert endpoints == ["/v1/chat/completions", "/v1/images/edits", "/v1/images/generations"]
    assert photos.count("/mug.png") == 1  # fetched once, for both steps
