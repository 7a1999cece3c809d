"""Test-side ROS peer of the pdn_perception node: a camera plus an observer, in its own process.

A process of its own because Fast DDS reads its XML profile once per process: the pytest process
may already hold a participant without the large-frame profile, and then best-effort 12.6 MB
frames would silently vanish. Commands are JSON lines on stdin, answers JSON lines on stdout
(``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``); every wait has a deadline.

Commands (``cmd``):
* ``ready``: wait until the node's subscriptions, publishers and parameter service are matched;
* ``frame``: publish a frame (``width``, ``height``, ``encoding``, ``frame_id``, ``compressed``,
  ``corrupt``: ``encoding`` | ``length`` | ``jpeg``) with a fresh stamp; for a good frame wait
  until detections, crops and saliency with that stamp arrived (republishing with a new stamp
  if best-effort lost it) and answer what arrived;
* ``watch_debug``: subscribe to ``~/debug_image``; ``frame`` with ``debug`` then waits for it;
* ``set``: call ``/<node>/set_parameters`` with ``params`` (JSON types -> ROS types);
* ``state`` / ``transition``: lifecycle get_state / change_state (``id``);
* ``diag``: wait for a /diagnostics message whose integer ``values`` are >= ``at_least``;
* ``quit``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from typing import Any

from pdn_perception.ros.dds import use_large_frame_profile

PROFILE = use_large_frame_profile()  # before rclpy: every participant needs the large profile

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from vision_msgs.msg import BoundingBox2DArray, Detection2DArray  # noqa: E402

NODE = "/pdn_perception"
SENSOR_QOS = QoSProfile(
    depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT
)
OUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
RETRY_S = 3.0  # republish a good frame (new stamp) if no answer came: best effort may lose one


def synthetic_frame(h: int, w: int) -> np.ndarray:
    """Grey RGB frame with a few bright squares (something for the saliency map to find)."""
    frame = np.full((h, w, 3), 60, np.uint8)
    for i, (y, x) in enumerate([(0.2, 0.3), (0.7, 0.6), (0.4, 0.8)]):
        cy, cx, r = int(y * h), int(x * w), max(2, min(h, w) // 40)
        frame[cy - r : cy + r, cx - r : cx + r] = (250, 200 - 60 * i, 40 + 80 * i)
    return frame


def image_summary(msg: Image) -> list:
    return [msg.height, msg.width, msg.encoding, msg.header.frame_id, len(msg.data)]


class Peer:
    def __init__(self) -> None:
        self.node = rclpy.create_node("pdn_test_peer")
        self.image_pub = self.node.create_publisher(Image, "image", SENSOR_QOS)
        self.comp_pub = self.node.create_publisher(CompressedImage, "image/compressed", SENSOR_QOS)
        self.lock = threading.Condition()
        self.got: dict[str, dict[tuple[int, int], Any]] = {
            "det": {},
            "crops": {},
            "sal": {},
            "debug": {},
        }
        self.diags: list[dict[str, str]] = []
        self.subs = [
            self.node.create_subscription(
                Detection2DArray, f"{NODE}/detections", self._store("det"), OUT_QOS
            ),
            self.node.create_subscription(
                BoundingBox2DArray, f"{NODE}/crops", self._store("crops"), OUT_QOS
            ),
            self.node.create_subscription(Image, f"{NODE}/saliency", self._store("sal"), OUT_QOS),
            self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10),
        ]
        self.set_cli = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        self.state_cli = self.node.create_client(GetState, f"{NODE}/get_state")
        self.change_cli = self.node.create_client(ChangeState, f"{NODE}/change_state")
        self.frames: dict[tuple[int, int], np.ndarray] = {}
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self._spin, daemon=True)
        self.spinner.start()

    def _spin(self) -> None:
        with contextlib.suppress(ExternalShutdownException):
            self.executor.spin()

    def _store(self, kind: str):
        def callback(msg: Any) -> None:
            with self.lock:
                self.got[kind][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
                self.lock.notify_all()

        return callback

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("pdn_perception"):
                with self.lock:
                    self.diags.append({kv.key: kv.value for kv in status.values})
                    self.lock.notify_all()

    def _wait(self, predicate, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not (value := predicate()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
                self.lock.wait(min(remaining, 0.05))
            return value

    def _call(self, client, request, timeout: float) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise TimeoutError(f"service {client.srv_name} not available")
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(timeout):
            raise TimeoutError(f"no answer from {client.srv_name} within {timeout} s")
        return future.result()

    # -- commands ------------------------------------------------------------------------------
    def cmd_watch_debug(self, spec: dict) -> dict:
        """Subscribe to ~/debug_image (the node renders it only while someone listens)."""
        sub = self.node.create_subscription(
            Image, f"{NODE}/debug_image", self._store("debug"), OUT_QOS
        )
        self._wait(lambda: sub.get_publisher_count() >= 1, 30.0, "the debug_image publisher")
        return {}

    def cmd_ready(self, spec: dict) -> dict:
        timeout = spec.get("timeout", 30.0)

        def matched() -> bool:
            pubs = [self.image_pub, self.comp_pub]
            return all(p.get_subscription_count() >= 1 for p in pubs) and all(
                s.get_publisher_count() >= 1 for s in self.subs
            )

        self._wait(matched, timeout, "the node's subscriptions and publishers")
        if not self.set_cli.wait_for_service(timeout_sec=timeout):
            raise TimeoutError("set_parameters service not available")
        return {"profile": PROFILE}

    def _message(self, spec: dict) -> Image | CompressedImage:
        h, w = spec.get("height", 2048), spec.get("width", 2048)
        if (h, w) not in self.frames:
            self.frames[(h, w)] = synthetic_frame(h, w)
        rgb = self.frames[(h, w)]
        corrupt = spec.get("corrupt")
        if spec.get("compressed"):
            msg = CompressedImage(format="jpeg")
            if corrupt == "jpeg":
                msg.data = b"\xff\xd8\xff\xe0 definitely not a jpeg"
            else:
                _, buf = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
                msg.data = buf.tobytes()
            return msg
        msg = Image(height=h, width=w, encoding=spec.get("encoding", "rgb8"), step=w * 3)
        data = rgb.tobytes()  # never assign the ndarray itself (~0.5 s per 12.6 MB)
        if corrupt == "encoding":
            msg.encoding = "yuv_unknown"
        elif corrupt == "length":
            data = data[: -w * 3 - 7]
        msg.data = data
        return msg

    def cmd_frame(self, spec: dict) -> dict:
        timeout = spec.get("timeout", 30.0)
        msg = self._message(spec)
        msg.header.frame_id = spec.get("frame_id", "camera")
        pub = self.comp_pub if spec.get("compressed") else self.image_pub
        deadline = time.monotonic() + timeout
        while True:
            now = self.node.get_clock().now()
            msg.header.stamp = now.to_msg()
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
            t0 = time.monotonic()
            pub.publish(msg)
            if spec.get("corrupt"):
                return {}

            kinds = ("det", "crops", "sal") + (("debug",) if spec.get("debug") else ())

            def answered(key=key, kinds=kinds) -> bool:
                return all(key in self.got[k] for k in kinds)

            try:
                self._wait(answered, min(RETRY_S, max(deadline - time.monotonic(), 0.01)), "")
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"no answer to a frame within {timeout} s") from None
        with self.lock:
            det, crops, sal = (self.got[k][key] for k in ("det", "crops", "sal"))
            debug = self.got["debug"].get(key)
        return {
            "debug": None if debug is None else image_summary(debug),
            "stamp": list(key),
            "answer_ms": (time.monotonic() - t0) * 1e3,
            "det_stamp": [det.header.stamp.sec, det.header.stamp.nanosec],
            "det_frame_id": det.header.frame_id,
            "detections": len(det.detections),
            "det_frame_ids": sorted({d.header.frame_id for d in det.detections}),
            "class_ids": sorted({d.results[0].hypothesis.class_id for d in det.detections}),
            "boxes": [
                [d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y]
                for d in det.detections[:50]
            ],
            "crops": [
                [b.center.position.x, b.center.position.y, b.size_x, b.size_y] for b in crops.boxes
            ],
            "crops_frame_id": crops.header.frame_id,
            "saliency": image_summary(sal),
        }

    def cmd_set(self, spec: dict) -> dict:
        request = SetParameters.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in spec["params"].items()]
        )
        response = self._call(self.set_cli, request, spec.get("timeout", 60.0))
        return {"results": [{"ok": r.successful, "reason": r.reason} for r in response.results]}

    def cmd_state(self, spec: dict) -> dict:
        response = self._call(self.state_cli, GetState.Request(), 10.0)
        return {"state": response.current_state.label}

    def cmd_transition(self, spec: dict) -> dict:
        request = ChangeState.Request()
        request.transition.id = spec["id"]
        return {"success": self._call(self.change_cli, request, 30.0).success}

    def cmd_diag(self, spec: dict) -> dict:
        at_least: dict[str, int] = spec.get("at_least", {})
        start = len(self.diags)

        def satisfied() -> dict | None:
            for values in self.diags[start:]:
                if all(int(values.get(k, -1)) >= v for k, v in at_least.items()):
                    return values
            return None

        return {"values": self._wait(satisfied, spec.get("timeout", 15.0), f"diag {at_least}")}


def main() -> None:
    rclpy.init()
    peer = Peer()
    print(json.dumps({"ok": True, "hello": PROFILE}), flush=True)
    try:
        for line in sys.stdin:
            spec = json.loads(line)
            if spec["cmd"] == "quit":
                break
            try:
                answer = getattr(peer, f"cmd_{spec['cmd']}")(spec)
                print(json.dumps({"ok": True, **answer}), flush=True)
            except Exception as exc:  # report, keep serving: the test decides
                print(
                    json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True
                )
    finally:
        rclpy.try_shutdown()  # wakes the spinning executor; join it before tearing down
        peer.spinner.join(timeout=5.0)
        peer.executor.shutdown(timeout_sec=1.0)
        peer.node.destroy_node()


if __name__ == "__main__":
    main()
