"""The Batch API's file format: input files cut at OpenAI's limits, custom ids, and the errors output lines carry."""

from __future__ import annotations

from pathlib import Path

from csvjobs.providers.openai_batch import InputFile, line_error, parse_custom_id, request_line


def test_the_input_file_limits(tmp_path: Path) -> None:
    """OpenAI takes at most 50,000 requests and 200 MB per input file; a row's lines go in whole or not at all."""
    file = InputFile(50_000, 200_000_000, tmp_path / "in.jsonl")
    line = request_line("1-1-prompts", "/v1/chat/completions", {"model": "m", "messages": []})
    for _ in range(25_000):
        assert file.fits([line, line])
        file.add([line, line])
    assert file.requests == 50_000 and not file.fits([line])
    assert (tmp_path / "in.jsonl").read_bytes().count(b"\n") == 50_000
    small = InputFile(50_000, 3 * len(line), tmp_path / "small.jsonl")
    small.add([line, line])
    assert small.fits([line]) and not small.fits([line, line])
    assert small.fits([line, line], empty=True) and not small.fits([line] * 4, empty=True)


def test_custom_ids_and_line_errors() -> None:
    assert parse_custom_id("12-3-single_white_background") == (12, 3, "single_white_background")
    assert parse_custom_id("request-1") is None and parse_custom_id(None) is None
    ok = {"custom_id": "1-1-prompts", "response": {"status_code": 200, "body": {}}, "error": None}
    assert line_error(ok) is None
    assert line_error({"custom_id": "x", "response": None, "error": {"code": "batch_expired", "message": "late"}}) \
        == ("batch_expired", "late")
    assert line_error({"response": {"status_code": 400, "body": {"error": {"code": "moderation_blocked",
                                                                           "message": "no"}}}}) == \
        ("moderation_blocked", "HTTP 400: no")
