"""Learning-rate multiplier: linear warm-up from 0.001 over 250 iterations, then multi-step.

detectron2's ``WarmupParamScheduler`` around fvcore's ``MultiStepParamScheduler`` (released
``configs/common/scheduler.py`` of YihanHu-2022/DiffMatte). Both are functions of the training
progress ``iter / max_iter``: experiment configs set ``num_updates = train.max_iter`` and
``warmup_length = WARMUP_ITERS / train.max_iter``. The milestones here are placeholders matching
the placeholder ``train.max_iter`` of ``train.py``.
"""

from fvcore.common.param_scheduler import MultiStepParamScheduler

from diffmatte.config import LazyCall as L
from diffmatte.engine.optim import WarmupParamScheduler

WARMUP_ITERS = 250

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[60000, 80000],
        num_updates=90000,
    ),
    warmup_factor=0.001,
    warmup_length=WARMUP_ITERS / 90000,
    warmup_method="linear",
)
