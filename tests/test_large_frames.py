"""Full-resolution frames survive best-effort DDS with the shipped Fast DDS profile.

Without ``config/fastdds_large_frames.xml`` Fast DDS' ~0.5 MB shared-memory segments silently
drop best-effort 12.6 MB images (about 1 frame in 40 arrives). Two real processes exchange
2048x2048 rgb8 ``sensor_msgs/Image`` at 10 Hz, each setting the profile through
``pdn_perception.ros.dds.use_large_frame_profile()`` as the node does.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pdn_perception.ros.dds import (
    PROFILE_ENV_VAR,
    PROFILE_FILENAME,
    find_large_frame_profile,
    use_large_frame_profile,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PEER = Path(__file__).resolve().parent / "helpers" / "large_frame_peer.py"
SHIPPED_PROFILE = REPO_ROOT / "config" / PROFILE_FILENAME

FRAMES = 20
MIN_FRAMES = 14  # >= 70 %; the profile measured 40/40, the default profile 1/40
STEP_TIMEOUT_S = 30.0


def test_use_large_frame_profile_sets_shipped_file() -> None:
    env: dict[str, str] = {}
    path = use_large_frame_profile(env)
    assert path is not None
    assert env[PROFILE_ENV_VAR] == path
    assert Path(path).resolve() == SHIPPED_PROFILE.resolve()
    assert find_large_frame_profile() == Path(path)


def test_use_large_frame_profile_keeps_user_choice() -> None:
    env = {PROFILE_ENV_VAR: "/etc/my_fastdds.xml"}
    assert use_large_frame_profile(env) == "/etc/my_fastdds.xml"
    assert env == {PROFILE_ENV_VAR: "/etc/my_fastdds.xml"}
    # An empty value counts as unset.
    env = {PROFILE_ENV_VAR: ""}
    assert use_large_frame_profile(env) == str(SHIPPED_PROFILE.resolve())


def test_shipped_profile_is_the_large_segment_default() -> None:
    import xml.etree.ElementTree as ET

    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(SHIPPED_PROFILE).getroot()
    (shm,) = [
        t
        for t in root.iterfind(".//d:transport_descriptor", ns)
        if t.findtext("d:type", namespaces=ns) == "SHM"
    ]
    assert int(shm.findtext("d:segment_size", namespaces=ns)) == 64 * 1024 * 1024
    assert int(shm.findtext("d:maxMessageSize", namespaces=ns)) == 32 * 1024 * 1024
    (participant,) = root.iterfind(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"
    types = {
        t.findtext("d:type", namespaces=ns) for t in root.iterfind(".//d:transport_descriptor", ns)
    }
    assert types == {"SHM", "UDPv4"}


class Peer:
    """A helper process whose stdout lines are read by a thread, so every wait has a deadline."""

    def __init__(self, role: str, env: dict[str, str]) -> None:
        self.role = role
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER), role, "--frames", str(FRAMES), "--timeout", "90"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=REPO_ROOT,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = STEP_TIMEOUT_S) -> str:
        """Return the rest of the first line starting with ``prefix``; fail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                pytest.fail(f"{self.role}: no '{prefix}' within {timeout} s; output: {self.log}")
            if line is None:
                pytest.fail(f"{self.role} exited before '{prefix}'; output: {self.log}")
            self.log.append(line)
            if line.startswith(prefix):
                return line[len(prefix) :].strip()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def close(self) -> None:
        """Let it exit by itself (EOF on stdin); terminate, then kill, only if it hangs."""
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()  # SIGKILL would leave 64 MB segments in /dev/shm
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.mark.ros
@pytest.mark.slow
def test_best_effort_2048_rgb8_frames_arrive(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop(PROFILE_ENV_VAR, None)  # the peers must pick the shipped profile themselves
    env.update(
        ROS_DOMAIN_ID="95",
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        ROS_LOG_DIR=str(tmp_path / "ros_log"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    sub = Peer("sub", env)
    pub = Peer("pub", env)
    try:
        for peer in (sub, pub):
            profile = peer.expect("PROFILE")
            assert Path(profile).resolve() == SHIPPED_PROFILE.resolve(), peer.log
        sub.expect("MATCHED")
        pub.expect("MATCHED")
        pub.send("GO")
        done = json.loads(pub.expect("DONE"))
        sub.send("STOP")
        result = json.loads(sub.expect("RESULT", timeout=15))
        pub.send("EXIT")
    finally:
        sub.close()
        pub.close()

    print(f"publisher: {done}\nsubscriber: {result}")  # shown with -s / on failure
    assert done["published"] == FRAMES
    assert result["bad"] == [], result
    assert result["received"] >= MIN_FRAMES, (
        f"only {result['received']}/{FRAMES} best-effort 12.6 MB frames arrived "
        f"(indices {result['indices']}); publisher: {done}"
    )
    assert sub.proc.returncode == 0, sub.log
    assert pub.proc.returncode == 0, pub.log
