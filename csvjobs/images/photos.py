"""The row's own product photo, as the reference both images are made from.

A photo comes from the catalogue: an http(s) URL, or a file beside the CSV that `upload` stored with the batch.
Remote photos are untrusted input next to the database, so fetching checks the address every hop resolves to
(no loopback, private, link-local or metadata addresses unless CSVJOBS_ALLOW_PRIVATE_IMAGE_HOSTS allows them),
connects to exactly the address it checked (a connection is kept alive for that host at that address only),
follows at most five redirects, stops at a size cap and a deadline, and accepts only bytes Pillow decodes as an
image. The photo is normalised to a PNG the Images API takes and
stored once as the row's reference (csv-images/{user_id}/{batch_id}/{row}-reference.png) with a checkpoint, so a
retry never fetches again. A photo that cannot be used is never fatal by default: the row is made from text
alone and its log and checkpoint say why (--require-photo fails such rows instead)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import io
import ipaddress
import socket
import ssl
import warnings
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from csvjobs.config import Settings
from csvjobs.errors import JobLostError, PermanentError
from csvjobs.images.pixel_work import run_pixel_work
from csvjobs.images.white_background import flatten_onto_white
from csvjobs.models import IMAGE_FORMATS
from csvjobs.providers.contract import RowContext
from csvjobs.redact import redact, safe_url
from csvjobs.storage.keys import IMAGES_BUCKET, UPLOADS_BUCKET, is_remote_photo, uploaded_photo_key

MAX_REDIRECTS = 5
MAX_PIXELS = 40_000_000  # a JPEG photo larger than this is refused (decompression bombs)
# Other formats decode at full size (a 40-megapixel PNG of 168 KB would take a worker to ~420 MB), so they are
# refused above this; a JPEG is decoded at a reduced scale (draft) and may be larger.
DECODED_MAX_PIXELS = 16_000_000
REFERENCE_MAX_SIDE = 1536  # the reference sent to the Images API
VISION_MAX_SIDE = 768  # the copy the prompt model looks at
_REDIRECTS = (301, 302, 303, 307, 308)


class PhotoError(Exception):
    """The photo cannot be used; the message says why, for the row's log and export."""


@dataclass(frozen=True)
class Reference:
    """A row's reference photo: normalised PNG bytes and where they are stored."""

    png: bytes
    storage_path: str
    source: str

    def png_data_url(self) -> str:
        """The reference itself as a data: URL (an Images edit sent as JSON, as Batch API lines are)."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode()

    def vision_data_url(self) -> str:
        """A small JPEG of the photo as a data: URL, for the prompt model."""
        return "data:image/jpeg;base64," + base64.b64encode(shrink_to_jpeg(self.png, VISION_MAX_SIDE)).decode()


# --- addresses ----------------------------------------------------------------------------------------------


# IPv6 ranges that carry an IPv4 address in their last 32 bits (NAT64, the local-use NAT64 prefix, IPv4-compatible
# and IPv4-translated addresses): the embedded address decides, so 64:ff9b::a9fe:a9fe is 169.254.169.254.
_EMBEDS_IPV4 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96"))
# Never fetched from, even where is_global says otherwise: the deprecated site-local range.
_NEVER = (ipaddress.ip_network("fec0::/10"),)


def _addresses_to_check(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address |
                                                                                   ipaddress.IPv6Address]:
    """The address, and the IPv4 address it embeds (IPv4-mapped, NAT64, 6to4, Teredo, IPv4-compatible)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return [ip]
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if any(ip in network for network in _EMBEDS_IPV4):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def allowed_address(address: str, allow_private: str) -> bool:
    """Whether a resolved address may be fetched from: a global (public) address that embeds no other address
    but a global one, or one that CSVJOBS_ALLOW_PRIVATE_IMAGE_HOSTS allows ("1": any; else a comma-separated list
    of addresses or networks)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    checked = _addresses_to_check(ip)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    allow = allow_private.strip()
    if allow in ("1", "true", "yes", "all"):
        return True
    if allow and allow not in ("0", "false", "no"):
        for item in allow.split(","):
            try:
                if ip in ipaddress.ip_network(item.strip(), strict=False):
                    return True
            except ValueError:
                continue
    # is_global is False for loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local (169.254/16,
    # where cloud metadata lives), shared (100.64/10), reserved, unspecified and documentation ranges.
    return all(a.is_global and not a.is_multicast and not any(a in n for n in _NEVER) for a in checked)


async def _resolve(host: str, port: int, timeout: float) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except TimeoutError as exc:
        raise PhotoError(f"resolving {host} timed out") from exc
    except OSError as exc:
        raise PhotoError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# --- fetching -----------------------------------------------------------------------------------------------


async def fetch_photo(url: str, settings: Settings) -> bytes:
    """The photo's bytes, fetched as described in the module docstring; PhotoError says why not."""
    try:
        return await asyncio.wait_for(_fetch(url, settings), settings.photo_timeout_seconds * 2)
    except TimeoutError as exc:
        raise PhotoError(f"fetching the photo took longer than {settings.photo_timeout_seconds * 2:.0f}s") from exc


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: building one (loading the CA bundle) took 30% of a preparing process's time
    when every photo made its own."""
    return httpx.create_ssl_context(trust_env=False)


@dataclass
class _PinnedClient:
    client: httpx.AsyncClient
    users: int = 0
    retired: bool = False


# Pooled connections, per event loop (a client belongs to the loop it was made in): one client per scheme, host,
# checked address and port, so that a kept-alive connection only ever carries requests for the host it was opened
# (and its certificate checked) for, to the address that was checked. A catalogue's photos mostly live on one or
# two CDN hosts, so a handful of clients serve a whole batch; the least recently used beyond POOLED_HOSTS is closed
# once no fetch is using it.
POOLED_HOSTS = 16
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[tuple[str, str, str, int], _PinnedClient]] = (
    weakref.WeakKeyDictionary())


@contextlib.asynccontextmanager
async def _pinned_client(scheme: str, host: str, address: str, port: int) -> AsyncIterator[httpx.AsyncClient]:
    pool = _pools.setdefault(asyncio.get_running_loop(), OrderedDict())
    key = (scheme, host.lower(), address, port)
    entry = pool.get(key)
    if entry is None:
        # trust_env=False: no proxy from the environment may carry the request somewhere the checks did not see.
        entry = pool[key] = _PinnedClient(httpx.AsyncClient(
            follow_redirects=False, trust_env=False, verify=_tls_context(),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=8, keepalive_expiry=30.0)))
        while len(pool) > POOLED_HOSTS:
            _key, oldest = pool.popitem(last=False)
            oldest.retired = True
            if oldest.users == 0:
                await oldest.client.aclose()
    pool.move_to_end(key)
    entry.users += 1
    try:
        yield entry.client
    finally:
        entry.users -= 1
        if entry.retired and entry.users == 0:
            await entry.client.aclose()


async def close_photo_clients() -> None:
    """Close this event loop's pooled photo connections (one still in use is closed when its fetch ends)."""
    pool = _pools.pop(asyncio.get_running_loop(), OrderedDict())
    for entry in pool.values():
        entry.retired = True
        if entry.users == 0:
            await entry.client.aclose()


async def _fetch(url: str, settings: Settings) -> bytes:
    timeout = httpx.Timeout(settings.photo_timeout_seconds, connect=min(5.0, settings.photo_timeout_seconds))
    current = url
    for _hop in range(MAX_REDIRECTS + 1):
        try:
            target = httpx.URL(current)
        except (httpx.InvalidURL, ValueError) as exc:
            raise PhotoError(f"not a valid URL: {current[:200]}") from exc
        if target.scheme not in ("http", "https") or not target.host:
            raise PhotoError(f"only http and https photo URLs are fetched, not {current[:200]}")
        port = target.port or (443 if target.scheme == "https" else 80)
        addresses = await _resolve(target.host, port, settings.photo_timeout_seconds)
        refused = [a for a in addresses if not allowed_address(a, settings.allow_private_image_hosts)]
        if refused or not addresses:
            raise PhotoError(f"{target.host} resolves to {', '.join(refused) or 'nothing'}: the address is "
                             "private or not allowed (loopback, private, link-local, metadata, site-local, or "
                             "one embedding such an IPv4 address); refused (CSVJOBS_ALLOW_PRIVATE_IMAGE_HOSTS "
                             "allows such hosts)")
        # Connect to the address that was checked, not to whatever a second lookup might return.
        pinned = addresses[0]
        host_for_url = f"[{pinned}]" if ":" in pinned else pinned
        request_url = target.copy_with(host=host_for_url.strip("[]"))
        headers = {"Host": target.netloc.decode("ascii"), "Accept": "image/*",
                   "User-Agent": "csvjobs (product photo fetch)"}
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with _pinned_client(target.scheme, target.host, pinned, port) as client, \
                    client.stream("GET", request_url, headers=headers, extensions=extensions,
                                  timeout=timeout) as response:
                if response.status_code in _REDIRECTS:
                    location = response.headers.get("location")
                    if not location:
                        raise PhotoError(f"HTTP {response.status_code} without a Location")
                    current = str(target.join(location))
                    # (a redirect's body read, so that its connection can serve the next hop; a large one is left,
                    # and its connection closed)
                    with contextlib.suppress(PhotoError):
                        await _read_capped(response, 65_536)
                    continue
                if response.status_code != 200:
                    raise PhotoError(f"the photo URL answered HTTP {response.status_code}")
                return await _read_capped(response, settings.photo_max_bytes)
        except httpx.TimeoutException as exc:
            raise PhotoError("the photo server did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise PhotoError(f"fetching the photo failed: {type(exc).__name__}: {str(exc)[:200]}") from exc
    raise PhotoError(f"more than {MAX_REDIRECTS} redirects")


async def _read_capped(response: httpx.Response, cap: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise PhotoError(f"the photo is {int(declared):,} bytes, over the {cap:,}-byte limit (CSVJOBS_PHOTO_MAX_BYTES)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise PhotoError(f"the photo is over the {cap:,}-byte limit (CSVJOBS_PHOTO_MAX_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


# --- images -------------------------------------------------------------------------------------------------


def _open(data: bytes, max_side: int = REFERENCE_MAX_SIDE) -> Image.Image:
    """The photo decoded, in an accepted format only, at no more than about twice max_side where the format can
    decode at a reduced scale (JPEG); PhotoError for anything else, so an unusable photo never fails a row."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            pixels = probe.width * probe.height
            limit = MAX_PIXELS if probe.format == "JPEG" else DECODED_MAX_PIXELS
            if pixels > limit:
                raise PhotoError(f"the photo is {probe.width}x{probe.height} pixels, more than {limit:,}")
            probe.verify()
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            if image.format == "JPEG":
                # Decode at 1/2, 1/4 or 1/8 scale, keeping the long side at least max_side (draft keeps both
                # sides at least the size asked for, so ask for the photo's own proportions).
                scale = max_side / max(image.width, image.height)
                if scale < 1:
                    image.draft("RGB", (max(1, int(image.width * scale)), max(1, int(image.height * scale))))
            image.load()
    except PhotoError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError(f"the file is not an image in an accepted format ({', '.join(IMAGE_FORMATS)})" if isinstance(
            exc, UnidentifiedImageError) else "the photo is too large to decode") from exc
    except Exception as exc:  # damaged or hostile bytes: whatever the decoder raises, the photo is unusable
        raise PhotoError(f"the image is damaged ({type(exc).__name__}: {str(exc)[:120]})") from exc
    return image


def normalise(data: bytes, max_side: int = REFERENCE_MAX_SIDE) -> bytes:
    """Any image Pillow reads -> an upright PNG (RGB, or RGBA when it has transparency) no larger than max_side."""
    image = _open(data, max_side)
    try:
        image = ImageOps.exif_transpose(image)
        has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
        image = image.convert("RGBA" if has_alpha else "RGB")
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, format="PNG")
    except Exception as exc:  # a decoded but unworkable image (odd modes, broken EXIF) is unusable, not fatal
        raise PhotoError(f"the image cannot be converted ({type(exc).__name__}: {str(exc)[:120]})") from exc
    return out.getvalue()


def shrink_to_jpeg(png: bytes, max_side: int) -> bytes:
    """A small JPEG copy (transparency flattened onto white) for the prompt model to look at."""
    opened = Image.open(io.BytesIO(png), formats=("PNG",))
    opened.load()
    image = flatten_onto_white(opened)
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


# --- the row's reference ------------------------------------------------------------------------------------


def photo_source(ctx: RowContext) -> str:
    """The row's photo as the catalogue gives it: a URL, a path beside the CSV, or ''."""
    return str(ctx.job.product.get("image_url") or "").strip()


async def prepare_reference(ctx: RowContext, settings: Settings) -> Reference | None:
    """The row's reference photo (from its checkpoint, or fetched, normalised, stored and checkpointed), or None
    when the row has no photo or its photo cannot be used (logged with the reason; a PermanentError instead with
    require_photo)."""
    source = photo_source(ctx)
    if not source:
        return None
    saved = ctx.job.checkpoint
    if "reference" in saved:
        path = str(saved["reference"].get("storage_path", ""))
        try:
            png = await asyncio.to_thread(ctx.storage.read_bytes, path)
            ctx.log("photo_reused", "reference photo reused from the checkpoint", {"storage_path": path})
            return Reference(png, path, source)
        except Exception:  # gone from storage: make it again
            pass
    elif "reference_error" in saved:
        return _unusable(ctx, settings, str(saved["reference_error"]), source, logged=True)
    try:
        if is_remote_photo(source):
            raw = await fetch_photo(source, settings)
        else:
            key = uploaded_photo_key(ctx.job.user_id, ctx.job.batch_id, source)
            try:
                raw = await asyncio.to_thread(ctx.storage.read_bytes, f"{UPLOADS_BUCKET}/{key}")
            except Exception as exc:
                raise PhotoError(f"the uploaded photo {redact(source)!r} is missing from storage") from exc
        png = await run_pixel_work(normalise, raw)
    except PhotoError as exc:
        reason = redact(str(exc))  # (an error may quote the URL, with its password or signature)
        if not await ctx.save_checkpoint({"reference_error": reason}):
            raise JobLostError(f"row job {ctx.job.job_id} was reclaimed by another worker") from exc
        return _unusable(ctx, settings, reason, source, logged=False)
    key = f"{ctx.job.user_id}/{ctx.job.batch_id}/{ctx.job.row_number}-reference.png"
    path = await asyncio.to_thread(ctx.storage.put_bytes, IMAGES_BUCKET, key, png)
    record = {"storage_path": path, "source": safe_url(source) if is_remote_photo(source) else source,
              "bytes": len(png), "sha256": hashlib.sha256(png).hexdigest()}
    if not await ctx.save_checkpoint({"reference": record}):
        raise JobLostError(f"row job {ctx.job.job_id} was reclaimed by another worker")
    ctx.log("photo_stored", f"reference photo stored: {path}", record)
    return Reference(png, path, source)


def _unusable(ctx: RowContext, settings: Settings, reason: str, source: str, *, logged: bool) -> Reference | None:
    source = safe_url(source) if is_remote_photo(source) else source
    if settings.require_photo:
        raise PermanentError(f"the product photo cannot be used: {reason} ({source[:200]})")
    if not logged:
        ctx.log("photo_unusable", f"the product photo cannot be used ({reason}); the images are made from the "
                "text alone", {"source": source[:500], "reason": reason})
    return None  # the caller goes on without a reference
