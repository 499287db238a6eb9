"""Small copies of images for pages that embed them (the HTML gallery): at most THUMBNAIL_SIDE pixels on the long
side, WebP (smaller than PNG or JPEG at the same look, keeps transparency, and every current browser shows it)."""

from __future__ import annotations

import base64
import io

from PIL import Image

THUMBNAIL_SIDE = 400
THUMBNAIL_QUALITY = 72


def thumbnail_data_uri(data: bytes, side: int = THUMBNAIL_SIDE) -> str | None:
    """A data: URI of the image made no larger than side x side, or None when the bytes are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.draft("RGB", (side, side))  # JPEG: decode at a fraction of the size when that is enough
            opened.thumbnail((side, side))
            image: Image.Image = opened
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
            out = io.BytesIO()
            image.save(out, "WEBP", quality=THUMBNAIL_QUALITY, method=4)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/webp;base64," + base64.b64encode(out.getvalue()).decode()
