"""Reading and writing rosbag2 (mcap and sqlite3) with ``rosbags``: no ROS install, no rclpy.

Why this module exists:

* one typestore that knows the project's ``vision_msgs`` (registered from the very .msg files
  the ROS package is built from, so bag connections carry the RIHS01 hashes a real ROS build
  announces and ``ros2 bag``/Foxglove accept the bags);
* every way a bag can be unreadable (missing, not a bag, truncated, corrupt) becomes one
  :class:`BagError` with a message that names the bag, so CLIs can exit with a clear error;
* output bags are written into a staging directory and renamed into place only when complete,
  so an error or Ctrl-C never leaves a half-written bag behind;
* messages are converted between rclpy and rosbags objects field by field
  (:func:`to_rosbags`), so the Result <-> message mapping stays the one in
  ``pdn_perception.ros.convert`` (which also decodes rosbags' own Image/CompressedImage: it only
  reads ``encoding``/``height``/``width``/``step``/``data``/``format``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import struct
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Connection, Nodetype
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES: tuple[str, ...] = (IMAGE_TYPE, COMPRESSED_TYPE)
STORAGES: dict[str, StoragePlugin] = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy and later (Kilted included)

_REPO_MSG_DIR = Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / "vision_msgs" / "msg"


class BagError(RuntimeError):
    """A bag cannot be read or written (missing, not a rosbag2, truncated, corrupt, exists)."""


# --------------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------------


def vision_msgs_dir() -> Path:
    """The vision_msgs .msg sources: the repo copy, else the installed package's share dir."""
    candidates = [_REPO_MSG_DIR]
    candidates.append(Path(sys.prefix) / "share" / "vision_msgs" / "msg")
    with contextlib.suppress(Exception):
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("vision_msgs")) / "msg")
    for path in candidates:
        if (path / "Detection2DArray.msg").is_file():
            return path
    raise BagError(f"vision_msgs .msg files not found (looked in {[str(c) for c in candidates]})")


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """ROS 2 Kilted types plus vision_msgs from the project's .msg files (hash-identical)."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for path in sorted(vision_msgs_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def ros_type_name(msg: Any) -> str:
    """``sensor_msgs.msg.Image`` instance -> ``sensor_msgs/msg/Image`` (rclpy or rosbags)."""
    cls = type(msg)
    if hasattr(cls, "__msgtype__"):  # rosbags dataclass
        return str(cls.__msgtype__)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


_NP_TYPES = {
    "bool": np.bool_,
    "byte": np.uint8,
    "char": np.uint8,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
}


def to_rosbags(msg: Any, store: Typestore | None = None, msgtype: str | None = None) -> Any:
    """An rclpy message -> the equivalent rosbags dataclass (for ``serialize_cdr``).

    Walks the rosbags field definitions and reads the same-named attributes, so any message
    built by ``ros.convert`` can be written to a bag without rclpy's serializer (which would
    need rclpy here). Primitive arrays become numpy arrays (zero-copy from ``array.array``).
    """
    store = store or typestore()
    msgtype = msgtype or ros_type_name(msg)
    _, fields = store.fielddefs[msgtype]
    kwargs = {name: _field_value(getattr(msg, name), desc, store) for name, desc in fields}
    return store.types[msgtype](**kwargs)


def _field_value(value: Any, desc: tuple, store: Typestore) -> Any:
    kind, spec = desc
    if kind == Nodetype.BASE:
        base = spec[0]
        return value if base == "string" else _scalar(value, base)
    if kind == Nodetype.NAME:
        return to_rosbags(value, store, spec)
    (elem_kind, elem_spec), _ = spec  # ARRAY or SEQUENCE
    if elem_kind == Nodetype.BASE and elem_spec[0] != "string":
        dtype = _NP_TYPES[elem_spec[0]]
        if isinstance(value, np.ndarray):
            return value.astype(dtype, copy=False)
        if isinstance(value, (bytes, bytearray, memoryview)) or hasattr(value, "typecode"):
            return np.frombuffer(value, dtype=dtype)
        return np.asarray(value, dtype=dtype)
    return [_field_value(v, (elem_kind, elem_spec), store) for v in value]


def _scalar(value: Any, base: str) -> Any:
    if isinstance(value, bytes):  # rclpy byte/char fields
        return value[0] if value else 0
    if base == "bool":
        return bool(value)
    return float(value) if base.startswith("float") else int(value)


def header_to_ros(header: Any) -> Any:
    """A rosbags std_msgs/Header -> an rclpy ``std_msgs.msg.Header`` (for ``ros.convert``)."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    stamp = Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec))
    return Header(stamp=stamp, frame_id=str(header.frame_id))


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (rclpy or rosbags) -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """Header stamp of a serialized message whose first field is a std_msgs/Header.

    Reads 8 bytes of the CDR payload instead of deserializing a 12.6 MB image (replay, demo).
    """
    raw = memoryview(raw)
    if len(raw) < 12:
        raise BagError(f"message too short for a header ({len(raw)} bytes)")
    endian = "<" if raw[1] == 1 else ">"  # CDR encapsulation: 0x0001 little, 0x0000 big endian
    sec, nanosec = struct.unpack_from(endian + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _is_bag_dir_or_file(path: Path) -> bool:
    if path.is_dir():
        return (path / "metadata.yaml").is_file() or any(path.glob("*.mcap"))
    return path.is_file()


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """Open a rosbag2 directory (mcap or sqlite3) or rosbag1 file; any failure is a BagError."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    if not _is_bag_dir_or_file(path):
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    try:
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    except Exception as exc:  # rosbags raises many types for broken files
        raise BagError(f"cannot open bag {path}: {_describe(exc)}") from None
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):
            reader.close()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 400 else text[:400] + "..."


def select_connections(
    reader: AnyReader, topics: Sequence[str] | None = None, msgtypes: Sequence[str] = IMAGE_TYPES
) -> list[Connection]:
    """Connections of ``topics`` (all must exist), or of every topic of ``msgtypes``."""
    if topics:
        known = {c.topic for c in reader.connections}
        missing = [t for t in topics if t not in known]
        if missing:
            have = ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections) or "none"
            raise BagError(f"topic(s) not in the bag: {', '.join(missing)}; it has: {have}")
        return [c for c in reader.connections if c.topic in topics]
    return [c for c in reader.connections if c.msgtype in msgtypes]


def iter_raw(
    reader: AnyReader, connections: Sequence[Connection]
) -> Iterator[tuple[Connection, int, bytes]]:
    """``reader.messages`` with read failures (truncated or corrupt storage) as BagError.

    Also an error: fewer messages than the bag's own index/metadata counts (a damaged record
    makes the storage reader skip messages silently).
    """
    if not connections:
        return  # rosbags reads *every* topic when given no connections
    gen = reader.messages(connections=connections)
    expected = sum(c.msgcount for c in connections)
    count = 0
    while True:
        try:
            item = next(gen)
        except StopIteration:
            break
        except Exception as exc:
            raise BagError(f"cannot read bag {reader.paths[0]}: {_describe(exc)}") from None
        count += 1
        yield item
    if count < expected:
        raise BagError(
            f"bag {reader.paths[0]} is truncated or corrupt: read {count} of the {expected} "
            "messages its index lists"
        )


def cdr_bytes(reader: AnyReader, connection: Connection, raw: bytes) -> bytes:
    """Serialized message as CDR: rosbag2 data as is; rosbag1 data converted."""
    if reader.is2:
        return raw
    return reader.typestore.ros1_to_cdr(raw, connection.msgtype)


def image_to_frame(msg: Any) -> np.ndarray:
    """A deserialized Image/CompressedImage (rosbags or rclpy) -> RGB or mono uint8 frame.

    Uses ``ros.convert`` (the project's only image conversion); raises its ImageConversionError.
    """
    from ..ros.convert import compressed_to_pipeline, image_to_pipeline

    return compressed_to_pipeline(msg) if hasattr(msg, "format") else image_to_pipeline(msg)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def staged_output(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a not-yet-existing path to write a bag directory to; move it to ``out`` on success.

    The staging path lives next to ``out`` (same filesystem: the final rename is atomic) and has
    ``out``'s name, so the storage file inside is named like a bag recorded there directly. On
    any exception (Ctrl-C included) the staging directory is removed and ``out`` is untouched.
    """
    out = Path(out)
    if out.exists() and not force:
        raise BagError(f"output {out} exists; use --force to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging_dir = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging_dir, ignore_errors=True)
    staging_dir.mkdir()
    try:
        yield staging_dir / out.name
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        (staging_dir / out.name).rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)


@dataclass
class BagWriter:
    """A rosbags Writer with connections looked up by topic and messages given as objects."""

    writer: Writer
    connections: dict[str, Connection]

    @classmethod
    @contextlib.contextmanager
    def create(
        cls, path: Path, storage: str = "mcap", custom_data: dict[str, str] | None = None
    ) -> Iterator[BagWriter]:
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}; use one of {', '.join(STORAGES)}")
        writer = Writer(path, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        for key, value in (custom_data or {}).items():
            writer.set_custom_data(key, value)
        with writer:
            yield cls(writer, {})

    def add(
        self, topic: str, msgtype: str, msgdef: str | None = None, digest: str | None = None
    ) -> Connection:
        """Register a topic (types from the project typestore unless msgdef+digest given)."""
        if msgdef is not None and digest is not None:
            conn = self.writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest)
        else:
            conn = self.writer.add_connection(topic, msgtype, typestore=typestore())
        self.connections[topic] = conn
        return conn

    def write(self, topic: str, timestamp_ns: int, msg: Any) -> None:
        """Serialize a rosbags message object (or an rclpy one, converted) and write it."""
        conn = self.connections[topic]
        if not hasattr(type(msg), "__msgtype__"):
            msg = to_rosbags(msg, typestore(), conn.msgtype)
        self.writer.write(conn, timestamp_ns, typestore().serialize_cdr(msg, conn.msgtype))

    def write_raw(self, topic: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        self.writer.write(self.connections[topic], timestamp_ns, data)


def progress_bar(total: int | None, desc: str, enabled: bool | None = None) -> Any:
    """tqdm on a terminal (``enabled=None``: only if stderr is a TTY), else a no-op bar."""
    from tqdm import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else not enabled
    return tqdm(total=total, desc=desc, unit="msg", disable=disable, dynamic_ncols=True)


__all__ = [
    "BAG_VERSION",
    "COMPRESSED_TYPE",
    "IMAGE_TYPE",
    "IMAGE_TYPES",
    "STORAGES",
    "BagError",
    "BagWriter",
    "cdr_bytes",
    "header_stamp_ns",
    "header_to_ros",
    "image_to_frame",
    "iter_raw",
    "open_bag",
    "progress_bar",
    "select_connections",
    "staged_output",
    "stamp_ns",
    "to_rosbags",
    "typestore",
    "vision_msgs_dir",
]
