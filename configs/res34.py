"""DiffMatte Res34 (23.9M parameters): GCA-Matting's ResNet-34-D encoder, 512x512 crops, 2 GPUs.

Recipe of the released ``configs/res34.py`` (Hu et al., "Diffusion for Natural Image Matting",
ECCV 2024): 6-channel backbone input (RGB + one-hot trimap), a five-level DUNet for the stride-32
feature, lr 4e-4, 20 images per GPU on 2 GPUs, 150 epochs, lr x0.1 / x0.05 / x0.01 at epochs
30 / 90 / 140, self-alignment stage 2 from epoch 100.
"""

from diffmatte.config import LazyCall as L
from diffmatte.modeling.backbone.resnet import ResNetEncoder

from .common.dataloader import dataloader
from .common.model import model
from .common.optimizer import optimizer
from .common.scheduler import WARMUP_ITERS, lr_multiplier
from .common.train import COMPOSITES_PER_EPOCH, train

# 43100 composites per nominal epoch / 20 images per GPU / 2 GPUs = 1077.5 iterations.
# Every iteration count is int(ITERS_PER_EPOCH * epochs), truncated as in the release.
ITERS_PER_EPOCH = COMPOSITES_PER_EPOCH / 20 / 2

model.backbone = L(ResNetEncoder)(in_chans=6, layers=[3, 4, 4, 2])
model.backbone_trimap = "onehot"
model.decoder.downsample_in = [7, 32, 64, 128, 128]
model.decoder.upsample_in = [512, 256, 256, 128, 64, 32]
model.diffusion.scale = 0.2

dataloader.train.batch_size = 20
dataloader.train.dataset.crop_size = 512

optimizer.lr = 4e-4

train.max_iter = int(ITERS_PER_EPOCH * 150)
train.checkpointer.period = int(ITERS_PER_EPOCH * 10)
train.eval_period = int(ITERS_PER_EPOCH * 10)
# Stage 1 starts after max_iter, so it never runs; stage 2 runs from epoch 100 to the end.
train.self_align_stage1_step = int(ITERS_PER_EPOCH * 1000)
train.self_align_stage2_step = int(ITERS_PER_EPOCH * 100)
train.output_dir = "./output_of_train/res34"

lr_multiplier.scheduler.values = [1.0, 0.1, 0.05, 0.01]
lr_multiplier.scheduler.milestones = [
    int(ITERS_PER_EPOCH * 30),
    int(ITERS_PER_EPOCH * 90),
    int(ITERS_PER_EPOCH * 140),
]
lr_multiplier.scheduler.num_updates = train.max_iter
lr_multiplier.warmup_length = WARMUP_ITERS / train.max_iter
