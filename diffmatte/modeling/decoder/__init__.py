"""Decoders: (decoder input, time, backbone features) -> alpha logits."""

from diffmatte.modeling.decoder.dunet import DUNet, MattingHead, timestep_embedding
