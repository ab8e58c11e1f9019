#!/usr/bin/env python
"""Build a Composition-1k-style test folder from foregrounds and backgrounds.

Each foreground is composited onto N backgrounds the way Composition-1k was built (Xu et al.,
CVPR 2017; see ``diffmatte.data.testset``), giving ``merged/``, ``alpha_copy/``, ``trimaps/``
(and with ``--write-fg-bg`` also ``fg/`` and ``bg/``), named ``<fg stem>_<k>.png``, plus
``composition.json``. The same inputs and seed give byte-identical files.

Examples:
    python tools/compose_testset.py \\
        --foregrounds "data/Combined_Dataset/Test_set/Adobe-licensed images" \\
        --backgrounds data/VOC2012/JPEGImages --output-dir data/my-composition-test --bgs-per-fg 20
    python tools/compose_testset.py --foregrounds synthetic/test --output-dir synthetic/testset \\
        --bgs-per-fg 2
"""

from __future__ import annotations

import argparse
import sys

from diffmatte.data.composition1k import DatasetError
from diffmatte.data.sources import bundled_backgrounds
from diffmatte.data.testset import BG_FITS, compose_testset
from diffmatte.utils.image_io import ImageReadError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--foregrounds",
        nargs="+",
        required=True,
        help="folder(s) with alpha/ and fg/ (foreground colours) or image/ (photographs, "
        "foreground estimated)",
    )
    parser.add_argument(
        "--backgrounds",
        nargs="+",
        default=None,
        help="background folder(s) or files (default: the bundled public-domain photographs)",
    )
    parser.add_argument("--output-dir", required=True, help="destination folder")
    parser.add_argument("--bgs-per-fg", type=int, default=20, help="composites per foreground")
    parser.add_argument("--seed", type=int, default=0, help="seed of bg order and trimap radii")
    parser.add_argument(
        "--trimap-radius",
        type=int,
        nargs=2,
        default=(10, 20),
        metavar=("MIN", "MAX"),
        help="inclusive range of the trimap dilation radius in pixels (one draw per foreground)",
    )
    parser.add_argument(
        "--bg-fit",
        choices=BG_FITS,
        default="dim",
        help="dim: enlarge only if smaller, top-left crop (Composition-1k); cover: scale to "
        "cover, centre crop",
    )
    parser.add_argument("--write-fg-bg", action="store_true", help="also write fg/ and bg/")
    parser.add_argument(
        "--fg-estimation",
        choices=("blur_fusion", "image"),
        default="blur_fusion",
        help="foreground colours for image/ folders",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    backgrounds = args.backgrounds if args.backgrounds is not None else bundled_backgrounds()
    try:
        names = compose_testset(
            args.foregrounds,
            backgrounds,
            args.output_dir,
            bgs_per_fg=args.bgs_per_fg,
            seed=args.seed,
            trimap_radius=tuple(args.trimap_radius),
            bg_fit=args.bg_fit,
            write_fg_bg=args.write_fg_bg,
            foreground_estimation=args.fg_estimation,
            progress=not args.quiet,
        )
    except (DatasetError, ImageReadError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(names)} composites to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
