"""The packshot from the product's own pixels, the channels' rules, provenance and the fidelity check, on photos
made here: plain grey, white and gradient studio backgrounds, cluttered ones, products of known colours."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from csvjobs.images import fidelity
from csvjobs.images.channels import PACKSHOT_FILL, check_image, product_fill, resize_to, target_side
from csvjobs.images.cutout import cut_out, place_on_white, reframe_on_white
from csvjobs.images.packshot import finish_image
from csvjobs.images.provenance import TRAINED_ALGORITHMIC_MEDIA, digital_source_type, mark_ai_generated
from csvjobs.images.white_background import flatten_onto_white, is_pure_white_border, make_white
from csvjobs.models import Channel, ImageStyle, parse_channels

RED = (180, 40, 40)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def studio(background=(200, 200, 200), product=RED, side: int = 800, gradient: bool = False,
           box=(0.3, 0.25, 0.7, 0.8)) -> Image.Image:
    if gradient:
        rows = np.linspace(0, 30, side, dtype=np.float32)[:, None, None]
        image = Image.fromarray(np.clip(np.array(background, np.float32) - rows, 0, 255)
                                .repeat(side, axis=1).astype(np.uint8))
    else:
        image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = (round(v * side) for v in box)
    draw.ellipse((x0, y0, x1, y1), fill=product)
    # A white label inside the product: not connected to the border, so it stays product.
    draw.rectangle((x0 + (x1 - x0) // 3, y0 + (y1 - y0) // 3, x0 + 2 * (x1 - x0) // 3, y0 + (y1 - y0) // 2),
                   fill=(250, 250, 250))
    return image


def cluttered(side: int = 800) -> Image.Image:
    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 255, (side // 40, side // 40, 3), dtype=np.uint8)).resize(
        (side, side), Image.Resampling.NEAREST)
    ImageDraw.Draw(image).ellipse((260, 200, 540, 640), fill=RED)
    return image


@pytest.mark.parametrize("background", [(200, 200, 200), (252, 252, 250), (40, 40, 45)])
def test_a_plain_background_is_cut_away_and_the_product_kept_whole(background) -> None:
    cutout, measure = cut_out(encode(studio(background)))
    assert cutout is not None and measure.separable, measure.reason
    assert measure.border_uniformity > 0.99 and 0.15 < measure.product_share < 0.2
    # The product's own pixels, label included, and nothing of the background.
    alpha = np.asarray(cutout.image.getchannel("A"))
    rgb = np.asarray(cutout.image.convert("RGB"))
    solid = alpha == 255
    colours = {tuple(int(v) for v in c) for c in rgb[solid].reshape(-1, 3)[::50]}
    assert RED in colours and (250, 250, 250) in colours
    assert tuple(background) not in colours


def test_a_gradient_studio_sweep_is_still_plain() -> None:
    _cutout, measure = cut_out(encode(studio(gradient=True)))
    assert measure.separable, measure.reason


def test_a_cluttered_photo_is_not_cut_out_and_says_why() -> None:
    cutout, measure = cut_out(encode(cluttered()))
    assert cutout is None and not measure.separable
    assert "not plain" in measure.reason and measure.border_uniformity < 0.5


@pytest.mark.parametrize(("box", "reason"), [((0.45, 0.5, 0.55, 1.2), "touches the photo's edge"),
                                             ((0.2, 0.3, 0.8, 1.2), "not plain")])
def test_a_product_cut_by_the_frame_is_left_to_the_model(box, reason: str) -> None:
    cutout, measure = cut_out(encode(studio(box=box)))
    assert cutout is None and reason in measure.reason


def test_the_packshot_meets_amazons_main_image_rules() -> None:
    cutout, _ = cut_out(encode(studio()))
    assert cutout is not None
    side = target_side([Channel.AMAZON, Channel.GOOGLE], 1024)
    assert side == 1600
    for shadow in (False, True):
        canvas = place_on_white(cutout.image, side, fill=PACKSHOT_FILL, shadow=shadow)
        data = encode(canvas)
        assert canvas.size == (1600, 1600) and is_pure_white_border(data)
        assert 0.85 <= product_fill(canvas) < 0.97
        checks = check_image(data, ImageStyle.SINGLE_WHITE_BACKGROUND, [Channel.AMAZON, Channel.GOOGLE])
        assert {name: c.passed for name, c in checks.items()} == {"amazon": True, "google": True}, checks


def test_the_channel_checks_name_what_fails() -> None:
    small = Image.new("RGB", (400, 300), (255, 255, 255))
    ImageDraw.Draw(small).rectangle((150, 100, 250, 200), fill=RED)
    checks = check_image(encode(small), ImageStyle.SINGLE_WHITE_BACKGROUND, list(Channel))
    assert "long side 400 px < 1000" in checks["amazon"].failed
    assert any("product fills" in f for f in checks["amazon"].failed)
    assert checks["google"].failed == ["short side 300 px < 500"]
    assert checks["shopify"].passed and not checks["ebay"].passed and not checks["etsy"].passed
    grey = Image.new("RGB", (2000, 2000), (250, 250, 250))
    verdict = check_image(encode(grey, "JPEG"), ImageStyle.SINGLE_WHITE_BACKGROUND, [Channel.AMAZON])["amazon"]
    assert "background not pure white to the edges" in verdict.failed
    # The lifestyle image is not held to the main image's rules.
    assert check_image(encode(grey, "JPEG"), ImageStyle.LIFESTYLE_EMOTIONAL, [Channel.AMAZON])["amazon"].passed


def test_channel_sizes_stay_within_every_channels_maximum() -> None:
    assert target_side([], 1024) == 1024
    assert target_side([Channel.SHOPIFY], 1024) == 2048
    assert target_side([Channel.ETSY, Channel.EBAY], 512) == 2000
    assert parse_channels(["Amazon,google", "amazon"]) == [Channel.AMAZON, Channel.GOOGLE]
    with pytest.raises(ValueError, match="unknown channel 'walmart'"):
        parse_channels(["walmart"])


def test_ai_made_images_say_so_in_xmp_and_keep_their_pixels() -> None:
    image = studio(side=64)
    for fmt in ("PNG", "JPEG"):
        data = encode(image, fmt)
        marked = mark_ai_generated(data)
        assert digital_source_type(marked) == TRAINED_ALGORITHMIC_MEDIA
        assert digital_source_type(data) is None
        assert Image.open(io.BytesIO(marked)).convert("RGB").tobytes() == Image.open(io.BytesIO(data)).convert(
            "RGB").tobytes()


def test_the_fidelity_check_tells_a_kept_product_from_a_lost_one() -> None:
    cutout, _ = cut_out(encode(studio()))
    assert cutout is not None
    product = fidelity.product_pixels(cutout.analysis_rgb, cutout.mask)
    scene = Image.new("RGB", (1024, 1024), (60, 150, 70))
    small = cutout.image.resize((180, 240))
    scene.paste(small, (400, 380), small.getchannel("A"))
    kept = fidelity.check(product, encode(scene))
    lost = fidelity.check(product, encode(Image.new("RGB", (1024, 1024), (60, 150, 70))))
    recoloured = Image.new("RGB", (1024, 1024), (60, 150, 70))
    ImageDraw.Draw(recoloured).ellipse((400, 380, 580, 620), fill=(40, 60, 180))
    assert kept.passed and kept.score > 0.9
    assert not lost.passed and lost.score < 0.1
    assert not fidelity.check(product, encode(recoloured)).passed
    # A product with no colour of its own cannot be judged by colour: it passes with a note.
    grey_cut, _ = cut_out(encode(studio(product=(90, 90, 90))))
    assert grey_cut is not None
    verdict = fidelity.check(fidelity.product_pixels(grey_cut.analysis_rgb, grey_cut.mask), encode(scene))
    assert verdict.passed and "no distinctive colour" in verdict.note


def _bytes_at_every_step(data: bytes, style: ImageStyle, channels: tuple[str, ...], ai_made: bool) -> np.ndarray:
    """finish_image's pixels as they were made before it decoded once: each step took the previous step's bytes."""
    wanted = parse_channels(list(channels))
    rgb = flatten_onto_white(Image.open(io.BytesIO(data)))
    side = target_side(wanted, max(rgb.size))
    white = style is ImageStyle.SINGLE_WHITE_BACKGROUND
    if white and ai_made:
        framed, _measure = reframe_on_white(encode(rgb), side, fill=PACKSHOT_FILL)
        rgb = framed if framed is not None else rgb
    if side != max(rgb.size):
        rgb = resize_to(rgb, side)
    out = make_white(encode(rgb))[0] if white else encode(rgb)
    return np.asarray(Image.open(io.BytesIO(out)).convert("RGB"))


@pytest.mark.parametrize("style", list(ImageStyle))
@pytest.mark.parametrize("channels", [(), ("amazon",), ("google",)])
@pytest.mark.parametrize("scene", ["off_white", "edge", "transparent", "cluttered"])
def test_finishing_decodes_once_and_gives_the_same_pixels(style: ImageStyle, channels: tuple[str, ...],
                                                          scene: str) -> None:
    image = {"off_white": studio((246, 245, 242), side=300),
             "edge": studio((250, 250, 250), side=300, box=(0.0, 0.2, 0.6, 0.9)),
             "transparent": Image.new("RGBA", (300, 200), (0, 0, 0, 0)),
             "cluttered": cluttered(side=300)}[scene]
    if scene == "transparent":
        ImageDraw.Draw(image).ellipse((60, 40, 240, 160), fill=(*RED, 255))
    data = encode(image)
    finished = finish_image(data, style, "png", channels, ai_made=True)
    stored = Image.open(io.BytesIO(finished.data))
    assert np.array_equal(np.asarray(stored.convert("RGB")), _bytes_at_every_step(data, style, channels, True))
    # The checks made on the pixels in memory are the checks of the stored bytes.
    assert finished.checks == {name: verdict.model_dump() for name, verdict in
                               check_image(finished.data, style, parse_channels(list(channels))).items()}
    assert digital_source_type(finished.data) == TRAINED_ALGORITHMIC_MEDIA
