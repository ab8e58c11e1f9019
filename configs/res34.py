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
from .common.scheduler import lr_multiplier, set_epoch_schedule
from .common.train import COMPOSITES_PER_EPOCH, train

# 43100 composites per nominal epoch / 20 images per GPU / 2 GPUs = 1077.5 iterations.
ITERS_PER_EPOCH = COMPOSITES_PER_EPOCH / 20 / 2

model.backbone = L(ResNetEncoder)(in_chans=6, layers=[3, 4, 4, 2])
model.backbone_trimap = "onehot"
model.decoder.downsample_in = [7, 32, 64, 128, 128]
model.decoder.upsample_in = [512, 256, 256, 128, 64, 32]

dataloader.train.batch_size = 20
dataloader.train.dataset.crop_size = 512

optimizer.lr = 4e-4

set_epoch_schedule(
    train, lr_multiplier, ITERS_PER_EPOCH, epochs=150, milestone_epochs=[30, 90, 140],
    values=[1.0, 0.1, 0.05, 0.01],
)  # fmt: skip
train.output_dir = "./output_of_train/res34"
