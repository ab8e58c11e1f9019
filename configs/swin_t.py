"""DiffMatte Swin-T (38.8M parameters as built): MatteFormer's prior-token Swin-T, 512x512 crops.

Differences from ``res34.py`` in the released ``configs/swin_t.py`` (Hu et al., ECCV 2024): the
backbone is MatteFormer's Swin-T with trimap prior tokens (6-channel input, drop path 0.3) and
its 768-channel stride-32 feature enters the DUNet; the training recipe is res34's. The release's
README states 48.8M parameters; the released config builds 38.75M (see the README).
"""

from diffmatte.config import LazyCall as L
from diffmatte.modeling.backbone.swin import PriorSwinTransformer

from .res34 import dataloader, lr_multiplier, model, optimizer, train

model.backbone = L(PriorSwinTransformer)(
    in_chans=6,  # normalised RGB + one-hot trimap (bg, unknown, fg)
    embed_dim=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    mlp_ratio=4.0,
    drop_path_rate=0.3,
)
model.decoder.upsample_in = [768, 256, 256, 128, 64, 32]

train.output_dir = "./output_of_train/swin_t"
