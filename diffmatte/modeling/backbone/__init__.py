"""Backbones: image (+ trimap) -> feature map at stride 16 or 32."""

from diffmatte.modeling.backbone.pretrained import PRETRAINED_FORMATS, PretrainedFormat, find_format
from diffmatte.modeling.backbone.resnet import ResNetEncoder
from diffmatte.modeling.backbone.swin import PriorSwinTransformer
from diffmatte.modeling.backbone.vit import ViT
