"""Matting losses of DiffMatte training.

Paper: Hu et al., "Diffusion for Natural Image Matting", ECCV 2024. Facts from the original
release's ``DiffusionMattingCriterion`` (docs/original_release.md#losses) and the
Laplacian loss it shares with ViTMatte (Yao et al. 2023): every term is computed on the decoder's
prediction x̂0 in [-1, 1] against x0 = 2·alpha - 1, the unknown region is ``trimap == 0.5``, all
weights are 1 and the trainer sums the terms.

- ``loss_mse``: mean squared error over all pixels.
- ``loss_unknown_l1`` / ``loss_known_l1``: mean L1 of the masked maps times
  ``N · 512² / Σmask``: the mean over masked pixels at 512² crops, a fixed fraction of it at
  other sizes (¼ at 1024², as the original trained ViTS_1024).
- ``loss_gradient``: L1 between Sobel gradients (zero padding) inside the unknown region plus
  0.01 · |∇x̂0| inside the unknown region, both axes, same normaliser.
- ``loss_laplacian``: L1 between 5-level Laplacian pyramids (5×5 binomial kernel, reflect
  padding, level ``l`` weighted 2^l, sum divided by the number of levels).

Deviation: a batch without unknown (or without known) pixels gives 0 for the masked terms instead
of the original's NaN. Losses are evaluated in float32 even under autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "binomial_kernel",
    "sobel_gradients",
    "laplacian_pyramid",
    "laplacian_loss",
    "MattingCriterion",
]

# The original's normaliser constant: 512 * 512 pixels.
REFERENCE_PIXELS = 512 * 512


def binomial_kernel(
    device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The 5×5 binomial (Gaussian) kernel, outer product of [1, 4, 6, 4, 1] / 16.

    Returns:
        Tensor of shape (1, 1, 5, 5) summing to 1.
    """
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype) / 16.0
    return torch.outer(row, row)[None, None]


def sobel_gradients(x: Tensor) -> tuple[Tensor, Tensor]:
    """Horizontal and vertical Sobel responses with zero padding (cross-correlation).

    Args:
        x: (N,1,H,W) float map.

    Returns:
        ``(gx, gy)``, each (N,1,H,W): gx uses [[-1,0,1],[-2,0,2],[-1,0,1]], gy its transpose.
    """
    kx = torch.tensor(
        [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype
    )
    kernels = torch.stack([kx, kx.t()])[:, None]
    grads = F.conv2d(x, kernels, padding=1)
    return grads[:, :1], grads[:, 1:]


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    n, c, h, w = x.shape
    padded = F.pad(x.reshape(n * c, 1, h, w), (2, 2, 2, 2), mode="reflect")
    return F.conv2d(padded, kernel).reshape(n, c, h, w)


def laplacian_pyramid(x: Tensor, levels: int = 5) -> list[Tensor]:
    """Band-pass levels of a Laplacian pyramid (no low-pass residual).

    At each level the map is cropped to even height and width, blurred and subsampled by 2
    (``down``); ``down`` is re-expanded by zero insertion, ×4 and the same blur (``up``), and the
    level is ``current - up``. The next level starts from ``down``.

    Args:
        x: (N,C,H,W) float map with H, W >= 2^(levels+1) (64 for 5 levels), so that every
            level is at least 4×4 after cropping (reflect padding by 2 needs 3).
        levels: number of band-pass levels.

    Returns:
        ``levels`` tensors, level ``l`` of shape (N, C, ~H/2^l, ~W/2^l).

    Raises:
        ValueError: the input is too small for the requested number of levels.
    """
    kernel = binomial_kernel(x.device, x.dtype)
    current = x
    pyramid = []
    for level in range(levels):
        h, w = current.shape[-2:]
        if min(h, w) < 4:
            raise ValueError(
                f"input of size {tuple(x.shape[-2:])} is too small for a {levels}-level "
                f"Laplacian pyramid (level {level} would be {h}x{w})"
            )
        current = current[..., : h - h % 2, : w - w % 2]
        down = _blur(current, kernel)[..., ::2, ::2]
        expanded = torch.zeros_like(current)
        expanded[..., ::2, ::2] = 4.0 * down
        pyramid.append(current - _blur(expanded, kernel))
        current = down
    return pyramid


def laplacian_loss(pred: Tensor, target: Tensor, levels: int = 5) -> Tensor:
    """Weighted L1 between Laplacian pyramids: Σ_l 2^l · mean|P_l(pred) - P_l(target)| / levels.

    Args:
        pred: (N,C,H,W) float.
        target: (N,C,H,W) float, same shape.
        levels: number of pyramid levels.

    Returns:
        Scalar tensor.
    """
    loss = pred.new_zeros(())
    for level, (p, t) in enumerate(
        zip(laplacian_pyramid(pred, levels), laplacian_pyramid(target, levels), strict=True)
    ):
        loss = loss + (2**level) * F.l1_loss(p, t)
    return loss / levels


def _region_scale(mask: Tensor) -> Tensor:
    """``N · 512² / Σmask`` (0 for an empty mask) for a (N,1,H,W) 0/1 float mask."""
    total = mask.sum()
    return torch.where(total > 0, mask.shape[0] * REFERENCE_PIXELS / total.clamp_min(1.0), 0.0)


class MattingCriterion(nn.Module):
    """DiffMatte's training losses (MSE + matting losses), unweighted.

    Args:
        use_mse: return ``loss_mse``.
        use_matting: return the four matting terms (unknown/known L1, gradient, Laplacian).
        laplacian_levels: number of Laplacian pyramid levels.
    """

    def __init__(
        self, use_mse: bool = True, use_matting: bool = True, laplacian_levels: int = 5
    ) -> None:
        super().__init__()
        if not (use_mse or use_matting):
            raise ValueError("MattingCriterion needs use_mse or use_matting")
        self.use_mse = use_mse
        self.use_matting = use_matting
        self.laplacian_levels = laplacian_levels

    def forward(self, pred: Tensor, target: Tensor, trimap: Tensor) -> dict[str, Tensor]:
        """Compute the loss terms.

        Args:
            pred: (N,1,H,W) predicted x̂0 in [-1, 1].
            target: (N,1,H,W) ground truth x0 = 2·alpha - 1 in [-1, 1].
            trimap: (N,1,H,W) float in {0, 0.5, 1}; 0.5 marks the unknown region.

        Returns:
            Scalar float32 tensors keyed ``loss_mse``, ``loss_unknown_l1``, ``loss_known_l1``,
            ``loss_gradient``, ``loss_laplacian`` (those enabled).
        """
        if pred.shape != target.shape or pred.shape != trimap.shape or pred.shape[1] != 1:
            raise ValueError(
                "pred, target and trimap must all be (N,1,H,W); got "
                f"{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(trimap.shape)}"
            )
        with torch.autocast(device_type=pred.device.type, enabled=False):
            return self._losses(pred.float(), target.float(), trimap.float())

    def _losses(self, pred: Tensor, target: Tensor, trimap: Tensor) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        if self.use_mse:
            losses["loss_mse"] = F.mse_loss(pred, target)
        if not self.use_matting:
            return losses
        unknown = (trimap == 0.5).to(pred.dtype)
        known = 1.0 - unknown
        unknown_scale = _region_scale(unknown)
        losses["loss_unknown_l1"] = F.l1_loss(pred * unknown, target * unknown) * unknown_scale
        losses["loss_known_l1"] = F.l1_loss(pred * known, target * known) * _region_scale(known)
        pred_gx, pred_gy = sobel_gradients(pred)
        target_gx, target_gy = sobel_gradients(target)
        gradient = (
            F.l1_loss(pred_gx * unknown, target_gx * unknown)
            + F.l1_loss(pred_gy * unknown, target_gy * unknown)
            + 0.01 * (pred_gx * unknown).abs().mean()
            + 0.01 * (pred_gy * unknown).abs().mean()
        )
        losses["loss_gradient"] = gradient * unknown_scale
        losses["loss_laplacian"] = laplacian_loss(pred, target, self.laplacian_levels)
        return losses
