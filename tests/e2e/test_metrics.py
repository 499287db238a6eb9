"""`csvjobs work --metrics-port`: Prometheus' text format at /metrics while the pool runs, summed over its worker
processes, with the queue's state from the database; provider requests (429s included) counted as the loopback
OpenAI-compatible server answered them. The dashboard and alert rule shipped for operators name these metrics."""

from __future__ import annotations

import json
import re
import signal
import socket
import urllib.request
from pathlib import Path

import pytest
from support.fake_openai import FakeOpenAI
from support.helpers import USER_A, cli
from support.pool import finish, start_pool, wait_for

pytestmark = pytest.mark.slow
MONITORING = Path(__file__).resolve().parents[2] / "monitoring"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """Samples by name and labels, as Prometheus reads them."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def upload(env: dict[str, str], tmp_path: Path, rows: int) -> str:
    path = tmp_path / f"p{rows}.csv"
    path.write_text("title,description\n" + "".join(f"Mug {n},A mug {n}\n" for n in range(rows)))
    result = cli(env, "upload", str(path), "--json")
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["batch_id"])


def test_the_pool_serves_its_metrics_summed_over_its_processes(pool_env, fake: FakeOpenAI, tmp_path: Path) -> None:
    env = dict(pool_env, CSVJOBS_USER_ID=str(USER_A), OPENAI_API_KEY="sk-test-metrics-0123456789",
               OPENAI_BASE_URL=fake.base_url, CSVJOBS_POLL_SECONDS="0.5")
    fake.rate_limit_next_images = 1  # one 429, retried
    env["CSVJOBS_BACKOFF_BASE_SECONDS"] = "0.05"
    port = free_port()
    upload(env, tmp_path, 6)
    proc = start_pool(env, "--concurrency", "4", "--processes", "2", "--max-dedicated", "0",
                      "--metrics-port", str(port))
    try:
        wait_for(lambda: _finished(port) >= 6, timeout=90, what="six rows in the metrics")
        samples = scrape(port)
        assert samples['csvjobs_rows_finished_total{outcome="completed"}'] == 6
        # The batch is over: none of its rows count as rows of an active batch any more.
        assert all(samples[f'csvjobs_rows{{status="{s}"}}'] == 0
                   for s in ("pending", "claimed", "processing", "completed", "failed"))
        assert samples["csvjobs_oldest_pending_seconds"] == 0
        assert samples["csvjobs_row_duration_seconds_count"] == 6
        assert samples['csvjobs_provider_requests_total{endpoint="/v1/chat/completions",status="200"}'] == 6
        assert samples['csvjobs_provider_requests_total{endpoint="/v1/images/generations",status="429"}'] == 1
        assert samples['csvjobs_provider_requests_total{endpoint="/v1/images/generations",status="200"}'] == 12
        assert samples['csvjobs_images_total{kind="paid"}'] == 12
        assert samples["csvjobs_cost_usd_total"] == pytest.approx(6 * (520 + 2 * 31930) / 1e6, abs=1e-6)
        proc.send_signal(signal.SIGTERM)
        code, err = finish(proc)
        assert code == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()


def test_oldest_pending_age_grows_while_rows_wait(pool_env, conn, tmp_path: Path) -> None:
    env = dict(pool_env, CSVJOBS_USER_ID=str(USER_A))
    batch = upload(env, tmp_path, 3)
    conn.execute("UPDATE csv_row_jobs SET created_at = now() - interval '10 minutes' WHERE batch_id = %s", [batch])
    port = free_port()
    # A pool whose one slot is busy for a long time: the other rows wait.
    # (10 s: long enough to be scraped mid-row, short enough that stopping the pool waits little for it)
    proc = start_pool(env, "--concurrency", "1", "--max-dedicated", "0", "--provider", "noop:10",
                      "--metrics-port", str(port))
    try:
        wait_for(lambda: _sample(port, 'csvjobs_rows{status="processing"}') == 1, timeout=60, what="a row in flight")
        samples = scrape(port)
        assert samples['csvjobs_rows{status="pending"}'] == 2
        assert 590 < samples["csvjobs_oldest_pending_seconds"] < 900
    finally:
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        finish(proc)


def test_the_dashboard_and_the_alert_use_the_served_metrics() -> None:
    served = {"csvjobs_rows", "csvjobs_oldest_pending_seconds", "csvjobs_rows_finished_total",
              "csvjobs_row_duration_seconds_bucket", "csvjobs_provider_requests_total",
              "csvjobs_provider_request_duration_seconds_bucket", "csvjobs_cost_usd_total", "csvjobs_images_total"}
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"csvjobs_[a-z_]+", target["expr"])}
    assert used == served
    alerts = (MONITORING / "alerts.yml").read_text()
    assert "max(csvjobs_oldest_pending_seconds) > 300" in alerts


def _sample(port: int, key: str) -> float | None:
    try:
        return scrape(port).get(key)
    except OSError:
        return None


def _finished(port: int) -> float:
    return _sample(port, 'csvjobs_rows_finished_total{outcome="completed"}') or 0.0


def test_a_metrics_port_in_use_is_one_red_line(pool_env, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, err = finish(start_pool(dict(pool_env, CSVJOBS_USER_ID=str(USER_A)), "--until-done",
                                      "--metrics-port", str(port)))
    assert code == 2 and f"--metrics-port {port}: cannot listen there" in err and "Traceback" not in err
