"""Secrets in photo URLs never leave the user's file: a photo URL with a password (user:pass@) or a signed query
(X-Amz-Signature, X-Amz-Credential) that fails is shown without them everywhere csvjobs writes about it: the
row's error and photo problem in the database, its log lines, `logs --json`, every export format's generated
columns, the review page, and the spans sent to a loopback OTLP collector. (The file's own columns are exported
as the file gave them: they are the merchant's data, and a shop's importer needs its own values exactly.)"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from support.helpers import cli
from support.otlp import Collector
from support.pool import finish, start_pool
from support.review import review_server

pytestmark = pytest.mark.slow
SECRETS = ("S3cretPW", "csvuser", "SIGSECRET123", "CREDSECRET456")


def test_a_failing_photo_url_is_shown_without_its_secrets_everywhere(env, photos, conn, tmp_path: Path) -> None:
    port = photos.base.rsplit(":", 1)[1]
    urls = [f"http://csvuser:S3cretPW@127.0.0.1:{port}/missing.png",
            f"http://127.0.0.1:{port}/missing.png?X-Amz-Signature=SIGSECRET123&X-Amz-Credential=CREDSECRET456"]
    source = tmp_path / "p.csv"
    source.write_text("title,description,image_url\n" + "".join(f"Mug {n},a mug,{url}\n" for n, url in
                                                                  enumerate(urls, 1)), encoding="utf-8")
    collector = Collector()
    try:
        traced = dict(env, OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint, OTEL_SERVICE_NAME="csvjobs-test",
                      OTEL_BSP_SCHEDULE_DELAY="100")
        batches = []
        for args in ((), ("--require-photo",)):  # images from text; then the rows fail for want of the photo
            up = cli(traced, "upload", str(source), "--json")
            assert up.returncode == 0, up.stderr
            batches.append(json.loads(up.stdout)["batch_id"])
            code, err = finish(start_pool(traced, "--until-done", "--max-dedicated", "0", "--batch", batches[-1],
                                          *args))
            assert code == 0, err
            assert not any(s in err for s in SECRETS), err
        spans = json.dumps(collector.spans, default=str)
    finally:
        collector.close()

    # What csvjobs wrote itself: errors, photo problems, reference records, log lines.
    written = json.dumps(conn.execute(
        "SELECT j.error_message, j.checkpoint, j.generated_images, j.usage,"
        " (SELECT json_agg(json_build_object('m', l.message, 'd', l.details)) FROM csv_processing_logs l"
        "  WHERE l.batch_id = j.batch_id) AS logs FROM csv_row_jobs j").fetchall(), default=str)
    failed = conn.execute("SELECT error_message FROM csv_row_jobs WHERE batch_id = %s ORDER BY row_number",
                          [batches[1]]).fetchall()
    assert all("the product photo cannot be used" in r["error_message"] for r in failed), failed
    assert "http://127.0.0.1:" in written and "X-Amz-Signature=[redacted]" in written
    outputs = {"database": written, "spans": spans}
    assert "the product photo cannot be used" in spans  # the failed rows' spans say why
    for batch in batches:
        outputs[f"logs --json {batch[:8]}"] = cli(env, "logs", batch, "--json").stdout
        for fmt in ("csv", "jsonl", "html"):
            out = tmp_path / f"{batch}.{fmt}"
            result = cli(env, "export", batch, "--format", fmt, "-o", str(out))
            assert result.returncode == 0, result.stderr
            text = out.read_text(encoding="utf-8")
            # The file's own image_url column, as the file gave it, is the only place the URL is whole.
            for url in urls:
                text = text.replace(url, "").replace(url.replace("&", "&amp;"), "")
            outputs[f"export {fmt} {batch[:8]}"] = text
        with review_server(env, batch) as url:
            shell = urllib.request.urlopen(url, timeout=10).read().decode()
            secret = re.search(r'name="csvjobs-session" content="([^"]+)"', shell)
            assert secret is not None
            page = urllib.request.Request(url.split("?")[0] + "api/page", headers={"X-Review-Token": secret.group(1)})
            outputs[f"review page {batch[:8]}"] = urllib.request.urlopen(page, timeout=10).read().decode()
    for where, text in outputs.items():
        for part in SECRETS:
            assert part not in text, (where, part)
