"""DiffMatte with a ViT-S/16 backbone and the DUNet diffusion decoder (the ``ViTS`` model).

Architecture: Hu et al., "Diffusion for Natural Image Matting" (ECCV 2024), backbone as in
ViTMatte (Yao et al., 2024) / ViTDet (Li et al., 2022); values from the released configs of
YihanHu-2022/DiffMatte. Other backbones are swapped in by the experiment configs.
"""

from diffmatte.config import LazyCall as L
from diffmatte.modeling.backbone.vit import ViT
from diffmatte.modeling.criterion import MattingCriterion
from diffmatte.modeling.decoder.dunet import DUNet
from diffmatte.modeling.diffmatte import DiffMatte

from .diffusion import diffusion
from .sampler import sampler

model = L(DiffMatte)(
    backbone=L(ViT)(
        in_chans=4,  # normalised RGB + trimap value in {0, 0.5, 1}
        img_size=512,  # sizes the global blocks' relative-position tables
        patch_size=16,
        embed_dim=384,
        depth=12,
        num_heads=6,
        mlp_ratio=4.0,
        qkv_bias=True,
        drop_path_rate=0.0,
        window_size=14,
        window_block_indexes=[0, 1, 3, 4, 6, 7, 9, 10],
        residual_block_indexes=[2, 5, 8, 11],
        use_rel_pos=True,
        pretrain_img_size=224,
    ),
    decoder=L(DUNet)(
        # Decoder input: condition (RGB + one-hot trimap, 6 channels) and x_t (1 channel).
        downsample_in=[7, 32, 64, 128],
        # The first up block takes the backbone feature, so its width follows the backbone.
        upsample_in=["${...backbone.embed_dim}", 256, 128, 64, 32],
        time_embed_dim=32,
    ),
    diffusion=diffusion,
    sampler=sampler,
    criterion=L(MattingCriterion)(use_mse=True, use_matting=True, laplacian_levels=5),
    backbone_trimap="value",
    pixel_mean=[0.485, 0.456, 0.406],
    pixel_std=[0.229, 0.224, 0.225],
    size_divisibility=32,
)
