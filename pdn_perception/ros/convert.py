"""The one place where ROS messages become numpy arrays and back (what cv_bridge would do).

There is no ROS 2 cv_bridge on PyPI, and a 12.6 MB frame must not be copied needlessly, so:

* ``image_to_numpy`` returns a *view* of ``msg.data`` in the message's own layout (zero-copy,
  also with row padding: the view simply skips the padding bytes);
* ``image_to_pipeline`` gives what :class:`~pdn_perception.core.Pipeline` takes: RGB (H, W, 3) or
  mono (H, W) uint8. rgb8 and mono8 stay views; bgr8/rgba8/bgra8 take one ``cv2.cvtColor``;
  mono16 becomes 8-bit by ``>> 8`` (keeps the top byte: full-range 16-bit sensors map linearly;
  a 12-bit sensor stored in the low bits looks dark - scale such data before publishing);
* messages are built from ``ndarray.tobytes()``: assigning an ndarray to ``msg.data`` costs
  ~0.5 s for 12.6 MB in rclpy.

Every malformed input raises :class:`ImageConversionError` with a message that says what is wrong.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    BoundingBox2DArray,
    Detection2D,
    Detection2DArray,
    ObjectHypothesisWithPose,
)

from ..core.pipeline import Result
from ..viz import saliency_to_mono8


class ImageConversionError(ValueError):
    """A message cannot be turned into an image (or an image into a message); says why."""


# encoding -> (dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
}
_TO_RGB = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB}
_HOST_BIG_ENDIAN = sys.byteorder == "big"


def image_to_numpy(msg: Image) -> np.ndarray:
    """View of ``msg.data`` as (H, W) or (H, W, C) in the message's encoding (no copy).

    Row padding (``step`` > width * pixel size) is skipped by strides; mono16 gets a dtype with
    the message's byte order, so big-endian data is read correctly without a copy.
    """
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {enc!r}; supported: {', '.join(ENCODINGS)}"
        )
    dtype, channels = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"empty image: {w}x{h}")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"step {step} is smaller than width * pixel size = {w} * {channels * dtype.itemsize}"
        )
    buf = np.frombuffer(msg.data, np.uint8)
    if buf.size != step * h:
        raise ImageConversionError(
            f"data length {buf.size} != step * height = {step} * {h} = {step * h} ({enc} {w}x{h})"
        )
    rows = buf.reshape(h, step)[:, :row_bytes]
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
        rows = rows.view(dtype)
    return rows.reshape(h, w, channels) if channels > 1 else rows.reshape(h, w)


def to_pipeline_frame(array: np.ndarray, encoding: str) -> np.ndarray:
    """An array in ``encoding`` -> RGB (H, W, 3) or mono (H, W) uint8, copying only if needed."""
    if encoding in ("rgb8", "mono8"):
        return array
    if encoding in _TO_RGB:
        return cv2.cvtColor(array, _TO_RGB[encoding])
    if encoding == "mono16":
        return (array >> 8).astype(np.uint8)
    raise ImageConversionError(f"unsupported image encoding {encoding!r}")


def image_to_pipeline(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> frame for the pipeline (rgb8/mono8: zero-copy views)."""
    return to_pipeline_frame(image_to_numpy(msg), msg.encoding)


def compressed_to_pipeline(msg: CompressedImage) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png, as image_transport writes them) -> RGB/mono uint8.

    ``compressedDepth`` (a private header in front of the PNG) is not supported.
    """
    fmt = msg.format.lower()
    if "compresseddepth" in fmt:
        raise ImageConversionError(f"compressedDepth images are not supported (format {fmt!r})")
    data = np.frombuffer(msg.data, np.uint8)
    if data.size == 0:
        raise ImageConversionError(f"empty compressed image (format {msg.format!r})")
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise ImageConversionError(
            f"cannot decode compressed image ({data.size} bytes, format {msg.format!r})"
        )
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        return img
    code = cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(img, code)


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """Array -> sensor_msgs/Image, data from ``.tobytes()`` (never assigned as an ndarray)."""
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}"
        )
    dtype, channels = ENCODINGS[encoding]
    got_channels = 1 if array.ndim == 2 else (array.shape[2] if array.ndim == 3 else -1)
    if array.dtype != dtype or got_channels != channels or array.size == 0:
        raise ImageConversionError(
            f"{encoding} needs a non-empty {dtype} array with {channels} channel(s), "
            f"got {array.dtype} of shape {array.shape}"
        )
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(dtype.itemsize > 1 and _HOST_BIG_ENDIAN)
    msg.step = msg.width * channels * dtype.itemsize
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def numpy_to_compressed(
    array: np.ndarray, fmt: str = "jpeg", header: Header | None = None, quality: int = 90
) -> CompressedImage:
    """RGB (H, W, 3) or mono uint8 -> CompressedImage (jpeg or png), as image_transport would."""
    if fmt not in ("jpeg", "png"):
        raise ImageConversionError(f"unsupported compressed format {fmt!r}; use jpeg or png")
    bgr = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, buf = cv2.imencode("." + ("jpg" if fmt == "jpeg" else "png"), bgr, params)
    if not ok:
        raise ImageConversionError(f"cannot encode {array.shape} {array.dtype} as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = buf.tobytes()
    return msg


def _bbox(x1: float, y1: float, x2: float, y2: float) -> BoundingBox2D:
    box = BoundingBox2D()
    box.center.position.x = (x1 + x2) / 2.0
    box.center.position.y = (y1 + y2) / 2.0
    box.size_x = x2 - x1
    box.size_y = y2 - y1
    return box


def result_to_detections(result: Result, header: Header) -> Detection2DArray:
    """Detections in original frame pixels; ``results[0].hypothesis`` = (class name, score)."""
    out = Detection2DArray(header=header)
    names = result.class_names
    for box, score, label in zip(result.boxes.tolist(), result.scores.tolist(), result.labels):
        det = Detection2D(header=header, bbox=_bbox(*box))
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = names[int(label)]
        hyp.hypothesis.score = float(score)
        det.results = [hyp]
        out.detections.append(det)
    return out


def result_to_crops(result: Result, header: Header) -> BoundingBox2DArray:
    """The full-resolution crops (or tiles) the detector looked at, in frame pixels."""
    boxes = [_bbox(*map(float, c)) for c in result.crop_boxes.tolist()]
    return BoundingBox2DArray(header=header, boxes=boxes)


def result_to_saliency(result: Result, header: Header) -> Image:
    """Saliency map as mono8 at saliency resolution (255 = most salient)."""
    if result.saliency is None:
        raise ValueError(f"this {result.mode}-mode result holds no saliency map")
    return numpy_to_image(saliency_to_mono8(result.saliency), "mono8", header)


def diagnostic_status(
    name: str, hardware_id: str, level: bytes, message: str, values: Mapping[str, Any]
) -> DiagnosticStatus:
    """A DiagnosticStatus (``level``: DiagnosticStatus.OK/WARN/ERROR) with ``values`` as strings."""

    def text(v: Any) -> str:
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    return DiagnosticStatus(
        level=level,
        name=name,
        hardware_id=hardware_id,
        message=message,
        values=[KeyValue(key=k, value=text(v)) for k, v in values.items()],
    )


__all__ = [
    "ENCODINGS",
    "ImageConversionError",
    "compressed_to_pipeline",
    "diagnostic_status",
    "image_to_numpy",
    "image_to_pipeline",
    "numpy_to_compressed",
    "numpy_to_image",
    "result_to_crops",
    "result_to_detections",
    "result_to_saliency",
    "to_pipeline_frame",
]
