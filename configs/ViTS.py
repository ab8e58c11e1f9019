"""DiffMatte ViT-S (29.0M parameters): ViT-S/16 backbone (DINO init), 512x512 crops, 2 GPUs.

Recipe of the released ``configs/ViTS.py`` (Hu et al., "Diffusion for Natural Image Matting",
ECCV 2024): lr 5e-5, 16 images per GPU on 2 GPUs, 150 epochs, lr x0.1 at epoch 30 and x0.05 at
epoch 90, self-alignment stage 2 from epoch 100, checkpoints every 10 epochs.
"""

from .common.dataloader import dataloader
from .common.model import model
from .common.optimizer import optimizer
from .common.scheduler import lr_multiplier, set_epoch_schedule
from .common.train import COMPOSITES_PER_EPOCH, train

# 43100 composites per nominal epoch / 16 images per GPU / 2 GPUs = 1346.875 iterations.
ITERS_PER_EPOCH = COMPOSITES_PER_EPOCH / 16 / 2

dataloader.train.batch_size = 16
dataloader.train.dataset.crop_size = 512

optimizer.lr = 5e-5

set_epoch_schedule(
    train, lr_multiplier, ITERS_PER_EPOCH, epochs=150, milestone_epochs=[30, 90],
    values=[1.0, 0.1, 0.05],
)  # fmt: skip
train.output_dir = "./output_of_train/ViTS"
