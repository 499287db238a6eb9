"""The packshot's cost per image: cutting the product out of a 2048 px photo and placing it on white at 2048 px,
on one core, against a baseline measured in the same run (decoding the photo and encoding a 2048 px PNG, which
any stored image pays anyway).

    python bench/packshot.py [--rounds 5] [--side 2048]

Prints seconds per image for the cut-out (with and without the shadow) and the baseline, and their ratios, as
medians over rounds. Target: well under a second per image at 2048 px on one core.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time

import cv2
import numpy as np
from PIL import Image, ImageDraw

from csvjobs.images.channels import PACKSHOT_FILL
from csvjobs.images.cutout import cut_out, place_on_white


def photo(side: int) -> bytes:
    """A product on a grey studio sweep with sensor noise, as a JPEG: the usual catalogue photo."""
    rng = np.random.default_rng(1)
    sweep = np.linspace(205, 185, side, dtype=np.float32)[:, None, None].repeat(side, axis=1).repeat(3, axis=2)
    image = Image.fromarray(np.clip(sweep + rng.normal(0, 2.0, sweep.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((side * 0.3, side * 0.2, side * 0.7, side * 0.85), fill=(170, 45, 40))
    draw.rectangle((side * 0.42, side * 0.4, side * 0.58, side * 0.55), fill=(245, 245, 240))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=92)
    return out.getvalue()


def baseline(data: bytes, side: int) -> None:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
    image.save(io.BytesIO(), format="PNG")


def packshot(data: bytes, side: int, shadow: bool) -> None:
    cutout, measure = cut_out(data)
    assert cutout is not None, measure.reason
    place_on_white(cutout.image, side, fill=PACKSHOT_FILL, shadow=shadow).save(io.BytesIO(), format="PNG")


def timed(run, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--side", type=int, default=2048)
    args = parser.parse_args()
    cv2.setNumThreads(1)  # one core, as the target says
    os.environ["OMP_NUM_THREADS"] = "1"
    data = photo(args.side)
    base = timed(lambda: baseline(data, args.side), args.rounds)
    plain = timed(lambda: packshot(data, args.side, False), args.rounds)
    shadow = timed(lambda: packshot(data, args.side, True), args.rounds)
    print(f"{args.side} px photo, median of {args.rounds} rounds, one core")
    print(f"  baseline (decode + {args.side} px PNG encode): {base:.3f} s")
    print(f"  cut-out packshot:                     {plain:.3f} s  ({plain / base:.2f}x baseline)")
    print(f"  cut-out packshot with shadow:         {shadow:.3f} s  ({shadow / base:.2f}x baseline)")
    print(f"  target: well under 1 s per image -> {'met' if max(plain, shadow) < 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
