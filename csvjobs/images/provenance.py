"""Provenance in the image file: IPTC's digital source type in XMP. Google Merchant Center asks that AI-made product
images carry trainedAlgorithmicMedia; a cut-out of the merchant's own photo is not AI-made and claims nothing.
pyexiv2 (exiv2) writes the XMP packet the way every reader expects, in PNG (an iTXt chunk) and JPEG alike."""

from __future__ import annotations

import pyexiv2

DIGITAL_SOURCE_TYPE = "Xmp.iptcExt.DigitalSourceType"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def mark_ai_generated(data: bytes) -> bytes:
    """The same image with XMP saying an AI model made it (its pixels are not changed)."""
    image = pyexiv2.ImageData(data)
    try:
        image.modify_xmp({DIGITAL_SOURCE_TYPE: TRAINED_ALGORITHMIC_MEDIA})
        return bytes(image.get_bytes())
    finally:
        image.close()


def digital_source_type(data: bytes) -> str | None:
    """The digital source type an image's XMP states, if any."""
    image = pyexiv2.ImageData(data)
    try:
        value = image.read_xmp().get(DIGITAL_SOURCE_TYPE)
        return str(value) if value else None
    finally:
        image.close()
