"""Messages <-> numpy (pdn_perception.ros.convert): layouts, zero-copy views, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from pdn_perception.core.pipeline import Result
from pdn_perception.ros.convert import (
    ENCODINGS,
    ImageConversionError,
    compressed_to_pipeline,
    image_to_numpy,
    image_to_pipeline,
    numpy_to_compressed,
    numpy_to_image,
    result_to_crops,
    result_to_detections,
    result_to_saliency,
)

RNG = np.random.default_rng(0)


def random_array(encoding: str, h: int = 37, w: int = 53) -> np.ndarray:
    dtype, channels = ENCODINGS[encoding]
    shape = (h, w) if channels == 1 else (h, w, channels)
    return RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def header(frame_id: str = "cam", sec: int = 12, nanosec: int = 345) -> Header:
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def padded_image(array: np.ndarray, encoding: str, pad: int, big_endian: bool = False) -> Image:
    """An Image whose rows carry ``pad`` junk bytes (what some drivers send)."""
    h, w = array.shape[:2]
    if big_endian:
        array = array.astype(array.dtype.newbyteorder(">"))
    raw = np.ascontiguousarray(array).view(np.uint8).reshape(h, -1)
    rows = np.concatenate([raw, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return Image(
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(big_endian),
        step=rows.shape[1],
        data=rows.tobytes(),
    )


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding: str) -> None:
    array = random_array(encoding)
    msg = numpy_to_image(array, encoding, header())
    assert (msg.height, msg.width, msg.encoding) == (37, 53, encoding)
    assert msg.step == 53 * array.itemsize * (1 if array.ndim == 2 else array.shape[2])
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 345
    view = image_to_numpy(msg)
    np.testing.assert_array_equal(view, array)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8)), "must be a view"


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_step_padding_is_skipped_without_a_copy(encoding: str) -> None:
    array = random_array(encoding)
    msg = padded_image(array, encoding, pad=6)
    view = image_to_numpy(msg)
    np.testing.assert_array_equal(view, array)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    unpadded = image_to_pipeline(numpy_to_image(array, encoding))
    np.testing.assert_array_equal(image_to_pipeline(msg), unpadded)  # cvtColor on strided rows


def test_mono16_big_endian_is_read_in_its_byte_order() -> None:
    array = random_array("mono16")
    msg = padded_image(array, "mono16", pad=2, big_endian=True)
    np.testing.assert_array_equal(image_to_numpy(msg), array)
    np.testing.assert_array_equal(image_to_pipeline(msg), (array >> 8).astype(np.uint8))


def test_pipeline_frames_are_rgb_or_mono_uint8() -> None:
    rgb = random_array("rgb8")
    cases = {
        "rgb8": rgb,
        "bgr8": rgb[:, :, ::-1],
        "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
        "bgra8": np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)]),
    }
    for encoding, array in cases.items():
        frame = image_to_pipeline(numpy_to_image(array, encoding))
        assert frame.dtype == np.uint8 and frame.shape == rgb.shape, encoding
        np.testing.assert_array_equal(frame, rgb, err_msg=encoding)
    mono = random_array("mono8")
    np.testing.assert_array_equal(image_to_pipeline(numpy_to_image(mono, "mono8")), mono)
    mono16 = random_array("mono16")
    frame = image_to_pipeline(numpy_to_image(mono16, "mono16"))
    np.testing.assert_array_equal(frame, (mono16 >> 8).astype(np.uint8))


def test_rgb8_full_frame_is_zero_copy() -> None:
    frame = np.zeros((2048, 2048, 3), np.uint8)
    msg = numpy_to_image(frame, "rgb8")
    out = image_to_pipeline(msg)
    assert out.shape == (2048, 2048, 3)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_non_contiguous_arrays_are_packed() -> None:
    array = random_array("rgb8", 40, 60)[::2, 5:45]
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(array, "rgb8")), array)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoding": "yuv422"}, "unsupported image encoding 'yuv422'"),
        ({"encoding": "32FC1"}, "unsupported image encoding"),
        ({"data": bytes(10 * 8 * 3 - 1)}, "data length 239 != step * height = 24 * 10 = 240"),
        ({"data": bytes(10 * 8 * 3 + 24)}, "data length"),
        ({"height": 0, "data": b""}, "empty image"),
        ({"width": 0, "step": 0, "data": b""}, "empty image"),
        ({"step": 20, "data": bytes(200)}, "step 20 is smaller than width * pixel size"),
    ],
)
def test_bad_images_raise_a_clear_error(change: dict, message: str) -> None:
    msg = Image(height=10, width=8, encoding="rgb8", step=24, data=bytes(240))
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageConversionError, match=message.replace("*", r"\*")):
        image_to_pipeline(msg)


def test_numpy_to_image_refuses_mismatched_arrays() -> None:
    with pytest.raises(ImageConversionError, match="rgb8 needs"):
        numpy_to_image(np.zeros((4, 4), np.uint8), "rgb8")
    with pytest.raises(ImageConversionError, match="mono16 needs"):
        numpy_to_image(np.zeros((4, 4), np.uint8), "mono16")
    with pytest.raises(ImageConversionError, match="unsupported"):
        numpy_to_image(np.zeros((4, 4), np.uint8), "nv12")


def test_compressed_jpeg_and_png_decode_to_rgb() -> None:
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[:, :32] = (255, 0, 0)  # red stripe: catches a BGR/RGB swap
    rgb[:, 32:64] = (0, 255, 0)
    png = compressed_to_pipeline(numpy_to_compressed(rgb, "png"))
    np.testing.assert_array_equal(png, rgb)
    jpeg = compressed_to_pipeline(numpy_to_compressed(rgb, "jpeg", quality=95))
    assert jpeg.shape == rgb.shape and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - rgb).mean() < 4
    assert jpeg[10, 10, 0] > 200 and jpeg[10, 10, 2] < 50
    mono = (np.arange(64 * 96) % 251).astype(np.uint8).reshape(64, 96)
    np.testing.assert_array_equal(compressed_to_pipeline(numpy_to_compressed(mono, "png")), mono)


def test_compressed_16bit_png_and_image_transport_format_strings() -> None:
    mono16 = random_array("mono16")
    _, buf = cv2.imencode(".png", mono16)
    msg = CompressedImage(format="mono16; png compressed mono16", data=buf.tobytes())
    np.testing.assert_array_equal(compressed_to_pipeline(msg), (mono16 >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (CompressedImage(format="jpeg", data=b"\xff\xd8\xff garbage"), "cannot decode"),
        (CompressedImage(format="jpeg", data=b""), "empty compressed image"),
        (CompressedImage(format="16UC1; compressedDepth png", data=b"x" * 20), "compressedDepth"),
    ],
)
def test_bad_compressed_images_raise_a_clear_error(msg: CompressedImage, message: str) -> None:
    with pytest.raises(ImageConversionError, match=message):
        compressed_to_pipeline(msg)


def make_result() -> Result:
    return Result(
        boxes=np.array([[10.0, 20.0, 30.0, 60.0], [1000.5, 1500.0, 1100.5, 1540.0]], np.float32),
        scores=np.array([0.9, 0.4], np.float32),
        labels=np.array([2, 0], np.int64),
        crop_boxes=np.array([[0, 0, 512, 512], [1024, 1536, 1536, 2048]], np.int64),
        saliency=np.array([[0.0, 0.5], [1.0, 0.25]], np.float32),
        saliency_scale=(1024.0, 1024.0),
        frame_hw=(2048, 2048),
        mode="topk",
        backend="cpu",
        class_names=("boat", "vehicle", "nucleus"),
    )


def test_result_to_detections_in_frame_pixels_with_the_input_header() -> None:
    msg = result_to_detections(make_result(), header("cam_left", 7, 8))
    assert msg.header.frame_id == "cam_left" and msg.header.stamp.sec == 7
    first, second = msg.detections
    assert first.header.frame_id == "cam_left" and first.header.stamp.nanosec == 8
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (20.0, 40.0)
    assert (first.bbox.size_x, first.bbox.size_y) == (20.0, 40.0)
    assert second.bbox.center.position.x == pytest.approx(1050.5)
    assert second.bbox.size_x == pytest.approx(100.0)
    assert [d.results[0].hypothesis.class_id for d in msg.detections] == ["nucleus", "boat"]
    assert first.results[0].hypothesis.score == pytest.approx(0.9)


def test_result_to_crops_and_saliency() -> None:
    crops = result_to_crops(make_result(), header())
    assert crops.header.frame_id == "cam"
    assert [
        (b.center.position.x, b.center.position.y, b.size_x, b.size_y) for b in crops.boxes
    ] == [
        (256.0, 256.0, 512.0, 512.0),
        (1280.0, 1792.0, 512.0, 512.0),
    ]
    sal = result_to_saliency(make_result(), header())
    assert (sal.height, sal.width, sal.encoding, sal.step) == (2, 2, "mono8", 2)
    assert list(sal.data) == [0, 128, 255, 64]
    assert sal.header.frame_id == "cam"


def test_empty_result_gives_empty_arrays() -> None:
    empty = Result(
        boxes=np.zeros((0, 4), np.float32),
        scores=np.zeros(0, np.float32),
        labels=np.zeros(0, np.int64),
        crop_boxes=np.zeros((0, 4), np.int64),
        saliency=np.zeros((4, 4), np.float32),
        saliency_scale=(1.0, 1.0),
        frame_hw=(16, 16),
        mode="global",
        backend="cpu",
        class_names=("boat",),
    )
    assert result_to_detections(empty, header()).detections == []
    assert result_to_crops(empty, header()).boxes == []
