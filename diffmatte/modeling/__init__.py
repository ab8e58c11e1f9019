"""Models: backbones, the DUNet decoder, trimap encodings, the DiffMatte wrapper, losses."""

from diffmatte.modeling.diffmatte import DiffMatte, MattingOutput, postprocess_alpha

__all__ = ["DiffMatte", "MattingOutput", "postprocess_alpha"]
