"""Placeholders named everywhere: a batch made without an OpenAI key (the offline provider's placeholder images)
says so in `work`'s summary, `batches` (and `batches --json`: placeholder_images), `progress` and the review
page's heading, each with the way out; `csvjobs regenerate BATCH --placeholders` with a key then redoes exactly
those images (the real ones, the cut-outs, are kept) and the batch says no more."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from support.helpers import cli
from support.pool import work
from support.review import review_server

pytestmark = pytest.mark.slow


def page_rows(env: dict[str, str], batch: str) -> str:
    with review_server(env, batch) as url:
        shell = urllib.request.urlopen(url, timeout=10).read().decode()
        secret = re.search(r'name="csvjobs-session" content="([^"]+)"', shell)
        assert secret is not None
        request = urllib.request.Request(url.split("?")[0] + "api/page", headers={"X-Review-Token": secret.group(1)})
        return urllib.request.urlopen(request, timeout=10).read().decode()


def test_a_batch_of_placeholders_says_so_until_they_are_redone(env, fake, photos, conn, tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    source.write_text("title,description,image_url\n"
                      f"Mug,glazed mug,{photos.base}/mug.png\nBowl,salad bowl,\nVase,tall vase,\n", encoding="utf-8")
    up = cli(env, "upload", str(source), "--json")
    assert up.returncode == 0, up.stderr
    batch = json.loads(up.stdout)["batch_id"]
    err = work(env)  # no key: the offline provider
    # The mug's white image is cut out of its photo (real); the other five images are placeholders.
    way_out = f"csvjobs regenerate {batch[:8]} --placeholders"
    assert f"batch {batch[:8]}: 5 placeholder image(s), made without an OpenAI key" in err and way_out in err
    listed = cli(env, "batches")
    assert "5 placeholder image(s)" in listed.stdout and way_out in listed.stdout
    as_json = json.loads(cli(env, "batches", "--json").stdout)
    assert [b["placeholder_images"] for b in as_json if b["batch_id"] == batch] == [5]
    progress = cli(env, "progress", batch, "--no-watch")
    assert "5 placeholder image(s)" in progress.stdout and way_out in progress.stdout
    heading = re.search(r'<p id="placeholders"[^>]*>([^<]+)</p>', page_rows(env, batch))
    assert heading is not None and "5 placeholder image(s)" in heading.group(1) and way_out in heading.group(1)

    keyed = dict(env, OPENAI_API_KEY="sk-test-loopback-0123456789", OPENAI_BASE_URL=fake.base_url)
    redo = cli(keyed, "regenerate", batch, "--placeholders")
    assert redo.returncode == 0, redo.stderr
    assert re.search(r"3 row\(s\) of \S+ queued for new images \(about \$[\d.]+ of new images\)", redo.stdout)
    cut_out = conn.execute("SELECT generated_images FROM csv_row_jobs WHERE batch_id = %s AND row_number = 1",
                           [batch]).fetchone()["generated_images"]
    err = work(keyed)
    assert "5 image call(s) paid for" in err and "placeholder" not in err
    images = conn.execute("SELECT row_number, generated_images FROM csv_row_jobs WHERE batch_id = %s"
                          " ORDER BY row_number", [batch]).fetchall()
    assert not any(i.get("placeholder") for r in images for i in r["generated_images"])
    white = [i for i in images[0]["generated_images"] if i["style"] == "single_white_background"]
    assert white == [i for i in cut_out if i["style"] == "single_white_background"]  # the cut-out is kept
    assert fake.count("image") + fake.count("edit") == 5
    assert "placeholder" not in cli(env, "batches").stdout
    assert json.loads(cli(env, "batches", "--json").stdout)[0]["placeholder_images"] == 0


def test_regenerate_takes_rows_or_placeholders(env, conn, tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    source.write_text("title,description\nMug,glazed mug\n", encoding="utf-8")
    batch = json.loads(cli(env, "upload", str(source), "--json").stdout)["batch_id"]
    for args in ([], ["--rows", "1", "--placeholders"], ["--placeholders", "--style", "white"]):
        result = cli(env, "regenerate", batch, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (args, result.stderr)
