#!/usr/bin/env python
"""Train (or evaluate) a DiffMatte model from a LazyConfig file.

The flow of the original ``main.py`` (lazyconfig_train_net, docs/original_release.md#trainer):
load the config, apply ``key=value`` overrides, build model, optimizer, LR schedule and data,
optionally wrap in DistributedDataParallel, register hooks and train.

Examples:
    python tools/train_net.py --config-file configs/ViTS.py train.init_checkpoint=vits_init.pth
    torchrun --nproc_per_node 2 tools/train_net.py --config-file configs/ViTS.py
    python tools/train_net.py --config-file configs/ViTS.py --num-gpus 2
    python tools/train_net.py --config-file configs/ViTS.py --resume
    python tools/train_net.py --config-file configs/ViTS.py --eval-only \\
        train.init_checkpoint=output_of_train/ViTS/model_final.pth
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffmatte.config import ConfigError, LazyConfig, instantiate
from diffmatte.data.composition1k import DatasetError
from diffmatte.diffusion.samplers import Sampler
from diffmatte.engine.checkpoint import CheckpointError, load_checkpoint
from diffmatte.engine.hooks import (
    EvalHook,
    IterationTimer,
    PeriodicCheckpointer,
    PeriodicWriter,
    evaluate_dataset,
)
from diffmatte.engine.optim import LRMultiplier
from diffmatte.engine.trainer import Trainer
from diffmatte.engine.training_checkpoint import TrainingCheckpointer, TrainingCheckpointError
from diffmatte.evaluation.evaluator import EvaluationError, format_means
from diffmatte.inference.functional import resolve_device
from diffmatte.utils.distributed import (
    destroy_process_group,
    get_rank,
    get_world_size,
    init_process_group,
    is_main_process,
)
from diffmatte.utils.image_io import ImageReadError
from diffmatte.utils.logger import setup_logger
from diffmatte.utils.rng import seed_everything

logger = logging.getLogger("diffmatte.train_net")

# Errors that mean "bad input": reported as one line, exit status 2.
USER_ERRORS = (
    ConfigError,
    CheckpointError,
    TrainingCheckpointError,
    DatasetError,
    EvaluationError,
    ImageReadError,
    FileNotFoundError,
    ValueError,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments (detectron2's ``default_argument_parser`` subset)."""
    parser = argparse.ArgumentParser(
        description="Train or evaluate DiffMatte from a LazyConfig file.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Trailing key=value pairs override config entries, e.g. train.max_iter=1000 "
        "dataloader.train.batch_size=8 optimizer.lr=1e-4 train.device=cpu",
    )
    parser.add_argument("--config-file", required=True, help="LazyConfig .py (or saved .yaml)")
    parser.add_argument(
        "--num-gpus",
        type=int,
        default=1,
        help="processes to start on this machine (ignored under torchrun, which starts them)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in train.output_dir (model, optimizer, "
        "scheduler, scaler, iteration, RNG); without one, start from train.init_checkpoint",
    )
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="only evaluate train.init_checkpoint (or, with --resume, the newest checkpoint) "
        "on dataloader.test",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="key=value config overrides")
    args = parser.parse_args(argv)
    if args.num_gpus < 1:
        parser.error("--num-gpus must be at least 1")
    return args


def setup(args: argparse.Namespace) -> Any:
    """Load the config, apply overrides, prepare the output folder, logging and seeds."""
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    output_dir = Path(cfg.train.output_dir)
    rank = get_rank()
    setup_logger(output_dir, rank=rank)
    logger.info("rank %d of %d, config %s", rank, get_world_size(), args.config_file)
    if args.opts:
        logger.info("overrides: %s", " ".join(args.opts))
    if is_main_process() and not args.eval_only:
        LazyConfig.save(cfg, output_dir / "config.yaml")
        logger.info("full config saved to %s", output_dir / "config.yaml")
    # detectron2's default_setup: seed + rank, so ranks draw different noise.
    seed_everything(int(cfg.train.seed) + rank)
    return cfg


def _train_option(cfg: Any, key: str, default: Any) -> Any:
    return cfg.train[key] if key in cfg.train else default


def _amp_mode(cfg: Any) -> str:
    amp = _train_option(cfg, "amp", {})
    if not amp.get("enabled", False):
        return "off"
    return str(amp.get("precision", "fp16"))


def build_validation(cfg: Any, model: nn.Module) -> Any:
    """The validation function of the config (``dataloader.test``), or None when unusable."""
    if "test" not in cfg.dataloader or cfg.dataloader.test is None:
        return None
    try:
        dataset = instantiate(cfg.dataloader.test)
    except DatasetError as exc:
        logger.warning("validation disabled: %s", exc)
        return None
    strategy = _train_option(cfg, "eval_sampler", None)
    sampler = Sampler.from_strategy(strategy) if strategy else None
    seed = int(cfg.train.seed)

    def validate() -> dict[str, float]:
        return evaluate_dataset(model, dataset, sampler=sampler, seed=seed)

    return validate


def load_init_checkpoint(model: nn.Module, path: str) -> None:
    """Non-strict load of ``train.init_checkpoint`` (e.g. a converted pretrained backbone)."""
    report = load_checkpoint(model, path, strict=False)
    if report.ok:
        logger.info("loaded all weights from %s", path)
        return
    missing_decoder = [k for k in report.missing if k.startswith("decoder.")]
    logger.info(
        "initialised from %s: %d keys missing (%d of them decoder keys, trained from scratch), "
        "%d unexpected, %d mis-shaped",
        path,
        len(report.missing),
        len(missing_decoder),
        len(report.unexpected),
        len(report.mismatched),
    )


def do_eval(cfg: Any, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    """Evaluate a checkpoint on ``dataloader.test`` and print the metric table."""
    model = instantiate(cfg.model).to(device)
    path: Path | str | None = None
    if args.resume:
        path = TrainingCheckpointer(cfg.train.output_dir).last_checkpoint()
    path = path or cfg.train.init_checkpoint
    if not path:
        raise ValueError("--eval-only needs train.init_checkpoint=<weights> (or --resume)")
    load_checkpoint(model, path)
    validate = build_validation(cfg, model)
    if validate is None:
        raise DatasetError("--eval-only: dataloader.test is not a usable test folder")
    model.eval()
    results = validate() if is_main_process() else {}
    if results:
        print(format_means({str(path): results}, name_width=40))
    return results


def do_train(cfg: Any, args: argparse.Namespace, device: torch.device) -> Trainer:
    """Build everything from the config and run the training loop."""
    output_dir = Path(cfg.train.output_dir)
    max_iter = int(cfg.train.max_iter)
    model = instantiate(cfg.model).to(device)
    logger.info(
        "model: %s, %.2fM parameters",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    ckpt_cfg = _train_option(cfg, "checkpointer", {})
    checkpointer = TrainingCheckpointer(output_dir, ckpt_cfg.get("max_to_keep"))
    resume_path = checkpointer.last_checkpoint() if args.resume else None
    resume_state = None
    if resume_path is not None:
        load_checkpoint(model, resume_path)
        resume_state = TrainingCheckpointer.load(resume_path)
        logger.info("resuming from %s (iteration %d)", resume_path, resume_state["iteration"])
    elif cfg.train.init_checkpoint:
        load_init_checkpoint(model, cfg.train.init_checkpoint)
    elif args.resume:
        logger.info("no checkpoint in %s: starting from scratch", output_dir)

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    scheduler = LRMultiplier(optimizer, instantiate(cfg.lr_multiplier), max_iter)
    start_iter = int(resume_state["iteration"]) if resume_state is not None else 0
    cfg.dataloader.train.start_iter = start_iter
    data_loader = instantiate(cfg.dataloader.train)

    train_model: nn.Module = model
    if get_world_size() > 1:
        ddp_cfg = dict(_train_option(cfg, "ddp", {}))
        fp16_compression = ddp_cfg.pop("fp16_compression", False)
        ddp_options = {"find_unused_parameters": ddp_cfg.get("find_unused_parameters", False)}
        # Buffers (BatchNorm statistics) are broadcast from rank 0 before every forward, as in
        # the original; newer torch names this option forward_sync_buffers.
        sync_key = "broadcast_buffers"
        if (
            "forward_sync_buffers"
            in inspect.signature(nn.parallel.DistributedDataParallel).parameters
        ):
            sync_key = "forward_sync_buffers"
        ddp_options[sync_key] = ddp_cfg.get("broadcast_buffers", True)
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, **ddp_options
        )
        if fp16_compression and device.type == "cuda":
            from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

            train_model.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)

    trainer = Trainer(
        train_model,
        data_loader,
        optimizer,
        scheduler,
        amp=_amp_mode(cfg),
        grad_clip=_train_option(cfg, "grad_clip", None),
        self_align_stage1_step=_train_option(cfg, "self_align_stage1_step", None),
        self_align_stage2_step=_train_option(cfg, "self_align_stage2_step", None),
        image_log_period=int(_train_option(cfg, "image_log_period", 0) or 0),
    )
    validate = build_validation(cfg, model) if _train_option(cfg, "eval_period", 0) else None
    trainer.register_hooks(
        [
            IterationTimer(),
            EvalHook(int(cfg.train.eval_period), validate, output_dir) if validate else None,
            PeriodicCheckpointer(checkpointer, int(ckpt_cfg.get("period", max_iter))),
            PeriodicWriter(output_dir, int(_train_option(cfg, "log_period", 20)))
            if is_main_process()
            else None,
        ]
    )
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
    trainer.train(start_iter, max_iter)
    return trainer


def main(args: argparse.Namespace) -> int:
    """Run in one process (rank from the environment)."""
    cfg = setup(args)
    device = resolve_device(_train_option(cfg, "device", "auto"))
    distributed = init_process_group(device.type)
    try:
        if args.eval_only:
            do_eval(cfg, args, device)
        else:
            do_train(cfg, args, device)
    finally:
        if distributed:
            destroy_process_group()
    return 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawned(local_rank: int, args: argparse.Namespace, world_size: int, port: int) -> None:
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    sys.exit(_run(args))


def _run(args: argparse.Namespace) -> int:
    try:
        return main(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def cli(argv: list[str] | None = None) -> int:
    """Entry point: parse arguments, start processes if asked, run."""
    args = parse_args(argv)
    under_torchrun = "WORLD_SIZE" in os.environ
    if args.num_gpus > 1 and not under_torchrun:
        try:
            torch.multiprocessing.spawn(
                _spawned, args=(args, args.num_gpus, _free_port()), nprocs=args.num_gpus
            )
        except torch.multiprocessing.ProcessExitedException as exc:
            # The failing process has printed its own one-line error.
            return exc.exit_code or 1
        return 0
    return _run(args)


if __name__ == "__main__":
    sys.exit(cli())
