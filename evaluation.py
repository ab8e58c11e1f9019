"""Score predicted alpha mattes with the official Composition-1k errors (SAD, MSE, Grad, Conn).

The numbers equal those of the Deep Image Matting MATLAB evaluation (``evaluate.m``); see
:mod:`diffmatte.evaluation.metrics` and docs/evaluation.md.

    python evaluation.py --pred-dir PRED --label-dir ALPHA --trimap-dir TRIMAP
    python evaluation.py --pred-dir PRED --label-dir ALPHA --whole-image --per-image out.csv

Exit status: 0 on success, 2 on a usage or input error (one ``error:`` line), 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffmatte.evaluation.evaluator import (
    EvaluationError,
    FolderEvaluation,
    default_workers,
    evaluate_folders,
    save_results,
)
from diffmatte.utils.fileio import check_writable_file


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Mean SAD, MSE, Grad and Conn of predicted mattes, equal to the official "
        "Deep Image Matting evaluation (evaluate.m). Files are matched by name.",
    )
    parser.add_argument("--pred-dir", required=True, help="folder of predicted alpha PNGs")
    parser.add_argument("--label-dir", required=True, help="folder of ground-truth alpha PNGs")
    parser.add_argument(
        "--trimap-dir", help="folder of trimap PNGs (only pixels equal to 128 are evaluated)"
    )
    parser.add_argument(
        "--whole-image",
        action="store_true",
        help="evaluate every pixel, without trimaps (as for Distinctions-646)",
    )
    parser.add_argument(
        "--per-image", metavar="FILE", help="also write per-image errors to FILE (.csv or .json)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help=f"worker processes (default: all cores, here {default_workers()})",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.whole_image == (args.trimap_dir is not None):
        parser.error("give either --trimap-dir or --whole-image")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.per_image and not args.per_image.lower().endswith((".csv", ".json")):
        parser.error("--per-image must name a .csv or .json file")
    return args


def format_table(evaluation: FolderEvaluation) -> str:
    """The four means in the units papers print (MSE x 1e3), with a line saying what they are."""
    means = evaluation.evaluator.summary()
    region = "every pixel" if evaluation.whole_image else "unknown region, trimap == 128"
    header = f"{'SAD':>10} {'MSE(x1e-3)':>12} {'Grad':>10} {'Conn':>10}"
    row = (
        f"{means['SAD']:>10.3f} {means['MSE'] * 1e3:>12.3f} "
        f"{means['Grad']:>10.3f} {means['Conn']:>10.3f}"
    )
    return (
        f"mean over {evaluation.evaluator.num_images} images ({region}); "
        "SAD, Grad, Conn / 1000 as in evaluate.m\n"
        f"{header}\n{row}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.per_image:
            check_writable_file(args.per_image)
        evaluation = evaluate_folders(
            args.pred_dir,
            args.label_dir,
            None if args.whole_image else args.trimap_dir,
            workers=args.workers,
            progress=not args.no_progress,
        )
        for note in evaluation.notes():
            print(f"warning: {note}", file=sys.stderr)
        print(format_table(evaluation))
        if args.per_image:
            path = save_results(args.per_image, evaluation)
            print(f"per-image errors written to {path}")
    except (EvaluationError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
