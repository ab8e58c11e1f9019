"""Functional inference: loading a model, seeded noise, predicting one image or a batch.

DiffMatte (Hu et al. 2023, "Diffusion for Natural Image Matting", arXiv:2312.05915) predicts an
alpha matte by running the backbone once and the diffusion decoder once per sampling step,
starting from Gaussian noise of the image's (unpadded) size. The released scripts drew that noise
from the global RNG after model construction, so their results depended on module initialisation
and on the images processed before. Here the initial noise of every image is

    torch.randn(1, 1, H, W, generator=torch.Generator().manual_seed(seed))

drawn on the CPU and then moved to the device, so a result depends only on the image, the
weights, the sampler and the seed: not on processing order, batch or number of processes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from diffmatte.config import LazyConfig, instantiate_key
from diffmatte.diffusion.samplers import Sampler, StepCallback
from diffmatte.engine.checkpoint import load_checkpoint
from diffmatte.modeling.trimap import trimap_from_gray_demo, trimap_from_uint8
from diffmatte.utils.distributed import get_local_rank
from diffmatte.utils.rng import check_seed

__all__ = [
    "DEFAULT_SEED",
    "Prediction",
    "resolve_device",
    "resolve_config_file",
    "build_model",
    "load_model",
    "seeded_generator",
    "initial_noise",
    "trimap_to_model",
    "predict_alpha",
    "batchable",
    "predict_alphas",
]

logger = logging.getLogger(__name__)

# The seed of the original Composition-1k script (train.seed in its configs).
DEFAULT_SEED = 8282


@dataclass
class Prediction:
    """Alpha matte of one image.

    Attributes:
        alpha: float32 (H, W) in [0, 1], before any quantisation; trimap background is 0 and
            trimap foreground is 1.
        trajectory: the x0 prediction of each sampling step mapped to alpha, float32 (H, W) in
            [0, 1], post-processed like ``alpha``; None unless requested.
    """

    alpha: np.ndarray
    trajectory: list[np.ndarray] | None = None


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turns a ``--device`` value into a device.

    Args:
        device: ``"auto"`` / None (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:1"``, ... A bare ``"cuda"`` (or auto on a CUDA machine) picks the GPU given by
            ``$LOCAL_RANK``, so each ``torchrun`` process gets its own GPU.

    Returns:
        The device.

    Raises:
        ValueError: the string is not a device, or CUDA was asked for but is not available.
    """
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"invalid device {str(device)!r}: {err}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r} requested but CUDA is not available")
        if resolved.index is None:
            resolved = torch.device("cuda", get_local_rank() % torch.cuda.device_count())
    return resolved


def resolve_config_file(value: str | os.PathLike) -> Path:
    """A config file path, or a bare config name such as ``ViTS`` or ``ViTS_1024``.

    A name that is not an existing path is looked up as ``configs/<name>.py`` in the working
    directory, then beside the installed package (a source checkout).

    Args:
        value: path or name.

    Returns:
        The path to use (unchanged if nothing matched, so loading reports it as missing).
    """
    path = Path(value)
    if path.exists() or path.suffix == ".py":
        return path
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = root / "configs" / f"{path.name}.py"
        if candidate.is_file():
            return candidate
    return path


def build_model(
    config_file: str | os.PathLike,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Builds the ``model`` of a config file, in eval mode, on ``device`` (weights not loaded).

    Args:
        config_file: a LazyConfig Python file such as ``configs/ViTS.py``.
        overrides: ``key=value`` strings applied to the config first, e.g.
            ``["model.sampler.steps=10"]``.
        device: where to put the model.

    Returns:
        The instantiated model (a :class:`~diffmatte.modeling.diffmatte.DiffMatte`).

    Raises:
        diffmatte.config.ConfigError: the config file or an override cannot be used, or the
            model cannot be built with them (one line naming the override).
    """
    cfg = LazyConfig.load(str(config_file))
    if overrides:
        cfg = LazyConfig.apply_overrides(cfg, list(overrides))
    model = instantiate_key(cfg, "model", overrides)
    return model.to(device).eval()


def load_model(
    config_file: str | os.PathLike,
    checkpoint: str | os.PathLike,
    overrides: Sequence[str] = (),
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Builds the model of a config file and loads released weights into it (strictly).

    Args:
        config_file: a LazyConfig Python file.
        checkpoint: a ``.pth`` file in the released format (see ``load_checkpoint``).
        overrides: ``key=value`` config overrides.
        device: where to put the model.

    Returns:
        The model in eval mode on ``device``.

    Raises:
        diffmatte.config.ConfigError: bad config file or override.
        diffmatte.engine.checkpoint.CheckpointError: missing, unreadable or mismatched weights.
    """
    model = build_model(config_file, overrides, device)
    load_checkpoint(model, checkpoint)
    return model.eval()


def seeded_generator(seed: int) -> torch.Generator:
    """The CPU generator an image's random numbers come from.

    It first gives the initial noise (:func:`initial_noise`), then the noise a DDPM sampler
    adds at each step (drawn on the CPU and moved to the device), so DDPM results do not
    depend on the device's RNG either. On the CPU this is the random stream the original
    scripts used after ``torch.manual_seed(seed)``.

    Args:
        seed: an integer with ``0 <= seed < 2**63``.

    Returns:
        A fresh CPU generator.

    Raises:
        ValueError: the seed is out of range (see :func:`~diffmatte.utils.rng.check_seed`).
    """
    return torch.Generator().manual_seed(check_seed(seed))


def initial_noise(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """The initial diffusion state of an H x W image.

    With a fresh ``seeded_generator(seed)`` this is exactly
    ``torch.randn(1, 1, H, W, generator=torch.Generator().manual_seed(seed))``.

    Args:
        height: unpadded image height.
        width: unpadded image width.
        generator: a CPU generator, advanced by H * W draws.

    Returns:
        float32 CPU tensor of shape (1, 1, H, W), standard normal.
    """
    return torch.randn(1, 1, height, width, generator=generator)


def trimap_to_model(trimap: np.ndarray, thresholds: str = "composition1k") -> torch.Tensor:
    """Maps a stored grey trimap to the model's three levels.

    Args:
        trimap: uint8 (H, W), 0..255.
        thresholds: ``"composition1k"`` (the original ``inference.py``: ``< 85`` background,
            ``>= 170`` foreground, else unknown) or ``"demo"`` (the original
            ``run_one_image.py``: v / 255 ``< 0.1`` background, ``> 0.9`` foreground, else
            unknown). Both agree on 0 / 128 / 255 trimaps.

    Returns:
        float32 tensor (1, 1, H, W) with values in {0, 0.5, 1}.
    """
    if trimap.dtype != np.uint8 or trimap.ndim != 2:
        raise ValueError(f"expected a uint8 (H, W) trimap, got {trimap.dtype} {trimap.shape}")
    values = torch.from_numpy(np.ascontiguousarray(trimap))[None, None]
    if thresholds == "composition1k":
        return trimap_from_uint8(values)
    if thresholds == "demo":
        return trimap_from_gray_demo(values)
    raise ValueError(f"unknown trimap thresholds {thresholds!r} (use 'composition1k' or 'demo')")


def _model_device(model: nn.Module) -> torch.device:
    device = getattr(model, "device", None)  # DiffMatte and its inference form have one
    if isinstance(device, torch.device):
        return device
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def predict_alpha(
    model: nn.Module,
    image: np.ndarray,
    trimap: torch.Tensor,
    sampler: Sampler | None = None,
    seed: int = DEFAULT_SEED,
    device: torch.device | None = None,
    return_trajectory: bool = False,
    callback: StepCallback | None = None,
) -> Prediction:
    """Predicts the alpha matte of one image.

    Args:
        model: a :class:`~diffmatte.modeling.diffmatte.DiffMatte` in eval mode.
        image: float32 (H, W, 3) RGB in [0, 1].
        trimap: float32 (1, 1, H, W) or (H, W) with values in {0, 0.5, 1}
            (see :func:`trimap_to_model`).
        sampler: sampling strategy; None uses the model's configured sampler.
        seed: fixes the initial noise and the DDPM step noise (see :func:`seeded_generator`).
        device: where to run; defaults to the model's device.
        return_trajectory: also return the x0 prediction of every step.
        callback: ``callback(step, steps, x0)`` after each sampling step.

    Returns:
        The :class:`Prediction`, as numpy arrays on the CPU.
    """
    device = _model_device(model) if device is None else device
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    height, width = image.shape[:2]
    trimap = trimap.reshape(1, 1, *trimap.shape[-2:])
    if tuple(trimap.shape[-2:]) != (height, width):
        raise ValueError(f"trimap size {tuple(trimap.shape[-2:])} != image size {(height, width)}")
    image_tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None]
    generator = seeded_generator(seed)
    noise = initial_noise(height, width, generator)
    extra = {} if callback is None else {"callback": callback}
    output = model.sample(
        image_tensor.to(device, torch.float32),
        trimap.to(device, torch.float32),
        sampler=sampler,
        noise=noise.to(device),
        generator=generator,
        return_trajectory=return_trajectory,
        **extra,
    )
    alpha = output.alpha[0, 0].float().cpu().numpy()
    trajectory = None
    if return_trajectory:
        trajectory = [step[0, 0].float().cpu().numpy() for step in output.trajectory]
    return Prediction(alpha=alpha, trajectory=trajectory)


def batchable(model: nn.Module, sampler: Sampler | None = None) -> bool:
    """Whether images of the same size may share one ``sample`` call with unchanged results.

    The initial noise is drawn per image, but the step noise of DDPM with more than one step
    comes from one generator per call, so such runs take one image at a time.

    Args:
        model: the model (its default sampler applies when ``sampler`` is None).
        sampler: the sampling strategy.

    Returns:
        False for multi-step DDPM, True otherwise.
    """
    sampler = model.sampler if sampler is None else sampler
    return sampler.method != "ddpm" or sampler.steps == 1


def predict_alphas(
    model: nn.Module,
    images: Sequence[np.ndarray],
    trimaps: Sequence[torch.Tensor],
    sampler: Sampler | None = None,
    seed: int = DEFAULT_SEED,
    device: torch.device | None = None,
) -> list[Prediction]:
    """Predicts several images of the same size in one batch (see :func:`batchable`).

    Every image gets its own initial noise from ``seeded_generator(seed)``, so each result equals
    :func:`predict_alpha` of that image alone up to float rounding. Falls back to one image at a
    time when the sampler is not :func:`batchable`.

    Args:
        model: a :class:`~diffmatte.modeling.diffmatte.DiffMatte` in eval mode.
        images: float32 (H, W, 3) RGB arrays in [0, 1], all of the same size.
        trimaps: float32 (1, 1, H, W) or (H, W) tensors in {0, 0.5, 1}, one per image.
        sampler: sampling strategy; None uses the model's configured sampler.
        seed: seed of every image's noise.
        device: where to run; defaults to the model's device.

    Returns:
        One :class:`Prediction` per image, in order.

    Raises:
        ValueError: sizes differ or shapes are malformed.
    """
    if len(images) != len(trimaps):
        raise ValueError(f"{len(images)} images but {len(trimaps)} trimaps")
    if not images:
        return []
    if len(images) == 1 or not batchable(model, sampler):
        return [
            predict_alpha(model, image, trimap, sampler, seed, device)
            for image, trimap in zip(images, trimaps, strict=True)
        ]
    device = _model_device(model) if device is None else device
    height, width = images[0].shape[:2]
    for image, trimap in zip(images, trimaps, strict=True):
        if image.ndim != 3 or image.shape[2] != 3 or image.shape[:2] != (height, width):
            raise ValueError(f"expected ({height}, {width}, 3) images, got shape {image.shape}")
        if tuple(trimap.shape[-2:]) != (height, width):
            raise ValueError(
                f"trimap size {tuple(trimap.shape[-2:])} != image size {(height, width)}"
            )
    image_tensor = torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)))
    trimap_tensor = torch.cat([trimap.reshape(1, 1, height, width) for trimap in trimaps])
    generators = [seeded_generator(seed) for _ in images]
    noise = torch.cat([initial_noise(height, width, generator) for generator in generators])
    # Only a last DDPM step draws from the generator, and that noise is multiplied by zero.
    output = model.sample(
        image_tensor.to(device, torch.float32),
        trimap_tensor.to(device, torch.float32),
        sampler=sampler,
        noise=noise.to(device),
        generator=generators[0],
    )
    alphas = output.alpha[:, 0].float().cpu().numpy()
    return [Prediction(alpha=alpha) for alpha in alphas]
