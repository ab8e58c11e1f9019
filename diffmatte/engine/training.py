"""A training or evaluation run built from a config: checks first, then outputs, then the loop.

The flow of detectron2's ``tools/lazyconfig_train_net.py`` (Apache-2.0), as the original
DiffMatte ``main.py`` used it (see ``docs/training.md``), in the library so that the command
line only parses arguments: load the config and apply overrides (:func:`load_config`), build
the model, the optimizer, the LR schedule and the data, join the process group, wrap the model
in DistributedDataParallel, register hooks and train (:func:`train`), or evaluate a checkpoint
(:func:`evaluate`).

Every check that can fail on the user's input runs before anything is written: the option
values, the output folder (writable, or creatable), the checkpoint to resume from or to start
from, the data. Only then is the output folder created and ``config.yaml`` and ``log.txt``
written, so a run that fails a check leaves nothing behind.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from diffmatte.config import ConfigError, LazyConfig, instantiate
from diffmatte.data.composition1k import DatasetError
from diffmatte.engine.checkpoint import CheckpointError, load_checkpoint
from diffmatte.engine.hooks import (
    EvalHook,
    IterationTimer,
    PeriodicCheckpointer,
    PeriodicWriter,
    evaluate_dataset,
)
from diffmatte.engine.launch import set_cpu_threads, wrap_ddp
from diffmatte.engine.optim import LRMultiplier
from diffmatte.engine.trainer import Trainer
from diffmatte.engine.training_checkpoint import TrainingCheckpointer, TrainingCheckpointError
from diffmatte.evaluation.evaluator import EvaluationError
from diffmatte.inference.functional import resolve_device
from diffmatte.utils.cpu import bf16_support
from diffmatte.utils.distributed import (
    destroy_process_group,
    get_rank,
    get_world_size,
    init_process_group,
    is_main_process,
)
from diffmatte.utils.fileio import atomic_write_text, remove_temporaries
from diffmatte.utils.image_io import ImageReadError
from diffmatte.utils.logger import setup_logger
from diffmatte.utils.rng import seed_everything

__all__ = [
    "INPUT_ERRORS",
    "check_output_dir",
    "check_train_options",
    "evaluate",
    "load_config",
    "run",
    "train",
]

logger = logging.getLogger(__name__)

# Errors that mean "bad input": the command line reports them in one line, exit status 2.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    CheckpointError,
    TrainingCheckpointError,
    DatasetError,
    EvaluationError,
    ImageReadError,
    FileNotFoundError,
    ValueError,
)

# train.* options that are whole numbers: (key, smallest value, None allowed).
_INTEGER_OPTIONS = (
    ("max_iter", 0, False),
    ("eval_period", 0, False),
    ("log_period", 1, False),
    ("image_log_period", 0, True),
    ("seed", 0, False),
    ("checkpointer.period", 1, False),
    ("checkpointer.max_to_keep", 1, True),
    ("self_align_stage1_step", 0, True),
    ("self_align_stage2_step", 0, True),
)


_MISSING = object()


def _option(cfg: DictConfig, key: str, default: Any = None) -> Any:
    """``cfg.train.<key>`` (dotted), or ``default`` when the config does not have it."""
    node: Any = cfg.train
    for part in key.split("."):
        if not isinstance(node, (DictConfig, dict)) or part not in node:
            return default
        node = node[part]
    return node


def check_train_options(cfg: DictConfig) -> None:
    """Check the ``train.*`` values a run uses; the message names the key.

    Raises:
        ConfigError: a value of the wrong type or out of range, e.g. ``train.max_iter=abc``.
    """
    if "train" not in cfg or not isinstance(cfg.train, DictConfig):
        raise ConfigError("the config has no 'train' section")
    for key, smallest, none_ok in _INTEGER_OPTIONS:
        value = _option(cfg, key, _MISSING)
        if value is _MISSING:
            if key in ("max_iter", "seed"):
                raise ConfigError(f"train.{key}: missing from the config")
            continue  # An older saved config without it: the default applies.
        if value is None and none_ok:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ConfigError(f"train.{key}: expected an integer >= {smallest}, got {value!r}")
    grad_clip = _option(cfg, "grad_clip")
    if grad_clip is not None and (
        isinstance(grad_clip, bool) or not isinstance(grad_clip, numbers.Real) or grad_clip <= 0
    ):
        raise ConfigError(f"train.grad_clip: expected a number > 0 or None, got {grad_clip!r}")
    for key in ("output_dir", "device"):
        value = _option(cfg, key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"train.{key}: expected a non-empty string, got {value!r}")
    for key in ("init_checkpoint", "resume_from"):
        value = _option(cfg, key, "")
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"train.{key}: expected a file path, got {value!r}")


def load_config(config_file: str | os.PathLike, overrides: Sequence[str] = ()) -> DictConfig:
    """Load a config, apply ``key=value`` overrides and check the ``train.*`` options.

    Raises:
        ConfigError: unreadable config, bad override or bad ``train.*`` value.
    """
    cfg = LazyConfig.apply_overrides(LazyConfig.load(config_file), list(overrides))
    check_train_options(cfg)
    return cfg


def check_output_dir(path: str | os.PathLike) -> None:
    """Check that ``path`` is a writable folder or can be created, without creating anything.

    Raises:
        ConfigError: the path is a file, lies under a file, or the folder (or the nearest
            existing folder above it) is not writable.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"train.output_dir: {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"train.output_dir: {path}: the folder is not writable")
        return
    ancestor = next((p for p in path.absolute().parents if p.exists()), None)
    if ancestor is None or not ancestor.is_dir():
        raise ConfigError(f"train.output_dir: cannot create {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"train.output_dir: cannot create {path}: {ancestor} is not writable")


def _amp_mode(cfg: DictConfig) -> str:
    amp = _option(cfg, "amp", {})
    if not amp.get("enabled", False):
        return "off"
    return str(amp.get("precision", "fp16"))


def _build_validation(cfg: DictConfig, model: nn.Module) -> Callable[[], dict[str, float]] | None:
    """The validation function of the config (``dataloader.test``), or None when unusable."""
    if "test" not in cfg.dataloader or cfg.dataloader.test is None:
        return None
    try:
        dataset = instantiate(cfg.dataloader.test)
    except DatasetError as exc:
        logger.warning("validation disabled: %s", exc)
        return None
    eval_sampler = _option(cfg, "eval_sampler")
    sampler = instantiate(eval_sampler) if eval_sampler is not None else None
    seed = int(cfg.train.seed)

    def validate() -> dict[str, float]:
        return evaluate_dataset(model, dataset, sampler=sampler, seed=seed)

    return validate


def _read_training_state(path: Path) -> dict[str, Any]:
    """A training checkpoint that a run can continue from."""
    state = TrainingCheckpointer.load(path)
    if "optimizer" not in state:
        raise TrainingCheckpointError(
            f"{path}: holds model weights only (as train.max_iter=0 writes), no training state "
            f"to resume; start from them with train.init_checkpoint={path}"
        )
    return state


def _intact_hint(checkpointer: TrainingCheckpointer, broken: Path | None) -> str:
    """Which checkpoint of the folder a run can resume from instead of ``broken``."""
    for path in checkpointer.checkpoints_newest_first():
        if broken is not None and path.resolve() == broken.resolve():
            continue
        try:
            _read_training_state(path)
        except (CheckpointError, TrainingCheckpointError):
            continue
        return (
            f"; the newest intact checkpoint is {path}: resume from it with "
            f"--resume train.resume_from={path}"
        )
    return "; no intact checkpoint in the folder: start afresh without --resume"


def _resume_state(
    cfg: DictConfig, checkpointer: TrainingCheckpointer
) -> tuple[Path, dict[str, Any]] | None:
    """The checkpoint to resume from and its content; None when the folder has none."""
    if _option(cfg, "resume_from"):
        path: Path | None = Path(cfg.train.resume_from)
    else:
        try:
            path = checkpointer.last_checkpoint()
        except TrainingCheckpointError as exc:
            raise TrainingCheckpointError(f"{exc}{_intact_hint(checkpointer, None)}") from None
    if path is None:
        return None
    try:
        return path, _read_training_state(path)
    except (CheckpointError, TrainingCheckpointError) as exc:
        raise TrainingCheckpointError(f"{exc}{_intact_hint(checkpointer, path)}") from None


def _load_init_checkpoint(model: nn.Module, path: str) -> str:
    """Load ``train.init_checkpoint``: a part of this model (e.g. a converted backbone).

    Keys the file lacks keep their initialisation; a key the model does not have, or has with
    another shape, means the file belongs to another model and is an error.

    Returns:
        The one-line summary to log.
    """
    report = load_checkpoint(model, path, strict=True, allow_missing=True)
    total = len(model.state_dict())
    if report.ok:
        return f"initialised from {path}: all {total} weights loaded"
    decoder = sum(k.startswith("decoder.") for k in report.missing)
    return (
        f"initialised from {path}: {total - len(report.missing)} of {total} weights loaded, "
        f"{len(report.missing)} keys not in the file keep their initialisation ({decoder} of "
        "them decoder keys, trained from scratch)"
    )


def _start_output(output_dir: Path, config_text: str) -> None:
    """Create the output folder, log to it, save the config, clear interrupted writes."""
    output_dir.mkdir(parents=True, exist_ok=True)
    setup_logger(output_dir, rank=get_rank())
    logger.info("rank %d of %d, output in %s", get_rank(), get_world_size(), output_dir)
    if not is_main_process():
        return
    for path in remove_temporaries(output_dir):
        logger.info("removed %s, left by an interrupted save", path.name)
    atomic_write_text(output_dir / "config.yaml", config_text)
    logger.info("config saved to %s", output_dir / "config.yaml")


def train(cfg: DictConfig, resume: bool = False) -> Trainer | None:
    """Train as the config says, in this process (one rank of the process group, if any).

    Args:
        cfg: a config checked by :func:`load_config`.
        resume: continue from ``train.resume_from``, else the newest checkpoint of
            ``train.output_dir`` (model, optimizer, schedule, iteration, RNG states); without
            one, start from ``train.init_checkpoint``.

    Returns:
        The trainer after the last iteration; None for ``train.max_iter=0``, which saves the
        initial weights as ``model_final.pth`` and trains nothing.

    Raises:
        One of :data:`INPUT_ERRORS` for bad input, before anything is written.
    """
    if _option(cfg, "resume_from") and not resume:
        raise ConfigError("train.resume_from: set it together with --resume")
    device = resolve_device(_option(cfg, "device", "auto"))
    output_dir = Path(cfg.train.output_dir)
    check_output_dir(output_dir)
    config_text = LazyConfig.to_yaml(cfg)  # a config that cannot be saved fails here
    max_iter = int(cfg.train.max_iter)
    # Ranks draw different noise (detectron2's default_setup: seed + rank).
    seed_everything(int(cfg.train.seed) + get_rank())
    model = instantiate(cfg.model).to(device)
    checkpointer = TrainingCheckpointer(output_dir, _option(cfg, "checkpointer.max_to_keep"))
    resumed = _resume_state(cfg, checkpointer) if resume else None
    messages = []
    if resumed is not None:
        load_checkpoint(model, resumed[0])
        messages.append(f"resuming from {resumed[0]} (iteration {resumed[1]['iteration']})")
    elif _option(cfg, "init_checkpoint"):
        messages.append(_load_init_checkpoint(model, cfg.train.init_checkpoint))
    elif resume:
        messages.append(f"no checkpoint in {output_dir}: starting from scratch")
    start_iter = int(resumed[1]["iteration"]) if resumed is not None else 0

    if max_iter == 0:
        _start_output(output_dir, config_text)
        for message in messages:
            logger.info(message)
        if is_main_process():
            # Not tagged as last_checkpoint: a later --resume starts from the same weights.
            state = {"model": model.state_dict(), "iteration": 0}
            checkpointer.save("model_final.pth", state, tag_last=False)
        return None

    optimizer = instantiate(cfg.optimizer, runtime={"params.model": model})
    scheduler = LRMultiplier(optimizer, instantiate(cfg.lr_multiplier), max_iter)
    data_loader = instantiate(cfg.dataloader.train, runtime={"start_iter": start_iter})

    _start_output(output_dir, config_text)
    for message in messages:
        logger.info(message)
    # Not a check: without a usable test folder, training runs without validation (logged).
    validate = _build_validation(cfg, model)
    logger.info(
        "model: %s, %.2fM parameters",
        type(model).__name__,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    if device.type == "cpu":
        set_cpu_threads(int(getattr(data_loader, "num_workers", 0)))
    train_model = model
    if get_world_size() > 1:
        ddp = dict(_option(cfg, "ddp", {}))
        train_model = wrap_ddp(
            model,
            device,
            broadcast_buffers=ddp.get("broadcast_buffers", True),
            find_unused_parameters=ddp.get("find_unused_parameters", False),
            fp16_compression=ddp.get("fp16_compression", False),
        )
    trainer = Trainer(
        train_model,
        data_loader,
        optimizer,
        scheduler,
        amp=_amp_mode(cfg),
        grad_clip=_option(cfg, "grad_clip"),
        self_align_stage1_step=_option(cfg, "self_align_stage1_step"),
        self_align_stage2_step=_option(cfg, "self_align_stage2_step"),
        image_log_period=int(_option(cfg, "image_log_period") or 0),
    )
    # 0: only after the last iteration (EvalHook always evaluates then).
    eval_period = int(_option(cfg, "eval_period", 0))
    trainer.register_hooks(
        [
            IterationTimer(),
            EvalHook(eval_period, validate, output_dir) if validate else None,
            PeriodicCheckpointer(checkpointer, int(_option(cfg, "checkpointer.period", max_iter))),
            PeriodicWriter(output_dir, int(_option(cfg, "log_period", 20)))
            if is_main_process()
            else None,
        ]
    )
    if resumed is not None:
        trainer.load_state_dict(resumed[1])
    trainer.train(start_iter, max_iter)
    return trainer


def evaluate(cfg: DictConfig, resume: bool = False) -> tuple[str, dict[str, float]]:
    """Evaluate a checkpoint on ``dataloader.test`` with ``train.eval_sampler``; writes nothing.

    Args:
        cfg: a config checked by :func:`load_config`.
        resume: evaluate the newest checkpoint of ``train.output_dir`` (or
            ``train.resume_from``) instead of ``train.init_checkpoint``.

    Returns:
        The evaluated file and the mean metrics (empty on ranks other than 0).

    Raises:
        One of :data:`INPUT_ERRORS` for bad input.
    """
    device = resolve_device(_option(cfg, "device", "auto"))
    seed_everything(int(cfg.train.seed) + get_rank())
    model = instantiate(cfg.model).to(device)
    path: Path | str | None = None
    if resume:
        resumed = _resume_state(cfg, TrainingCheckpointer(cfg.train.output_dir))
        path = resumed[0] if resumed is not None else None
    path = path or _option(cfg, "init_checkpoint")
    if not path:
        raise ConfigError("--eval-only needs train.init_checkpoint=<weights> (or --resume)")
    load_checkpoint(model, path)
    validate = _build_validation(cfg, model)
    if validate is None:
        raise DatasetError("--eval-only: dataloader.test is not a usable test folder")
    model.eval()
    return str(path), validate() if is_main_process() else {}


def run(cfg: DictConfig, resume: bool = False, eval_only: bool = False) -> Any:
    """One process of a run: join the process group (torchrun environment), train or evaluate.

    Returns:
        What :func:`train` or :func:`evaluate` returns.
    """
    setup_logger(None, rank=get_rank())
    device = resolve_device(_option(cfg, "device", "auto"))
    distributed = init_process_group(device.type)
    try:
        return evaluate(cfg, resume) if eval_only else train(cfg, resume)
    finally:
        if distributed:
            destroy_process_group()


def bf16_training_overrides() -> list[str]:
    """Overrides that train with bf16 autocast where the CPU has native bf16, said in one line.

    A later ``train.amp.enabled=False`` turns it off again. Returns no override (float32) on a
    CPU without native bf16, where bf16 runs slower than float32.
    """
    support = bf16_support()
    if not support.native:
        print(f"training in float32: {support.reason}", flush=True)
        return []
    print(f"training with bf16 autocast: the CPU has {', '.join(support.flags)}", flush=True)
    return ["train.amp.enabled=True", "train.amp.precision=bf16"]
