"""The four matting errors against the official evaluation's numbers and a literal re-reading.

The fixture cases (``shared/fixtures/metrics``) hold what the official MATLAB code returns under
Octave; a straightforward, slow transcription of the same definitions below checks the fast
implementation on random small cases (ties, threshold values, odd trimaps).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.ndimage

from diffmatte.evaluation.metrics import (
    METRIC_NAMES,
    MetricInputError,
    compute_all,
    compute_conn,
    compute_grad,
    compute_mse,
    compute_sad,
    octave_sum,
)

F32 = np.float32
FIXTURE_KEYS = {"SAD": "sad", "MSE": "mse", "Grad": "grad", "Conn": "conn"}
METRIC_FUNCTIONS = {
    "SAD": compute_sad,
    "MSE": compute_mse,
    "Grad": compute_grad,
    "Conn": compute_conn,
}
# The public fixture cases; every case of expected.json is also checked by a looping test.
PUBLIC_CASES = [
    "c00_hair_317x451_eq.png",
    "c01_hairsemi_800x800_noisy.png",
    "c03_semi_256_zeros.png",
    "c04_hair_480x640_ones.png",
    "c06_hair_401x299_oddtrimap.png",
    "c07_semi_123x77_rects.png",
    "c09_hairsemi_360_levels.png",
    "c10_hair_300x500_shift.png",
    "c12_hairsemi_640x480_allunknown.png",
    "c13_hair_211x389_blurislands.png",
    "c15_tie_64x96.png",
    "c16_hair_700x523_dilated.png",
    "c18_hard_513x385_emptyunknown.png",
    "c19_hard_1023x767_feather.png",
    "c20_hardaa_601x457_thinband.png",
    "c21_semi_640x640_wideband.png",
    "c22_fur_451x317_speckle.png",
    "c23_semi_299x401_holes.png",
    "rs0_GT01_497x800.png",
    "rs1_GT03_800x640.png",
    "rs2_GT05_552x800.png",
    "rs3_GT06_678x800.png",
]


def _close(got: float, want: float) -> bool:
    """The acceptance rule of the fixtures: relative 1e-5 plus an absolute floor of 1e-9."""
    if math.isnan(want):
        return math.isnan(got)
    return abs(got - want) <= 1e-5 * abs(want) + 1e-9


def _same_float(got: float, want: float) -> bool:
    return (math.isnan(got) and math.isnan(want)) or got == want


@pytest.fixture(scope="module")
def expected(metric_fixtures_dir: Path) -> dict[str, dict[str, float]]:
    return json.loads((metric_fixtures_dir / "expected.json").read_text())


def _read_case(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = []
    for sub in ("pred", "gt", "trimap"):
        array = cv2.imread(str(folder / sub / name), cv2.IMREAD_UNCHANGED)
        assert array is not None and array.dtype == np.uint8 and array.ndim == 2, (sub, name)
        arrays.append(array)
    return arrays[0], arrays[1], arrays[2]


@pytest.fixture(scope="module")
def results(metric_fixtures_dir: Path, expected) -> dict[str, dict[str, float]]:
    """compute_all on every fixture case (computed once for the module)."""
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in expected:
            out[name] = compute_all(*_read_case(metric_fixtures_dir, name))
    return out


# ----------------------------------------------------------------------------------------------
# Official numbers
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", PUBLIC_CASES)
@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_public_case_is_bit_exact(case: str, metric: str, expected, results) -> None:
    if case not in expected:
        pytest.skip(f"{case} is not in this fixture set")
    got, want = results[case][metric], expected[case][FIXTURE_KEYS[metric]]
    assert _close(got, want), f"{case} {metric}: got {got!r}, official {want!r}"
    # Every public case matches the official float32 value exactly, not only within 1e-5.
    assert _same_float(got, want), f"{case} {metric}: got {got!r}, official {want!r}"


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_every_fixture_case_within_tolerance(metric: str, expected, results) -> None:
    failures = [
        f"{name}: got {results[name][metric]!r}, official {values[FIXTURE_KEYS[metric]]!r}"
        for name, values in expected.items()
        if not _close(results[name][metric], values[FIXTURE_KEYS[metric]])
    ]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("metric", METRIC_NAMES)
def test_single_metric_functions_equal_compute_all(
    metric: str, metric_fixtures_dir: Path, expected, results
) -> None:
    for name in ("c06_hair_401x299_oddtrimap.png", "c15_tie_64x96.png"):
        if name in expected:
            got = METRIC_FUNCTIONS[metric](*_read_case(metric_fixtures_dir, name))
            assert got == results[name][metric]


# ----------------------------------------------------------------------------------------------
# A literal transcription of the official code (slow; small images only)
# ----------------------------------------------------------------------------------------------


def _octave_sum_reference(x: np.ndarray) -> np.float32:
    total = F32(0)
    for column in x.astype(F32).T:
        column_sum = F32(0)
        for value in column:
            column_sum = F32(column_sum + value)
        total = F32(total + column_sum)
    return total


def _mat2gray_reference(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if lo == hi:
        return np.clip(x.astype(np.float64), 0.0, 1.0)
    return (1.0 / (hi - lo)) * (x.astype(np.float64) - lo)


def _gradient_kernel_reference() -> np.ndarray:
    sigma, epsilon = 1.4, 1e-2
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * epsilon)))
    gauss = [
        math.exp(-(u * u) / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi))
        for u in range(-half, half + 1)
    ]
    hx = np.array(
        [
            [gauss[i] * (-(j - half) * gauss[j] / sigma**2) for j in range(2 * half + 1)]
            for i in range(2 * half + 1)
        ]
    )
    return hx / math.sqrt(float(np.sum(hx * hx)))


def _reference(pred: np.ndarray, gt: np.ndarray, trimap: np.ndarray) -> dict[str, float]:
    """Every step of the official code in the obvious way (float32 where it is single)."""
    unknown = (trimap == 128).astype(F32)
    p, g = pred.astype(F32) / F32(255), gt.astype(F32) / F32(255)
    sad = _octave_sum_reference(np.abs(pred.astype(F32) - gt.astype(F32)) / F32(255) * unknown)
    error = (pred.astype(F32) - gt.astype(F32)) / F32(255)
    with np.errstate(invalid="ignore"):
        mse = _octave_sum_reference(error * error * unknown) / _octave_sum_reference(unknown)

    hx = _gradient_kernel_reference()
    amplitudes = []
    for x in (pred, gt):
        image = _mat2gray_reference(x)
        # scipy correlates; flipping the kernel makes it the code's convolution.
        gx = scipy.ndimage.correlate(image, hx[::-1, ::-1], mode="nearest")
        gy = scipy.ndimage.correlate(image, hx.T[::-1, ::-1], mode="nearest")
        amplitudes.append(np.sqrt(gx**2 + gy**2).astype(F32))
    grad = _octave_sum_reference((amplitudes[0] - amplitudes[1]) ** 2 * unknown) / F32(1000)

    thresholds = [k * 0.1 for k in range(11)]
    level = np.full(pred.shape, -1.0)
    for k in range(1, 11):
        both = (p.astype(np.float64) >= thresholds[k]) & (g.astype(np.float64) >= thresholds[k])
        # Labelling the transpose numbers the components in column-major order.
        labels, count = scipy.ndimage.label(both.T)
        omega = np.zeros(pred.shape, dtype=bool)
        if count:
            sizes = np.bincount(labels.ravel())[1:]
            omega = (labels == 1 + int(np.argmax(sizes))).T
        level[(level == -1) & ~omega] = thresholds[k - 1]
    level[level == -1] = 1.0
    phis = []
    for x in (p, g):
        d = x - level.astype(F32)
        phis.append(F32(1) - d * (d.astype(np.float64) >= 0.15).astype(F32))
    conn = _octave_sum_reference(np.abs(phis[0] - phis[1]) * unknown) / F32(1000)
    return {
        "SAD": float(sad / F32(1000)),
        "MSE": float(mse),
        "Grad": float(grad),
        "Conn": float(conn),
    }


def _random_case(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, ...]:
    """Blocky mattes on and around the Conn threshold values, with odd trimap values."""
    levels = np.array([0, 25, 26, 51, 76, 77, 102, 127, 128, 153, 178, 179, 204, 229, 230, 255])
    coarse = rng.choice(levels, size=(height // 3 + 1, width // 3 + 1))
    gt = np.kron(coarse, np.ones((3, 3), dtype=np.int64))[:height, :width]
    pred = gt.copy()
    flip = rng.random((height, width)) < 0.3
    pred[flip] = rng.choice(levels, size=int(flip.sum()))
    trimap = rng.choice(np.array([0, 128, 128, 128, 255, 127, 129, 64]), size=(height, width))
    return pred.astype(np.uint8), gt.astype(np.uint8), trimap.astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_literal_transcription(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, gt, trimap = _random_case(rng, 23 + seed, 31 - seed)
    got, want = compute_all(pred, gt, trimap), _reference(pred, gt, trimap)
    for metric in ("SAD", "MSE", "Conn"):
        assert got[metric] == want[metric], (metric, got[metric], want[metric])
    # Grad's float64 filtering adds the products in another order: equal up to rounding.
    assert got["Grad"] == pytest.approx(want["Grad"], rel=1e-6, abs=1e-12)


def test_conn_tie_goes_to_the_column_major_first_component() -> None:
    # Two 2x3 blobs of equal size: the lower-left one comes first in column-major order,
    # the upper-right one first in row-major order.
    gt = np.zeros((8, 10), dtype=np.uint8)
    gt[1:3, 6:9] = 255
    gt[5:7, 1:4] = 255
    pred = gt.copy()
    pred[1, 6] = 128
    pred[5, 1] = 200
    trimap = np.full(gt.shape, 128, dtype=np.uint8)
    want = _reference(pred, gt, trimap)["Conn"]
    assert compute_conn(pred, gt, trimap) == want
    # The row-major choice would give a different number, so the rule is really exercised.
    swapped = compute_conn(pred.T.copy(), gt.T.copy(), trimap.T.copy())
    assert swapped != want


def test_many_small_components_use_the_exact_count() -> None:
    # No component holds half of the true pixels: the subsample guess must be checked in full.
    rng = np.random.default_rng(7)
    gt = (rng.random((60, 70)) < 0.45).astype(np.uint8) * 255
    pred = np.clip(gt.astype(int) + rng.integers(-60, 60, gt.shape), 0, 255).astype(np.uint8)
    trimap = np.full(gt.shape, 128, dtype=np.uint8)
    assert compute_conn(pred, gt, trimap) == _reference(pred, gt, trimap)["Conn"]


# ----------------------------------------------------------------------------------------------
# Edge cases
# ----------------------------------------------------------------------------------------------


def _smooth_case(height: int = 40, width: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:height, :width]
    gt = np.clip(255 * (1.2 - np.hypot(yy - 20, xx - 24) / 12), 0, 255).astype(np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    trimap = np.where((gt > 0) & (gt < 255), 128, np.where(gt == 255, 255, 0)).astype(np.uint8)
    trimap = cv2.dilate((trimap == 128).astype(np.uint8), np.ones((5, 5), np.uint8))
    trimap = np.where(trimap > 0, 128, np.where(gt == 255, 255, 0)).astype(np.uint8)
    return pred, gt, trimap


def test_empty_unknown_region_gives_nan_mse_with_warning_and_zeros() -> None:
    pred, gt, _ = _smooth_case()
    trimap = np.where(gt > 127, 255, 0).astype(np.uint8)
    with pytest.warns(RuntimeWarning, match="empty unknown region"):
        result = compute_all(pred, gt, trimap)
    assert math.isnan(result["MSE"])
    assert (result["SAD"], result["Grad"], result["Conn"]) == (0.0, 0.0, 0.0)
    with pytest.warns(RuntimeWarning):
        assert math.isnan(compute_mse(pred, gt, trimap))


def test_only_exactly_128_is_unknown() -> None:
    pred, gt, trimap = _smooth_case()
    odd = trimap.copy()
    odd[::2, ::3] = 127
    odd[1::4, ::2] = 129
    odd[::5] = 200
    cleared = np.where(odd == 128, 128, 0).astype(np.uint8)
    assert compute_all(pred, gt, odd) == compute_all(pred, gt, cleared)
    assert compute_all(pred, gt, odd) != compute_all(pred, gt, trimap)


def test_whole_image_mode_equals_an_all_unknown_trimap() -> None:
    pred, gt, _ = _smooth_case()
    everywhere = np.full(gt.shape, 128, dtype=np.uint8)
    assert compute_all(pred, gt, None) == compute_all(pred, gt, everywhere)


def test_prediction_equal_to_ground_truth_gives_zeros() -> None:
    _, gt, trimap = _smooth_case()
    assert compute_all(gt, gt.copy(), trimap) == {"SAD": 0.0, "MSE": 0.0, "Grad": 0.0, "Conn": 0.0}


@pytest.mark.parametrize("value", [0, 255, 90])
def test_constant_prediction_has_zero_gradient(value: int) -> None:
    _, gt, trimap = _smooth_case()
    pred = np.full(gt.shape, value, dtype=np.uint8)
    want = _reference(pred, gt, trimap)
    got = compute_all(pred, gt, trimap)
    # (0 - |grad gt|)^2 summed: the same as a prediction whose amplitude is 0 everywhere.
    assert got["Grad"] == pytest.approx(want["Grad"], rel=1e-6)
    assert got["Grad"] > 0
    assert (got["SAD"], got["Conn"]) == (want["SAD"], want["Conn"])
    assert compute_grad(pred, pred.copy(), trimap) == 0.0


def test_all_zero_prediction_sets_every_conn_level_to_zero() -> None:
    _, gt, trimap = _smooth_case()
    pred = np.zeros_like(gt)
    unknown = trimap == 128
    g = gt.astype(F32) / F32(255)
    phi_g = F32(1) - g * (g >= F32(0.15)).astype(F32)
    want = octave_sum(np.abs(F32(1) - phi_g) * unknown) / F32(1000)
    assert compute_conn(pred, gt, trimap) == float(want)


def test_grad_normalises_each_matte_by_its_own_range() -> None:
    # 20 + gt * 0.5 keeps only the range; mat2gray undoes it, x / 255 would not.
    _, gt, trimap = _smooth_case()
    gt = (gt // 2) * 2
    pred = (20 + gt // 2).astype(np.uint8)
    assert compute_grad(pred, gt, trimap) < 1e-9
    assert compute_sad(pred, gt, trimap) > 0.01


def test_inverted_prediction_grad_is_a_rounding_residue() -> None:
    _, gt, trimap = _smooth_case()
    assert 0.0 <= compute_grad(255 - gt, gt, trimap) < 1e-9


def test_threshold_153_passes_0_6_as_in_float32() -> None:
    # float32(153/255) = 0.6000000238 >= 0.6000000000000001: pixels at 153 join the 0.6 set.
    gt = np.full((6, 6), 153, dtype=np.uint8)
    pred = gt.copy()
    pred[2:4, 2:4] = 250
    trimap = np.full(gt.shape, 128, dtype=np.uint8)
    want = _reference(pred, gt, trimap)["Conn"]
    assert compute_conn(pred, gt, trimap) == want
    # All pixels pass 0.6, none passes 0.7: level 0.6 everywhere, so only the 250s differ.
    d = F32(250) / F32(255) - F32(0.6)
    assert want == pytest.approx(4 * float(d) / 1000, rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Summation order and input checks
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(50, 1), (1, 40), (37, 2), (64, 33)])
@pytest.mark.parametrize("order", ["C", "F"])
def test_octave_sum_is_sequential_by_columns(shape: tuple[int, int], order: str) -> None:
    rng = np.random.default_rng(11)
    x = np.asarray(
        (rng.random(shape) * 10.0 ** rng.integers(-3, 4, shape)).astype(F32), order=order
    )
    assert octave_sum(x) == _octave_sum_reference(x)


def test_octave_sum_differs_from_pairwise_sum() -> None:
    rng = np.random.default_rng(5)
    x = (rng.random((400, 300)) * 10.0 ** rng.integers(-4, 3, (400, 300))).astype(F32)
    assert octave_sum(x) == _octave_sum_reference(x)
    assert octave_sum(x) != np.sum(x)


def test_octave_sum_of_empty_is_zero() -> None:
    assert octave_sum(np.zeros((0, 3), dtype=F32)) == 0


@pytest.mark.parametrize(
    ("pred", "gt", "trimap", "message"),
    [
        (np.zeros((4, 4), np.float32), np.zeros((4, 4), np.uint8), None, "pred must be a uint8"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.uint8), None, "gt must be a uint8"),
        (np.zeros((4, 4), np.uint8), [[0]], None, "gt must be a numpy array"),
        (np.zeros((4, 4), np.uint8), np.zeros((4, 5), np.uint8), None, "pred 4x4, gt 4x5"),
        (np.zeros((0, 4), np.uint8), np.zeros((0, 4), np.uint8), None, "pred is empty"),
        (
            np.zeros((4, 4), np.uint8),
            np.zeros((4, 4), np.uint8),
            np.zeros((5, 4), np.uint8),
            "trimap 5x4",
        ),
    ],
)
def test_bad_inputs_raise_one_clear_error(pred, gt, trimap, message: str) -> None:
    for function in (compute_all, *METRIC_FUNCTIONS.values()):
        with pytest.raises(MetricInputError, match=message):
            function(pred, gt, trimap)
