"""Continuous-time Gaussian diffusion on the alpha matte.

Hu et al., "Diffusion for Natural Image Matting" (ECCV 2024); values from the released
``configs/common/diffusion.py`` of YihanHu-2022/DiffMatte: linear gamma schedule, x0 prediction.
Signal scale 0.2, which every released model uses (the release's shared file said 1.0 and each
experiment config set 0.2).
"""

from diffmatte.config import LazyCall as L
from diffmatte.diffusion.gaussian import GaussianDiffusion

diffusion = L(GaussianDiffusion)(
    schedule="linear",
    scale=0.2,
    # None: variance normalisation of the decoder input is on exactly when scale < 1.
    normalize_variance=None,
)
