"""DiffMatte: diffusion for natural image matting."""

__version__ = "0.1.0"
