"""A tiny ViTS-style DiffMatte for fast CPU tests of the inference tools (random weights only).

Everything but the sizes comes from ``configs/ViTS.py`` (windowed + global attention, residual
block, decomposed relative positions, diffusion scale 0.2, one-step DDPM default sampler).
"""

from ...configs.ViTS import model

model.backbone.img_size = 64
model.backbone.embed_dim = 32
model.backbone.depth = 2
model.backbone.num_heads = 2
model.backbone.window_size = 4
model.backbone.window_block_indexes = [0]
model.backbone.residual_block_indexes = [1]
model.decoder.downsample_in = [7, 8, 8, 8]
model.decoder.upsample_in = ["${...backbone.embed_dim}", 16, 8, 8, 8]
# Inference needs no loss.
model.criterion = None
