"""The ``pdn_perception`` ROS 2 node: wiring only (logic lives in core, params and convert).

Managed lifecycle node: *configure* loads and warms up the pipeline, *activate* subscribes to
``image`` / ``image/compressed`` and enables the outputs (``autostart`` does both at start-up).
Latest-frame policy: the subscription callbacks only park the newest message in a one-slot
mailbox; a worker thread converts and runs the pipeline, so the executor never waits on
inference and a slow frame never builds a backlog (replaced frames are counted as dropped).
Parameter changes apply from the next frame; changes that need a new model/backend are built in
a background thread while the current pipeline keeps serving, then swapped in atomically, or
rejected with the reason. Run: ``python -m pdn_perception.ros.node --ros-args ...``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import BoundingBox2DArray, Detection2DArray

from ..core import ConfigError, FrameError, Pipeline, PipelineConfig
from ..viz import render_overlay
from . import convert, params
from .dds import use_large_frame_profile

NODE_NAME = "pdn_perception"
REBUILD_TIMEOUT_S = 120.0  # a longer build (TensorRT) belongs in `pdn-build-engine` beforehand
WARN_THROTTLE_S = 5.0
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


class FrameSlot:
    """One-slot mailbox: a newer frame replaces the waiting one (no backlog, no stale frames)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None

    def put(self, item: Any) -> bool:
        """Park ``item``; True if it replaced a frame that was still waiting (a drop)."""
        with self._cond:
            dropped, self._item = self._item is not None, item
            self._cond.notify()
            return dropped

    def take(self, timeout: float) -> Any:
        """The waiting frame, or None after ``timeout`` s (so the worker can check for stop)."""
        with self._cond:
            if self._item is None:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            return item


class Stats:
    """Counters and latencies (of the last 300 frames) behind /diagnostics; two threads write."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(("received", "processed", "dropped", "rejected", "failed"), 0)
        # stamp -> detections published, receipt -> published, pipeline call alone (ms)
        self.latency: dict[str, deque[float]] = {
            k: deque(maxlen=300) for k in ("stamp", "receipt", "pipeline")
        }
        self.last: dict[str, Any] = {"batch_sizes": (), "K": 0, "last_error": ""}
        self._prev = (time.monotonic(), dict(self.counts))

    def add(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def error(self, key: str | None, text: str) -> None:
        """Remember ``text`` as the last error; count it under ``key`` (a frame counter)."""
        with self.lock:
            if key is not None:
                self.counts[key] += 1
            self.last["last_error"] = text

    def snapshot(self) -> dict[str, Any]:
        """Counters, rates since the previous snapshot and latency percentiles (ms)."""
        with self.lock:
            now, counts = time.monotonic(), dict(self.counts)
            (t0, prev), self._prev = self._prev, (now, counts)
            lat = {k: np.array(v) for k, v in self.latency.items()}
            out: dict[str, Any] = dict(self.last)
        dt = max(now - t0, 1e-6)
        out["input_rate_hz"] = (counts["received"] - prev["received"]) / dt
        out["processed_rate_hz"] = (counts["processed"] - prev["processed"]) / dt
        for name, values in lat.items():
            for q in (50, 99):
                p = float(np.percentile(values, q)) if values.size else -1.0
                out[f"{name}_p{q}_ms" if name == "pipeline" else f"latency_{name}_p{q}_ms"] = p
        out.update({f"frames_{k}": v for k, v in counts.items()})
        out["bad_frames_in_period"] = sum(counts[k] - prev[k] for k in ("rejected", "failed"))
        return out


class PdnPerceptionNode(LifecycleNode):
    """PatchDrive perception on ``image`` / ``image/compressed``; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        params.declare_config_parameters(self)
        self.cfg = params.configs_from_node(self)  # (PipelineConfig, NodeConfig)
        self._pipeline: Pipeline | None = None
        self._slot, self._stats = FrameSlot(), Stats()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._last_key: dict[type, tuple] = {}
        self._last_hw = (2048, 2048)
        self._io_group = MutuallyExclusiveCallbackGroup()  # frames and diagnostics
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            self.cfg[1].diagnostics_period, self._publish_diagnostics, self._io_group
        )

    # -- lifecycle ---------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            pipeline = Pipeline(self.cfg[0])
            warm_ms = pipeline.warmup()
        except Exception as exc:  # model missing, backend unavailable...: stay unconfigured
            self._stats.error(None, f"configure: {exc}")
            self.get_logger().error(f"configure failed: {exc}")
            return FAILURE
        self._pipeline = pipeline
        out_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        img_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        self._pubs = {
            "detections": self.create_lifecycle_publisher(
                Detection2DArray, "~/detections", out_qos
            ),
            "crops": self.create_lifecycle_publisher(BoundingBox2DArray, "~/crops", out_qos),
            "saliency": self.create_lifecycle_publisher(Image, "~/saliency", img_qos),
            "debug_image": self.create_lifecycle_publisher(Image, "~/debug_image", img_qos),
        }
        self.get_logger().info(
            f"configured: backend {pipeline.backend} ({pipeline.runtime.reason}), "
            f"classes {list(pipeline.classes)}, warm-up {warm_ms:.0f} ms"
        )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # enables the lifecycle publishers
        reliable = self.cfg[1].input_reliability == "reliable"
        qos = QoSProfile(
            depth=1,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        )
        self._subs = [
            self.create_subscription(t, topic, self._on_frame, qos, callback_group=self._io_group)
            for t, topic in ((Image, "image"), (CompressedImage, "image/compressed"))
        ]
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="pdn_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(f"active: input QoS {self.cfg[1].input_reliability}")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_input()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_outputs()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        return SUCCESS

    def stop(self) -> None:
        """Stop input, worker and outputs (idempotent; called on shutdown and before destroy)."""
        self._stop_input()
        self._drop_outputs()

    def _stop_input(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None
        self._slot.take(timeout=0.0)  # a frame parked before deactivation is stale by now

    def _drop_outputs(self) -> None:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs, self._pipeline = {}, None

    # -- frames ----------------------------------------------------------------------------
    def _on_frame(self, msg: Image | CompressedImage) -> None:
        """Executor side: only park the message (and skip the compressed twin of a raw frame)."""
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
        other = CompressedImage if isinstance(msg, Image) else Image
        self._last_key[type(msg)] = key
        if self._last_key.get(other) == key:
            return  # image_transport publishes raw and compressed copies of the same frame
        self._stats.add("received")
        if self._slot.put((msg, time.monotonic())):
            self._stats.add("dropped")

    def _work(self) -> None:
        """Worker thread: newest frame -> pipeline -> outputs; no input can end this loop."""
        self._warm_up_worker()
        while not self._stop.is_set():
            item = self._slot.take(timeout=0.2)
            if item is None or self._stop.is_set():
                continue
            try:
                self._process(*item)
            except Exception as exc:  # a failing frame must never kill the node
                self._stats.error("failed", f"{type(exc).__name__}: {exc}")
                self.get_logger().error(
                    f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0
                )

    def _warm_up_worker(self) -> None:
        """One blank frame on this thread before the first real one: the first pipeline call on
        a new thread builds its OpenMP and OpenCV thread state (measured in the node: 596 ms for
        the first 2048² frame, ~30 ms after it, though configure had warmed up on its thread)."""
        pipeline = self._pipeline
        if pipeline is None:
            return
        try:
            ms = pipeline.warmup(self._last_hw)
        except Exception as exc:  # the frames will report it; the loop must start regardless
            self.get_logger().warning(f"worker warm-up failed: {type(exc).__name__}: {exc}")
            return
        self.get_logger().info(f"inference thread warmed up in {ms:.0f} ms")

    def _process(self, msg: Image | CompressedImage, t_receipt: float) -> None:
        pipeline, node_cfg = self._pipeline, self.cfg[1]
        if pipeline is None:
            return
        try:
            if isinstance(msg, CompressedImage):
                frame = convert.compressed_to_pipeline(msg)
            else:
                frame = convert.image_to_pipeline(msg)
            result = pipeline(frame)
        except (convert.ImageConversionError, FrameError) as exc:
            self._stats.error("rejected", f"bad frame: {exc}")
            self.get_logger().warning(f"skipping bad frame: {exc}", throttle_duration_sec=5.0)
            return
        header = msg.header
        self._pubs["detections"].publish(convert.result_to_detections(result, header))
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        lat_stamp = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        lat_receipt = (time.monotonic() - t_receipt) * 1e3
        self._pubs["crops"].publish(convert.result_to_crops(result, header))
        if result.saliency is not None:  # tiles and global modes skip it unless asked
            self._pubs["saliency"].publish(convert.result_to_saliency(result, header))
        debug = self._pubs["debug_image"]
        if node_cfg.publish_debug_image and debug.get_subscription_count() > 0:
            overlay = render_overlay(frame, result, node_cfg.debug_image_size)
            debug.publish(convert.numpy_to_image(overlay, "rgb8", header))
        self._last_hw = result.frame_hw
        with self._stats.lock:
            self._stats.counts["processed"] += 1
            self._stats.latency["stamp"].append(lat_stamp)
            self._stats.latency["receipt"].append(lat_receipt)
            self._stats.latency["pipeline"].append(result.timings_ms.get("total", -1.0))
            self._stats.last.update(batch_sizes=result.batch_sizes, K=len(result.crop_boxes))

    # -- parameters --------------------------------------------------------------------------
    def _on_set_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        """Validate by building the new config (and pipeline); all or nothing."""
        try:
            pipe_cfg, node_cfg = params.propose(self.cfg, changed)
            pipeline = self._pipeline
            if pipeline is not None and pipe_cfg != pipeline.config:
                pipeline = self._rebuild(pipeline, pipe_cfg)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            self.get_logger().warning(f"parameter change rejected: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        if node_cfg.diagnostics_period != self.cfg[1].diagnostics_period:
            self._diag_timer.timer_period_ns = int(node_cfg.diagnostics_period * 1e9)
        if pipeline is not self._pipeline:
            self._pipeline = pipeline  # atomic swap: the next frame uses it
        self.cfg = (pipe_cfg, node_cfg)
        return SetParametersResult(successful=True)

    def _rebuild(self, current: Pipeline, config: PipelineConfig) -> Pipeline:
        """Cheap reconfigure inline; a model/backend rebuild (+ warm-up) in a background thread
        while the current pipeline keeps serving frames. Raises with the reason on failure."""
        changes = current.config.rebuild_changes(config)
        if not changes:
            return current.reconfigure(config)
        self.get_logger().info(f"rebuilding pipeline for {sorted(changes)} in the background")
        box: dict[str, Any] = {}

        def build() -> None:
            try:
                new = current.reconfigure(config)
                new.warmup(self._last_hw)
                box["pipeline"] = new
            except Exception as exc:
                box["error"] = exc

        thread = threading.Thread(target=build, name="pdn_rebuild", daemon=True)
        thread.start()
        thread.join(REBUILD_TIMEOUT_S)
        if thread.is_alive():
            raise TimeoutError(f"rebuild took over {REBUILD_TIMEOUT_S:.0f} s; kept current")
        if "error" in box:
            raise box["error"]
        self.get_logger().info(f"pipeline rebuilt: backend {box['pipeline'].backend}")
        return box["pipeline"]

    # -- diagnostics -------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        snap = self._stats.snapshot()
        pipeline, active = self._pipeline, self._worker is not None
        state = "active" if active else ("inactive" if pipeline else "unconfigured")
        values = {
            "state": state,
            "backend": pipeline.backend if pipeline else "",
            "mode": self.cfg[0].mode,
            "top_k": self.cfg[0].top_k,
            **snap,
        }
        if pipeline is None and snap["last_error"]:
            level, text = DiagnosticStatus.ERROR, f"{state}: {snap['last_error']}"
        elif snap["bad_frames_in_period"]:
            level, text = DiagnosticStatus.WARN, f"{snap['bad_frames_in_period']} bad frame(s)"
        else:
            level, text = DiagnosticStatus.OK, f"{state}, {snap['processed_rate_hz']:.1f} Hz"
        status = convert.diagnostic_status(
            f"{self.get_name()}: pipeline", self.get_fully_qualified_name(), level, text, values
        )
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def main(args: list[str] | None = None) -> None:
    """Entry point (``pdn_perception_node``); plain ``--ros-args`` configure everything."""
    use_large_frame_profile()  # before rclpy.init: Fast DDS reads it when the participant starts
    rclpy.init(args=args)
    node = None
    try:
        node = PdnPerceptionNode()
        executor = MultiThreadedExecutor(num_threads=2)  # parameters/lifecycle never wait on IO
        executor.add_node(node)
        if node.cfg[1].autostart and node.trigger_configure() == SUCCESS:
            node.trigger_activate()
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ConfigError, InvalidParameterValueException, InvalidParameterTypeException) as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"invalid parameters: {exc}")
        raise SystemExit(2) from None
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
