"""Pure white backgrounds, enforced rather than hoped for. Marketplaces (Amazon, Google Shopping) want the main
product image on RGB (255, 255, 255) to its edges; an image model's "white" is often off-white, shadowed or a
soft gradient. So the white-background image is asked for with a transparent background, composited onto pure
white, the near-white background that touches the edges is flooded to pure white, and, if the product itself
touches an edge, it is shrunk onto a white margin. Every stored white image passes is_pure_white_border()."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from csvjobs.models import IMAGE_FORMATS

WHITE = (255, 255, 255)
NEAR_WHITE = 12  # a background pixel this close to white (per channel, summed as a distance) is made white
MARGIN = 0.04  # the white margin, as a share of the side, when the product reaches an edge


def is_pure_white_border(data: bytes, width: int = 1) -> bool:
    """Whether every pixel within `width` of the image's edges is exactly (255, 255, 255) once decoded."""
    image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    image.load()
    return border_white(flatten_onto_white(image), width)


def border_white(rgb: Image.Image, width: int = 1) -> bool:
    """Whether every pixel within `width` of an RGB image's edges is exactly (255, 255, 255)."""
    w, h = rgb.size
    width = max(1, min(width, w // 2, h // 2))
    for box in ((0, 0, w, width), (0, h - width, w, h), (0, 0, width, h), (w - width, 0, w, h)):
        colours = rgb.crop(box).getcolors(maxcolors=1)
        if colours is None or colours[0][1] != WHITE:
            return False
    return True


def flatten_onto_white(image: Image.Image) -> Image.Image:
    """RGB with any transparency composited onto pure white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


# The PNG compression level of stored images, chosen by measurement (bench/finishing.py): on a photographic
# 2048 px image level 1 encodes about 8x faster than zlib's default 6 for a file about 17% larger, and collecting
# a catalogue's images is bound by this CPU; a mostly white packshot is small at any level.
PNG_LEVEL = 1


def make_white(data: bytes, output_format: str = "png") -> tuple[bytes, str]:
    """The image on pure white to its edges, and its format: output_format, or png when a lossy format would leave
    the border anything but pure white. Raises OSError for bytes that are not an image."""
    rgb = flatten_onto_white(Image.open(io.BytesIO(data), formats=IMAGE_FORMATS))
    return encode_white(whiten(rgb), output_format)


def whiten(rgb: Image.Image) -> Image.Image:
    """The RGB image on pure white to its edges (flooded in place; shrunk onto a margin when the product touches an
    edge)."""
    w, h = rgb.size
    # Flood the background from every edge pixel that is near white: off-white studio backgrounds, shadows at
    # the rim and gradients all become pure white, while the product (not connected to the edge) is untouched.
    for x, y in _edge_points(w, h):
        pixel = rgb.getpixel((x, y))
        assert isinstance(pixel, tuple)
        if pixel != WHITE and sum(255 - c for c in pixel[:3]) <= NEAR_WHITE * 3:
            ImageDraw.floodfill(rgb, (x, y), WHITE, thresh=NEAR_WHITE * 3)
    return rgb if border_white(rgb) else _on_margin(rgb)


def encode_white(rgb: Image.Image, output_format: str = "png") -> tuple[bytes, str]:
    """A whitened image's bytes in output_format, or PNG when the lossy format's border comes back anything but
    pure white. PNG keeps the pixels exactly, so its border is the image's (checked without decoding it again)."""
    for fmt in dict.fromkeys((output_format, "png")):
        out = io.BytesIO()
        save_as = {"jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}.get(fmt, "PNG")
        options: dict[str, object] = ({"quality": 95} if save_as == "JPEG" else {"lossless": True}
                                      if save_as == "WEBP" else {"compress_level": PNG_LEVEL})
        rgb.save(out, format=save_as, **options)
        encoded = out.getvalue()
        if border_white(rgb) if save_as == "PNG" else is_pure_white_border(encoded):
            return encoded, "png" if save_as == "PNG" else fmt
    raise AssertionError("a white-background image failed its own border check")  # PNG is lossless: a bug


def _edge_points(w: int, h: int, step: int = 8) -> list[tuple[int, int]]:
    points = {(x, 0) for x in range(0, w, step)} | {(x, h - 1) for x in range(0, w, step)}
    points |= {(0, y) for y in range(0, h, step)} | {(w - 1, y) for y in range(0, h, step)}
    points |= {(0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)}
    return sorted(points)


def _on_margin(rgb: Image.Image) -> Image.Image:
    """The image shrunk onto a pure white canvas of the same size, with a white margin all round."""
    w, h = rgb.size
    margin = max(1, round(min(w, h) * MARGIN))
    inner = rgb.resize((max(1, w - 2 * margin), max(1, h - 2 * margin)), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (w, h), WHITE)
    canvas.paste(inner, (margin, margin))
    return canvas
