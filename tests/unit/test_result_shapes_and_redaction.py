"""Pure functions: reading results in every stored shape, and removing secrets from text."""

from __future__ import annotations

from csvjobs.models import ImageStyle
from csvjobs.operate.result_shapes import image_for, image_location, prompt_for, tags_of
from csvjobs.redact import redact, redact_json

LIFE, WHITE = ImageStyle.LIFESTYLE_EMOTIONAL, ImageStyle.SINGLE_WHITE_BACKGROUND


def test_prompts_in_every_shape() -> None:
    ours = {"lifestyle_emotional": {"prompt": "a", "alt_text": "x"}, "single_white_background": {"prompt": "b"}}
    assert (prompt_for(ours, LIFE), prompt_for(ours, WHITE)) == ("a", "b")
    document = {"prompts": ["p1", "p2"]}
    assert (prompt_for(document, LIFE), prompt_for(document, WHITE)) == ("p1", "p2")
    assert prompt_for({"prompts": ["only"]}, WHITE) == ""
    assert prompt_for(["p1", "p2"], WHITE) == "p2"
    for junk in (None, "text", 3, {"prompts": "x"}, [None, {"prompt": 5}]):
        assert prompt_for(junk, LIFE) == "" and prompt_for(junk, WHITE) == ""


def test_images_in_every_shape() -> None:
    ours = [{"style": "single_white_background", "storage_path": "csv-images/u/b/1-white.png"},
            {"style": "lifestyle_emotional", "storage_path": "csv-images/u/b/1-life.png"}]
    assert image_location(image_for(ours, LIFE)) == "csv-images/u/b/1-life.png"
    assert image_location(image_for(ours, WHITE)) == "csv-images/u/b/1-white.png"
    document = {"images": [{"url": "https://x/1.png", "model": "gpt-image-1"}]}
    assert image_location(image_for(document, LIFE)) == "https://x/1.png"
    assert image_for(document, WHITE) == {}
    assert image_location(image_for({"lifestyle_emotional": "a.png"}, LIFE)) == "a.png"
    for junk in (None, "x", 7, {"images": "x"}, [1, 2]):
        assert image_location(image_for(junk, LIFE)) == ""


def test_tags_in_every_shape() -> None:
    assert tags_of(["a", "b"]) == ["a", "b"]
    assert tags_of({"tags": ["tag1", "tag2"]}) == ["tag1", "tag2"]
    assert tags_of("a, b,,c") == ["a", "b", "c"]
    assert tags_of(None) == [] and tags_of({"other": 1}) == [] and tags_of([None, {"x": 1}, " "]) == []


def test_redact_removes_the_key_and_anything_shaped_like_one() -> None:
    key = "my-very-own-key-123456"
    text = f"Incorrect API key provided: {key}. Also sk-proj-AbC123xyz456 and sk-abc1***wxyz, Bearer abc.def-ghi_123"
    cleaned = redact(text, [key])
    assert key not in cleaned and "sk-proj" not in cleaned and "sk-abc1" not in cleaned
    assert "abc.def-ghi_123" not in cleaned and cleaned.count("[redacted]") == 4
    assert redact("nothing secret here: task-force, sk-8") == "nothing secret here: task-force, sk-8"
    assert redact_json({"m": [f"k={key}"], "n": 1}, [key]) == {"m": ["k=[redacted]"], "n": 1}


def test_a_url_is_shown_without_its_userinfo_query_values_or_fragment() -> None:
    from csvjobs.redact import redact, safe_url

    assert safe_url("https://user:pa55@cdn.example:8443/a/b.jpg?X-Amz-Signature=abc&X-Amz-Credential=k#f") == (
        "https://cdn.example:8443/a/b.jpg?X-Amz-Signature=[redacted]&X-Amz-Credential=[redacted]#[redacted]")
    assert safe_url("http://u@[::1]/x.png") == "http://[::1]/x.png"
    assert safe_url("https://shop.example/p.png") == "https://shop.example/p.png"
    said = redact("failed (https://me:hunter2@h.example/p.png?token=t0k3n) and ftp://a:b@c/d")
    assert "hunter2" not in said and "t0k3n" not in said and "me:" not in said and "a:b@" not in said
    assert "https://h.example/p.png?token=[redacted]" in said


def test_a_url_shown_safely_is_shown_the_same_when_redacted_again() -> None:
    from csvjobs.redact import redact, safe_url

    for url in ("http://h:1/p.jpg?width=1500&X-Amz-Signature=abc#frag", "https://user:pw@cdn.test/a.png?t=1",
                "http://[::1]:80/x?y=2"):
        shown = safe_url(url)
        assert redact(shown) == shown == redact(redact(url))
        assert "[redacted][redacted]" not in redact(f"fetching {url} failed")
