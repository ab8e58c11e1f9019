"""Training engine and checkpoint I/O."""

from diffmatte.engine.checkpoint import CheckpointError, load_checkpoint, save_model_weights

__all__ = ["CheckpointError", "load_checkpoint", "save_model_weights"]
