"""Layers shared by the transformer backbones."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class DropPath(nn.Module):
    """Stochastic depth: zero whole residual branches, rescale the kept ones by 1 / (1 - p).

    Args:
        drop_prob: probability p of dropping a branch.
    """

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: Tensor, sample_dims: int = 1) -> Tensor:
        """Args:
            x: (B, ...) residual branch.
            sample_dims: leading dimensions that get independent keep/drop draws (1: per
                sample; 2 for (B, T, C) prior tokens: per sample and token).

        Returns:
            Tensor like x (x itself in evaluation mode or with p = 0).
        """
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        shape = x.shape[:sample_dims] + (1,) * (x.ndim - sample_dims)
        mask = x.new_empty(shape).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Transformer feed-forward: Linear, exact GELU, Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Args: x (..., C). Returns: (..., C)."""
        return self.fc2(F.gelu(self.fc1(x)))
