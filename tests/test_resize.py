"""The saliency downscale: fast halvings plus one area step must match OpenCV's INTER_AREA."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pdn_perception.core.resize import area_resize, saliency_input
from pdn_perception.core.selection import saliency_input_hw


def _smooth(h: int, w: int, c: int | None = 3, seed: int = 0, noise: float = 20.0) -> np.ndarray:
    """Random image: smooth structure plus per-pixel noise (pure noise would average to grey)."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if c is None else (h, w, c)
    coarse = rng.uniform(0, 255, (max(2, h // 37), max(2, w // 41), *shape[2:])).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    img = img.reshape(shape) + rng.normal(0, noise, shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _area(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def test_power_of_two_downscale_matches_inter_area_within_one_level() -> None:
    img = _smooth(2048, 2048)
    out = area_resize(img, (512, 512))
    ref = _area(img, (512, 512))
    assert out.shape == ref.shape == (512, 512, 3) and out.dtype == np.uint8
    diff = out.astype(np.int16) - ref.astype(np.int16)
    assert np.abs(diff).max() <= 1
    assert abs(float(diff.mean())) < 0.5  # rounding twice: a quarter level of bias at most


@pytest.mark.parametrize(
    ("hw", "out_hw", "channels"),
    [
        ((2001, 1999), (512, 512), 3),  # odd sides: one direct area step
        ((1080, 1920), (288, 512), 3),  # a camera frame: one halving, then a 1.875x area step
        ((1200, 1600), (384, 512), None),  # mono
        ((700, 300), (512, 224), 3),  # under 2x on both axes: one direct area step
    ],
)
def test_other_sizes_stay_close_to_inter_area(hw, out_hw, channels) -> None:
    # Halving then a < 2x area step weights a pixel's neighbours a little differently from one
    # direct area step; on image structure (not per-pixel noise) the two agree.
    img = _smooth(*hw, c=channels, seed=1, noise=2.0)
    out = area_resize(img, out_hw)
    ref = _area(img, out_hw)
    assert out.shape == ref.shape
    diff = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    assert float(diff.mean()) < 1.0 and np.percentile(diff, 99) <= 4


def test_small_frames_are_upscaled_and_bad_sizes_refused() -> None:
    img = _smooth(40, 60, seed=2)
    assert area_resize(img, (64, 96)).shape == (64, 96, 3)
    assert area_resize(img, (40, 60)) is img  # nothing to do: no copy
    with pytest.raises(ValueError, match="positive"):
        area_resize(img, (0, 10))


def test_saliency_input_has_the_network_shape() -> None:
    img = _smooth(1080, 1920, seed=3)
    small = saliency_input(img, 512)
    assert small.shape[:2] == saliency_input_hw(img.shape[:2], 512) == (288, 512)
