"""The shared command-line arguments: the original flag names and their aliases."""

import argparse

import pytest
import torch

from diffmatte.engine.cli import (
    add_checkpoint_argument,
    add_config_argument,
    add_overrides_argument,
    add_sampling_arguments,
    apply_heap_reuse,
)
from diffmatte.inference.functional import DEFAULT_SEED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_argument(parser, default="configs/ViTS.py")
    add_checkpoint_argument(parser)
    add_sampling_arguments(parser, "ddpm1", strategy_help="s", seed_help="n")
    add_overrides_argument(parser)
    return parser


@pytest.mark.parametrize(
    "argv",
    [
        ["--config-dir", "configs/ViTB.py", "--checkpoint-dir", "w.pth"],
        ["--config-file", "configs/ViTB.py", "--checkpoint", "w.pth"],
    ],
)
def test_original_names_and_aliases_fill_the_same_fields(argv):
    args = _parser().parse_args([*argv, "train.seed=3", "model.sampler.steps=2"])
    assert (args.config_file, args.checkpoint) == ("configs/ViTB.py", "w.pth")
    assert args.opts == ["train.seed=3", "model.sampler.steps=2"]
    assert (args.sample_strategy, args.device, args.seed) == ("ddpm1", "auto", DEFAULT_SEED)
    assert (args.precision, args.compile, args.heap_reuse) == ("fp32", False, False)


def test_heap_reuse_only_when_asked_and_only_on_the_cpu():
    args = _parser().parse_args(["--checkpoint", "w.pth"])
    assert apply_heap_reuse(args, torch.device("cpu")) is False
    args = _parser().parse_args(["--checkpoint", "w.pth", "--heap-reuse"])
    assert apply_heap_reuse(args, torch.device("cuda")) is False


def test_checkpoint_is_required_and_precision_is_checked(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args([])
    assert "--checkpoint-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parser().parse_args(["--checkpoint", "w.pth", "--precision", "fp8"])
    assert "invalid choice: 'fp8'" in capsys.readouterr().err
