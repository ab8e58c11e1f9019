"""Seeded synthetic matting samples with alpha known exactly by construction.

A foreground is a stack of layers drawn at ``supersample`` times the output resolution: an
opaque body with hard edges (a smooth random outline, optional rectangles, holes and a thin
mesh), fur (many short strands along the outline), hair (long curved strands, in groups of
different opacity), a semi-transparent veil (constant opacity, hard outline) and soft regions
(compact smooth bumps and defocused shapes with fractional alpha).

Alpha model: each hard layer k covers a binary set M_k of the fine grid with opacity o_k; soft
layers have an opacity s_j(p) that is constant over each output pixel p. Coverages combine like
independent transparent sheets, so on the fine grid the transmittance is
``T = prod_k (1 - o_k M_k)`` and the output alpha is
``alpha(p) = 1 - mean_{fine pixels of p}(T) * prod_j (1 - s_j(p))``, which is exact for this
model (an area average, i.e. anti-aliasing by supersampling). Foreground colours are smooth
random textures blended layer by layer with the "over" operator on the output grid; the
composite ``I = F alpha + B (1 - alpha)`` of :func:`diffmatte.data.augmentations.composite` is
then exact by definition, as in DIM (Xu et al., CVPR 2017).

Everything is driven by ``numpy.random.default_rng`` seeds; sample ``i`` of a set with seed ``s``
uses the seed ``[s, i]`` and does not depend on how many samples are generated.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from diffmatte.data.augmentations import composite, dilated_trimap
from diffmatte.data.sources import bundled_backgrounds
from diffmatte.utils.fileio import check_writable_folder
from diffmatte.utils.image_io import alpha_to_uint8, read_image, write_png_atomic
from diffmatte.utils.rng import check_seed

__all__ = [
    "generate_foreground",
    "generate_foregrounds",
    "generate_sample",
    "write_foregrounds",
]

SeedLike = int | Sequence[int] | np.random.Generator


def _rng(seed: SeedLike) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    height, width = (size, size) if isinstance(size, int) else size
    if height < 16 or width < 16:
        raise ValueError(f"size must be at least 16x16, got {height}x{width}")
    return int(height), int(width)


# ---------------------------------------------------------------------------------------------
# Colours
# ---------------------------------------------------------------------------------------------


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random RGB colour in [0, 1] from a random hue, saturation and value."""
    hsv = np.array(
        [[[rng.uniform(0, 360), rng.uniform(0.15, 0.9), rng.uniform(0.2, 0.95)]]],
        dtype=np.float32,
    )
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]


def _texture(
    rng: np.random.Generator, height: int, width: int, base: np.ndarray, amplitude: float
) -> np.ndarray:
    """Smooth colour noise + optional stripes + fine grain around ``base``; (H, W, 3) in [0, 1]."""
    grid = int(rng.integers(3, 9))
    low = rng.normal(0.0, amplitude, (grid, grid, 3)).astype(np.float32)
    field = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    field += base.astype(np.float32)
    if rng.random() < 0.5:
        angle, period = rng.uniform(0, np.pi), rng.uniform(4.0, 24.0)
        frequency = 2 * np.pi / period
        xs = np.arange(width, dtype=np.float32)[None, :] * np.float32(frequency * np.cos(angle))
        ys = np.arange(height, dtype=np.float32)[:, None] * np.float32(frequency * np.sin(angle))
        field += (np.float32(rng.uniform(0.03, 0.12)) * np.sin(xs + ys))[:, :, None]
    field += np.float32(0.02) * rng.standard_normal((height, width, 1), dtype=np.float32)
    return np.clip(field, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Shapes (coordinates in output pixels; drawn on the fine grid)
# ---------------------------------------------------------------------------------------------


class _Canvas:
    """Fine-grid drawing: binary layers are bits of a code image, colours blend on the output.

    Bit 7 of the code marks opaque coverage; bits 0..6 mark up to seven translucent layers.
    At the end a 256-entry table maps each code to its transmittance ``prod_k (1 - o_k)``.
    """

    OPAQUE_BIT = 7

    def __init__(self, height: int, width: int, supersample: int, base: np.ndarray) -> None:
        self.height, self.width, self.scale = height, width, supersample
        self.code = np.zeros((height * supersample, width * supersample), np.uint8)
        self.opacities: list[float] = []
        self.soft_transmittance = np.ones((height, width), np.float32)
        self.colour = base.copy()

    def new_mask(self) -> np.ndarray:
        """A blank fine-grid mask; draw with value 255."""
        return np.zeros(self.code.shape, np.uint8)

    def points(self, xy: np.ndarray) -> np.ndarray:
        """Output-pixel coordinates (..., 2) -> int32 fine-grid vertices (pixel centres)."""
        return np.round((np.asarray(xy) + 0.5) * self.scale - 0.5).astype(np.int32)

    def add_hard(self, mask: np.ndarray, opacity: float, colour: np.ndarray) -> None:
        """Adds a layer covering ``mask`` (uint8 0/255 on the fine grid) with ``opacity``."""
        if opacity >= 1.0:
            bit = self.OPAQUE_BIT
        else:
            if len(self.opacities) == self.OPAQUE_BIT:
                raise RuntimeError("too many translucent layers")
            bit = len(self.opacities)
            self.opacities.append(float(opacity))
        cv2.bitwise_or(self.code, cv2.bitwise_and(mask, 1 << bit), dst=self.code)
        coverage = cv2.resize(mask, (self.width, self.height), interpolation=cv2.INTER_AREA)
        self._blend(coverage.astype(np.float32) * np.float32(min(opacity, 1.0) / 255.0), colour)

    def add_soft(self, opacity: np.ndarray, colour: np.ndarray) -> None:
        """Adds a layer with per-output-pixel ``opacity`` (H, W) in [0, 1]."""
        opacity = np.where(opacity < 1e-3, 0.0, np.clip(opacity, 0.0, 1.0)).astype(np.float32)
        self.soft_transmittance *= 1.0 - opacity
        self._blend(opacity, colour)

    def _blend(self, weight: np.ndarray, colour: np.ndarray) -> None:
        weight = weight[:, :, None]
        self.colour += weight * (colour - self.colour)

    def alpha(self) -> np.ndarray:
        codes = np.arange(256)
        table = np.where(codes & (1 << self.OPAQUE_BIT), 0.0, 1.0)
        for bit, opacity in enumerate(self.opacities):
            table = np.where(codes & (1 << bit), table * (1.0 - opacity), table)
        transmittance = cv2.LUT(self.code, table.astype(np.float32)[None])
        mean_t = cv2.resize(transmittance, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return np.clip(1.0 - mean_t * self.soft_transmittance, 0.0, 1.0).astype(np.float32)


def _outline(
    rng: np.random.Generator, centre: np.ndarray, radius: float, vertices: int = 360
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random smooth closed outline r(theta) = R (1 + sum_k a_k cos(k theta + phi_k))."""
    theta = np.linspace(0.0, 2 * np.pi, vertices, endpoint=False)
    harmonics = np.arange(2, 7)
    amplitudes = rng.uniform(0.0, 0.25, harmonics.size) / harmonics
    phases = rng.uniform(0, 2 * np.pi, harmonics.size)
    r = radius * (1.0 + np.cos(np.outer(theta, harmonics) + phases) @ amplitudes)
    xy = centre + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    return xy, theta, r


def _random_polygon(rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """A random star-shaped polygon with 3..8 corners (straight hard edges)."""
    corners = int(rng.integers(3, 9))
    theta = np.sort(rng.uniform(0, 2 * np.pi, corners))
    r = radius * rng.uniform(0.5, 1.0, corners)
    return centre + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def _strands(
    rng: np.random.Generator,
    roots: np.ndarray,
    directions: np.ndarray,
    lengths: np.ndarray,
    steps: int,
    wiggle: float,
    bend: float,
) -> np.ndarray:
    """Curved strands as random walks in direction; returns (n, steps + 1, 2) points."""
    count = roots.shape[0]
    turns = rng.normal(0.0, wiggle, (count, steps)).cumsum(axis=1)
    curl = rng.normal(bend, abs(bend) * 0.5 + 1e-3, (count, 1)) * np.arange(steps)
    angles = directions[:, None] + turns + curl
    step = (lengths / steps)[:, None]
    deltas = np.stack([np.cos(angles) * step, np.sin(angles) * step], axis=2)
    return np.concatenate([roots[:, None, :], roots[:, None, :] + deltas.cumsum(axis=1)], axis=1)


def _draw_strands(canvas: _Canvas, strands: np.ndarray, thickness: int) -> np.ndarray:
    mask = canvas.new_mask()
    cv2.polylines(mask, list(canvas.points(strands)), False, 255, thickness, cv2.LINE_8)
    return mask


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def generate_foreground(
    seed: SeedLike, size: int | tuple[int, int] = 512, supersample: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Generates one synthetic foreground and its exact alpha.

    Args:
        seed: an int, a sequence of ints, or a ``numpy.random.Generator``.
        size: output side, or (height, width); at least 16.
        supersample: fine-grid factor per axis for anti-aliasing (4: alpha in steps of 1/16 on
            hard edges and thin strands).

    Returns:
        ``(fg, alpha)``: float32 (H, W, 3) RGB in [0, 1] (defined everywhere, also where alpha
        is 0) and float32 (H, W) in [0, 1], with 0 far from the object, 1 inside its body and
        fractional values on strands, edges, the veil and soft regions.
    """
    if supersample < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample}")
    rng = _rng(seed)
    height, width = _size(size)
    short = min(height, width)

    body_colour = _random_colour(rng)
    body_texture = _texture(rng, height, width, body_colour, 0.08)
    canvas = _Canvas(height, width, supersample, body_texture)

    # Opaque body: smooth outline, sometimes with straight-edged parts, holes and a mesh.
    centre = np.array([width * rng.uniform(0.38, 0.62), height * rng.uniform(0.45, 0.7)])
    radius = short * rng.uniform(0.16, 0.26)
    outline, theta, r = _outline(rng, centre, radius)
    body = canvas.new_mask()
    cv2.fillPoly(body, [canvas.points(outline)], 255)
    if rng.random() < 0.6:
        offset = rng.normal(0.0, 0.6, 2) * radius
        cv2.fillPoly(body, [canvas.points(_random_polygon(rng, centre + offset, radius))], 255)
    if rng.random() < 0.4:
        for _ in range(int(rng.integers(1, 4))):
            hole_centre = centre + rng.uniform(-0.5, 0.5, 2) * radius
            axes = canvas.points(rng.uniform(0.04, 0.15, 2) * radius)
            cv2.ellipse(
                body,
                tuple(int(v) for v in canvas.points(hole_centre)),
                tuple(int(v) for v in axes),
                float(rng.uniform(0, 180)),
                0,
                360,
                0,
                -1,
            )
    canvas.add_hard(body, 1.0, body_texture)

    if rng.random() < 0.35:
        region = canvas.new_mask()
        cv2.fillPoly(region, [canvas.points(_random_polygon(rng, centre, radius * 1.9))], 255)
        grid = canvas.new_mask()
        spacing = rng.uniform(4.0, 12.0)
        thickness = int(rng.integers(1, supersample + 2))
        for value in np.arange(0.0, max(height, width) * 1.5, spacing):
            for line in (((value, 0), (value, height)), ((0, value), (width, value))):
                start, end = canvas.points(np.array(line, dtype=np.float64))
                cv2.line(grid, tuple(map(int, start)), tuple(map(int, end)), 255, thickness)
        mesh_colour = _texture(rng, height, width, _random_colour(rng), 0.05)
        canvas.add_hard(grid & region, 1.0, mesh_colour)

    # Fur: many short, slightly curved strands along (part of) the outline, pointing outwards.
    fur_count = int(rng.integers(300, 1200))
    arc_centre, arc_width = rng.uniform(0, 2 * np.pi), rng.uniform(np.pi / 3, 1.1 * np.pi)
    picks = rng.integers(0, theta.size, fur_count)
    keep = np.abs(np.angle(np.exp(1j * (theta[picks] - arc_centre)))) <= arc_width / 2
    picks = picks[keep]
    if picks.size:
        roots = outline[picks] - 0.03 * (outline[picks] - centre)
        fur = _strands(
            rng,
            roots,
            theta[picks] + rng.normal(0.0, 0.35, picks.size),
            rng.uniform(0.02, 0.09, picks.size) * short,
            steps=4,
            wiggle=0.15,
            bend=rng.normal(0.0, 0.05),
        )
        shade = np.float32(rng.uniform(0.7, 1.2))
        canvas.add_hard(_draw_strands(canvas, fur, 1), 1.0, np.clip(body_texture * shade, 0, 1))

    # Hair: long strands from an arc of the outline, in groups of different opacity.
    hair_colour = _random_colour(rng)
    # Near the fur, so that part of the outline stays a bare hard edge.
    arc_centre = arc_centre + rng.normal(0.0, 0.4)
    arc_width = rng.uniform(np.pi / 4, 0.8 * np.pi)
    bend = rng.normal(0.0, 0.02)
    for _ in range(int(rng.integers(1, 4))):
        count = int(rng.integers(40, 160))
        angles = arc_centre + rng.uniform(-arc_width / 2, arc_width / 2, count)
        index = np.round(np.remainder(angles, 2 * np.pi) / (2 * np.pi) * theta.size)
        index = index.astype(int) % theta.size
        # Roots just inside the outline, so strands grow out of the body.
        roots = centre + 0.93 * (outline[index] - centre)
        hair = _strands(
            rng,
            roots,
            angles + rng.normal(0.0, 0.25, count),
            rng.uniform(0.25, 0.8, count) * short,
            steps=48,
            wiggle=0.04,
            bend=bend,
        )
        colour = _texture(rng, height, width, hair_colour + rng.normal(0, 0.05, 3), 0.06)
        thickness = int(rng.choice([1, 1, 2]))
        canvas.add_hard(_draw_strands(canvas, hair, thickness), rng.uniform(0.5, 1.0), colour)

    # Semi-transparent veil: hard outline, constant fractional opacity.
    if rng.random() < 0.85:
        veil = canvas.new_mask()
        veil_centre = centre + rng.normal(0.0, 0.8, 2) * radius
        cv2.fillPoly(veil, [canvas.points(_random_polygon(rng, veil_centre, radius))], 255)
        colour = _texture(rng, height, width, _random_colour(rng), 0.05)
        canvas.add_hard(veil, rng.uniform(0.2, 0.75), colour)

    # Soft regions: compact smooth bumps (smoke-like) and a defocused shape.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(int(rng.integers(1, 3))):
        bump_centre = centre + rng.normal(0.0, 1.0, 2) * radius
        sx, sy = rng.uniform(0.06, 0.25, 2) * short
        angle = rng.uniform(0, np.pi)
        u = (xs - bump_centre[0]) * np.cos(angle) + (ys - bump_centre[1]) * np.sin(angle)
        v = -(xs - bump_centre[0]) * np.sin(angle) + (ys - bump_centre[1]) * np.cos(angle)
        bump = np.clip(1.0 - (u / sx) ** 2 - (v / sy) ** 2, 0.0, 1.0) ** 2
        colour = _texture(rng, height, width, _random_colour(rng), 0.08)
        canvas.add_soft(np.float32(rng.uniform(0.3, 0.95)) * bump, colour)
    if rng.random() < 0.4:
        blob = np.zeros((height, width), np.float32)
        blob_centre = centre + rng.normal(0.0, 1.0, 2) * radius
        axes = rng.uniform(0.05, 0.15, 2) * short
        cv2.ellipse(
            blob,
            (int(blob_centre[0]), int(blob_centre[1])),
            (int(axes[0]), int(axes[1])),
            float(rng.uniform(0, 180)),
            0,
            360,
            1.0,
            -1,
        )
        sigma = rng.uniform(1.5, 6.0)
        blob = cv2.GaussianBlur(blob, (0, 0), sigma) * np.float32(rng.uniform(0.5, 1.0))
        canvas.add_soft(blob, _texture(rng, height, width, _random_colour(rng), 0.05))

    return np.clip(canvas.colour, 0.0, 1.0).astype(np.float32), canvas.alpha()


def generate_foregrounds(
    num: int, size: int | tuple[int, int] = 512, seed: int = 0, supersample: int = 4
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Generates ``num`` foregrounds; item ``i`` uses the seed ``[seed, i]``.

    Args:
        num: number of foregrounds.
        size: output side, or (height, width).
        seed: base seed.
        supersample: fine-grid factor (see :func:`generate_foreground`).

    Returns:
        A list of ``(fg, alpha)`` pairs, float32 (H, W, 3) and (H, W) in [0, 1]; directly usable
        as the ``foregrounds`` of :class:`diffmatte.data.dim.DIMDataset`.
    """
    return [generate_foreground([seed, i], size, supersample) for i in range(num)]


def _fit_background(
    background: np.ndarray, height: int, width: int, rng: np.random.Generator
) -> np.ndarray:
    """Scales a background to cover (height, width) and crops it at a random position."""
    bg_height, bg_width = background.shape[:2]
    ratio = max(height / bg_height, width / bg_width) * rng.uniform(1.0, 1.5)
    new_size = (
        max(width, int(np.ceil(bg_width * ratio))),
        max(height, int(np.ceil(bg_height * ratio))),
    )
    interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_CUBIC
    resized = np.clip(cv2.resize(background, new_size, interpolation=interpolation), 0.0, 1.0)
    top = int(rng.integers(0, new_size[1] - height + 1))
    left = int(rng.integers(0, new_size[0] - width + 1))
    return resized[top : top + height, left : left + width]


def generate_sample(
    seed: SeedLike,
    size: int | tuple[int, int] = 512,
    backgrounds: Sequence[str | os.PathLike] | None = None,
    trimap_radius: tuple[int, int] = (4, 12),
    supersample: int = 4,
) -> dict[str, np.ndarray]:
    """Generates a complete matting sample: a synthetic foreground on a real background.

    Args:
        seed: an int, a sequence of ints, or a ``numpy.random.Generator``.
        size: output side, or (height, width).
        backgrounds: image files to draw the background from; default the bundled ones
            (:func:`diffmatte.data.sources.bundled_backgrounds`).
        trimap_radius: inclusive range of the dilation radius of the trimap
            (:func:`diffmatte.data.augmentations.dilated_trimap`, applied to the 8-bit alpha).
        supersample: fine-grid factor (see :func:`generate_foreground`).

    Returns:
        dict of numpy arrays: ``"image"``, ``"fg"``, ``"bg"`` float32 (H, W, 3) RGB in [0, 1],
        ``"alpha"`` float32 (H, W) in [0, 1] with ``image = fg * alpha + bg * (1 - alpha)``,
        ``"trimap"`` uint8 (H, W) in {0, 128, 255}.
    """
    rng = _rng(seed)
    height, width = _size(size)
    fg, alpha = generate_foreground(rng, (height, width), supersample)
    paths = list(backgrounds) if backgrounds is not None else bundled_backgrounds()
    background = read_image(paths[int(rng.integers(len(paths)))])
    bg = _fit_background(background, height, width, rng)
    radius = int(rng.integers(trimap_radius[0], trimap_radius[1] + 1))
    return {
        "image": composite(fg, alpha, bg),
        "fg": fg,
        "bg": bg.astype(np.float32),
        "alpha": alpha,
        "trimap": dilated_trimap(alpha_to_uint8(alpha), radius),
    }


def write_foregrounds(
    output_dir: str | os.PathLike,
    num: int,
    size: int | tuple[int, int] = 512,
    seed: int = 0,
    supersample: int = 4,
    prefix: str = "synthetic",
    progress: bool = False,
) -> list[str]:
    """Writes a DIM-style foreground folder: ``fg/<name>.png`` and ``alpha/<name>.png``.

    Files are 8-bit PNGs written atomically (alpha quantised by rounding); item ``i`` is
    named ``<prefix>_<i:04d>`` and uses the seed ``[seed, i]``. The folder can be read by
    :class:`diffmatte.data.dim.DIMDataset` and ``tools/compose_testset.py``.

    Args:
        output_dir: destination folder (created).
        num: number of foregrounds.
        size: output side, or (height, width).
        seed: base seed.
        supersample: fine-grid factor (see :func:`generate_foreground`).
        prefix: file-name prefix.
        progress: show a progress bar.

    Returns:
        The names written, in order.

    Raises:
        ValueError: ``num`` < 1, a bad seed, or ``output_dir`` cannot be written (checked before
            anything is written).
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive integer, got {num!r}")
    check_seed(seed)
    output_dir = check_writable_folder(output_dir)
    names = []
    for i in tqdm(range(num), desc="foregrounds", disable=not progress):
        fg, alpha = generate_foreground([seed, i], size, supersample)
        name = f"{prefix}_{i:04d}"
        write_png_atomic(output_dir / "fg" / f"{name}.png", alpha_to_uint8(fg))
        write_png_atomic(output_dir / "alpha" / f"{name}.png", alpha_to_uint8(alpha))
        names.append(name)
    return names
