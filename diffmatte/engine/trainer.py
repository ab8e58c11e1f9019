"""Iteration-based, hook-driven training loop for DiffMatte.

The loop reproduces the original trainer (docs/original_release.md#trainer; an ``AMPTrainer``
subclass there): an endless data stream, forward and loss under autocast (CUDA fp16 with a
``GradScaler`` by default, bf16 or fp32 selectable; the CPU trains in fp32, or in bf16 where the
processor has native bf16), total loss = unweighted sum of the criterion's terms, the
learning-rate scheduler stepped once per iteration, and the self-aligned training mode switched
by iteration:

- iterations ``< self_align_stage2_step`` train plainly ("none");
- from ``self_align_stage2_step`` on, stage 2 ("stage2");
- "stage1" only between ``self_align_stage1_step`` and ``self_align_stage2_step`` when the first
  is configured below the second (no released config does).

Resuming is exact: the data of iteration ``k`` is a pure function of (seed, k, rank)
(:func:`diffmatte.data.loader.build_train_loader`), and the checkpoint restores model, optimizer,
scheduler, gradient scaler, iteration and the RNG states of every process.
"""

from __future__ import annotations

import logging
import math
import time
import weakref
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from diffmatte.utils.cpu import bf16_refusal
from diffmatte.utils.distributed import get_rank, get_world_size, is_main_process
from diffmatte.utils.rng import capture_rng_state, restore_rng_state

__all__ = [
    "AMP_MODES",
    "self_align_mode",
    "EventStorage",
    "HookBase",
    "Trainer",
]

logger = logging.getLogger(__name__)

AMP_MODES = ("fp16", "bf16", "off")
# Images logged per batch (the first samples).
_IMAGES_LOGGED = 4
# Numeric code of the self-alignment mode, logged as a scalar.
_STAGE_ID = {"none": 0, "stage1": 1, "stage2": 2}


def self_align_mode(
    iteration: int,
    stage1_step: float | None = None,
    stage2_step: float | None = None,
) -> str:
    """The self-alignment mode of an iteration, as the original trainer chose it.

    Args:
        iteration: 0-based iteration index.
        stage1_step: first iteration of stage 1 (None: never).
        stage2_step: first iteration of stage 2 (None: never).

    Returns:
        "none" before both thresholds, "stage1" from ``stage1_step`` until ``stage2_step``,
        "stage2" from ``stage2_step`` on.
    """
    stage1 = math.inf if stage1_step is None else stage1_step
    stage2 = math.inf if stage2_step is None else stage2_step
    if iteration >= stage2:
        return "stage2"
    if iteration >= stage1:
        return "stage1"
    return "none"


class EventStorage:
    """Per-iteration scalars and images shared between the trainer and its hooks.

    Scalars keep a short history per name (for averages over the logging period); images are
    held until a writer takes them.

    Args:
        history: number of recent values kept per scalar.
    """

    def __init__(self, history: int = 1000) -> None:
        self.iter = 0
        self._history: dict[str, deque[tuple[int, float]]] = defaultdict(
            lambda: deque(maxlen=history)
        )
        self._images: dict[str, Tensor] = {}

    def put_scalar(self, name: str, value: float | Tensor) -> None:
        """Record ``value`` for the current iteration."""
        value = float(value.item() if isinstance(value, Tensor) else value)
        self._history[name].append((self.iter, value))

    def put_scalars(self, **values: float | Tensor) -> None:
        """Record several scalars for the current iteration."""
        for name, value in values.items():
            self.put_scalar(name, value)

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (value, iteration)}`` of the newest value of every scalar."""
        return {name: hist[-1][::-1] for name, hist in self._history.items() if hist}

    def mean_since(self, name: str, first_iter: int) -> float | None:
        """Mean of the values of ``name`` recorded at iterations ``>= first_iter``."""
        values = [v for it, v in self._history.get(name, ()) if it >= first_iter]
        return sum(values) / len(values) if values else None

    def scalar_names(self) -> list[str]:
        """Names of every scalar recorded so far."""
        return sorted(self._history)

    def put_images(self, images: dict[str, Tensor]) -> None:
        """Hold (N,C,H,W) image batches in [0, 1] for the next image writer."""
        self._images.update({k: v.detach().float().cpu() for k, v in images.items()})

    def pop_images(self) -> dict[str, Tensor]:
        """Take (and forget) the held images."""
        images, self._images = self._images, {}
        return images


class HookBase:
    """Base class of training hooks; ``self.trainer`` is set when registered.

    Hooks with persistent state (e.g. the best validation score) override ``state_dict`` and
    ``load_state_dict``; the trainer stores it in its checkpoints under the hook's class name.
    """

    trainer: Trainer

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration (also after an exception)."""

    def before_step(self) -> None:
        """Called before every iteration."""

    def after_step(self) -> None:
        """Called after every iteration (``trainer.iter`` is the finished one)."""

    def state_dict(self) -> dict[str, Any]:
        """Persistent state saved in training checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class _Capture:
    """Records the last decoder input and criterion call of one forward pass (for images)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.x_t: Tensor | None = None
        self.pred: Tensor | None = None
        self._criterion = model.criterion

    def __enter__(self) -> _Capture:
        def pre_hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            self.x_t = args[0][:, -1:].detach()

        def criterion(pred: Tensor, target: Tensor, trimap: Tensor) -> dict[str, Tensor]:
            self.pred = pred.detach()
            return self._criterion(pred, target, trimap)

        self._handle = self.model.decoder.register_forward_pre_hook(pre_hook)
        object.__setattr__(self.model, "criterion", criterion)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        object.__setattr__(self.model, "criterion", self._criterion)


def _device_amp_mode(amp: str, device: torch.device) -> str:
    """The AMP mode that runs on ``device``: any on CUDA; on the CPU bf16 (with native bf16 only,
    else ValueError naming the missing feature) or fp32 ("off") for fp16."""
    if device.type == "cuda" or amp == "off":
        return amp
    if amp == "bf16" and device.type == "cpu":
        reason = bf16_refusal()
        if reason is not None:
            raise ValueError(f"train.amp.precision=bf16 refused on the CPU: {reason}")
        return amp
    return "off"


class Trainer:
    """Runs the DiffMatte training loop with hooks.

    Args:
        model: a DiffMatte module (or its ``DistributedDataParallel`` wrapper) in train mode;
            ``model(batch, self_align=mode)`` returns a dict of scalar losses.
        data_loader: endless iterable of batch dicts with "image" (N,3,H,W) in [0, 1],
            "trimap" (N,1,H,W) in {0, 0.5, 1} and "alpha" (N,1,H,W) in [0, 1].
        optimizer: the optimizer.
        scheduler: a per-iteration LR scheduler (stepped after every optimizer step) or None.
        amp: "fp16" (autocast + GradScaler, the original's setting), "bf16" (autocast, no
            scaler) or "off". On the CPU fp16 trains in fp32, and bf16 runs only where the
            processor has native bf16 (:mod:`diffmatte.utils.cpu`).
        grad_clip: max total gradient norm (None: no clipping; the norm is logged either way).
        self_align_stage1_step: first iteration of self-alignment stage 1 (None: never).
        self_align_stage2_step: first iteration of self-alignment stage 2 (None: never).
        image_log_period: log input / trimap / x_t / x̂0 images every this many iterations
            (0: never).
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[dict[str, Any]],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        amp: str = "fp16",
        grad_clip: float | None = None,
        self_align_stage1_step: float | None = None,
        self_align_stage2_step: float | None = None,
        image_log_period: int = 0,
    ) -> None:
        if amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = next(model.parameters()).device
        self.amp = _device_amp_mode(amp, self.device)
        if self.amp != amp:
            logger.info("mixed precision %r requested; training in fp32 on %s", amp, self.device)
        elif self.amp == "bf16" and self.device.type == "cpu":
            logger.info("training with bf16 autocast on the CPU (native bf16), no gradient scaler")
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=self.amp == "fp16")
        self.grad_clip = grad_clip
        self.self_align_stage1_step = self_align_stage1_step
        self.self_align_stage2_step = self_align_stage2_step
        self.image_log_period = image_log_period
        self.hooks: list[HookBase] = []
        self.storage = EventStorage()
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self._data_iter: Iterator[dict[str, Any]] | None = None

    @property
    def unwrapped_model(self) -> nn.Module:
        """The DiffMatte module itself (without the DDP wrapper)."""
        return _unwrap(self.model)

    def register_hooks(self, hooks: Sequence[HookBase | None]) -> None:
        """Append hooks (``None`` entries are skipped), run in the given order."""
        for hook in hooks:
            if hook is None:
                continue
            hook.trainer = weakref.proxy(self)
            self.hooks.append(hook)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``.

        After a normal end ``self.iter == max_iter``.
        """
        logger.info("starting training from iteration %d to %d", start_iter, max_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.model.train()
        self._data_iter = iter(self.data_loader)
        self.storage.iter = start_iter
        try:
            for hook in self.hooks:
                hook.before_train()
            for self.iter in range(start_iter, max_iter):
                self.storage.iter = self.iter
                for hook in self.hooks:
                    hook.before_step()
                self.run_step()
                for hook in self.hooks:
                    hook.after_step()
            self.iter = max_iter
        finally:
            for hook in self.hooks:
                hook.after_train()

    def _autocast(self) -> torch.autocast:
        if self.amp == "off":
            return torch.autocast(device_type=self.device.type, enabled=False)
        dtype = torch.float16 if self.amp == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {
            k: v.to(self.device, non_blocking=True) if isinstance(v, Tensor) else v
            for k, v in batch.items()
        }

    def run_step(self) -> None:
        """One iteration: data, forward + losses under autocast, backward, step, LR step."""
        assert self._data_iter is not None, "call train() first"
        start = time.perf_counter()
        batch = self._to_device(next(self._data_iter))
        data_time = time.perf_counter() - start

        mode = self_align_mode(self.iter, self.self_align_stage1_step, self.self_align_stage2_step)
        log_images = (
            self.image_log_period > 0
            and (self.iter + 1) % self.image_log_period == 0
            and is_main_process()
        )
        with self._autocast():
            if log_images:
                with _Capture(self.unwrapped_model) as capture:
                    loss_dict = self.model(batch, self_align=mode)
            else:
                loss_dict = self.model(batch, self_align=mode)
            total_loss = sum(loss_dict.values())

        self.optimizer.zero_grad(set_to_none=True)
        self.grad_scaler.scale(total_loss).backward()
        self.grad_scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        if self.grad_clip is not None:
            grad_norm = nn.utils.clip_grad_norm_(params, self.grad_clip)
        else:
            grad_norm = nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
        lr = max(group["lr"] for group in self.optimizer.param_groups)
        if self.scheduler is not None:
            self.scheduler.step()

        self._write_metrics(loss_dict, total_loss, grad_norm, data_time, lr, mode)
        if log_images:
            self._write_images(batch, capture)

    def _write_metrics(
        self,
        loss_dict: dict[str, Tensor],
        total_loss: Tensor,
        grad_norm: Tensor,
        data_time: float,
        lr: float,
        mode: str,
    ) -> None:
        names = sorted(loss_dict)
        values = torch.stack(
            [loss_dict[k].detach().float().reshape(()) for k in names]
            + [total_loss.detach().float().reshape(())]
        )
        if get_world_size() > 1:
            dist.all_reduce(values)
            values /= get_world_size()
        values = values.cpu().tolist()
        if not all(math.isfinite(v) for v in values):
            raise FloatingPointError(
                f"loss became infinite or NaN at iteration {self.iter}: "
                + ", ".join(
                    f"{k}={v:.4g}" for k, v in zip(names + ["total_loss"], values, strict=True)
                )
            )
        self.storage.put_scalars(
            **dict(zip(names, values[:-1], strict=True)), total_loss=values[-1]
        )
        self.storage.put_scalars(
            grad_norm=grad_norm, data_time=data_time, lr=lr, self_align_stage=_STAGE_ID[mode]
        )
        if self.amp == "fp16":
            self.storage.put_scalar("loss_scale", self.grad_scaler.get_scale())

    def _write_images(self, batch: dict[str, Any], capture: _Capture) -> None:
        k = _IMAGES_LOGGED
        images = {
            "train/image": batch["image"][:k],
            "train/trimap": batch["trimap"][:k],
            "train/alpha": batch["alpha"][:k],
        }
        if capture.pred is not None:
            images["train/x0_pred"] = (capture.pred[:k].float() + 1) / 2
        if capture.x_t is not None:
            # The decoder sees the unit-variance x_t; show it in [-3, 3] std.
            images["train/x_t"] = (capture.x_t[:k].float().clamp(-3, 3) + 3) / 6
        self.storage.put_images(images)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs; a collective call under DDP (RNG states gathered).

        ``iteration`` is the number of finished iterations (``self.iter + 1`` inside a hook's
        ``after_step``).
        """
        rng = capture_rng_state()
        if get_world_size() > 1:
            gathered: list[Any] = [None] * get_world_size()
            dist.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        return {
            "model": self.unwrapped_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "grad_scaler": self.grad_scaler.state_dict(),
            "iteration": self.iter + 1,
            "rng": gathered,
            "hooks": {type(h).__name__: h.state_dict() for h in self.hooks},
        }

    def load_state_dict(self, state: dict[str, Any]) -> int:
        """Restore a :meth:`state_dict`; returns the iteration to resume from.

        The model weights must already be loaded (they are read by the caller so that key
        mismatches are reported by the strict loader).
        """
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("grad_scaler"):
            self.grad_scaler.load_state_dict(state["grad_scaler"])
        rng_states = state.get("rng") or []
        if len(rng_states) == get_world_size():
            restore_rng_state(rng_states[get_rank()])
        else:
            logger.warning(
                "checkpoint has RNG states of %d processes, this run has %d: RNG not restored",
                len(rng_states),
                get_world_size(),
            )
        hook_states = state.get("hooks", {})
        for hook in self.hooks:
            if type(hook).__name__ in hook_states:
                hook.load_state_dict(hook_states[type(hook).__name__])
        return int(state["iteration"])
