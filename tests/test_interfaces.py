"""The project's vision_msgs copy (ros2_ws/src/vision_msgs) is interchangeable with upstream's.

Upstream is ros-perception/vision_msgs 4.x (``ros2`` branch, ``vision_msgs/msg/*.msg``). Nodes on
a real ROS install use upstream's package; ours is built into the venv by
``scripts/build_interfaces.sh``. They only talk to each other if the RIHS01 type hashes are equal,
and the hash covers type names, field names and field types (not comments). Three independent
sources are compared here:

* the hash of the *built* type support, as the RMW announces it on the ROS graph
  (``Node.get_publishers_info_by_topic(...).topic_type_hash``);
* the hash ``rosbags`` computes from upstream's .msg definitions (``UPSTREAM_MSGS`` below, field
  lines copied from upstream, comments dropped) and from our .msg source files;
* the hashes in upstream's own generated code (``*__description.c`` of a real vision_msgs build).
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MSG_DIR = REPO_ROOT / "ros2_ws" / "src" / "vision_msgs" / "msg"

# Field definitions of upstream vision_msgs 4.x (ros-perception/vision_msgs, ros2 branch).
UPSTREAM_MSGS: dict[str, str] = {
    "BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "BoundingBox2DArray": "std_msgs/Header header\nBoundingBox2D[] boxes\n",
    "BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "BoundingBox3DArray": "std_msgs/Header header\nBoundingBox3D[] boxes\n",
    "Classification": "std_msgs/Header header\nObjectHypothesis[] results\n",
    "Detection2D": (
        "std_msgs/Header header\n"
        "ObjectHypothesisWithPose[] results\n"
        "BoundingBox2D bbox\n"
        "string id\n"
    ),
    "Detection2DArray": "std_msgs/Header header\nDetection2D[] detections\n",
    "Detection3D": (
        "std_msgs/Header header\n"
        "ObjectHypothesisWithPose[] results\n"
        "BoundingBox3D bbox\n"
        "string id\n"
    ),
    "Detection3DArray": "std_msgs/Header header\nDetection3D[] detections\n",
    "LabelInfo": "std_msgs/Header header\nvision_msgs/VisionClass[] class_map\nfloat32 threshold\n",
    "ObjectHypothesis": "string class_id\nfloat64 score\n",
    "ObjectHypothesisWithPose": (
        "ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "Point2D": "float64 x\nfloat64 y\n",
    "Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "VisionClass": "uint16 class_id\nstring class_name\n",
    "VisionInfo": (
        "std_msgs/Header header\nstring method\nstring database_location\nint32 database_version\n"
    ),
}

# RIHS01 hashes from upstream's generated rosidl_generator_c *__description.c files (a real
# vision_msgs 4.x build). BoundingBox2DArray/BoundingBox3DArray were not available there.
UPSTREAM_RIHS01: dict[str, str] = {
    "BoundingBox2D": "008eacbb0cf8f26e83795547bed013eec3675485ef386ec056d80eaaf1c1ce2f",
    "BoundingBox3D": "bbb73a65c163d7f9bb29009c7bde9f7faa576bd2d23299c4511d19230dab4698",
    "Classification": "f74db28d0eaef3afb78f48bf2161cd709a1383a0309d3454383b25be11345143",
    "Detection2D": "0d12b69df5c593b3455b7346fac8205437a7d4bcb09b9e0e0b2dde787ded38ea",
    "Detection2DArray": "214274120007f4a683866481336b70310268cfa107aebe9d594a6acf75bda968",
    "Detection3D": "ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "Detection3DArray": "793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "LabelInfo": "3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "ObjectHypothesis": "51da43cec11c01957a64d1e05a24acd18aae7745ec30b74348ad5f6d634f7f90",
    "ObjectHypothesisWithPose": "41c12344c0396c48b81df12467c192d99b2a0eb1463c5c37194e4223251c80bc",
    "Point2D": "eab0e83f44ab4de92ceaf76dd7d0e7638f2bdd1d16ffbe16c7a136c48e407247",
    "Pose2D": "b0b5d1d7b4c20dd4fcde3ed1d4b289a919290572007d67a97043814db25d3648",
    "VisionClass": "1e4a11f0fed50b5623cb8ff26ca0e37952a48a9c074d16f804b44e9164c2037a",
    "VisionInfo": "95d3116a17484ad91c9a2686e1d54890bbfc3ff6c6a2de137738c4950d45d284",
}

# Field names/types as rosidl_generator_py reports them (get_fields_and_field_types()).
EXPECTED_FIELDS: dict[str, dict[str, str]] = {
    "BoundingBox2D": {"center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"},
    "BoundingBox2DArray": {
        "header": "std_msgs/Header",
        "boxes": "sequence<vision_msgs/BoundingBox2D>",
    },
    "BoundingBox3D": {"center": "geometry_msgs/Pose", "size": "geometry_msgs/Vector3"},
    "BoundingBox3DArray": {
        "header": "std_msgs/Header",
        "boxes": "sequence<vision_msgs/BoundingBox3D>",
    },
    "Classification": {
        "header": "std_msgs/Header",
        "results": "sequence<vision_msgs/ObjectHypothesis>",
    },
    "Detection2D": {
        "header": "std_msgs/Header",
        "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
        "bbox": "vision_msgs/BoundingBox2D",
        "id": "string",
    },
    "Detection2DArray": {
        "header": "std_msgs/Header",
        "detections": "sequence<vision_msgs/Detection2D>",
    },
    "Detection3D": {
        "header": "std_msgs/Header",
        "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
        "bbox": "vision_msgs/BoundingBox3D",
        "id": "string",
    },
    "Detection3DArray": {
        "header": "std_msgs/Header",
        "detections": "sequence<vision_msgs/Detection3D>",
    },
    "LabelInfo": {
        "header": "std_msgs/Header",
        "class_map": "sequence<vision_msgs/VisionClass>",
        "threshold": "float",
    },
    "ObjectHypothesis": {"class_id": "string", "score": "double"},
    "ObjectHypothesisWithPose": {
        "hypothesis": "vision_msgs/ObjectHypothesis",
        "pose": "geometry_msgs/PoseWithCovariance",
    },
    "Point2D": {"x": "double", "y": "double"},
    "Pose2D": {"position": "vision_msgs/Point2D", "theta": "double"},
    "VisionClass": {"class_id": "uint16", "class_name": "string"},
    "VisionInfo": {
        "header": "std_msgs/Header",
        "method": "string",
        "database_location": "string",
        "database_version": "int32",
    },
}

ALL_MSGS = sorted(UPSTREAM_MSGS)

vision_msgs_msg = pytest.importorskip(
    "vision_msgs.msg",
    reason="vision_msgs not built: run `bash scripts/build_interfaces.sh .venv` (or `make setup`)",
)


def _rosbags_hashes(sources: dict[str, str]) -> dict[str, str]:
    """RIHS01 hashes rosbags computes for ``vision_msgs/msg/<name>`` from .msg texts."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for name, text in sources.items():
        types.update(get_types_from_msg(text, f"vision_msgs/msg/{name}"))
    typestore.register(types)
    return {name: typestore.hash_rihs01(f"vision_msgs/msg/{name}") for name in sources}


def test_source_tree_has_exactly_the_upstream_messages() -> None:
    assert sorted(p.stem for p in MSG_DIR.glob("*.msg")) == ALL_MSGS


@pytest.mark.parametrize("name", ALL_MSGS)
def test_message_fields_match_upstream(name: str) -> None:
    cls = getattr(vision_msgs_msg, name)
    assert cls.get_fields_and_field_types() == EXPECTED_FIELDS[name]
    cls()  # constructible with defaults


def test_nested_types_are_the_vision_msgs_ones() -> None:
    from geometry_msgs.msg import PoseWithCovariance
    from std_msgs.msg import Header
    from vision_msgs.msg import (
        BoundingBox2D,
        Detection2D,
        Detection2DArray,
        ObjectHypothesisWithPose,
        Point2D,
        Pose2D,
    )

    det = Detection2D()
    assert isinstance(det.header, Header)
    assert isinstance(det.bbox, BoundingBox2D)
    assert isinstance(det.bbox.center, Pose2D)
    assert isinstance(det.bbox.center.position, Point2D)
    assert det.id == ""
    det.bbox.center.position.x = 12.5
    det.bbox.center.theta = 0.25
    det.bbox.size_x, det.bbox.size_y = 40.0, 20.0
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = "car"
    hyp.hypothesis.score = 0.9
    assert isinstance(hyp.pose, PoseWithCovariance)
    det.results.append(hyp)
    arr = Detection2DArray(detections=[det])
    assert arr.detections[0].results[0].hypothesis.class_id == "car"
    assert arr.detections[0].bbox.center.position.x == 12.5


def test_rosbags_hash_of_our_sources_equals_upstream() -> None:
    """Our .msg files (comments shortened) hash like upstream's definitions."""
    ours = {name: (MSG_DIR / f"{name}.msg").read_text() for name in ALL_MSGS}
    assert _rosbags_hashes(ours) == _rosbags_hashes(UPSTREAM_MSGS)


def test_rosbags_hash_of_upstream_text_equals_upstream_generated_code() -> None:
    """Anchors the rosbags computation to the hashes in upstream's own build output."""
    hashes = _rosbags_hashes(UPSTREAM_MSGS)
    for name, digest in UPSTREAM_RIHS01.items():
        assert hashes[name] == f"RIHS01_{digest}", name


@pytest.mark.ros
def test_built_type_hash_equals_upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The RMW announces our built types with upstream's hashes (what matching compares).

    The hash is read from the ROS graph (``topic_type_hash`` of our own publishers), i.e. from the
    compiled C type support of the package built by scripts/build_interfaces.sh; no network
    traffic is needed, but a domain of its own keeps it apart from other tests.
    """
    monkeypatch.setenv("ROS_DOMAIN_ID", "96")
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "ros_log"))
    import rclpy
    from rclpy.context import Context

    expected = _rosbags_hashes(UPSTREAM_MSGS)
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("pdn_type_hash_probe", context=context)
        try:
            built = {}
            for name in ALL_MSGS:
                topic = f"/pdn_type_hash_probe/{name.lower()}"
                node.create_publisher(getattr(vision_msgs_msg, name), topic, 1)
                (info,) = node.get_publishers_info_by_topic(topic)
                assert info.topic_type == f"vision_msgs/msg/{name}"
                built[name] = str(info.topic_type_hash)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    assert built == expected
    assert built["Detection2DArray"] == f"RIHS01_{UPSTREAM_RIHS01['Detection2DArray']}"


def test_installed_type_description_hash_equals_upstream() -> None:
    """The type description JSON installed with the package carries the same hash."""
    import json

    share = Path(vision_msgs_msg.__file__).resolve()
    # <prefix>/lib/python3.X/site-packages/vision_msgs/msg/__init__.py -> <prefix>/share
    candidates = [p / "share" / "vision_msgs" / "msg" for p in share.parents]
    msg_share = next((c for c in candidates if (c / "Detection2DArray.json").is_file()), None)
    if msg_share is None:
        pytest.skip("no installed vision_msgs/msg/*.json next to the imported package")
    description = json.loads((msg_share / "Detection2DArray.json").read_text())
    own = next(
        h
        for h in description["type_hashes"]
        if h["type_name"] == "vision_msgs/msg/Detection2DArray"
    )
    assert own["hash_string"] == f"RIHS01_{UPSTREAM_RIHS01['Detection2DArray']}"
