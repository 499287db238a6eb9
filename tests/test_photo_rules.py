"""Product photos, without a database or worker: which addresses are refused, fetching against a loopback photo
server (every way it goes wrong), normalising, pure white backgrounds, and the upload's checks of local paths."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai import cutout_png
from photo_server import PhotoServer, photo_bytes
from PIL import Image

from csvjobs.config import Settings
from csvjobs.ingest.photos import LocalPhotos
from csvjobs.providers.photos import PhotoError, allowed_address, fetch_photo, normalise
from csvjobs.providers.white_background import is_pure_white_border, make_white


@pytest.fixture(scope="module")
def photos() -> Iterator[PhotoServer]:
    server = PhotoServer(huge_bytes=300_000, slow_seconds=3.0).start()
    yield server
    server.stop()


def _settings(allow: str = "127.0.0.1/32") -> Settings:
    return Settings(allow_private_image_hosts=allow, photo_max_bytes=200_000, photo_timeout_seconds=1.0)


def fetch(url: str, allow: str = "127.0.0.1/32") -> bytes:
    return asyncio.run(fetch_photo(url, _settings(allow)))


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "::1", "fe80::1", "fd00::1", "::ffff:127.0.0.1",
                                     "224.0.0.1"])
def test_private_loopback_link_local_and_metadata_addresses_are_refused(address: str) -> None:
    assert not allowed_address(address, "")
    assert allowed_address(address, "1")


def test_public_addresses_pass_and_an_allow_list_allows_only_what_it_names() -> None:
    assert allowed_address("93.184.216.34", "") and allowed_address("2606:4700::1111", "")
    assert allowed_address("127.0.0.1", "127.0.0.1/32") and not allowed_address("127.0.0.2", "127.0.0.1/32")
    assert not allowed_address("169.254.169.254", "127.0.0.1/32, 10.0.0.0/8")


@pytest.mark.parametrize("path", ["/mug.png", "/mug.jpg", "/mug.webp", "/hop/3"])
def test_photos_are_fetched_and_normalised_to_png(photos: PhotoServer, path: str) -> None:
    png = normalise(fetch(photos.base + path))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (64, 48)


@pytest.mark.parametrize(("path", "reason"), [
    ("/missing.png", "HTTP 404"),
    ("/huge.png", "over the 200,000-byte limit"),
    ("/huge-unannounced.png", "over the 200,000-byte limit"),
    ("/slow.png", "in time"),
    ("/hop/7", "more than 5 redirects"),
    ("/metadata", "169.254.169.254"),
])
def test_photos_that_cannot_be_fetched_say_why(photos: PhotoServer, path: str, reason: str) -> None:
    with pytest.raises(PhotoError, match=reason):
        fetch(photos.base + path)


def test_a_loopback_host_is_refused_by_default_before_any_connection(photos: PhotoServer) -> None:
    before = len(photos.requests)
    for url in (photos.base + "/mug.png", photos.base.replace("127.0.0.1", "localhost") + "/mug.png"):
        with pytest.raises(PhotoError, match="refused"):
            fetch(url, allow="")
    assert len(photos.requests) == before


def test_only_http_and_https_are_fetched() -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/", "http://"):
        with pytest.raises(PhotoError):
            fetch(url)


def test_what_is_not_an_image_is_refused(photos: PhotoServer) -> None:
    html = fetch(photos.base + "/page.png")
    with pytest.raises(PhotoError, match="not an image"):
        normalise(html)
    with pytest.raises(PhotoError):
        normalise(photo_bytes("PNG")[:60])  # cut short


def _off_white_photo(touching: bool = False) -> bytes:
    image = Image.new("RGB", (80, 60), (246, 244, 241))  # a studio "white" that is not white
    image.paste((200, 200, 200), (0, 50, 80, 60) if touching else (10, 45, 70, 52))  # a shadow / the floor
    image.paste((20, 60, 160), (25, 10, 55, 45))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_white_backgrounds_are_pure_white_to_the_edges(fmt: str) -> None:
    opaque = (_off_white_photo(), _off_white_photo(touching=True), photo_bytes("PNG"))
    assert not any(is_pure_white_border(source) for source in opaque)
    for source in (*opaque, cutout_png()):  # a cutout: transparent to its edges, composited onto white
        data, out_format = make_white(source, fmt)
        assert is_pure_white_border(data, width=1), (fmt, out_format)
        image = Image.open(io.BytesIO(data)).convert("RGB")
        assert image.getpixel((image.width // 2, image.height // 2)) != (255, 255, 255)  # the product is kept


def test_local_photos_must_be_files_inside_the_csvs_folder(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    (folder / "images").mkdir(parents=True)
    (folder / "images" / "mug-1.jpg").write_bytes(photo_bytes("JPEG"))
    (folder / "big.png").write_bytes(b"x" * 5000)
    (tmp_path / "secret.txt").write_text("private")
    checker = LocalPhotos(folder / "products.csv", max_bytes=4000)
    assert checker.check("images/mug-1.jpg") is None and checker.check("./images/mug-1.jpg") is None
    assert checker.check("https://cdn.example/mug.png") is None
    assert "outside" in str(checker.check("../secret.txt"))
    assert "outside" in str(checker.check(str(tmp_path / "secret.txt")))
    assert "no such file" in str(checker.check("images/nope.jpg"))
    assert "over the 4,000-byte limit" in str(checker.check("big.png"))
    assert "neither an http(s) URL" in str(checker.check("file:///etc/passwd"))
    assert set(checker.files) == {"images/mug-1.jpg", "./images/mug-1.jpg"}
