"""Product photos, without a database or worker: which addresses are refused, fetching against a loopback photo
server (every way it goes wrong), normalising, pure white backgrounds, and the upload's checks of local paths."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from support.fake_openai import cutout_png
from support.photo_server import PhotoServer, photo_bytes

from csvjobs.config import Settings
from csvjobs.images.photos import PhotoError, allowed_address, fetch_photo, normalise
from csvjobs.images.white_background import is_pure_white_border, make_white
from csvjobs.ingest.photos import LocalPhotos


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
        with pytest.raises(PhotoError, match=r"only http and https photo URLs are fetched|not a valid URL"):
            fetch(url)


def test_what_is_not_an_image_is_refused(photos: PhotoServer) -> None:
    html = fetch(photos.base + "/page.png")
    with pytest.raises(PhotoError, match="not an image"):
        normalise(html)
    with pytest.raises(PhotoError):
        normalise(photo_bytes("PNG")[:60])  # cut short


POSTSCRIPT = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
              b"newpath 0 0 moveto 10 10 lineto stroke showpage\n%%EOF\n")


def test_postscript_is_never_handed_to_ghostscript(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostScript served as a JPEG: Pillow would run Ghostscript (gs on PATH) on it; the formats are allow-listed."""
    called = tmp_path / "gs-was-called"
    fake_gs = tmp_path / "bin" / "gs"
    fake_gs.parent.mkdir()
    fake_gs.write_text(f"#!/bin/sh\ntouch {called}\nexit 1\n")
    fake_gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_gs.parent}:{os.environ['PATH']}")
    from PIL import EpsImagePlugin
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None, raising=False)  # looked up again, finds the fake
    with pytest.raises(PhotoError, match="accepted format"):
        normalise(POSTSCRIPT)
    assert not called.exists()
    local = tmp_path / "shop"
    local.mkdir()
    (local / "mug.jpg").write_bytes(POSTSCRIPT)
    assert "not an image in an accepted format" in str(LocalPhotos(local / "p.csv", 10**6).check("mug.jpg"))
    assert not called.exists()


@pytest.mark.parametrize("address", ["64:ff9b::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe", "2002:a9fe:a9fe::1",
                                     "::169.254.169.254", "::ffff:0:a9fe:a9fe", "::ffff:0:7f00:1", "fec0::1",
                                     "2001:0:4136:e378:8000:63bf:3fff:fdd2"])
def test_addresses_embedding_a_private_ipv4_address_and_site_local_are_refused(address: str) -> None:
    assert not allowed_address(address, "")
    with pytest.raises(PhotoError, match="private or not allowed"):
        fetch(f"http://[{address}]/mug.png", allow="")


def test_embedded_public_addresses_pass() -> None:
    assert allowed_address("64:ff9b::808:808", "") and allowed_address("2002:808:808::1", "")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_40_megapixel_photo_keeps_a_worker_under_300_mb(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"huge.{fmt.lower()}"
    image = Image.new("RGB", (7400, 5400), (235, 235, 235))
    image.paste((180, 40, 40), (2000, 1500, 5400, 3900))
    image.save(path, format=fmt)
    del image
    # VmHWM, not getrusage's ru_maxrss: Linux carries a parent's peak across fork and exec into ru_maxrss, so a
    # big pytest process would be measured instead of the child.
    script = (
        "import sys\n"
        "from csvjobs.images.photos import PhotoError, normalise\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "try:\n    out = normalise(data); print('ok', len(out))\n"
        "except PhotoError as exc:\n    print('refused', exc)\n"
        "print(next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')))\n")
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    outcome, peak_kb = done.stdout.splitlines()
    assert int(peak_kb) < 300 * 1024, f"{fmt}: peak {int(peak_kb) // 1024} MB"
    # A JPEG decodes at a reduced scale and is used; a PNG that large is refused (the row falls back to text).
    assert outcome.startswith("ok" if fmt == "JPEG" else "refused")


def test_local_photos_refuse_hidden_paths_hard_links_and_non_images(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    (folder / ".ssh").mkdir(parents=True)
    (folder / ".ssh" / "id_rsa").write_bytes(photo_bytes("PNG"))  # even an image: hidden paths are never read
    (folder / ".hidden.png").write_bytes(photo_bytes("PNG"))
    outside = tmp_path / "outside.png"
    outside.write_bytes(photo_bytes("PNG"))
    os.link(outside, folder / "linked.png")
    (folder / "notes.png").write_text("not an image at all")
    (folder / "ok.png").write_bytes(photo_bytes("PNG"))
    checker = LocalPhotos(folder / "products.csv", max_bytes=10**6)
    assert "hidden" in str(checker.check(".ssh/id_rsa")) and "hidden" in str(checker.check(".hidden.png"))
    assert "hidden" in str(checker.check("./.ssh/id_rsa"))
    assert "hard links" in str(checker.check("linked.png"))
    assert "not an image" in str(checker.check("notes.png"))
    assert checker.check("ok.png") is None and set(checker.files) == {"ok.png"}


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


def test_photos_of_one_host_share_kept_alive_connections_and_hosts_never_share_one(photos: PhotoServer) -> None:
    """A batch's photos on one host reuse connections (one process, one event loop); another host name at the
    same address gets its own, so a connection opened (and its certificate checked) for one host never carries a
    request for another."""
    if socket.getaddrinfo("localhost", 80, type=socket.SOCK_STREAM)[0][4][0] != "127.0.0.1":
        pytest.skip("localhost does not resolve to 127.0.0.1 first here")
    port = photos.base.rsplit(":", 1)[1]

    async def fetch_all() -> None:
        for path in ("/mug.png", "/mug.jpg", "/hop/2", "/mug.webp"):
            await fetch_photo(photos.base + path, _settings())
        assert len(photos.connections) == 1, photos.connections  # 6 requests, the hops included
        for _ in range(3):
            await fetch_photo(f"http://localhost:{port}/mug.png", _settings())

    with photos.lock:
        photos.connections.clear()
    asyncio.run(fetch_all())
    assert len(photos.connections) == 2, photos.connections  # localhost's 3 requests over a connection of its own
