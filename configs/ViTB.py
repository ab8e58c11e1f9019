"""DiffMatte ViT-B (101.5M parameters): ViT-B/16 backbone (MAE init), 512x512 crops, 2 GPUs.

Differences from ``ViTS.py`` in the released ``configs/ViTB.py`` (Hu et al., ECCV 2024): width
768 with 12 heads, lr 2.5e-4, 170 epochs, lr x0.1 / x0.05 / x0.01 at epochs 30 / 90 / 140,
self-alignment stage 2 from epoch 80.
"""

from .common.scheduler import set_epoch_schedule
from .ViTS import ITERS_PER_EPOCH, dataloader, lr_multiplier, model, optimizer, train

# The decoder's first up block follows embed_dim through an interpolation.
model.backbone.embed_dim = 768
model.backbone.num_heads = 12

optimizer.lr = 2.5e-4

set_epoch_schedule(
    train, lr_multiplier, ITERS_PER_EPOCH, epochs=170, milestone_epochs=[30, 90, 140],
    values=[1.0, 0.1, 0.05, 0.01], stage2_epoch=80,
)  # fmt: skip
train.output_dir = "./output_of_train/ViTB"
