"""Offline processing: run the pipeline on every image of a bag and write a results mcap bag.

No DDS and no rclpy: the bag is read with ``rosbags``, frames and messages are converted by
``ros.convert`` (the node's own conversion, so offline and live results are the same messages)
and written with the project typestore (vision_msgs hashes equal a real ROS build). Output
topics and types are the node's: ``/pdn_perception/detections`` (Detection2DArray, one per
input image, with the input header), ``/pdn_perception/crops`` (BoundingBox2DArray) and
``/pdn_perception/saliency`` (mono8 Image). Each output message is logged at its input
message's log time, so results line up with the camera bag in Foxglove.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import FrameError, Pipeline, PipelineConfig
from .io import (
    IMAGE_TYPES,
    BagError,
    BagWriter,
    header_to_ros,
    image_to_frame,
    iter_raw,
    open_bag,
    progress_bar,
    select_connections,
    staged_output,
)
from .results import (
    CROPS_TOPIC,
    CROPS_TYPE,
    DETECTIONS_TOPIC,
    DETECTIONS_TYPE,
    SALIENCY_TOPIC,
    SALIENCY_TYPE,
)


@dataclass
class ProcessSummary:
    """What ``pdn-process`` did: counts and per-frame pipeline time."""

    input_bag: str
    output_bag: str
    topics: list[str]
    frames: int = 0  # image messages read
    processed: int = 0
    skipped: int = 0  # bad images (undecodable, wrong size/encoding), with a warning each
    detections: int = 0
    frame_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    backend: str = ""

    def to_json(self) -> dict[str, Any]:
        ms = self.frame_ms
        return {
            "input_bag": self.input_bag,
            "output_bag": self.output_bag,
            "topics": self.topics,
            "frames": self.frames,
            "processed": self.processed,
            "skipped": self.skipped,
            "detections": self.detections,
            "ms_per_frame_mean": round(statistics.fmean(ms), 1) if ms else None,
            "ms_per_frame_p50": round(statistics.median(ms), 1) if ms else None,
            "wall_s": round(self.wall_s, 2),
            "backend": self.backend,
        }

    def text(self) -> str:
        j = self.to_json()
        return (
            f"{j['processed']}/{j['frames']} frames processed ({j['skipped']} skipped), "
            f"{j['detections']} detections, {j['ms_per_frame_mean']} ms/frame mean "
            f"(p50 {j['ms_per_frame_p50']}), backend {j['backend']}, {j['wall_s']} s total "
            f"-> {j['output_bag']}"
        )


def _warn_stderr(text: str) -> None:
    print(f"pdn-process: warning: {text}", file=sys.stderr)


def process_bag(
    in_bag: str | Path,
    out_bag: str | Path,
    config: PipelineConfig | None = None,
    topics: Sequence[str] | None = None,
    force: bool = False,
    copy_images: bool = False,
    progress: bool | None = None,
    warn: Callable[[str], None] = _warn_stderr,
    pipeline: Pipeline | None = None,
) -> ProcessSummary:
    """Run the pipeline over every image message of ``in_bag``; write ``out_bag`` (mcap).

    Raises BagError when the input cannot be read (nothing is left at ``out_bag``) or
    ``out_bag`` exists without ``force``. Images that cannot be decoded or processed are
    skipped with a ``warn`` and counted. ``copy_images`` also writes the input image messages
    (as recorded) so the output alone can be viewed in Foxglove.
    """
    in_bag, out_bag = Path(in_bag), Path(out_bag)
    if out_bag.exists() and not force:
        raise BagError(f"output {out_bag} exists; use --force to overwrite it")
    if out_bag.resolve() == in_bag.resolve():
        raise BagError("the output bag must not be the input bag")
    t_start = time.perf_counter()
    with open_bag(in_bag) as reader:
        conns = select_connections(reader, topics)
        bad = [f"{c.topic} [{c.msgtype}]" for c in conns if c.msgtype not in IMAGE_TYPES]
        if bad:
            raise BagError(f"not image topics: {', '.join(bad)}")
        if not conns:
            have = ", ".join(f"{c.topic} [{c.msgtype}]" for c in reader.connections) or "none"
            raise BagError(f"no sensor_msgs/Image or CompressedImage topics in {in_bag}: {have}")
        pipe = pipeline or Pipeline(config or PipelineConfig())
        summary = ProcessSummary(
            str(in_bag), str(out_bag), sorted({c.topic for c in conns}), backend=pipe.backend
        )
        custom = {
            "pdn_perception.source_bag": str(in_bag.resolve()),
            "pdn_perception.config": json.dumps(pipe.config.to_dict()),
        }
        with (
            staged_output(out_bag, force=force) as staging,
            BagWriter.create(staging, "mcap", custom_data=custom) as out,
        ):
            out.add(DETECTIONS_TOPIC, DETECTIONS_TYPE)
            out.add(CROPS_TOPIC, CROPS_TYPE)
            out.add(SALIENCY_TOPIC, SALIENCY_TYPE)
            if copy_images:
                for c in conns:
                    out.add(c.topic, c.msgtype, c.msgdef.data, c.digest)
            bar = progress_bar(sum(c.msgcount for c in conns), "pdn-process", progress)

            def emit(text: str) -> None:
                with bar.external_write_mode(file=sys.stderr):
                    warn(text)

            for conn, timestamp, raw in iter_raw(reader, conns):
                summary.frames += 1
                bar.update(1)
                if copy_images:
                    out.write_raw(conn.topic, timestamp, raw)
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                    frame = image_to_frame(msg)
                except Exception as exc:  # undecodable message or image: skip it, go on
                    summary.skipped += 1
                    emit(f"skipped frame {summary.frames} on {conn.topic}: {exc}")
                    continue
                try:
                    result = pipe(frame)
                except FrameError as exc:  # e.g. too small; other errors are bugs: raise
                    summary.skipped += 1
                    emit(f"skipped frame {summary.frames} on {conn.topic}: {exc}")
                    continue
                header = header_to_ros(msg.header)
                _write_result(out, timestamp, result, header)
                summary.processed += 1
                summary.detections += len(result.boxes)
                summary.frame_ms.append(result.timings_ms.get("total", 0.0))
            bar.close()
    summary.wall_s = time.perf_counter() - t_start
    return summary


def _write_result(out: BagWriter, timestamp: int, result: Any, header: Any) -> None:
    from ..ros.convert import result_to_crops, result_to_detections, result_to_saliency

    out.write(DETECTIONS_TOPIC, timestamp, result_to_detections(result, header))
    out.write(CROPS_TOPIC, timestamp, result_to_crops(result, header))
    if result.saliency is not None:  # tiles and global modes skip it unless asked
        out.write(SALIENCY_TOPIC, timestamp, result_to_saliency(result, header))


__all__ = ["ProcessSummary", "process_bag"]
