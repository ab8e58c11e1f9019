#!/usr/bin/env python
"""Make a trimap (0 background, 128 unknown, 255 foreground) or check one.

Examples:
    python tools/make_trimap.py mask rough_mask.png -o trimap.png --width 15
    python tools/make_trimap.py mask rough_mask.png -o trimap.png --width 4% --inside-width 2%
    python tools/make_trimap.py alpha gt_alpha.png -o trimap.png --radius 10
    python tools/make_trimap.py scribbles --foreground fg.png --background bg.png -o trimap.png
    python tools/make_trimap.py check trimap.png --image photo.png [-o snapped.png]

The functions are those of ``diffmatte.data.trimaps``. Exit status: 0 on success, 2 on any
problem (reported on one line); the output is written atomically.
"""

from __future__ import annotations

import argparse
import sys

from diffmatte.data import trimaps
from diffmatte.utils.image_io import ImageReadError, read_gray, read_image, write_png_atomic

EXIT_OK, EXIT_FAILED = 0, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)

    mask = modes.add_parser("mask", help="unknown band around a rough binary or soft mask")
    mask.add_argument("mask", help="mask file (bright = object)")
    mask.add_argument(
        "--width",
        default="10",
        help="band width outside the object: pixels (12) or %% of the "
        "object's size, sqrt(area) (5%%)",
    )
    mask.add_argument("--inside-width", default=None, help="band width inside (default: --width)")
    mask.add_argument(
        "--threshold", type=float, default=0.5, help="object threshold, fraction of full scale"
    )

    alpha = modes.add_parser("alpha", help="Composition-1k trimap of a ground-truth alpha")
    alpha.add_argument("alpha", help="alpha file")
    alpha.add_argument("--radius", type=int, default=10, help="band radius in pixels")

    scribbles = modes.add_parser("scribbles", help="from foreground / background strokes")
    scribbles.add_argument("--foreground", required=True, help="stroke file (nonzero = stroke)")
    scribbles.add_argument("--background", required=True, help="stroke file (nonzero = stroke)")
    scribbles.add_argument(
        "--grow", type=int, default=0, help="pixels around each stroke that take its label"
    )

    check = modes.add_parser("check", help="validate a trimap (demo snapping)")
    check.add_argument("trimap", help="trimap file")
    check.add_argument("--image", default=None, help="image the trimap belongs to (size check)")
    check.add_argument(
        "--allow-no-foreground", action="store_true", help="accept a trimap with no foreground"
    )

    for sub in (mask, alpha, scribbles):
        sub.add_argument("-o", "--output", required=True, help="trimap PNG to write")
    check.add_argument("-o", "--output", default=None, help="also write the snapped trimap")
    return parser


def make(args: argparse.Namespace):
    """The trimap the arguments ask for (uint8 0 / 128 / 255), and a line describing it."""
    if args.mode == "mask":
        inside = None if args.inside_width is None else trimaps.parse_width(args.inside_width)
        trimap = trimaps.trimap_from_mask(
            read_gray(args.mask), trimaps.parse_width(args.width), inside, args.threshold
        )
    elif args.mode == "alpha":
        trimap = trimaps.trimap_from_alpha(read_gray(args.alpha), args.radius)
    elif args.mode == "scribbles":
        trimap = trimaps.trimap_from_scribbles(
            read_gray(args.foreground), read_gray(args.background), args.grow
        )
    else:
        shape = None if args.image is None else read_image(args.image).shape
        summary = trimaps.check_trimap(
            read_gray(args.trimap), shape, require_foreground=not args.allow_no_foreground
        )
        note = f" (snapped from {summary.grey_levels} grey levels)" if summary.snapped else ""
        return summary.trimap, f"{args.trimap}: ok, {summary.describe()}{note}"
    summary = trimaps.check_trimap(trimap, require_foreground=False)
    return trimap, f"{args.output}: {summary.describe()}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    source = (
        getattr(args, "mask", None)
        or getattr(args, "alpha", None)
        or getattr(args, "trimap", None)
        or args.foreground
    )
    try:
        trimap, line = make(args)
        if args.output is not None:
            write_png_atomic(args.output, trimap)
    except ImageReadError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except trimaps.TrimapError as err:
        print(f"error: {source}: {err}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:
        print(f"error: {args.output}: cannot write ({err.strerror or err})", file=sys.stderr)
        return EXIT_FAILED
    print(line)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
