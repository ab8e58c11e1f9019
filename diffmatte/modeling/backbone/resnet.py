"""ResNet-34-D encoder with spectral normalisation (the ``res34`` backbone of DiffMatte).

The encoder of GCA-Matting, re-implemented so that parameter names, shapes and the state-dict
order match the released DiffMatte ``res34`` checkpoints.

Papers:
    Li and Lu, "Natural Image Matting via Guided Contextual Attention", AAAI 2020 (encoder).
    He et al., "Bag of Tricks for Image Classification with Convolutional Neural Networks",
    CVPR 2019 (ResNet-D: deep stem, average-pool shortcut).
    Miyato et al., "Spectral Normalization for Generative Adversarial Networks", ICLR 2018.
Sources of facts: GCA-Matting (github.com/Yaoyi-Li/GCA-Matting, MIT licence),
``networks/encoders/resnet_enc.py`` and ``networks/ops.py``; DiffMatte
(github.com/YihanHu-2022/DiffMatte) ``modeling/backbone/res34.py``, ``modeling/backbone/utils.py``
and ``pretrained/preprocess.py``.

Facts this module relies on:
    * Stem: three 3x3 convolutions 6->32 (stride 2), 32->32 (stride 1), 32->64 (stride 2), each
      followed by BatchNorm and ReLU. The three convolutions are registered before the three
      BatchNorms (``conv1, conv2, conv3, bn1, bn2, bn3``), which fixes the state-dict order.
    * Stages of BasicBlocks: ``layer1`` 64 x 3 (stride 1), ``layer2`` 128 x 4 (stride 2),
      ``layer3`` 256 x 4 (stride 2), ``layer_bottleneck`` 512 x 2 (stride 2); output 512 @ /32.
      The first block of a stride-2 stage has the ResNet-D shortcut
      ``downsample = [AvgPool2d(2, 2), 1x1 conv, BatchNorm]`` (keys ``downsample.1``/``.2``).
    * No convolution has a bias; BatchNorm eps is 1e-5.
    * Every convolution is wrapped in the SAGAN-style spectral norm: the wrapped convolution holds
      the nn.Parameters ``weight_u`` (length out), ``weight_v`` (length in*k*k) and
      ``weight_bar`` (the raw kernel), registered in that order; u and v have
      ``requires_grad=False`` yet are parameters (53,110 values in this encoder). The effective
      kernel is ``weight_bar / sigma`` with ``sigma = u . (W v)``, ``W = weight_bar`` reshaped to
      (out, -1). In training mode one power iteration ``v <- l2n(W^T u)``, ``u <- l2n(W v)``
      (``l2n(a) = a / (||a|| + 1e-12)``) first updates u and v in place; in evaluation mode the
      stored u and v are used as they are.
    * Initialisation: Xavier-uniform kernels, BatchNorm weight 1 / bias 0, the second BatchNorm of
      every BasicBlock zero-initialised, and the trimap input channels (3..) of the first kernel
      zeroed.
    * Pretrained conversion: the ImageNet checkpoint (3 input channels) is widened by zero columns
      in ``conv1.module.weight_bar`` and zero entries in ``conv1.module.weight_v`` (laid out as
      (in, kh, kw)); ``weight_u`` is unchanged, so sigma is unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ResNetEncoder", "SpectralNorm", "BasicBlock", "l2_normalize", "checkpoint_filter_fn"]

logger = logging.getLogger(__name__)

# Output channels and strides of the four BasicBlock stages (GCA's ResNet_D, early downsampling).
_STAGE_PLANES = (64, 128, 256, 512)
_STAGE_STRIDES = (1, 2, 2, 2)
_STAGE_NAMES = ("layer1", "layer2", "layer3", "layer_bottleneck")
_BN_EPS = 1e-5


def l2_normalize(v: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale a vector to unit length the SAGAN way: ``v / (||v|| + eps)``.

    Args:
        v: (K,) float tensor.
        eps: added to the norm (not a clamp) to avoid dividing by zero.

    Returns:
        (K,) tensor of norm ~1 (0 for a zero vector).
    """
    return v / (v.norm() + eps)


class SpectralNorm(nn.Module):
    """Spectral normalisation of a convolution kernel with stored power-iteration vectors.

    The wrapped convolution (``self.module``) loses its ``weight`` parameter and holds
    ``weight_u`` (out,), ``weight_v`` (in*kh*kw,) and ``weight_bar`` (out, in, kh, kw) instead.
    The kernel actually used is ``weight_bar / sigma`` with ``sigma = u . (W v)``. In training
    mode ``power_iterations`` power-iteration steps update ``weight_u``/``weight_v`` in place
    before sigma is computed; in evaluation mode they are left untouched.

    Args:
        module: a convolution with ``padding_mode="zeros"``.
        power_iterations: power-iteration steps per training-mode forward.
        generator: random source for the initial u and v (unit-normalised normal draws).
    """

    def __init__(
        self,
        module: nn.Conv2d,
        power_iterations: int = 1,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Conv2d) or module.padding_mode != "zeros":
            raise ValueError("SpectralNorm wraps an nn.Conv2d with padding_mode='zeros'")
        if power_iterations < 1:
            raise ValueError(f"power_iterations must be >= 1, got {power_iterations}")
        self.power_iterations = power_iterations
        weight = module.weight.detach()
        height = weight.shape[0]
        width = weight[0].numel()
        del module.weight
        u = torch.randn(height, generator=generator, dtype=weight.dtype)
        v = torch.randn(width, generator=generator, dtype=weight.dtype)
        # Registration order u, v, bar is the checkpoint's key order.
        module.register_parameter("weight_u", nn.Parameter(l2_normalize(u), requires_grad=False))
        module.register_parameter("weight_v", nn.Parameter(l2_normalize(v), requires_grad=False))
        module.register_parameter("weight_bar", nn.Parameter(weight.clone()))
        self.module = module

    @torch.no_grad()
    def power_iteration(self) -> None:
        """Update ``weight_u`` and ``weight_v`` in place by ``power_iterations`` steps."""
        conv = self.module
        w = conv.weight_bar.reshape(conv.weight_bar.shape[0], -1)
        u, v = conv.weight_u, conv.weight_v
        for _ in range(self.power_iterations):
            v.copy_(l2_normalize(torch.mv(w.t(), u)))
            u.copy_(l2_normalize(torch.mv(w, v)))

    def sigma(self) -> Tensor:
        """Spectral-norm estimate ``u . (W v)`` from the stored vectors (scalar, differentiable
        with respect to ``weight_bar``)."""
        conv = self.module
        w = conv.weight_bar.reshape(conv.weight_bar.shape[0], -1)
        return torch.dot(conv.weight_u, torch.mv(w, conv.weight_v))

    def normalized_weight(self) -> Tensor:
        """The kernel used by the convolution: ``weight_bar / sigma`` (out, in, kh, kw)."""
        return self.module.weight_bar / self.sigma()

    def forward(self, x: Tensor) -> Tensor:
        """Convolve with the spectrally normalised kernel.

        Args:
            x: (N, in, H, W) float tensor.

        Returns:
            (N, out, H', W') tensor.
        """
        if self.training:
            self.power_iteration()
        conv = self.module
        return F.conv2d(
            x,
            self.normalized_weight(),
            conv.bias,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.groups,
        )


def _sn_conv(in_planes: int, out_planes: int, kernel_size: int, stride: int = 1) -> SpectralNorm:
    conv = nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=kernel_size,
        stride=stride,
        padding=kernel_size // 2,
        bias=False,
    )
    return SpectralNorm(conv)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions) with spectral norm and a ResNet-D shortcut.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first convolution; 2 adds the shortcut
            ``downsample = [AvgPool2d(2, 2), 1x1 conv, BatchNorm]``.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _sn_conv(in_planes, planes, 3, stride)
        self.bn1 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.conv2 = _sn_conv(planes, planes, 3)
        self.bn2 = nn.BatchNorm2d(planes, eps=_BN_EPS)
        self.downsample: nn.Sequential | None = None
        if stride != 1:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(2, stride),
                _sn_conv(in_planes, planes, 1),
                nn.BatchNorm2d(planes, eps=_BN_EPS),
            )
        elif in_planes != planes:
            raise ValueError("a stride-1 BasicBlock must keep the channel count")

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (N, in_planes, H, W). Returns: (N, planes, H/stride, W/stride)."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNetEncoder(nn.Module):
    """GCA-Matting's ResNet-34-D encoder (deep stem, spectral norm), DiffMatte ``res34`` backbone.

    Args:
        in_chans: input channels (6: ImageNet-normalised RGB + one-hot trimap bg/unknown/fg).
        layers: number of BasicBlocks in ``layer1``, ``layer2``, ``layer3`` and
            ``layer_bottleneck`` (ResNet-34: (3, 4, 4, 2) here, as GCA drops a block from the
            last stage).

    Attributes:
        out_channels: channels of the output feature (512).
        size_divisibility: total stride (32).

    Note:
        Any forward in training mode updates the spectral-norm vectors ``weight_u``/``weight_v``
        in place; run inference in evaluation mode.
    """

    out_channels: int = _STAGE_PLANES[-1]
    size_divisibility: int = 32

    def __init__(self, in_chans: int = 6, layers: Sequence[int] = (3, 4, 4, 2)) -> None:
        super().__init__()
        layers = tuple(int(n) for n in layers)
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive block counts, got {layers}")
        if in_chans < 1:
            raise ValueError(f"in_chans must be positive, got {in_chans}")
        self.in_chans = in_chans
        self.conv1 = _sn_conv(in_chans, 32, 3, stride=2)
        self.conv2 = _sn_conv(32, 32, 3, stride=1)
        self.conv3 = _sn_conv(32, _STAGE_PLANES[0], 3, stride=2)
        self.bn1 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self.bn2 = nn.BatchNorm2d(32, eps=_BN_EPS)
        self.bn3 = nn.BatchNorm2d(_STAGE_PLANES[0], eps=_BN_EPS)
        in_planes = _STAGE_PLANES[0]
        for name, planes, stride, depth in zip(
            _STAGE_NAMES, _STAGE_PLANES, _STAGE_STRIDES, layers, strict=True
        ):
            blocks = [BasicBlock(in_planes, planes, stride)]
            blocks += [BasicBlock(planes, planes) for _ in range(depth - 1)]
            self.add_module(name, nn.Sequential(*blocks))
            in_planes = planes
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, SpectralNorm):
                nn.init.xavier_uniform_(m.module.weight_bar)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Residual branches start as identities (zero last BN) and the trimap channels start
        # switched off, so an ImageNet RGB initialisation is undisturbed.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
        with torch.no_grad():
            self.conv1.module.weight_bar[:, 3:] = 0

    def forward(self, x: Tensor) -> Tensor:
        """Encode an image with its trimap.

        Args:
            x: (N, in_chans, H, W) float32: ImageNet-normalised RGB then the one-hot trimap
                (bg, unknown, fg) in {0, 1}; H and W multiples of 32 for an exact /32 grid.

        Returns:
            (N, 512, H/32, W/32) float32 feature.
        """
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"ResNetEncoder expects (N, {self.in_chans}, H, W) input, got {tuple(x.shape)}"
            )
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer_bottleneck(x)


def checkpoint_filter_fn(
    state_dict: Mapping[str, Tensor],
    model: nn.Module,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Turn GCA-Matting's ImageNet ResNet-34-D checkpoint into ``ResNetEncoder`` weights.

    Strips a ``module.`` (DataParallel) prefix, unwraps a top-level ``state_dict`` entry, casts
    floating tensors to float32 and widens the first convolution from 3 to the model's input
    channels with zeros (both ``weight_bar`` and the matching entries of ``weight_v``), which
    leaves sigma and the RGB response unchanged. Keys the model does not have (e.g. a classifier
    head) are dropped and logged. Does not modify its input.

    Args:
        state_dict: the checkpoint's state dict (or the checkpoint dict holding ``state_dict``).
        model: the target :class:`ResNetEncoder`.
        generator: unused (nothing is drawn at random); part of the signature shared by every
            backbone's filter.

    Returns:
        Backbone-relative state dict (no ``model.backbone.`` prefix; the converter adds it).
    """
    in_chans = model.in_chans
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        key = key[len("module.") :] if key.startswith("module.") else key
        out[key] = value.float() if value.is_floating_point() else value.clone()

    bar_key, v_key = "conv1.module.weight_bar", "conv1.module.weight_v"
    if bar_key in out:
        bar = out[bar_key]
        if bar.shape[1] > in_chans:
            raise ValueError(f"{bar_key} has {bar.shape[1]} input channels, more than {in_chans}")
        if bar.shape[1] < in_chans:
            old_in, kh, kw = bar.shape[1:]
            wide = bar.new_zeros(bar.shape[0], in_chans, kh, kw)
            wide[:, :old_in] = bar
            out[bar_key] = wide
            if v_key in out:
                v = bar.new_zeros(in_chans, kh, kw)
                v[:old_in] = out[v_key].reshape(old_in, kh, kw)
                out[v_key] = v.reshape(-1)

    wanted = model.state_dict()
    dropped = [k for k in out if k not in wanted]
    if dropped:
        logger.info("dropping %d keys the encoder does not have: %s", len(dropped), dropped)
    return {k: v for k, v in out.items() if k in wanted}
