"""Quickstart: a 1.1M-parameter DiffMatte that trains on a 2-core CPU in a few minutes.

Same model family, losses and self-aligned training as the released configs (Hu et al., ECCV
2024), scaled down: a 4-block ViT (width 96) on 128x128 crops, a narrow DUNet, batch 4, 300
iterations with stage 2 in the last third (as in res34 / swin_t / ViTS). The data are 64
synthetic foregrounds composited on the bundled public-domain backgrounds; validation runs
DDIM 10 steps on 8 images composed from 4 other synthetic foregrounds. Both data folders are
made under ``data/quickstart/`` by the first run that needs them.

Run the whole flow (data, training, evaluation) with ``python tools/quickstart.py``, or train
only with ``python tools/train_net.py --config-file configs/quickstart.py``.
"""

from diffmatte.config import LazyCall as L
from diffmatte.data.dim import DIMDataset
from diffmatte.data.sources import bundled_backgrounds
from diffmatte.data.synthetic_folders import synthetic_foreground_folder, synthetic_testset_folder

from .common.dataloader import dataloader
from .common.model import model
from .common.optimizer import optimizer
from .common.scheduler import lr_multiplier
from .common.train import train

CROP = 128
DATA_DIR = "data/quickstart"
FOREGROUND_SIZE = 256

model.backbone.update(
    img_size=CROP,
    embed_dim=96,
    depth=4,
    num_heads=3,
    # 8x8 tokens per crop: windows of 4 in blocks 0 and 2, global attention in 1 and 3.
    window_size=4,
    window_block_indexes=[0, 2],
    residual_block_indexes=[1, 3],
)
model.decoder.downsample_in = [7, 16, 32, 64]
model.decoder.upsample_in = ["${...backbone.embed_dim}", 64, 32, 16, 16]

dataloader.train.dataset = L(DIMDataset)(
    foregrounds=L(synthetic_foreground_folder)(
        folder=f"{DATA_DIR}/train", num=64, size=FOREGROUND_SIZE, seed=0
    ),
    backgrounds=L(bundled_backgrounds)(),
    crop_size=CROP,
    seed="${train.seed}",
    # 64 synthetic foregrounds x 6 backgrounds; each pass is augmented afresh.
    samples_per_epoch=384,
    cache=True,
)
dataloader.train.batch_size = 4
# One loader process; the trainer gives the compute threads the remaining cores.
dataloader.train.num_workers = 1
dataloader.train.pin_memory = False
dataloader.test.root = L(synthetic_testset_folder)(
    folder=f"{DATA_DIR}/test", num_foregrounds=4, size=FOREGROUND_SIZE, seed=1, bgs_per_fg=2
)

optimizer.lr = 5e-4

train.max_iter = 300
train.device = "cpu"
train.amp.enabled = False
train.output_dir = "./output_of_train/quickstart"
train.checkpointer.period = 100
train.checkpointer.max_to_keep = 3
train.eval_period = 150
train.eval_sampler.method = "ddim"
train.eval_sampler.steps = 10
train.log_period = 10
train.image_log_period = 50
# Stage 2 for the last third of training, stage 1 never (as in the released configs).
train.self_align_stage2_step = 200

# Warm-up of 20 iterations (instead of 250, which would be most of this run), lr x0.1 at 250.
lr_multiplier.scheduler["values"] = [1.0, 0.1]
lr_multiplier.scheduler.milestones = [250]
lr_multiplier.warmup_length = "${div:20,${train.max_iter}}"
