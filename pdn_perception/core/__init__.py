"""ROS-free heart of pdn_perception: config, models, selection, batching, backends, merge, pipeline.

Nothing in this package imports rclpy or any ``*_msgs`` package.
"""

from .config import ConfigError, NodeConfig, PipelineConfig, load_pipeline_config
from .pipeline import FrameError, Pipeline, Result

__all__ = [
    "ConfigError",
    "FrameError",
    "NodeConfig",
    "Pipeline",
    "PipelineConfig",
    "Result",
    "load_pipeline_config",
]
