"""DiffMatte inference on exported ONNX graphs with numpy and onnxruntime only (no torch).

    predictor = OnnxPredictor("exported/ViTS")
    prediction = predictor.predict(image, trimap, strategy="ddim10", seed=8282)
    prediction.alpha  # float32 (H, W) in [0, 1]

Same inputs, outputs and seed rule as :class:`diffmatte.inference.Predictor`: the initial noise
is ``torch.randn(1, 1, H, W, generator=torch.Generator().manual_seed(seed))`` reproduced by
:class:`~diffmatte.deploy.noise.TorchCompatibleNormal`, the DDPM step noise continues that
stream. Per image the backbone and the decoder's step-independent graph run once, then a step
graph once per sampling step (the banded one above ``banded_above_pixels``); preprocessing,
padding, the sampler and post-processing are the numpy code below (docs/deploy.md describes them
for other languages).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffmatte.deploy.noise import TorchCompatibleNormal
from diffmatte.utils.fileio import file_sha256

__all__ = [
    "DEFAULT_BANDED_ABOVE_PIXELS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_SEED",
    "ExportFormatError",
    "InputTooLargeError",
    "OnnxPredictor",
    "Prediction",
    "padded_size",
    "parse_size",
    "parse_strategy",
    "time_grid",
    "trimap_levels",
]

FORMAT = "diffmatte-onnx"
FORMAT_VERSION = 2
MANIFEST_NAME = "manifest.json"
DEFAULT_SEED = 8282
# Image sizes, in padded pixels per batch. onnxruntime keeps the decoder step's full-resolution
# buffers (the last up blocks' transposed-convolution columns and upsampled inputs) in its memory
# arena: with the plain step graph about 3.5 GiB per megapixel (whole ViT-S prediction, 2
# threads: 3.1 GiB at 1024 x 1024, 4.8 GiB at 1216 x 1216, 8.6 GiB at 1536 x 1536, 13.9 GiB at
# 2048 x 2048). The banded step graph computes that tail in 8 bands: 5.2 GiB at 2048 x 2048,
# 7.2 GiB at 2560 x 2560, for up to 25 % more work in the tail at 512 x 512. So the plain graph
# runs up to 1.5 Mi pixels (1216 x 1216, 1024 x 1536), the banded one above, up to 4 Mi pixels
# (2048 x 2048). The backbone is small beside them (ViT-S at 2048 x 2048: 1.5 GiB alone).
DEFAULT_BANDED_ABOVE_PIXELS = 1536 * 1024
DEFAULT_MAX_PIXELS = 2048 * 2048
PREPARED_NAMES = ("cond_conv1", "cond_shortcut", "mid_activated", "mid_shortcut")
_STRATEGY = re.compile(r"(ddim|ddpm)(\d{1,9})")
# The step bound of diffmatte.diffusion.samplers (not imported: this module runs without torch).
MAX_STEPS = 1000

ProgressFn = Callable[[int, int], None]


class ExportFormatError(ValueError):
    """The export directory is missing, incomplete, corrupt or of another format."""


class InputTooLargeError(ValueError):
    """The image exceeds the runtime's size bound (see :meth:`OnnxPredictor.check_size`)."""


@dataclass
class Prediction:
    """Alpha matte of one image (the fields of ``diffmatte.inference.functional.Prediction``).

    Attributes:
        alpha: float32 (H, W) in [0, 1]; trimap background 0, trimap foreground 1.
        trajectory: each step's x0 prediction mapped to alpha like ``alpha``; None unless
            requested.
    """

    alpha: np.ndarray
    trajectory: list[np.ndarray] | None = None


def parse_strategy(strategy: str) -> tuple[str, int]:
    """``"ddimN"`` / ``"ddpmN"`` (1 <= N <= ``MAX_STEPS``), or a Sampler -> (method, steps).

    Raises:
        ValueError: anything else.
    """
    strategy = getattr(strategy, "strategy", strategy)  # a diffmatte Sampler gives its string
    match = _STRATEGY.fullmatch(strategy.strip().lower()) if isinstance(strategy, str) else None
    if match is None or not 1 <= int(match.group(2)) <= MAX_STEPS:
        raise ValueError(
            f"invalid sampling strategy {strategy!r}: expected 'ddimN' or 'ddpmN' with an "
            f"integer number of steps 1 <= N <= {MAX_STEPS}, e.g. 'ddim10' or 'ddpm1'"
        )
    return match.group(1), int(match.group(2))


def parse_size(value: str) -> tuple[int, int]:
    """``"HxW"`` (e.g. "301x417") -> (height, width), each side >= 4.

    Raises:
        ValueError: anything else.
    """
    try:
        height, width = (int(side) for side in value.lower().split("x"))
    except ValueError:
        raise ValueError(f"expected HxW, e.g. 301x417, got {value!r}") from None
    if height < 4 or width < 4:
        raise ValueError(f"image sides must be at least 4 pixels, got {value!r}")
    return height, width


def time_grid(steps: int) -> np.ndarray:
    """float32 times ``1 - k / steps``, k = 0..steps, rounded as ``torch.linspace(1, 0, steps +
    1)``: a float32 step ``-1 / steps``, values ``1 + step k`` in the first half and
    ``0 - step (steps - k)`` in the second, each evaluated in double and rounded once."""
    count = steps + 1
    step = float(np.float32(-1.0) / np.float32(steps))
    k = np.arange(count, dtype=np.float64)
    values = np.where(k < count // 2, 1.0 + step * k, 0.0 - step * (count - 1 - k))
    return values.astype(np.float32)


def padded_size(height: int, width: int, divisibility: int = 32) -> tuple[int, int]:
    """The original's padding: unchanged when both sides are multiples of ``divisibility``,
    else both grow to ``side + divisibility - side % divisibility`` (640x643 -> 672x672)."""
    if height % divisibility == 0 and width % divisibility == 0:
        return height, width
    return (
        height + divisibility - height % divisibility,
        width + divisibility - width % divisibility,
    )


def trimap_levels(trimap: np.ndarray, thresholds: str = "composition1k") -> np.ndarray:
    """A trimap as float32 levels {0, 0.5, 1}.

    Args:
        trimap: uint8 (H, W) 0..255, or float (H, W) already in {0, 0.5, 1}.
        thresholds: for uint8: "composition1k" (< 85 background, >= 170 foreground) or "demo"
            (v / 255 < 0.1 background, > 0.9 foreground).

    Raises:
        ValueError: unknown thresholds, wrong shape, or float values outside {0, 0.5, 1}.
    """
    trimap = np.asarray(trimap)
    if trimap.ndim != 2:
        raise ValueError(f"expected an (H, W) trimap, got shape {trimap.shape}")
    if trimap.dtype == np.uint8:
        values = trimap.astype(np.float32)
        out = np.full(trimap.shape, 0.5, np.float32)
        if thresholds == "composition1k":
            out[values < 85] = 0.0
            out[values >= 170] = 1.0
        elif thresholds == "demo":
            values = values / np.float32(255)
            out[values < 0.1] = 0.0
            out[values > 0.9] = 1.0
        else:
            raise ValueError(
                f"unknown trimap thresholds {thresholds!r} (use 'composition1k' or 'demo')"
            )
        return out
    out = trimap.astype(np.float32)
    if ((out != 0) & (out != 0.5) & (out != 1)).any():
        raise ValueError("trimap values must be in {0, 0.5, 1} (or a uint8 0..255 trimap)")
    return out


def _pad(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    pad_h, pad_w = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if pad_h == 0 and pad_w == 0:
        return np.ascontiguousarray(x)
    return np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)))


class OnnxPredictor:
    """An exported DiffMatte loaded into onnxruntime sessions, with the sampler in numpy.

    Args:
        onnx_dir: directory written by ``tools/export_onnx.py`` (manifest and four graphs).
        threads: intra-op threads of each session; None lets onnxruntime choose.
        providers: onnxruntime execution providers; default CPU.
        verify: check each graph's SHA-256 against the manifest.
        max_pixels: bound of the padded image size (pixels x batch); larger inputs are refused
            with :class:`InputTooLargeError` (see :meth:`check_size`); None removes it.
        banded_above_pixels: images above this padded size (pixels x batch) run the banded
            step graph, which needs less memory; None never uses it.

    Raises:
        ExportFormatError: missing, corrupt or unknown export (one-line message).
    """

    def __init__(
        self,
        onnx_dir: str | os.PathLike,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        verify: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        banded_above_pixels: int | None = DEFAULT_BANDED_ABOVE_PIXELS,
    ) -> None:
        import onnxruntime as ort

        root = Path(onnx_dir)
        manifest_path = root / MANIFEST_NAME
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as err:
            raise ExportFormatError(f"{manifest_path}: cannot read the manifest ({err})") from None
        if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
            raise ExportFormatError(f"{manifest_path}: not a {FORMAT} v{FORMAT_VERSION} manifest")
        if manifest["diffusion"]["schedule"] != "linear":
            raise ExportFormatError(
                f"{manifest_path}: noise schedule {manifest['diffusion']['schedule']!r} is not "
                "supported by this runtime (only 'linear')"
            )
        self.manifest = manifest
        self.max_pixels = max_pixels
        self.banded_above_pixels = banded_above_pixels
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.sessions = {}
        for key in ("backbone", "decoder_prepare", "decoder_step", "decoder_step_banded"):
            path = root / manifest["graphs"][key]["file"]
            if not path.is_file():
                raise ExportFormatError(f"{path}: graph file missing")
            if verify and file_sha256(path) != manifest["graphs"][key]["sha256"]:
                raise ExportFormatError(f"{path}: SHA-256 does not match the manifest")
            self.sessions[key] = ort.InferenceSession(
                str(path), sess_options=options, providers=providers
            )
        self.pixel_mean = np.asarray(manifest["pixel_mean"], np.float32).reshape(1, 3, 1, 1)
        self.pixel_std = np.asarray(manifest["pixel_std"], np.float32).reshape(1, 3, 1, 1)
        diffusion = manifest["diffusion"]
        self.scale = np.float32(diffusion["scale"])

    @property
    def config(self) -> str:
        """The config name recorded at export."""
        return self.manifest["config"]

    # -- preprocessing -------------------------------------------------------------------------

    def check_size(self, height: int, width: int, batch: int = 1) -> None:
        """Raises :class:`InputTooLargeError` when ``batch`` padded images of (height, width)
        exceed ``max_pixels``: onnxruntime's memory grows with the image even with the banded
        step graph (see ``DEFAULT_MAX_PIXELS``), where the PyTorch backend's tiles bound it."""
        if self.max_pixels is None:
            return
        size = padded_size(height, width, self.manifest["padding"]["divisibility"])
        pixels = batch * size[0] * size[1]
        if pixels > self.max_pixels:
            raise InputTooLargeError(
                f"image {height}x{width} (padded {size[0]}x{size[1]}, {pixels / 2**20:.2f} Mi "
                f"pixels) exceeds the ONNX runtime's limit of {self.max_pixels / 2**20:.2f} Mi "
                "pixels (its memory grows with the image); use the PyTorch backend"
            )

    def _inputs(self, image: np.ndarray, trimap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(1,4|6,H',W') backbone input and (1,6,H',W') decoder condition, padded."""
        height, width = trimap.shape[-2:]
        size = padded_size(height, width, self.manifest["padding"]["divisibility"])
        pixels = image.transpose(2, 0, 1)[None].astype(np.float32)
        image_norm = (pixels - self.pixel_mean) / self.pixel_std
        levels = trimap[None, None]
        index = np.round(levels * 2)
        onehot = np.concatenate([index == 0, index == 1, index == 2], axis=1).astype(np.float32)
        if self.manifest["backbone_trimap"] == "value":
            backbone_input = np.concatenate([image_norm, levels], axis=1)
        else:
            backbone_input = np.concatenate([image_norm, onehot], axis=1)
        condition = np.concatenate([image_norm, onehot], axis=1) * np.float32(2) - np.float32(1)
        return _pad(backbone_input, size), _pad(condition, size)

    # -- diffusion -----------------------------------------------------------------------------

    def _gamma(self, t: np.float32) -> np.float32:
        clip = np.float32(self.manifest["diffusion"]["gamma_clip_min"])
        return np.maximum(np.float32(1) - t, clip)

    def _alpha_sigma(self, t: np.float32) -> tuple[np.float32, np.float32]:
        gamma = self._gamma(t)
        return np.sqrt(gamma) * self.scale, np.sqrt(np.float32(1) - gamma)

    def _log_snr(self, t: np.float32) -> np.float32:
        gamma = self._gamma(t)
        clip = np.float32(self.manifest["diffusion"]["log_snr_clip_min"])
        with np.errstate(divide="ignore"):
            return np.log(np.maximum(gamma / (np.float32(1) - gamma), clip))

    def _normalize(self, z: np.ndarray) -> np.ndarray:
        if not self.manifest["diffusion"]["normalize_variance"]:
            return z
        std = np.float32(z.astype(np.float64).std())
        return z / max(std, np.float32(self.manifest["diffusion"]["std_clip_min"]))

    def _postprocess(self, x0: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        alpha = np.clip((x0 + np.float32(1)) * np.float32(0.5), 0.0, 1.0).astype(np.float32)
        alpha[trimap == 0] = 0.0
        alpha[trimap == 1] = 1.0
        return alpha

    # -- prediction ----------------------------------------------------------------------------

    def predict(
        self,
        image: np.ndarray,
        trimap: np.ndarray,
        strategy: str | None = None,
        seed: int = DEFAULT_SEED,
        return_trajectory: bool = False,
        trimap_thresholds: str = "composition1k",
        progress: ProgressFn | None = None,
    ) -> Prediction:
        """Alpha matte of one image (the signature of ``diffmatte.inference.Predictor.predict``).

        Args:
            image: float32 (H, W, 3) RGB in [0, 1].
            trimap: uint8 (H, W) 0..255 (mapped with ``trimap_thresholds``) or float levels
                {0, 0.5, 1}.
            strategy: "ddimN" / "ddpmN"; None uses the config's default sampler.
            seed: fixes the initial noise and the DDPM step noise.
            return_trajectory: also return each step's x0 prediction.
            trimap_thresholds: "composition1k" or "demo", for uint8 trimaps.
            progress: ``progress(step, steps)`` after each sampling step.

        Returns:
            The :class:`Prediction`.

        Raises:
            ValueError: malformed inputs or strategy; :class:`InputTooLargeError` for images
                beyond ``max_pixels``.
        """
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
        levels = trimap_levels(trimap, trimap_thresholds)
        height, width = image.shape[:2]
        if levels.shape != (height, width):
            raise ValueError(f"trimap size {levels.shape} != image size {(height, width)}")
        method, steps = parse_strategy(
            self.manifest["default_strategy"] if strategy is None else strategy
        )
        self.check_size(height, width)
        backbone_input, condition = self._inputs(image, levels)
        size = condition.shape[-2:]
        (features,) = self.sessions["backbone"].run(None, {"backbone_input": backbone_input})
        prepared = self.sessions["decoder_prepare"].run(
            None, {"condition": condition, "features": features}
        )
        del backbone_input, condition, features
        feeds = dict(zip(PREPARED_NAMES, prepared, strict=True))
        pixels = int(size[0]) * int(size[1])
        banded = self.banded_above_pixels is not None and pixels > self.banded_above_pixels
        step_session = self.sessions["decoder_step_banded" if banded else "decoder_step"]

        noise = TorchCompatibleNormal(seed)
        z = noise.randn(1, 1, height, width)
        times = time_grid(steps)
        diffusion = self.manifest["diffusion"]
        trajectory = [] if return_trajectory else None
        for index in range(steps):
            t_cur, t_next = times[index], times[index + 1]
            feeds["x_t"] = _pad(self._normalize(z), size)
            feeds["t"] = np.full((1,), t_cur, np.float32)
            (x0,) = step_session.run(None, feeds)
            x0 = np.clip(x0[:, :, :height, :width], -1.0, 1.0)
            if trajectory is not None:
                trajectory.append(self._postprocess(x0, levels[None, None])[0, 0])
            alpha, sigma = self._alpha_sigma(t_cur)
            alpha_next, sigma_next = self._alpha_sigma(t_next)
            if method == "ddim":
                eps = (z - alpha * x0) / max(sigma, np.float32(diffusion["sigma_clip_min"]))
                z = x0 * alpha_next + eps * sigma_next
            else:
                c = -np.expm1(self._log_snr(t_cur) - self._log_snr(t_next))
                mean = alpha_next * (z * (np.float32(1) - c) / alpha + c * x0)
                variance = max(sigma_next**2 * c, np.float32(diffusion["variance_clip_min"]))
                step_noise = noise.randn(1, 1, height, width)
                if t_next > 0:
                    z = mean + np.exp(np.float32(0.5) * np.log(variance)) * step_noise
                else:
                    z = mean
            z = z.astype(np.float32)
            if progress is not None:
                progress(index + 1, steps)
        alpha = self._postprocess(z / self.scale, levels[None, None])[0, 0]
        return Prediction(alpha=alpha, trajectory=trajectory)

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        trimaps: Sequence[np.ndarray],
        strategy: str | None = None,
        seed: int = DEFAULT_SEED,
        trimap_thresholds: str = "composition1k",
    ) -> list[Prediction]:
        """:meth:`predict` of each image in turn (same results as one at a time)."""
        if len(images) != len(trimaps):
            raise ValueError(f"{len(images)} images but {len(trimaps)} trimaps")
        return [
            self.predict(image, trimap, strategy, seed, trimap_thresholds=trimap_thresholds)
            for image, trimap in zip(images, trimaps, strict=True)
        ]
