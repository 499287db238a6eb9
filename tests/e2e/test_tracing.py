"""OpenTelemetry traces of the pool, sent over OTLP/HTTP to a loopback collector: each claim, each row inside its
claim, each request to the (loopback, OpenAI-compatible) provider inside its row, each report linked to its rows;
and when OpenTelemetry's environment asks for traces at all."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from support.fake_openai import FakeOpenAI
from support.helpers import USER_A, cli
from support.otlp import Collector
from support.pool import finish, start_pool

from csvjobs import tracing

KEY = "sk-test-tracing-0123456789abcdef"


@pytest.mark.slow
def test_a_row_s_trace_goes_from_its_claim_through_its_provider_calls_to_its_report(
        pool_env, fake: FakeOpenAI, tmp_path: Path) -> None:
    collector = Collector()
    try:
        env = dict(pool_env, CSVJOBS_USER_ID=str(USER_A), OPENAI_API_KEY=KEY, OPENAI_BASE_URL=fake.base_url,
                   CSVJOBS_BACKOFF_BASE_SECONDS="0.05", OTEL_EXPORTER_OTLP_ENDPOINT=collector.endpoint,
                   OTEL_SERVICE_NAME="csvjobs-test")
        fake.rate_limit_next_images = 1  # one 429, retried
        path = tmp_path / "p.csv"
        path.write_text("title,description\n" + "".join(f"Mug {n},A mug {n}\n" for n in range(3)))
        uploaded = cli(env, "upload", str(path), "--json")
        assert uploaded.returncode == 0, uploaded.stderr
        batch = json.loads(uploaded.stdout)["batch_id"]
        code, err = finish(start_pool(env, "--until-done", "--concurrency", "3", "--processes", "1",
                                      "--max-dedicated", "0"))
        assert code == 0, err
        spans = list(collector.spans)
    finally:
        collector.close()

    by_id = {s["span_id"]: s for s in spans}
    assert {s["service"] for s in spans} == {"csvjobs-test"}
    rows = [s for s in spans if s["name"] == "process csv_row_jobs"]
    assert sorted(s["attributes"]["csvjobs.row_number"] for s in rows) == [1, 2, 3]
    for row in rows:
        assert row["attributes"]["csvjobs.batch_id"] == batch
        assert row["attributes"]["csvjobs.outcome"] == "completed" and not row["error"]
        claim = by_id[row["parent"]]
        assert claim["name"] == "receive csv_row_jobs" and claim["trace_id"] == row["trace_id"]
        assert claim["attributes"]["messaging.batch.message_count"] >= 1
    row_ids = {s["span_id"] for s in rows}
    requests = [s for s in spans if s["name"] == "POST"]
    assert all(s["parent"] in row_ids for s in requests)
    # Per row: one prompt request and two images; plus the one answered 429, marked as an error.
    paths = Counter((s["attributes"]["url.full"].rsplit("/v1", 1)[1], s["attributes"]["http.response.status_code"])
                    for s in requests)
    assert paths == {("/chat/completions", 200): 3, ("/images/generations", 200): 6,
                     ("/images/generations", 429): 1}
    assert all(s["error"] == (s["attributes"]["http.response.status_code"] == 429) for s in requests)
    reports = [s for s in spans if s["name"] == "settle csv_row_jobs"]
    assert {link for s in reports for link in s["links"]} == row_ids
    assert sum(s["attributes"]["messaging.batch.message_count"] for s in reports) == 3
    assert KEY not in json.dumps(spans)


def test_traces_are_on_only_when_opentelemetry_s_environment_asks() -> None:
    assert not tracing.configured({})
    assert not tracing.configured({"OTEL_SERVICE_NAME": "x"})  # an installed SDK's default is not a request
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert tracing.configured({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing.configured({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert not tracing.configured({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"})
