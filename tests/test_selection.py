"""Patch Drive controller: pure geometry, edge cases first (as SAHI tests its slicing)."""

from __future__ import annotations

import numpy as np
import pytest

from pdn_perception.core.selection import (
    crop_to_frame,
    frame_to_crop,
    new_saliency,
    saliency_input_hw,
    select_crops,
    tile_boxes,
)


def _map_with_peaks(shape: tuple[int, int], peaks: list[tuple[int, int, float]]) -> np.ndarray:
    sal = np.zeros(shape, np.float32)
    for y, x, v in peaks:
        sal[y, x] = v
    return sal


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_planted_peaks_give_expected_crops() -> None:
    # 2048 frame, 128 map -> 16 px per cell. Peaks at cells (40, 40), (100, 20), (10, 110).
    sal = _map_with_peaks((128, 128), [(40, 40, 0.9), (100, 20, 0.8), (10, 110, 0.7)])
    boxes, scores = select_crops(sal, (2048, 2048), k=3, crop_size=512)
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    # Cell centre (40.5 * 16 = 648) -> crop [392, 904); (100, 20) -> x centre 328, y centre 1608.
    assert boxes[0].tolist() == [392, 392, 904, 904]
    assert boxes[1].tolist() == [72, 1352, 584, 1864]
    # (10, 110): y centre 168 clamps to 256 -> y1 = 0; x centre 1768 -> [1512, 2024)
    assert boxes[2].tolist() == [1512, 0, 2024, 512]
    for b, (y, x) in zip(boxes, [(40, 40), (100, 20), (10, 110)]):
        px, py = (x + 0.5) * 16, (y + 0.5) * 16
        assert b[0] <= px < b[2] and b[1] <= py < b[3], "each peak lies inside its crop"


@pytest.mark.parametrize("strategy", ["peak", "coverage"])
def test_exactly_k_distinct_crops_even_when_map_is_flat(strategy: str) -> None:
    boxes, _ = select_crops(np.zeros((128, 128)), (2048, 2048), 8, 512, strategy=strategy)
    assert len(boxes) == 8
    assert len({tuple(b) for b in boxes}) == 8
    for i in range(8):
        for j in range(i + 1, 8):
            assert _iou(boxes[i], boxes[j]) < 0.5


def test_suppression_prevents_duplicate_crops_around_one_blob() -> None:
    sal = np.zeros((128, 128), np.float32)
    sal[60:68, 60:68] = 1.0  # one big blob: neighbours of the peak must not get their own crop
    sal[5, 5] = 0.5
    boxes, scores = select_crops(sal, (2048, 2048), k=2, crop_size=512)
    assert scores.tolist() == [1.0, 0.5]
    assert _iou(boxes[0], boxes[1]) == 0.0


def test_border_clamping_keeps_crops_inside_and_distinct() -> None:
    sal = np.zeros((128, 128), np.float32)
    sal[127, 127] = 1.0
    sal[127, 110] = 0.9  # 272 px left of the corner: clamped crops would nearly coincide
    sal[0, 0] = 0.8
    boxes, scores = select_crops(sal, (2048, 2048), k=3, crop_size=512)
    assert boxes[0].tolist() == [1536, 1536, 2048, 2048]
    assert scores[1] == pytest.approx(0.8), "the 0.9 peak clamps onto the first crop: suppressed"
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 2048).all() and (boxes[:, 3] <= 2048).all()
    assert all(_iou(boxes[i], boxes[j]) < 0.5 for i in range(3) for j in range(i + 1, 3))
    assert boxes[1].tolist() == [0, 0, 512, 512]


def test_coverage_prefers_a_cluster_to_one_isolated_hot_cell() -> None:
    # One 0.95 cell alone; six 0.6 cells within one crop's reach elsewhere.
    cluster = [
        (90 + dy, 30 + dx, 0.6) for dy, dx in [(0, 0), (3, 4), (8, 1), (12, 9), (5, 14), (1, 20)]
    ]
    sal = _map_with_peaks((128, 128), [(20, 100, 0.95), *cluster])
    peak, _ = select_crops(sal, (2048, 2048), 1, 512, strategy="peak")
    cover, _ = select_crops(sal, (2048, 2048), 2, 512, strategy="coverage")
    inside = lambda b, y, x: b[0] <= (x + 0.5) * 16 < b[2] and b[1] <= (y + 0.5) * 16 < b[3]  # noqa: E731
    assert inside(peak[0], 20, 100)
    assert all(inside(cover[0], y, x) for y, x, _ in cluster), "the first crop holds the cluster"
    assert inside(cover[1], 20, 100), "then the mass not yet covered: the isolated cell"
    # Background below the floor never outweighs an object, however much of it there is.
    sal_bg = sal + np.float32(0.3)
    assert select_crops(sal_bg, (2048, 2048), 2, 512, strategy="coverage")[0].tolist() == (
        cover.tolist()
    )


def test_k1_returns_the_global_maximum() -> None:
    sal = np.random.default_rng(0).random((64, 96))
    boxes, scores = select_crops(sal, (1080, 1920), k=1, crop_size=512)
    assert len(boxes) == 1 and scores[0] == pytest.approx(sal.max())


def test_k_larger_than_frame_allows_gives_fewer() -> None:
    # 640x480 frame, crop 512: the crop is 512x480 and can only slide 128 px: one distinct crop.
    boxes, _ = select_crops(
        np.random.default_rng(1).random((30, 40)), (480, 640), k=5, crop_size=512
    )
    assert len(boxes) == 1
    assert boxes[0, 2] - boxes[0, 0] == 512 and boxes[0, 3] - boxes[0, 1] == 480
    # Frame smaller than the crop on both axes: the whole frame.
    boxes, _ = select_crops(np.ones((8, 8)), (100, 200), k=3, crop_size=512)
    assert boxes.tolist() == [[0, 0, 200, 100]]


@pytest.mark.parametrize("strategy", ["peak", "coverage"])
@pytest.mark.parametrize("frame_hw", [(1080, 1920), (2048, 2048), (480, 640), (3000, 1000)])
def test_crops_always_inside_frame_and_full_size(frame_hw: tuple[int, int], strategy: str) -> None:
    rng = np.random.default_rng(2)
    sal = rng.random((frame_hw[0] // 16, frame_hw[1] // 16))
    boxes, _ = select_crops(sal, frame_hw, 6, 512, strategy=strategy)
    h, w = frame_hw
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert ((boxes[:, 2] - boxes[:, 0]) == min(512, w)).all()
    assert ((boxes[:, 3] - boxes[:, 1]) == min(512, h)).all()


def test_ties_are_deterministic() -> None:
    sal = np.zeros((64, 64))
    sal[10, 50] = sal[50, 10] = 1.0
    a, _ = select_crops(sal, (1024, 1024), k=2, crop_size=256)
    b, _ = select_crops(sal.copy(), (1024, 1024), k=2, crop_size=256)
    assert a.tolist() == b.tolist()
    assert a[0, 1] < a[1, 1], "the lower flat index (row 10) wins the tie"


def test_nan_and_inf_in_saliency_do_not_break_selection() -> None:
    sal = np.full((32, 32), np.nan)
    sal[3, 3] = np.inf
    boxes, _ = select_crops(sal, (512, 512), k=2, crop_size=128)
    assert len(boxes) == 2


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        select_crops(np.zeros((4, 4)), (64, 64), 0, 32)
    with pytest.raises(ValueError, match="2-D"):
        select_crops(np.zeros(4), (64, 64), 1, 32)
    with pytest.raises(ValueError, match="strategy must be one of"):
        select_crops(np.zeros((4, 4)), (64, 64), 1, 32, strategy="densest")


def test_tiles_cover_frame_like_sahi() -> None:
    t0 = tile_boxes((2048, 2048), 512, 0.0)
    assert len(t0) == 16
    t2 = tile_boxes((2048, 2048), 512, 0.2)
    assert len(t2) == 25
    cover = np.zeros((2048, 2048), bool)
    for x1, y1, x2, y2 in t2:
        cover[y1:y2, x1:x2] = True
    assert cover.all()
    assert tile_boxes((1080, 1920), 512, 0.0).shape == (12, 4)  # 3 rows x 4 cols, last shifted
    assert tile_boxes((300, 400), 512).tolist() == [[0, 0, 400, 300]]
    with pytest.raises(ValueError):
        tile_boxes((100, 100), 64, 1.0)


def test_crop_frame_round_trip() -> None:
    rng = np.random.default_rng(3)
    boxes = rng.random((10, 4)).astype(np.float32) * 500
    crop = np.array([700, 300, 1212, 812])
    back = frame_to_crop(crop_to_frame(boxes, crop), crop)
    np.testing.assert_allclose(back, boxes, atol=1e-4)
    assert crop_to_frame(boxes, crop)[0, 0] == pytest.approx(boxes[0, 0] + 700)


def test_saliency_input_keeps_aspect() -> None:
    assert saliency_input_hw((2048, 2048), 512) == (512, 512)
    assert saliency_input_hw((1080, 1920), 512) == (288, 512)
    assert saliency_input_hw((480, 640), 512) == (384, 512)
    assert saliency_input_hw((100, 5000), 512) == (32, 512)


def test_new_saliency_credits_each_cell_to_the_first_crop_that_holds_it() -> None:
    # 2048 frame, 128 map: 16 px per cell; a 512 crop holds 32 x 32 cells.
    sal = _map_with_peaks((128, 128), [(10, 10, 0.9), (10, 40, 0.6), (100, 100, 0.3)])
    boxes = np.array(
        [
            [0, 0, 512, 512],  # cells 0..31: holds (10, 10)
            [256, 0, 768, 512],  # cells 16..47: (10, 40) is new, (10, 10) is not inside
            [0, 0, 512, 512],  # the first crop again: nothing new
            [128, 0, 640, 512],  # overlaps both: its new cells 32..39 hold nothing
            [1536, 1536, 2048, 2048],  # cells 96..127: (100, 100)
        ]
    )
    got = new_saliency(sal, (2048, 2048), boxes)
    assert got.tolist() == pytest.approx([0.9, 0.6, -np.inf, -np.inf, 0.3])
    assert sal[10, 10] == pytest.approx(0.9)  # the caller's map is not written


def test_new_saliency_maps_non_square_frames_and_ignores_nan() -> None:
    sal = np.zeros((68, 120), np.float32)  # a 1080x1920 frame's map: 15.9 / 16 px per cell
    sal[60, 100] = 0.8
    sal[0, 0] = np.nan
    boxes = np.array([[0, 0, 512, 512], [1408, 568, 1920, 1080]])
    got = new_saliency(sal, (1080, 1920), boxes)
    assert got.tolist() == pytest.approx([0.0, 0.8])  # NaN is never "salient"
    assert new_saliency(sal, (1080, 1920), np.zeros((0, 4), np.int64)).shape == (0,)
    with pytest.raises(ValueError, match="non-empty 2-D map"):
        new_saliency(np.zeros((0, 4)), (1080, 1920), boxes)
