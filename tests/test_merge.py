"""Merge and NMS edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from pdn_perception.core.merge import merge_crop_detections, nms, pairwise_overlap


def test_nms_empty() -> None:
    keep = nms(np.zeros((0, 4)), np.zeros(0))
    assert keep.shape == (0,)


def test_nms_identical_boxes_keep_one_deterministically() -> None:
    boxes = np.array([[10, 10, 20, 20]] * 3, np.float32)
    scores = np.array([0.5, 0.5, 0.5], np.float32)
    assert nms(boxes, scores, threshold=0.5).tolist() == [0]


def test_nms_ties_keep_lower_index_and_sort_by_score() -> None:
    boxes = np.array([[0, 0, 10, 10], [100, 100, 110, 110], [1, 1, 11, 11]], np.float32)
    scores = np.array([0.7, 0.9, 0.7], np.float32)
    assert nms(boxes, scores, threshold=0.5).tolist() == [1, 0]


def test_nms_is_class_aware() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, np.array([0, 1]), 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, np.array([1, 1]), 0.5).tolist() == [0]


def test_ios_suppresses_a_box_inside_a_bigger_one() -> None:
    big_small = np.array([[0, 0, 100, 100], [10, 10, 30, 30]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(big_small, scores, threshold=0.5, metric="iou").tolist() == [0, 1]
    assert nms(big_small, scores, threshold=0.5, metric="ios").tolist() == [0]
    assert pairwise_overlap(big_small, big_small, "ios")[0, 1] == pytest.approx(1.0)


def test_degenerate_boxes_have_zero_overlap() -> None:
    a = np.array([[5, 5, 5, 5]], np.float32)
    assert pairwise_overlap(a, a)[0, 0] == 0.0


def test_max_keep() -> None:
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(10)], np.float32)
    assert len(nms(boxes, np.linspace(1, 0.1, 10), threshold=0.5, max_keep=3)) == 3


def test_merge_translates_clips_and_dedups_overlapping_crops() -> None:
    crops = np.array([[0, 0, 512, 512], [256, 0, 768, 512]])
    # The same object at frame (300..320, 100..120) seen by both crops, plus one box that
    # spills out of its crop (clipped) and one that falls entirely in padding (dropped).
    per_crop = [
        (
            np.array([[300, 100, 320, 120], [500, 500, 530, 530]], np.float32),
            np.array([0.9, 0.6], np.float32),
            np.array([0, 0]),
        ),
        (
            np.array([[44, 100, 64, 120], [600, 600, 700, 700]], np.float32),
            np.array([0.8, 0.7], np.float32),
            np.array([0, 1]),
        ),
    ]
    boxes, scores, labels = merge_crop_detections(per_crop, crops, (512, 768), 0.5)
    assert scores.tolist() == pytest.approx([0.9, 0.6])
    assert boxes[0].tolist() == [300, 100, 320, 120]
    assert boxes[1].tolist() == [500, 500, 512, 512]
    assert labels.tolist() == [0, 0]


def test_merge_with_no_detections() -> None:
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    boxes, scores, labels = merge_crop_detections([empty], np.array([[0, 0, 64, 64]]), (64, 64))
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
    with pytest.raises(ValueError):
        merge_crop_detections([empty], np.zeros((2, 4)), (64, 64))
