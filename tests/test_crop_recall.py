"""Crop recall in pdn-eval: which objects lie entirely inside the chosen crops, and which the
same controller would have held given a perfect (oracle) saliency map."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pdn_perception.core.config import PipelineConfig
from pdn_perception.core.models import PatchDriveModel
from pdn_perception.core.pipeline import Pipeline
from pdn_perception.train.evaluate import crop_recall, inside_any, oracle_crops


def test_inside_any_counts_only_boxes_wholly_inside_one_crop() -> None:
    crops = np.array([[0, 0, 512, 512], [512, 0, 1024, 512]])
    boxes = np.array(
        [
            [10, 10, 40, 40],  # inside the first
            [480, 0, 512, 512],  # touches the first crop's (exclusive) edge: inside
            [500, 10, 530, 40],  # straddles both crops: in neither wholly
            [10, 600, 40, 640],  # below both
        ],
        np.float32,
    )
    assert inside_any(boxes, crops).tolist() == [True, True, False, False]
    assert inside_any(boxes, np.zeros((0, 4))).tolist() == [False] * 4
    assert inside_any(np.zeros((0, 4)), crops).shape == (0,)


def test_crop_recall_compares_the_crops_with_the_oracle_controller(
    tiny_model: PatchDriveModel,
) -> None:
    cfg = PipelineConfig(mode="topk", top_k=1)
    frame = np.zeros((2048, 2048, 3), np.uint8)
    r = Pipeline(cfg, model=tiny_model)(frame)
    boxes = np.array([[1800, 1800, 1830, 1830], [1900, 1700, 1920, 1720]], np.float32)
    # The oracle's one crop goes where both objects are, near the bottom-right corner.
    (crop,) = oracle_crops(boxes, r, cfg).tolist()
    assert crop[0] >= 1024 and crop[1] >= 1024 and inside_any(boxes, np.array([crop])).all()
    gts = [((2048, 2048), boxes, np.zeros(2, np.int64))]
    top_left = dataclasses.replace(r, crop_boxes=np.array([[0, 0, 512, 512]]))
    assert crop_recall(gts, [top_left], cfg) == {"crop_recall": 0.0, "oracle_crop_recall": 1.0}
    corner = dataclasses.replace(r, crop_boxes=np.array([[1536, 1536, 2048, 2048]]))
    assert crop_recall(gts, [corner], cfg)["crop_recall"] == 1.0
    empty = [((2048, 2048), np.zeros((0, 4), np.float32), np.zeros(0, np.int64))]
    assert all(np.isnan(v) for v in crop_recall(empty, [r], cfg).values())
    with pytest.raises(ValueError, match="saliency map"):
        oracle_crops(boxes, dataclasses.replace(r, saliency=None), cfg)
