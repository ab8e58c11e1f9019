"""Learning-rate multiplier: linear warm-up from 0.001 over 250 iterations, then multi-step.

detectron2's ``WarmupParamScheduler`` around a multi-step schedule (released
``configs/common/scheduler.py`` of YihanHu-2022/DiffMatte). Both are functions of the training
progress ``iter / max_iter``; the run length and the warm-up fraction are interpolations of
``train.max_iter``, so ``train.max_iter=...`` on the command line moves them too, while the
milestones stay at their iterations (those at or after the end of a shortened run are never
reached). Experiment configs state their milestones with :func:`set_epoch_schedule`.
"""

from omegaconf import DictConfig

from diffmatte.config import LazyCall as L
from diffmatte.engine.optim import MilestoneParamScheduler, WarmupParamScheduler

from .train import train

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MilestoneParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[60000, 80000],
        num_updates="${train.max_iter}",
    ),
    warmup_factor=0.001,
    # 250 iterations, as a fraction of the run.
    warmup_length="${div:250,${train.max_iter}}",
    warmup_method="linear",
)


def set_epoch_schedule(
    train_cfg: DictConfig,
    lr_multiplier_cfg: DictConfig,
    iters_per_epoch: float,
    epochs: int,
    milestone_epochs: list[int],
    values: list[float],
    stage2_epoch: int = 100,
) -> None:
    """The released recipe, stated in epochs: every iteration count is
    ``int(iters_per_epoch * epochs)``, truncated as in the release.

    Sets ``train_cfg.max_iter``, checkpoints and validation every 10 epochs, self-alignment stage 2
    from ``stage2_epoch`` (stage 1 at epoch 1000, beyond the end, so it never runs, as released)
    and the learning rate ``values`` changing at ``milestone_epochs`` (the milestones of
    ``lr_multiplier_cfg``).
    """

    def iters(epoch: float) -> int:
        return int(iters_per_epoch * epoch)

    train_cfg.max_iter = iters(epochs)
    train_cfg.checkpointer.period = iters(10)
    train_cfg.eval_period = iters(10)
    train_cfg.self_align_stage1_step = iters(1000)
    train_cfg.self_align_stage2_step = iters(stage2_epoch)
    lr_multiplier_cfg.scheduler["values"] = list(values)
    lr_multiplier_cfg.scheduler.milestones = [iters(epoch) for epoch in milestone_epochs]
