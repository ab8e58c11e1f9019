"""DiffMatte ViT-S at 1024: ViT-S/16 with 1024-sized global attention tables, 1024x1024 crops.

Differences from ``ViTS.py`` in the released ``configs/ViTS_1024.py`` (Hu et al., ECCV 2024):
backbone img_size 1024 (global relative-position tables of 127 rows, so its checkpoints do not
fit ViTS), 8 images per GPU on 4 GPUs, 200 epochs, lr x0.1 / x0.05 / x0.01 at epochs
60 / 110 / 170, crop 1024.
"""

from .common.scheduler import set_epoch_schedule
from .common.train import COMPOSITES_PER_EPOCH
from .ViTS import dataloader, lr_multiplier, model, optimizer, train

# 43100 composites per nominal epoch / 8 images per GPU / 4 GPUs = 1346.875 iterations (as ViTS).
ITERS_PER_EPOCH = COMPOSITES_PER_EPOCH / 8 / 4

model.backbone.img_size = 1024

dataloader.train.batch_size = 8
dataloader.train.dataset.crop_size = 1024

set_epoch_schedule(
    train, lr_multiplier, ITERS_PER_EPOCH, epochs=200, milestone_epochs=[60, 110, 170],
    values=[1.0, 0.1, 0.05, 0.01],
)  # fmt: skip
train.output_dir = "./output_of_train/ViTS_1024"
