"""DiffMatte ViT-B (101.5M parameters): ViT-B/16 backbone (MAE init), 512x512 crops, 2 GPUs.

Differences from ``ViTS.py`` in the released ``configs/ViTB.py`` (Hu et al., ECCV 2024): width
768 with 12 heads, lr 2.5e-4, 170 epochs, lr x0.1 / x0.05 / x0.01 at epochs 30 / 90 / 140,
self-alignment stage 2 from epoch 80.
"""

from .common.scheduler import WARMUP_ITERS
from .ViTS import ITERS_PER_EPOCH, dataloader, lr_multiplier, model, optimizer, train

# The decoder's first up block follows embed_dim through an interpolation.
model.backbone.embed_dim = 768
model.backbone.num_heads = 12

optimizer.lr = 2.5e-4

train.max_iter = int(ITERS_PER_EPOCH * 170)
train.self_align_stage2_step = int(ITERS_PER_EPOCH * 80)
train.output_dir = "./output_of_train/ViTB"

lr_multiplier.scheduler.values = [1.0, 0.1, 0.05, 0.01]
lr_multiplier.scheduler.milestones = [
    int(ITERS_PER_EPOCH * 30),
    int(ITERS_PER_EPOCH * 90),
    int(ITERS_PER_EPOCH * 140),
]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = WARMUP_ITERS / train.max_iter
