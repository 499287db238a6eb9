"""Image finishing (what every stored image goes through: flattened, sized for the channels, the white image made
pure white and reframed, provenance written, the channels' checks), against decoding and encoding the same
2048 px image in the same run; and the peak memory of a process finishing 16 images at once, with csvjobs'
bounded pixel work against one thread per image.

    python bench/finishing.py [--images 16] [--side 2048]

Prints seconds per image and the ratio to the decode+encode baseline, then each mode's peak RSS in MB.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import resource
import statistics
import subprocess
import sys
import time

from PIL import Image, ImageDraw

from csvjobs.images.packshot import finish_image
from csvjobs.images.pixel_work import PIXEL_WORK_SLOTS, run_pixel_work
from csvjobs.models import ImageStyle


def photo_like(side: int, seed: int) -> bytes:
    """A product on an off-white studio background, with some texture: what an image model returns."""
    image = Image.new("RGB", (side, side), (246, 245, 242))
    draw = ImageDraw.Draw(image)
    for n in range(40):
        x, y = (seed * 97 + n * 131) % (side // 2) + side // 4, (seed * 53 + n * 71) % (side // 2) + side // 4
        draw.ellipse((x, y, x + side // 6, y + side // 8), fill=((n * 37) % 200, 80 + n % 90, (seed * 11) % 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def baseline(data: bytes) -> None:
    image = Image.open(io.BytesIO(data))
    image.load()
    image.save(io.BytesIO(), "PNG")


def finish(data: bytes) -> None:
    finish_image(data, ImageStyle.SINGLE_WHITE_BACKGROUND, "png", ("amazon", "google"), ai_made=True)


async def many(images: list[bytes], bounded: bool) -> None:
    if bounded:
        await asyncio.gather(*(run_pixel_work(finish, d) for d in images))
    else:
        await asyncio.gather(*(asyncio.to_thread(finish, d) for d in images))


def child(mode: str, count: int, side: int) -> None:
    images = [photo_like(side, n) for n in range(count)]
    asyncio.run(many(images, bounded=mode == "bounded"))
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def finishing_against_baseline(side: int, rounds: int = 3) -> tuple[float, float]:
    """Median seconds to finish a white image of side px, and to decode and encode it, interleaved round by round."""
    data = photo_like(side, 1)
    timings: dict[str, list[float]] = {"decode+encode": [], "finish": []}
    for _ in range(rounds):
        for name, func in (("decode+encode", baseline), ("finish", finish)):
            started = time.perf_counter()
            func(data)
            timings[name].append(time.perf_counter() - started)
    return statistics.median(timings["finish"]), statistics.median(timings["decode+encode"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--child", choices=["bounded", "unbounded"])
    args = parser.parse_args()
    if args.child:
        child(args.child, args.images, args.side)
        return
    done, base = finishing_against_baseline(args.side)
    print(f"{args.side} px: decode+encode {base:.2f} s, finishing {done:.2f} s a white image (x{done / base:.1f})")
    for mode in ("unbounded", "bounded"):
        out = subprocess.run([sys.executable, __file__, "--child", mode, "--images", str(args.images), "--side",
                              str(args.side)], capture_output=True, text=True, check=True)
        slots = f" ({PIXEL_WORK_SLOTS} at a time)" if mode == "bounded" else " (one thread each)"
        print(f"{args.images} images at once, {mode}{slots}: peak {float(out.stdout.strip()):.0f} MB")


if __name__ == "__main__":
    main()
