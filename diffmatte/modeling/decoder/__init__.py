"""Decoders: (decoder input, time, backbone features) -> alpha logits."""

from diffmatte.modeling.decoder.dunet import DUNet, DUNetCache, MattingHead, timestep_embedding
