"""A loopback HTTP server of product photos for tests: real PNG, JPEG and WebP bytes, and every way a photo URL
goes wrong (404, an HTML page, an oversized body, a slow answer, redirects, one to a refused address)."""

from __future__ import annotations

import contextlib
import io
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image, ImageDraw


def photo_bytes(fmt: str, colour: tuple[int, int, int] = (180, 40, 40), size: tuple[int, int] = (64, 48)) -> bytes:
    """A small product 'photo': a coloured block on a light grey studio background."""
    image = Image.new("RGB", size, (235, 235, 235))
    image.paste(colour, (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4))
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def cluttered_photo() -> bytes:
    """A product on a cluttered shelf: no plain background to cut it out of."""
    rng = random.Random(3)
    image = Image.new("RGB", (16, 12))
    image.putdata([(rng.randrange(255), rng.randrange(255), rng.randrange(255)) for _ in range(16 * 12)])
    image = image.resize((64, 48), Image.Resampling.NEAREST)
    ImageDraw.Draw(image).rectangle((20, 14, 44, 34), fill=(180, 40, 40))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


class PhotoServer:
    """Paths: /mug.png, /mug.jpg, /mug.webp, /clutter.png (a product that cannot be cut out), /missing.png
    (404), /page.png (HTML), /huge.png (oversized), /slow.png (answers after `slow_seconds`), /hop/N (redirects N
    more times, then /mug.png), /metadata (a redirect to the cloud metadata address)."""

    def __init__(self, huge_bytes: int = 400_000, slow_seconds: float = 5.0) -> None:
        self.files = {"/mug.png": ("image/png", photo_bytes("PNG")),
                      "/mug.jpg": ("image/jpeg", photo_bytes("JPEG", (40, 120, 40))),
                      "/mug.webp": ("image/webp", photo_bytes("WEBP", (40, 40, 180))),
                      "/clutter.png": ("image/png", cluttered_photo())}
        self.huge_bytes = huge_bytes
        self.slow_seconds = slow_seconds
        self.requests: list[str] = []
        # (address, port) of every connection a request came on
        self.connections: set[tuple[str, int]] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive, as photo CDNs do: a client may send many requests over one connection.
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                with server.lock:
                    server.requests.append(self.path)
                    server.connections.add(self.client_address)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    server.answer(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> PhotoServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p in self.requests if p == path)

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        if path in self.files:
            kind, data = self.files[path]
            self._send(handler, 200, kind, data)
        elif path == "/page.png":
            self._send(handler, 200, "text/html", b"<html><body>Not an image</body></html>")
        elif path == "/huge.png":
            self._send(handler, 200, "image/png", b"\x89PNG" + b"\x00" * self.huge_bytes)
        elif path == "/huge-unannounced.png":
            handler.send_response(200)
            handler.send_header("content-type", "image/png")
            handler.send_header("connection", "close")  # (its end is the connection's)
            handler.close_connection = True
            handler.end_headers()
            handler.wfile.write(b"\x89PNG" + b"\x00" * self.huge_bytes)
        elif path == "/slow.png":
            time.sleep(self.slow_seconds)
            self._send(handler, 200, "image/png", self.files["/mug.png"][1])
        elif path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            self._redirect(handler, "/mug.png" if left <= 0 else f"/hop/{left - 1}")
        elif path == "/metadata":
            self._redirect(handler, "http://169.254.169.254/latest/meta-data/")
        else:
            self._send(handler, 404, "text/plain", b"not found")

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, kind: str, data: bytes) -> None:
        handler.send_response(status)
        handler.send_header("content-type", kind)
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _redirect(handler: BaseHTTPRequestHandler, location: str) -> None:
        handler.send_response(302)
        handler.send_header("location", location)
        handler.send_header("content-length", "0")
        handler.end_headers()
