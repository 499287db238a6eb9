"""The S3-compatible backend against a real S3 server on loopback (moto's standalone server): two worker pools
with different homes ("machines") write into one bucket set, any machine exports, and a storage outage mid-batch
delays rows but loses none."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from support.helpers import USER_A, batch_row, cli, job_counts, make_batch
from support.pool import finish, start_pool, wait_for
from support.s3 import BUCKETS

# These start worker pools, servers or CLI processes: run by CI, left out by `pytest -m "not slow"`.
pytestmark = pytest.mark.slow

def test_two_machines_share_the_buckets_and_any_machine_exports(s3_env, s3, conn, tmp_path: Path) -> None:
    source = tmp_path / "p.csv"
    source.write_text("title,description\n" + "".join(f"Lamp {i},Warm light {i}\n" for i in range(10)))
    up = cli(s3_env, "upload", str(source), "--json")
    assert up.returncode == 0, up.stderr
    batch = json.loads(up.stdout)["batch_id"]
    assert s3.keys("csv-uploads") == [json.loads(up.stdout)["storage_path"].split("/", 1)[1]]
    env_b = dict(s3_env, CSVJOBS_HOME=str(tmp_path / "machine-b"))
    pools = [start_pool(env, "--until-done", "--concurrency", "2", "--max-dedicated", "0", "--provider", "offline")
             for env in (s3_env, env_b)]
    for proc in pools:
        code, err = finish(proc)
        assert code == 0, err
    images = s3.keys("csv-images")
    assert len(images) == 20 and all(key.startswith(f"{USER_A}/{batch}/") for key in images)
    for home in (Path(s3_env["CSVJOBS_HOME"]), tmp_path / "machine-b"):
        assert not list((home / "storage").rglob("*.png"))  # nothing landed on a machine's disk
    env_c = dict(s3_env, CSVJOBS_HOME=str(tmp_path / "machine-c"))
    page = tmp_path / "gallery.html"
    exported = cli(env_c, "export", batch, "--format", "html", "-o", str(page))
    assert exported.returncode == 0, exported.stderr
    html = page.read_text()
    links = [part.split('"', 1)[0] for part in html.split('src="')[1:]]
    assert len(links) == 20 and all(link.startswith(s3.url) and "Signature" in link for link in links)
    with urllib.request.urlopen(links[0]) as response:
        assert response.read().startswith(b"\x89PNG")


def test_storage_check_and_missing_buckets_fail_early(s3_env, s3, tmp_path: Path) -> None:
    ok = cli(s3_env, "storage", "check", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["buckets"] == dict.fromkeys(BUCKETS, "ok")
    missing = dict(s3_env, CSVJOBS_S3_BUCKET_PREFIX="nope-")
    source = tmp_path / "p.csv"
    source.write_text("title\nLamp\n")
    refused = cli(missing, "upload", str(source))
    assert refused.returncode == 2 and "does not exist" in refused.stderr and "Traceback" not in refused.stderr
    pool = cli(missing, "work", "--until-done")
    assert pool.returncode == 2 and "nope-csv-uploads" in pool.stderr
    status = cli(missing, "db", "status")
    assert status.returncode == 1 and "NOT usable" in status.stdout


def test_a_failed_upload_removes_its_stored_object(s3_env, s3, tmp_path: Path) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("title,description\n,\n")
    result = cli(s3_env, "upload", str(source))
    assert result.returncode == 2
    assert s3.keys("csv-uploads") == []


def test_a_storage_outage_mid_batch_delays_rows_but_loses_none(s3_env, s3, conn) -> None:
    batch = make_batch(conn, 120)
    proc = start_pool(s3_env, "--until-done", "--concurrency", "4", "--max-dedicated", "0", "--provider", "offline")
    wait_for(lambda: batch_row(conn, batch)["processed_rows"] >= 5, what="5 rows")
    s3.restart_after(3.0)
    assert batch_row(conn, batch)["processed_rows"] < 120  # the outage began mid-batch
    code, err = finish(proc, timeout=180)
    assert code == 0, err
    assert job_counts(conn, batch) == {"completed": 120}
    assert len(s3.keys("csv-images")) == 240
    row = batch_row(conn, batch)
    assert (row["completed_at"] - row["started_at"]).total_seconds() >= 3.0  # the outage really held rows up
    # A row may be retried later if the outage outlasts its in-worker retries, but only ever for the outage.
    retries = [r["message"] for r in conn.execute(
        "SELECT message FROM csv_processing_logs WHERE operation = 'row_retry'")]
    assert all("object storage unavailable" in m for m in retries), retries
