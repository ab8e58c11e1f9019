"""AdamW with per-parameter weight decay, as in detectron2's model-zoo ``configs/common/optim.py``.

Values: betas (0.9, 0.999), weight decay 0.1, none on normalisation layers and on ``pos_embed``
(released ``configs/common/optimizer.py`` of YihanHu-2022/DiffMatte). The release configured a
ViT layer-wise lr decay of 0.65 that never took effect (its rule matched no parameter name of the
model it was given), so the faithful default is a flat learning rate: ``layer_decay=None``.
Set ``optimizer.params.layer_decay=0.65`` for the decay ViTMatte intended (ViT backbones only).
"""

import torch

from diffmatte.config import LazyCall as L
from diffmatte.engine.optim import get_param_groups

optimizer = L(torch.optim.AdamW)(
    # The model is a run-time argument: instantiate(optimizer, runtime={"params.model": model}).
    params=L(get_param_groups)(
        base_lr="${..lr}",
        weight_decay="${..weight_decay}",
        weight_decay_norm=0.0,
        weight_decay_overrides={"pos_embed": 0.0},
        layer_decay=None,
        num_layers=12,
    ),
    lr=5e-5,
    betas=[0.9, 0.999],
    weight_decay=0.1,
)
