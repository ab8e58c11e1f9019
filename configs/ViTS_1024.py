"""DiffMatte ViT-S at 1024: ViT-S/16 with 1024-sized global attention tables, 1024x1024 crops.

Differences from ``ViTS.py`` in the released ``configs/ViTS_1024.py`` (Hu et al., ECCV 2024):
backbone img_size 1024 (global relative-position tables of 127 rows, so its checkpoints do not
fit ViTS), 8 images per GPU on 4 GPUs, 200 epochs, lr x0.1 / x0.05 / x0.01 at epochs
60 / 110 / 170, crop 1024.
"""

from .common.scheduler import WARMUP_ITERS
from .common.train import COMPOSITES_PER_EPOCH
from .ViTS import dataloader, lr_multiplier, model, optimizer, train

# 43100 composites per nominal epoch / 8 images per GPU / 4 GPUs = 1346.875 iterations (as ViTS).
# Every iteration count is int(ITERS_PER_EPOCH * epochs), truncated as in the release.
ITERS_PER_EPOCH = COMPOSITES_PER_EPOCH / 8 / 4

model.backbone.img_size = 1024

dataloader.train.batch_size = 8
dataloader.train.dataset.crop_size = 1024

train.max_iter = int(ITERS_PER_EPOCH * 200)
train.checkpointer.period = int(ITERS_PER_EPOCH * 10)
train.eval_period = int(ITERS_PER_EPOCH * 10)
train.self_align_stage1_step = int(ITERS_PER_EPOCH * 1000)
train.self_align_stage2_step = int(ITERS_PER_EPOCH * 100)
train.output_dir = "./output_of_train/ViTS_1024"

lr_multiplier.scheduler.values = [1.0, 0.1, 0.05, 0.01]
lr_multiplier.scheduler.milestones = [
    int(ITERS_PER_EPOCH * 60),
    int(ITERS_PER_EPOCH * 110),
    int(ITERS_PER_EPOCH * 170),
]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = WARMUP_ITERS / train.max_iter
