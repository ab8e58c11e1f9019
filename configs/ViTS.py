"""DiffMatte ViT-S (29.0M parameters): ViT-S/16 backbone (DINO init), 512x512 crops, 2 GPUs.

Recipe of the released ``configs/ViTS.py`` (Hu et al., "Diffusion for Natural Image Matting",
ECCV 2024): lr 5e-5, 16 images per GPU on 2 GPUs, 150 epochs, lr x0.1 at epoch 30 and x0.05 at
epoch 90, self-alignment stage 2 from epoch 100, checkpoints every 10 epochs.
"""

from .common.dataloader import dataloader
from .common.model import model
from .common.optimizer import optimizer
from .common.scheduler import WARMUP_ITERS, lr_multiplier
from .common.train import COMPOSITES_PER_EPOCH, train

# 43100 composites per nominal epoch / 16 images per GPU / 2 GPUs = 1346.875 iterations.
# Every iteration count is int(ITERS_PER_EPOCH * epochs), truncated as in the release.
ITERS_PER_EPOCH = COMPOSITES_PER_EPOCH / 16 / 2

model.diffusion.scale = 0.2

dataloader.train.batch_size = 16
dataloader.train.dataset.crop_size = 512

optimizer.lr = 5e-5

train.max_iter = int(ITERS_PER_EPOCH * 150)
train.checkpointer.period = int(ITERS_PER_EPOCH * 10)
train.eval_period = int(ITERS_PER_EPOCH * 10)
# Stage 1 starts after max_iter, so it never runs; stage 2 runs from epoch 100 to the end.
train.self_align_stage1_step = int(ITERS_PER_EPOCH * 1000)
train.self_align_stage2_step = int(ITERS_PER_EPOCH * 100)
train.output_dir = "./output_of_train/ViTS"

lr_multiplier.scheduler.values = [1.0, 0.1, 0.05]
lr_multiplier.scheduler.milestones = [int(ITERS_PER_EPOCH * 30), int(ITERS_PER_EPOCH * 90)]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = WARMUP_ITERS / train.max_iter
