#!/usr/bin/env python
"""Generate synthetic matting foregrounds (exact alpha) and optionally a test folder from them.

Writes ``<output-dir>/fg/`` and ``<output-dir>/alpha/`` (8-bit PNG, ``synthetic_<i>.png``), a
DIM-style folder usable as training foregrounds. With ``--testset-dir`` the same foregrounds are
also composited onto backgrounds (default: the bundled public-domain photographs) into a
Composition-1k-style folder (see ``tools/compose_testset.py``). Use different seeds for training
and test foregrounds.

Examples:
    python tools/make_synthetic.py --output-dir synthetic/train --num 200 --size 320 --seed 0
    python tools/make_synthetic.py --output-dir synthetic/test-fg --num 10 --size 320 --seed 1 \\
        --testset-dir synthetic/test --bgs-per-fg 2
"""

from __future__ import annotations

import argparse
import sys

from diffmatte.data.composition1k import DatasetError
from diffmatte.data.sources import bundled_backgrounds
from diffmatte.data.synthetic import write_foregrounds
from diffmatte.data.testset import compose_testset
from diffmatte.utils.image_io import ImageReadError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", required=True, help="destination of fg/ and alpha/")
    parser.add_argument("--num", type=int, required=True, help="number of foregrounds")
    parser.add_argument("--size", type=int, nargs="+", default=[512], help="side, or H W")
    parser.add_argument("--seed", type=int, default=0, help="base seed (item i uses [seed, i])")
    parser.add_argument("--supersample", type=int, default=4, help="anti-aliasing factor")
    parser.add_argument("--testset-dir", default=None, help="also compose a test folder here")
    parser.add_argument("--bgs-per-fg", type=int, default=2, help="composites per foreground")
    parser.add_argument(
        "--trimap-radius",
        type=int,
        nargs=2,
        default=(4, 10),
        metavar=("MIN", "MAX"),
        help="inclusive range of the test trimaps' dilation radius in pixels",
    )
    parser.add_argument(
        "--backgrounds", nargs="+", default=None, help="backgrounds (default: bundled ones)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if len(args.size) not in (1, 2):
        print("error: --size takes one value or two (H W)", file=sys.stderr)
        return 2
    size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    try:
        names = write_foregrounds(
            args.output_dir,
            args.num,
            size,
            seed=args.seed,
            supersample=args.supersample,
            progress=not args.quiet,
        )
        print(f"wrote {len(names)} foregrounds to {args.output_dir}")
        if args.testset_dir is not None:
            backgrounds = args.backgrounds or bundled_backgrounds()
            composites = compose_testset(
                args.output_dir,
                backgrounds,
                args.testset_dir,
                bgs_per_fg=args.bgs_per_fg,
                seed=args.seed,
                trimap_radius=tuple(args.trimap_radius),
                progress=not args.quiet,
            )
            print(f"wrote {len(composites)} composites to {args.testset_dir}")
    except (DatasetError, ImageReadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
