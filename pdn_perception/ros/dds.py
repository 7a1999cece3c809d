"""Fast DDS transport settings so that full-resolution camera frames actually arrive.

Fast DDS' default shared-memory segments are ~0.5 MB. Under best-effort QoS (the sensor-data
profile that camera topics use) a 2048x2048 rgb8 ``sensor_msgs/Image`` (12.6 MB) does not fit and
is dropped *silently*: no error, no warning, about 1 frame in 40 arrives. The shipped profile
``config/fastdds_large_frames.xml`` gives every participant a 64 MB segment (messages up to
32 MB) plus UDPv4, which delivers every frame at 10 Hz.

Fast DDS reads ``FASTDDS_DEFAULT_PROFILES_FILE`` when the first participant is created, so
:func:`use_large_frame_profile` must run before ``rclpy.init()`` (in practice: first thing in
``main()``), and every process exchanging the images (camera driver, bag replay, this node) needs
the profile.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

PROFILE_ENV_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"
PROFILE_FILENAME = "fastdds_large_frames.xml"
PACKAGE_NAME = "pdn_perception"


def _source_tree_profile() -> Path:
    """Profile in a source checkout / editable install: ``<repo>/config/``."""
    return Path(__file__).resolve().parents[2] / "config" / PROFILE_FILENAME


def _ament_share_profile() -> Path | None:
    """Profile in the ament share dir of an installed package (colcon/ROS install)."""
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        share = get_package_share_directory(PACKAGE_NAME)
    except (LookupError, ValueError, OSError):
        # PackageNotFoundError is a KeyError; also raised when AMENT_PREFIX_PATH is unset.
        return None
    return Path(share) / "config" / PROFILE_FILENAME


def _prefix_share_profile() -> Path:
    """Profile installed by ``pip install .`` (setup.py data_files) under ``<prefix>/share``."""
    return Path(sys.prefix) / "share" / PACKAGE_NAME / "config" / PROFILE_FILENAME


def find_large_frame_profile() -> Path | None:
    """Return the shipped large-frame Fast DDS profile, or ``None`` if it cannot be found.

    Looked for, in order: the source tree (``config/``), the ament share dir of the installed
    package (``share/pdn_perception/config/`` via ``ament_index_python``), and ``share/`` under
    the running Python's prefix (a non-editable pip install into a venv).
    """
    candidates = [_source_tree_profile(), _ament_share_profile(), _prefix_share_profile()]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def use_large_frame_profile(env: MutableMapping[str, str] = os.environ) -> str | None:
    """Point Fast DDS at the shipped large-frame profile unless the user chose a profile already.

    Sets ``FASTDDS_DEFAULT_PROFILES_FILE`` in ``env`` (the process environment by default) to the
    shipped ``fastdds_large_frames.xml``. An existing non-empty value is respected: a deployment
    may have its own tuned profile. Must be called before ``rclpy.init()``: Fast DDS loads the
    profile when the first participant is created.

    Returns:
        The profile path in effect (the pre-set value or the shipped file), or ``None`` when no
        profile is set and the shipped one cannot be found (Fast DDS defaults then apply, and
        best-effort frames above ~0.5 MB may be lost).
    """
    current = env.get(PROFILE_ENV_VAR)
    if current:
        return current
    profile = find_large_frame_profile()
    if profile is None:
        return None
    env[PROFILE_ENV_VAR] = str(profile)
    return str(profile)
