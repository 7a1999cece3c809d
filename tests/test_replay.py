"""``pdn-replay`` as a real process, received by a real rclpy subscriber in this test process.

The subscriber records the header stamp of every frame (read from the raw CDR bytes) and the
/clock messages; the replay waits for it to match before it plays (no fixed sleeps). Frames are
512x512 rgb8 (0.8 MB, above Fast DDS' default 0.5 MB shared-memory segments) with reliable QoS,
so delivery does not depend on which Fast DDS profile this pytest process loaded first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pdn_perception.bags.io import header_stamp_ns
from pdn_perception.bags.sample import SampleBagParams, make_sample_bag
from pdn_perception.cli import replay as replay_cli
from pdn_perception.ros.dds import use_large_frame_profile

pytestmark = [pytest.mark.ros]

DOMAIN_ID = 47
START_NS = 1_767_225_600_000_000_000
REPO_ROOT = Path(__file__).resolve().parents[1]
STEP_TIMEOUT_S = 40.0


def ros_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(DOMAIN_ID),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp / "ros_log"),
        PYTHONUNBUFFERED="1",
    )
    use_large_frame_profile(env)
    return env


def start_replay(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """pdn-replay with SIGINT at its default (a parent shell may ignore it for children)."""
    return subprocess.Popen(
        [sys.executable, "-m", "pdn_perception.cli.replay", *args, "--quiet"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO_ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue


def assert_stored_bytes(received: list[bytes], bag: Path, repeat: int = 1) -> None:
    """Replay publishes the stored CDR bytes; DDS may only pad the payload to 4 bytes."""
    from pdn_perception.bags.io import iter_raw, open_bag

    with open_bag(bag) as reader:
        stored = [bytes(raw) for _, _, raw in iter_raw(reader, reader.connections)] * repeat
    assert len(received) >= len(stored)
    for got, want in zip(received, stored):
        assert got[: len(want)] == want
        assert len(got) - len(want) < 4 and not any(got[len(want) :])


class Subscriber:
    """A node in its own rclpy context, spun in a thread; records stamps per topic."""

    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        for key, value in ros_env(tmp).items():
            if key.startswith(("ROS_", "FASTDDS_")):
                monkeypatch.setenv(key, value)
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node("pdn_replay_test_sub", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.stamps: dict[str, list[int]] = {}
        self.payloads: dict[str, list[bytes]] = {}
        self.clock_ns: list[int] = []
        self.subs = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)

    def subscribe(self, msg_type: type, topic: str) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)

        def on_raw(raw: bytes) -> None:
            with self.lock:
                self.stamps.setdefault(topic, []).append(header_stamp_ns(raw))
                self.payloads.setdefault(topic, []).append(bytes(raw))

        self.subs.append(self.node.create_subscription(msg_type, topic, on_raw, qos, raw=True))

    def subscribe_clock(self) -> None:
        from rosgraph_msgs.msg import Clock

        def on_clock(msg: Clock) -> None:
            with self.lock:
                self.clock_ns.append(msg.clock.sec * 1_000_000_000 + msg.clock.nanosec)

        self.subs.append(self.node.create_subscription(Clock, "/clock", on_clock, 10))

    def start(self) -> None:
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def wait(self, predicate, timeout: float = STEP_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self.thread.join(timeout=5)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def subscriber(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Subscriber]:
    sub = Subscriber(tmp_path, monkeypatch)
    try:
        yield sub
    finally:
        sub.close()


def test_replay_delivers_every_frame_with_its_stamp(tmp_path: Path, subscriber: Subscriber) -> None:
    from sensor_msgs.msg import Image

    truth = make_sample_bag(
        tmp_path / "bag", SampleBagParams(frames=5, size=(512, 512)), START_NS, progress=False
    )
    subscriber.subscribe(Image, "/pdn_test/image")
    subscriber.subscribe_clock()
    subscriber.start()
    log = tmp_path / "replay.log"
    args = [str(tmp_path / "bag"), "--remap", "/camera/image_raw:=/pdn_test/image", "--clock"]
    args += ["--wait-subscribers", "1", "--wait-timeout", "30", "--rate", "2"]
    proc = start_replay(args, ros_env(tmp_path), log)
    try:
        got_all = subscriber.wait(lambda: len(subscriber.stamps.get("/pdn_test/image", [])) >= 5)
        assert proc.wait(timeout=STEP_TIMEOUT_S) == 0, log.read_text()
    finally:
        stop(proc)
    out = log.read_text()
    assert got_all, out
    assert subscriber.stamps["/pdn_test/image"] == [f.stamp_ns for f in truth.frames]
    assert_stored_bytes(subscriber.payloads["/pdn_test/image"], tmp_path / "bag")
    assert "published 5 messages" in out and "Traceback" not in out
    # /clock ran in bag time, within the bag's span (published with each frame and between).
    assert subscriber.clock_ns, out
    assert all(START_NS <= c <= truth.frames[-1].stamp_ns for c in subscriber.clock_ns)
    assert subscriber.clock_ns[-1] == truth.frames[-1].stamp_ns


def test_replay_loop_compressed_sqlite3_and_ctrl_c(tmp_path: Path, subscriber: Subscriber) -> None:
    """Loops until Ctrl-C, which ends it with exit code 0 and no traceback."""
    from sensor_msgs.msg import CompressedImage

    params = SampleBagParams(frames=2, size=(256, 256), storage="sqlite3", compressed=True)
    truth = make_sample_bag(tmp_path / "bag", params, START_NS, progress=False)
    topic = "/camera/image_raw/compressed"
    subscriber.subscribe(CompressedImage, topic)
    subscriber.start()
    log = tmp_path / "replay.log"
    args = [str(tmp_path / "bag"), "--loop", "--rate", "4", "--topic", topic]
    args += ["--wait-subscribers", "1", "--wait-timeout", "30"]
    proc = start_replay(args, ros_env(tmp_path), log)
    try:
        looped = subscriber.wait(lambda: len(subscriber.stamps.get(topic, [])) >= 5)
        assert looped, log.read_text()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
    finally:
        stop(proc)
    out = log.read_text()
    assert code == 0, out
    assert "interrupted" in out and "Traceback" not in out, out
    assert subscriber.stamps[topic][:4] == [f.stamp_ns for f in truth.frames] * 2
    assert_stored_bytes(subscriber.payloads[topic][:4], tmp_path / "bag", repeat=2)


def test_replay_errors_before_any_dds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert replay_cli.main([str(tmp_path / "missing")]) == 2
    assert "bag not found" in capsys.readouterr().err
    make_sample_bag(
        tmp_path / "bag", SampleBagParams(frames=1, size=(64, 64)), START_NS, progress=False
    )
    assert replay_cli.main([str(tmp_path / "bag"), "--topic", "/nope"]) == 2
    err = capsys.readouterr().err
    assert "/nope" in err and "/camera/image_raw [sensor_msgs/msg/Image]" in err
    assert replay_cli.main([str(tmp_path / "bag"), "--remap", "/a=/b"]) == 2
    assert "FROM:=TO" in capsys.readouterr().err
