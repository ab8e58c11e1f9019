"""Default sampler of the model: one DDPM step, the release's behaviour without a strategy.

``--sample-strategy ddimN`` / ``ddpmN`` on the command line replaces it (Hu et al., ECCV 2024;
released ``configs/common/diffusion.py``: steps 1, DDPM unless a strategy is given).
"""

from diffmatte.config import LazyCall as L
from diffmatte.diffusion.samplers import Sampler

sampler = L(Sampler)(method="ddpm", steps=1)
