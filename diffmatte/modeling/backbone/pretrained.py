"""The pre-training checkpoints each backbone family starts from, and how to convert them.

Every family module (``vit``, ``resnet``, ``swin``) ends with a ``checkpoint_filter_fn`` of one
signature, ``(state_dict, model, generator=None) -> dict``, as timm's filters: it maps a
foreign checkpoint onto the family's parameter names for the given target backbone (input
channels widened for the trimap, heads and class tokens dropped, extra tables drawn from
``generator``). :data:`PRETRAINED_FORMATS` binds each family's filter to the keys that
recognise its pre-training files, the released config it was used for, and the backbone
parameters such files do not have. A new backbone family adds one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diffmatte.modeling.backbone import resnet, swin, vit

__all__ = ["PRETRAINED_FORMATS", "CheckpointFilter", "PretrainedFormat", "find_format"]

CheckpointFilter = Callable[
    [Mapping[str, Tensor], nn.Module, "torch.Generator | None"], dict[str, Tensor]
]


@dataclass(frozen=True)
class PretrainedFormat:
    """One backbone family's pre-training checkpoints.

    Attributes:
        name: family name (``"vit"``, ``"resnet"``, ``"swin"``).
        backbone: the family's backbone class.
        checkpoint_filter: the family's ``checkpoint_filter_fn``.
        marker_keys: keys that every pre-training file of the family has, and no other has.
        released_configs: width of ``width_key`` -> config name of the released model that
            started from such a file; the key ``None`` is used when ``width_key`` is None.
        width_key: tensor whose last dimension tells the released configs apart, or None.
        from_scratch: parts of the backbone parameter names that such files do not have (those
            parameters keep their initialisation).
    """

    name: str
    backbone: type[nn.Module]
    checkpoint_filter: CheckpointFilter
    marker_keys: tuple[str, ...]
    released_configs: Mapping[int | None, str]
    width_key: str | None = None
    from_scratch: tuple[str, ...] = ()

    def recognises(self, state_dict: Mapping[str, Tensor]) -> bool:
        """Whether ``state_dict`` (unwrapped, no ``module.`` prefix) is of this family."""
        return all(key in state_dict for key in self.marker_keys)

    def default_config(self, state_dict: Mapping[str, Tensor]) -> str | None:
        """Name of the released config whose backbone fits ``state_dict``; None if unknown."""
        if self.width_key is None:
            return self.released_configs.get(None)
        tensor = state_dict.get(self.width_key)
        if not isinstance(tensor, Tensor) or tensor.ndim == 0:
            return None
        return self.released_configs.get(int(tensor.shape[-1]))

    def starts_from_scratch(self, key: str) -> bool:
        """Whether backbone parameter ``key`` is one that pre-training files do not have."""
        return any(part in key for part in self.from_scratch)


PRETRAINED_FORMATS: dict[str, PretrainedFormat] = {
    fmt.name: fmt
    for fmt in (
        # DINO ViT-S/16 (dino_deitsmall16_pretrain.pth), MAE ViT-B/16 (mae_pretrain_vit_base.pth).
        PretrainedFormat(
            name="vit",
            backbone=vit.ViT,
            checkpoint_filter=vit.checkpoint_filter_fn,
            marker_keys=("pos_embed", "blocks.0.attn.qkv.weight"),
            released_configs={384: "ViTS", 768: "ViTB"},
            width_key="pos_embed",
            # Matting-ViT parts that plain ViT pre-training does not have.
            from_scratch=(".attn.rel_pos_h", ".attn.rel_pos_w", ".residual."),
        ),
        # GCA-Matting's ImageNet ResNet-34-D encoder (model_best_resnet34_En_nomixup.pth).
        PretrainedFormat(
            name="resnet",
            backbone=resnet.ResNetEncoder,
            checkpoint_filter=resnet.checkpoint_filter_fn,
            marker_keys=("conv1.module.weight_bar",),
            released_configs={None: "res34"},
        ),
        # Microsoft's Swin-T (swin_tiny_patch4_window7_224.pth).
        PretrainedFormat(
            name="swin",
            backbone=swin.PriorSwinTransformer,
            checkpoint_filter=swin.checkpoint_filter_fn,
            marker_keys=("layers.0.blocks.0.attn.relative_position_bias_table",),
            released_configs={None: "swin_t"},
        ),
    )
}


def find_format(state_dict: Mapping[str, Tensor]) -> PretrainedFormat | None:
    """The family whose pre-training files look like ``state_dict``; None if none does."""
    for fmt in PRETRAINED_FORMATS.values():
        if fmt.recognises(state_dict):
            return fmt
    return None
