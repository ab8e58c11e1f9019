"""DUNet: the time-conditioned U-Net decoder of DiffMatte.

Facts from Hu et al., "Diffusion for Natural Image Matting" (DiffMatte, 2023) and the layer list
of its released checkpoints (``model.decoder.*``): a stride-2 residual down path on the 7-channel
decoder input (conditioning + x_t), a mid block that upsamples the backbone feature, up blocks
with skip concatenation, and the conv head of ViTMatte (Yao et al. 2023). Time conditioning uses
the sinusoidal embedding of Vaswani et al. (2017) as popularised for diffusion by Ho et al. (2020),
applied here to the continuous time t in [0, 1] (not an integer step index).

The inference form of this decoder (BatchNorm folded, step-independent work cached, tiled
full-resolution stages) is built from it by :mod:`diffmatte.inference.cached_decoder`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BasicDownBlock",
    "BasicUpBlock",
    "DUNet",
    "MattingHead",
    "TimeResidualBlock",
    "timestep_embedding",
]


def timestep_embedding(t: Tensor, dim: int = 32, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of a continuous time.

    emb = [cos(t f_0), ..., cos(t f_{d/2-1}), sin(t f_0), ..., sin(t f_{d/2-1})] with
    f_k = max_period^(-k / (d/2)).

    Args:
        t: (N,) float time, in [0, 1] for DiffMatte.
        dim: embedding width d (even).
        max_period: the slowest period.

    Returns:
        (N, dim) float32 embedding.
    """
    if dim % 2:
        raise ValueError(f"timestep embedding width must be even, got {dim}")
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _check_mid_size(mid_hw: tuple[int, int], deepest_skip: Tensor) -> None:
    """Raises a clear error when the upsampled feature cannot meet the deepest skip."""
    if mid_hw != (deepest_skip.shape[-2], deepest_skip.shape[-1]):
        feature_hw = (mid_hw[0] // 2, mid_hw[1] // 2)
        expected = (deepest_skip.shape[-2] // 2, deepest_skip.shape[-1] // 2)
        raise ValueError(
            f"backbone features of spatial size {feature_hw} do not match the decoder input "
            f"(expected {expected})"
        )


class ConvDownsample(nn.Module):
    """Shortcut of a down block: 3x3 conv, stride 2, no bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class BilinearUpsample(nn.Module):
    """Shortcut of an up block: bilinear x2 (align_corners=False), then 3x3 conv without bias."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.conv(x)


class TimeResidualBlock(nn.Module):
    """Residual block with a per-channel time shift; subclasses add the shortcut branch.

    out = ReLU(BN2(conv2(ReLU(BN1(conv1(x))) + ReLU(Linear(emb)))) + shortcut(x)).

    Args:
        conv1: the resolution-changing first convolution (bias-free), C_in -> C_out.
        out_channels: C_out.
        emb_channels: width E of the time embedding.
    """

    def __init__(self, conv1: nn.Module, out_channels: int, emb_channels: int) -> None:
        super().__init__()
        self.emb_layers = nn.Sequential(nn.Linear(emb_channels, out_channels), nn.ReLU())
        self.conv1 = conv1
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def shortcut(self, x: Tensor) -> Tensor:
        """x: (N, C_in, H, W) -> (N, C_out, H', W'), the residual branch."""
        raise NotImplementedError

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x: (N, C_in, H, W), emb: (N, E) -> (N, C_out, H', W')."""
        h = F.relu(self.bn1(self.conv1(x)))
        h = h + self.emb_layers(emb)[:, :, None, None]
        h = self.bn2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class BasicDownBlock(TimeResidualBlock):
    """Halves the resolution: conv1 is a 3x3 stride-2 conv, the shortcut ``downsample.op``."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int) -> None:
        conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False)
        super().__init__(conv1, out_channels, emb_channels)
        self.downsample = ConvDownsample(in_channels, out_channels)

    def shortcut(self, x: Tensor) -> Tensor:
        return self.downsample(x)


class BasicUpBlock(TimeResidualBlock):
    """Doubles the resolution: conv1 is a 4x4 stride-2 transposed conv, the shortcut bilinear."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int) -> None:
        conv1 = nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1, bias=False)
        super().__init__(conv1, out_channels, emb_channels)
        self.upsample = BilinearUpsample(in_channels, out_channels)

    def shortcut(self, x: Tensor) -> Tensor:
        return self.upsample(x)


class MattingHead(nn.Module):
    """conv3x3 C->16 (bias), BN, ReLU, conv1x1 16->1 (bias): per-pixel logits."""

    def __init__(self, in_channels: int, mid_channels: int = 16) -> None:
        super().__init__()
        self.matting_convs = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 3, padding=1),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, 1, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, H, W) -> (N, 1, H, W) logits."""
        return self.matting_convs(x)


class DUNet(nn.Module):
    """Time-conditioned U-Net decoder predicting x0 logits from x_t and backbone features.

    The structure is derived from the channel lists: one down block per consecutive pair of
    ``downsample_in``; a mid block ``upsample_in[0] -> upsample_in[1]`` on the feature; then up
    block i maps ``upsample_in[i + 1] + downsample_in[-1 - i]`` (concatenated [h, skip]) to
    ``upsample_in[i + 2]``; a head on ``upsample_in[-1]`` channels.

    Args:
        downsample_in: (7, 32, 64, 128) for the ViT configs, (7, 32, 64, 128, 128) for res34/swin_t.
        upsample_in: (C_feat, 256, 128, 64, 32) for ViT (feature at /16), (C_feat, 256, 256, 128,
            64, 32) for res34/swin_t (feature at /32); one entry more than ``downsample_in``.
        time_embed_dim: width of the sinusoidal embedding and of the time MLP.
    """

    def __init__(
        self,
        downsample_in: Sequence[int] = (7, 32, 64, 128),
        upsample_in: Sequence[int] = (384, 256, 128, 64, 32),
        time_embed_dim: int = 32,
    ) -> None:
        super().__init__()
        if len(upsample_in) != len(downsample_in) + 1:
            raise ValueError(
                f"upsample_in must have one entry more than downsample_in, got "
                f"{list(upsample_in)} and {list(downsample_in)}"
            )
        down, up = list(downsample_in), list(upsample_in)
        self.time_embed_dim = time_embed_dim
        self.cond_channels = down[0] - 1
        self.down_blks = nn.ModuleList(
            BasicDownBlock(down[i], down[i + 1], time_embed_dim) for i in range(len(down) - 1)
        )
        self.time_embed = nn.Sequential(
            nn.Linear(time_embed_dim, time_embed_dim),
            nn.ReLU(),
            nn.Linear(time_embed_dim, time_embed_dim),
        )
        self.mid_blk = BasicUpBlock(up[0], up[1], time_embed_dim)
        self.up_blks = nn.ModuleList(
            BasicUpBlock(up[i + 1] + down[-1 - i], up[i + 2], time_embed_dim)
            for i in range(len(down) - 1)
        )
        self.matting_head = MattingHead(up[-1])

    def embed_time(self, t: Tensor) -> Tensor:
        """t: (N,) float in [0, 1] -> (N, time_embed_dim) conditioning vector."""
        return self.time_embed(timestep_embedding(t, self.time_embed_dim))

    def forward(self, x: Tensor, t: Tensor, features: Tensor) -> Tensor:
        """One denoising step.

        Args:
            x: (N, 7, H, W) float: the 6 conditioning channels (2 * [normalised RGB, one-hot
                trimap] - 1) then the variance-normalised x_t; H and W multiples of the feature
                stride s = 2^(len(down_blks) + 1) (16 for ViT, 32 for res34/swin_t).
            t: (N,) float time in [0, 1].
            features: (N, C_feat, H / s, W / s) backbone features.

        Returns:
            (N, 1, H, W) logits; x̂0 = 2 * sigmoid(logits) - 1.
        """
        emb = self.embed_time(t)
        skips = []
        h = x
        for block in self.down_blks:
            h = block(h, emb)
            skips.append(h)
        _check_mid_size((2 * features.shape[-2], 2 * features.shape[-1]), skips[-1])
        h = self.mid_blk(features, emb)
        return self._decode(h, skips, emb)

    def _decode(self, h: Tensor, skips: list[Tensor], emb: Tensor) -> Tensor:
        for i, block in enumerate(self.up_blks):
            h = block(torch.cat([h, skips[-1 - i]], dim=1), emb)
        return self.matting_head(h)
