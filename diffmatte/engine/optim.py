"""Optimizer parameter groups and learning-rate schedules for training.

Facts (docs/original_release.md#optimizer): AdamW as in detectron2's ``configs/common/optim.py``
(betas 0.9/0.999, weight decay 0.1, no decay on normalisation layers), DiffMatte adds no decay on
``pos_embed``. Its ViT layer-wise lr decay (0.65 over 12 layers, the ViTMatte rule) never fired in
the original because the optimizer was built on a wrapper whose parameter names start with
``model.``; the flat learning rate is therefore the default here and the intended decay is the
named option ``layer_decay``. The schedule is a linear warm-up from factor 0.001 over 250
iterations around an fvcore ``MultiStepParamScheduler`` (detectron2's ``WarmupParamScheduler`` /
``LRMultiplier`` semantics: schedulers are functions of the training progress ``iter / max_iter``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)
from torch import nn

__all__ = [
    "NORM_MODULE_TYPES",
    "vit_layer_id",
    "get_param_groups",
    "MilestoneParamScheduler",
    "WarmupParamScheduler",
    "LRMultiplier",
]

logger = logging.getLogger(__name__)

# Normalisation layers whose weight and bias get ``weight_decay_norm`` (detectron2's list).
NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)

_VIT_BLOCK = re.compile(r"^backbone\.blocks\.(\d+)\.")


def vit_layer_id(name: str, num_layers: int) -> int:
    """Layer index of a parameter for ViT layer-wise lr decay (ViTMatte's rule).

    Args:
        name: parameter name relative to the DiffMatte module, e.g.
            ``backbone.blocks.3.attn.qkv.weight``.
        num_layers: number of transformer blocks.

    Returns:
        0 for the patch embedding and position embedding, ``i + 1`` for parameters of block ``i``
        except its residual conv branch, ``num_layers + 1`` (no decay) for everything else.
    """
    if not name.startswith("backbone."):
        return num_layers + 1
    if name.startswith(("backbone.pos_embed", "backbone.patch_embed.")):
        return 0
    match = _VIT_BLOCK.match(name)
    if match is not None and ".residual." not in name:
        return int(match.group(1)) + 1
    return num_layers + 1


def _is_vit_backbone(model: nn.Module) -> bool:
    return any(_VIT_BLOCK.match(name) for name, _ in model.named_parameters())


def get_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float = 0.1,
    weight_decay_norm: float = 0.0,
    weight_decay_overrides: Mapping[str, float] | None = None,
    layer_decay: float | None = None,
    num_layers: int = 12,
) -> list[dict[str, Any]]:
    """Build AdamW parameter groups with per-parameter lr and weight decay.

    Every trainable parameter gets ``lr = base_lr * factor`` and a weight decay chosen in this
    order: ``weight_decay_overrides[leaf_name]`` if present (e.g. ``{"pos_embed": 0.0}``), else
    ``weight_decay_norm`` for parameters owned by a normalisation layer (:data:`NORM_MODULE_TYPES`),
    else ``weight_decay``. Parameters shared between modules are counted once; parameters with
    ``requires_grad=False`` (e.g. spectral-norm ``u``/``v``) are skipped. Groups with equal
    (lr, weight decay) are merged.

    Args:
        model: the DiffMatte module (parameter names start with ``backbone.`` / ``decoder.``).
        base_lr: learning rate before scheduling.
        weight_decay: default decay.
        weight_decay_norm: decay for normalisation-layer parameters.
        weight_decay_overrides: decay per leaf parameter name (the attribute name in its module).
        layer_decay: ``None`` (flat lr, as the original effectively trained) or the ViT
            layer-wise decay rate, e.g. 0.65: factor ``layer_decay ** (num_layers + 1 - id)``
            with ``id`` from :func:`vit_layer_id`. Only valid for ViT backbones.
        num_layers: number of ViT blocks for ``layer_decay``.

    Returns:
        A list of ``{"params", "lr", "weight_decay"}`` dicts for ``torch.optim.AdamW``.

    Raises:
        ValueError: ``layer_decay`` is set for a model without a ViT backbone, or is not in (0, 1].
    """
    overrides = dict(weight_decay_overrides or {})
    if layer_decay is not None:
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        if not _is_vit_backbone(model):
            raise ValueError(
                "layer_decay applies to ViT backbones only (no 'backbone.blocks.<i>' parameters)"
            )
    seen: set[int] = set()
    grouped: dict[tuple[float, float], list[nn.Parameter]] = {}
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, NORM_MODULE_TYPES)
        for leaf_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{leaf_name}" if module_name else leaf_name
            if leaf_name in overrides:
                decay = float(overrides[leaf_name])
            elif is_norm:
                decay = float(weight_decay_norm)
            else:
                decay = float(weight_decay)
            lr = float(base_lr)
            if layer_decay is not None:
                lr *= layer_decay ** (num_layers + 1 - vit_layer_id(full_name, num_layers))
            grouped.setdefault((lr, decay), []).append(param)
    groups = [
        {"params": params, "lr": lr, "weight_decay": decay}
        for (lr, decay), params in sorted(grouped.items(), key=lambda kv: (-kv[0][0], kv[0][1]))
    ]
    logger.debug("built %d parameter groups", len(groups))
    return groups


class MilestoneParamScheduler(MultiStepParamScheduler):
    """fvcore's ``MultiStepParamScheduler`` for a run that may end before some milestones.

    ``values[i]`` holds from ``milestones[i - 1]`` (0 for the first) to ``milestones[i]``, in
    iterations of a run of ``num_updates`` iterations. Milestones at or after ``num_updates``
    are never reached and are dropped (fvcore refuses them), so a run shortened with
    ``train.max_iter=...`` keeps the schedule of its first iterations.

    Args:
        values: the value of each range, one more than ``milestones``.
        num_updates: iterations of the run (``train.max_iter``), at least 1.
        milestones: strictly increasing iteration numbers where the next value starts.
    """

    def __init__(self, values: list[float], num_updates: int, milestones: list[int]) -> None:
        if len(values) != len(milestones) + 1:
            raise ValueError(
                f"the schedule needs one more value than milestones, got {len(values)} values "
                f"and {len(milestones)} milestones"
            )
        if num_updates < 1:
            raise ValueError(f"num_updates must be at least 1, got {num_updates}")
        reached = [int(m) for m in milestones if m < num_updates]
        super().__init__(list(values[: len(reached) + 1]), num_updates, reached)


class WarmupParamScheduler(CompositeParamScheduler):
    """A param scheduler with a warm-up phase in front (detectron2 semantics).

    During the first ``warmup_length`` fraction of training the value goes from
    ``warmup_factor * scheduler(0)`` to ``scheduler(warmup_length)``, linearly or constantly;
    afterwards it is ``scheduler(where)``. Configs write 250 iterations as
    ``warmup_length="${div:250,${train.max_iter}}"``. A warm-up longer than the run
    (``warmup_length >= 1``) covers the whole run, which then ends at the value the warm-up
    has reached after ``1 / warmup_length`` of it.

    Args:
        scheduler: the main schedule, a function of ``where`` in [0, 1].
        warmup_factor: starting factor, 0.001 in every released config.
        warmup_length: fraction of training spent warming up, >= 0.
        warmup_method: ``"linear"`` or ``"constant"``.
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
    ) -> None:
        if not warmup_length >= 0.0:
            raise ValueError(
                f"warmup_length is a fraction of training, >= 0, got {warmup_length} "
                "(write e.g. 250 / max_iter)"
            )
        start_value = warmup_factor * scheduler(0.0)
        end_value = scheduler(min(warmup_length, 1.0))
        if warmup_method == "linear":
            if warmup_length >= 1.0:
                # Only the first 1 / warmup_length of the ramp fits in the run.
                end_value = start_value + (end_value - start_value) / warmup_length
            warmup: ParamScheduler = LinearParamScheduler(start_value, end_value)
        elif warmup_method == "constant":
            warmup = ConstantParamScheduler(start_value)
        else:
            raise ValueError(f"unknown warmup_method {warmup_method!r} (linear or constant)")
        if warmup_length >= 1.0:
            super().__init__([warmup], interval_scaling=["rescaled"], lengths=[1.0])
            return
        super().__init__(
            [warmup, scheduler],
            interval_scaling=["rescaled", "fixed"],
            lengths=[warmup_length, 1.0 - warmup_length],
        )


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Torch LR scheduler that multiplies each group's initial lr by an fvcore schedule.

    After ``k`` calls of ``step()`` every group's lr is ``initial_lr * multiplier(k / max_iter)``,
    so it is stepped once per iteration, after ``optimizer.step()``. Layer-wise factors in the
    groups' initial lr are preserved. Its state dict holds only the iteration count, so a
    resumed run recomputes exactly the same lr.

    Args:
        optimizer: the optimizer whose groups are scheduled.
        multiplier: an fvcore ``ParamScheduler`` (e.g. :class:`WarmupParamScheduler`).
        max_iter: total number of training iterations.
        last_iter: index of the last finished iteration (-1 for a fresh start).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise TypeError(f"multiplier must be an fvcore ParamScheduler, got {type(multiplier)}")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be at least 1 to schedule, got {max_iter}")
        self._multiplier = multiplier
        self._max_iter = int(max_iter)
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict[str, Any]:
        """Only the counters: the schedule itself comes from the config."""
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters and set the groups' lr for the next iteration at once."""
        super().load_state_dict(state_dict)
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr
        self._last_lr = lrs

    def get_lr(self) -> list[float]:
        """Learning rates for the current ``last_epoch`` (= finished iterations)."""
        factor = self._multiplier(self.last_epoch / self._max_iter)
        return [base_lr * factor for base_lr in self.base_lrs]
