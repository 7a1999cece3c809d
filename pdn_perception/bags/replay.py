"""Play rosbag2 camera topics into ROS at recorded timing, publishing the stored CDR bytes.

What ``ros2 bag play`` does, for installs that have no ``ros2`` CLI (the pip-installed ROS 2 of
this project) and with what camera replay needs:

* messages are published as stored (``publisher.publish(raw_bytes)``): no deserialize/serialize
  round trip of 12.6 MB frames, so 10-30 Hz replay of 2048x2048 images keeps up;
* publishing starts only once ``wait_subscribers`` subscribers matched (bounded by
  ``wait_timeout``), so the first frames are not sent into the void;
* optional ``/clock`` (rosgraph_msgs/Clock) in bag time for ``use_sim_time`` nodes;
* the Fast DDS large-frame profile must be in effect (``ros.dds.use_large_frame_profile``
  before ``rclpy.init``), else best-effort subscribers lose frames above ~0.5 MB.

This is the only module of ``pdn_perception.bags`` that imports rclpy.
"""

from __future__ import annotations

import importlib
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from .io import BagError, cdr_bytes, iter_raw, open_bag, progress_bar, select_connections

# (output topic, bag time ns, CDR bytes, time.monotonic() just before publishing)
OnPublish = Callable[[str, int, bytes, float], None]


def message_class(msgtype: str) -> type:
    """``sensor_msgs/msg/Image`` -> the rclpy message class (from its Python package)."""
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError):
        raise BagError(
            f"message type {msgtype} is not available in this ROS environment "
            "(install or source its package)"
        ) from None


def qos_profile(reliability: str = "reliable", depth: int = 10) -> QoSProfile:
    """Publisher QoS. Reliable (the default) also serves best-effort subscribers."""
    return QoSProfile(
        reliability=(
            ReliabilityPolicy.RELIABLE
            if reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        ),
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        durability=DurabilityPolicy.VOLATILE,
    )


def parse_remaps(items: Sequence[str]) -> dict[str, str]:
    """``["/a:=/b", ...]`` -> ``{"/a": "/b"}``; the ``FROM:=TO`` syntax of ROS remapping."""
    out: dict[str, str] = {}
    for item in items:
        src, sep, dst = item.partition(":=")
        if not sep or not src or not dst:
            raise ValueError(f"remap {item!r} is not FROM:=TO")
        out[src] = dst
    return out


@dataclass
class ReplayOptions:
    topics: Sequence[str] | None = None  # None: every Image/CompressedImage topic
    rate: float = 1.0  # playback speed factor (2.0 = twice as fast)
    loop: bool = False
    remap: dict[str, str] = field(default_factory=dict)
    clock: bool = False  # publish /clock in bag time
    clock_hz: float = 40.0
    wait_subscribers: int = 1  # subscribers (per topic) to wait for before starting; 0 = none
    wait_timeout: float = 10.0  # seconds; start anyway afterwards (with a warning)
    reliability: str = "reliable"
    depth: int = 10
    linger: float = 1.0  # seconds to keep publishers alive after the last message
    progress: bool | None = None  # None: progress bar only on a terminal


@dataclass
class ReplayStats:
    published: int = 0
    loops: int = 0
    wall_s: float = 0.0
    # How far behind schedule publishes were (the last 10000: --loop may run for days).
    late_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    subscribers: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False

    def text(self) -> str:
        late = f", median {statistics.median(self.late_ms):.1f} ms late" if self.late_ms else ""
        rate = (self.published - 1) / self.wall_s if self.wall_s > 0 and self.published > 1 else 0
        return (
            f"published {self.published} messages in {self.wall_s:.1f} s ({rate:.1f} Hz{late}), "
            f"{self.loops} loop(s)" + (" (interrupted)" if self.interrupted else "")
        )


@dataclass(frozen=True)
class BagInfo:
    topic_types: dict[str, str]  # replayed topic -> message type
    total: int  # messages to replay
    start_ns: int
    end_ns: int


def scan_bag(bag: str | Path, topics: Sequence[str] | None = None) -> BagInfo:
    """What would be replayed; a broken bag or a missing topic fails here, before any DDS."""
    with open_bag(bag) as reader:
        conns = select_connections(reader, topics)
        if not conns:
            have = ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections)
            raise BagError(f"no image topics in {bag} (it has: {have or 'nothing'})")
        for t in {c.msgtype for c in conns}:
            message_class(t)
        return BagInfo(
            topic_types={c.topic: c.msgtype for c in conns},
            total=sum(c.msgcount for c in conns),
            start_ns=reader.start_time,
            end_ns=reader.end_time,
        )


class _Schedule:
    """Bag time <-> wall time (monotonic) for playback at ``rate``, across loops."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.wall0: float | None = None  # wall time of the first message
        self.bag0 = 0  # bag time of the first message
        self.offset_ns = 0  # bag time added per loop
        self.last_ns = 0
        self.periods: list[int] = []

    def wall_time(self, t_ns: int) -> float:
        """When the message logged at ``t_ns`` is due (the first one: now)."""
        if self.wall0 is None:
            self.wall0, self.bag0, self.last_ns = time.monotonic(), t_ns, t_ns
        elif len(self.periods) < 1000 and t_ns > self.last_ns:
            self.periods.append(t_ns - self.last_ns)
        self.last_ns = max(self.last_ns, t_ns)
        return self.wall0 + (self.offset_ns + t_ns - self.bag0) / 1e9 / self.rate

    def bag_time(self, now: float) -> int:
        """Bag time at wall time ``now`` (for /clock; jumps back to the start when looping)."""
        if self.wall0 is None:
            return 0
        return self.bag0 + round((now - self.wall0) * self.rate * 1e9) - self.offset_ns

    def next_loop(self) -> None:
        period = statistics.median(self.periods) if self.periods else 100_000_000
        self.offset_ns += self.last_ns - self.bag0 + round(period)
        self.last_ns = self.bag0


class Replayer:
    """Plays ``bag`` through publishers created on ``node``. ``run`` blocks; ``stop`` ends it.

    Use from a CLI (``pdn-replay``) or in-process (the demo runs it in a thread beside its own
    collector node). ``on_publish`` is called after each publish (demo: latency bookkeeping).
    """

    def __init__(
        self,
        node: Node,
        bag: str | Path,
        options: ReplayOptions | None = None,
        on_publish: OnPublish | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.node = node
        self.bag = Path(bag)
        self.options = options or ReplayOptions()
        self.on_publish = on_publish
        self.log = log
        self._stop = threading.Event()
        if self.options.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.options.rate}")
        info = scan_bag(self.bag, self.options.topics)
        self.topic_types, self.total = info.topic_types, info.total
        self.start_ns, self.end_ns = info.start_ns, info.end_ns
        qos = qos_profile(self.options.reliability, self.options.depth)
        self.publishers = {
            topic: node.create_publisher(message_class(t), self.out_topic(topic), qos)
            for topic, t in self.topic_types.items()
        }
        self.clock_pub = None
        if self.options.clock:
            from rosgraph_msgs.msg import Clock

            self.clock_pub = node.create_publisher(Clock, "/clock", 10)

    def out_topic(self, topic: str) -> str:
        return self.options.remap.get(topic, topic)

    def stop(self) -> None:
        self._stop.set()

    # -- waiting --------------------------------------------------------------------------
    def wait_for_subscribers(self) -> bool:
        """Wait until every replayed topic has ``wait_subscribers`` subscribers (bounded)."""
        n = self.options.wait_subscribers
        if n <= 0:
            return True
        deadline = time.monotonic() + self.options.wait_timeout
        announced = False
        while not self._stop.is_set():
            counts = {t: p.get_subscription_count() for t, p in self.publishers.items()}
            if all(c >= n for c in counts.values()):
                return True
            if not announced:
                topics = ", ".join(self.out_topic(t) for t in self.publishers)
                self.log(
                    f"waiting up to {self.options.wait_timeout:g} s for {n} subscriber(s) on "
                    f"{topics} (--wait-subscribers 0 to start at once)"
                )
                announced = True
            if time.monotonic() > deadline:
                self.log(f"no subscribers after {self.options.wait_timeout:g} s; starting anyway")
                return False
            time.sleep(0.02)
        return False

    # -- playback -------------------------------------------------------------------------
    def _publish_clock(self, bag_ns: int) -> None:
        if self.clock_pub is None:
            return
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        sec, nsec = divmod(int(bag_ns), 1_000_000_000)
        self.clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=nsec)))

    def _sleep_until(self, wall_target: float, next_ns: int, schedule: _Schedule) -> None:
        """Sleep until ``wall_target`` (monotonic), publishing /clock meanwhile; stoppable.

        /clock never runs ahead of the next message's time (``next_ns``): a use_sim_time node
        must not see a frame stamped in its past only because this thread woke up late.
        """
        period = 1.0 / self.options.clock_hz if self.clock_pub is not None else None
        while not self._stop.is_set():
            remaining = wall_target - time.monotonic()
            if remaining <= 0:
                return
            step = remaining if period is None else min(remaining, period)
            if self._stop.wait(step):
                return
            if period is not None:
                self._publish_clock(min(schedule.bag_time(time.monotonic()), next_ns))

    def run(self) -> ReplayStats:
        """Wait for subscribers, then play (and loop) until done or ``stop()``.

        The first replayed message is published at once; each later one when
        ``(t_msg - t_first) / rate`` has passed. Loops follow each other with one median
        message period between the last message and the first of the next loop.
        """
        stats = ReplayStats()
        self.wait_for_subscribers()
        stats.subscribers = {
            self.out_topic(t): p.get_subscription_count() for t, p in self.publishers.items()
        }
        rate = self.options.rate
        total = self.total if not self.options.loop else None
        bar = progress_bar(total, "pdn-replay", self.options.progress)
        clock = _Schedule(rate)
        # Without a terminal (logs, CI) a line every few seconds instead of a progress bar.
        report_every = 5.0 if bar.disable and self.options.progress is None else None
        last_report = time.monotonic()
        try:
            while not self._stop.is_set():
                with open_bag(self.bag) as reader:
                    conns = [c for c in reader.connections if c.topic in self.publishers]
                    for conn, t_ns, raw in iter_raw(reader, conns):
                        target = clock.wall_time(t_ns)
                        self._sleep_until(target, t_ns, clock)
                        if self._stop.is_set():
                            break
                        data = cdr_bytes(reader, conn, raw)
                        self._publish_clock(t_ns)
                        t_pub = time.monotonic()
                        self.publishers[conn.topic].publish(data)
                        stats.late_ms.append(max(0.0, (t_pub - target) * 1e3))
                        stats.published += 1
                        bar.update(1)
                        if report_every and t_pub - last_report >= report_every:
                            last_report = t_pub
                            of = f"/{self.total}" if not self.options.loop else ""
                            self.log(f"{stats.published}{of} messages published")
                        if self.on_publish is not None:
                            self.on_publish(self.out_topic(conn.topic), t_ns, data, t_pub)
                stats.loops += 1
                if not self.options.loop or stats.published == 0:
                    break
                clock.next_loop()
        except KeyboardInterrupt:
            self._stop.set()
            raise
        finally:
            bar.close()
            stats.interrupted = self._stop.is_set()
            stats.wall_s = time.monotonic() - clock.wall0 if clock.wall0 is not None else 0.0
            if not stats.interrupted:
                self._drain()
        return stats

    def _drain(self) -> None:
        """Keep the publishers alive until the last frames are delivered (bounded)."""
        linger = self.options.linger
        if self.options.reliability == "reliable":
            for pub in self.publishers.values():
                pub.wait_for_all_acked(Duration(nanoseconds=round(linger * 1e9)))
        else:
            self._stop.wait(linger)


def replay_main(
    bag: str | Path,
    options: ReplayOptions,
    node_name: str = "pdn_replay",
    ros_args: Sequence[str] = (),
) -> int:
    """Init rclpy (large-frame profile, no rclpy signal handlers), replay, shut down cleanly.

    Ctrl-C (SIGINT) and SIGTERM end the replay with exit code 0 and no traceback.
    """
    import signal
    import sys

    from rclpy.signals import SignalHandlerOptions

    from ..ros.dds import use_large_frame_profile

    scan_bag(bag, options.topics)  # a bad bag or topic is an error before any DDS starts
    use_large_frame_profile()

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    args = ["pdn-replay", *ros_args]  # never sys.argv: rcl would parse our own options
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = None
    try:
        node = rclpy.create_node(node_name)
        replayer = Replayer(node, bag, options, log=lambda s: print(f"pdn-replay: {s}", flush=True))
        types = ", ".join(
            f"{replayer.out_topic(t)} [{m.split('/')[-1]}]" for t, m in replayer.topic_types.items()
        )
        print(
            f"pdn-replay: {bag}: {replayer.total} messages, "
            f"{(replayer.end_ns - replayer.start_ns) / 1e9:.1f} s at rate x{options.rate:g}: "
            f"{types}",
            flush=True,
        )
        stats = replayer.run()
        print(f"pdn-replay: {stats.text()}", flush=True)
    except KeyboardInterrupt:
        print("pdn-replay: interrupted", file=sys.stderr, flush=True)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


__all__ = [
    "BagInfo",
    "ReplayOptions",
    "ReplayStats",
    "Replayer",
    "message_class",
    "parse_remaps",
    "qos_profile",
    "replay_main",
    "scan_bag",
]
