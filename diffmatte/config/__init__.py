"""Lazy Python configs in the style of detectron2's LazyConfig, on omegaconf.

``LazyCall`` (imported as ``L`` in config files) builds deferred calls, ``LazyConfig`` loads,
overrides and saves configs, and ``instantiate`` builds the objects.
"""

from .instantiate import ConfigError, instantiate, instantiate_key, locate, target_to_string
from .lazy import LazyCall, LazyConfig

__all__ = [
    "ConfigError",
    "LazyCall",
    "LazyConfig",
    "instantiate",
    "instantiate_key",
    "locate",
    "target_to_string",
]
