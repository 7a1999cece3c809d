"""Launch the pdn_perception node (and optionally RViz) on a real ROS 2 install.

Thin on purpose: everything here is also reachable with plain ``--ros-args`` (the node sets the
large-frame Fast DDS profile and autostarts its lifecycle itself), which is how it is tested;
the ``launch`` packages are not available from PyPI.

    ros2 launch pdn_perception pdn_perception.launch.py image:=/camera/image_raw rviz:=true

Equivalent without launch:

    pdn_perception_node --ros-args -r __ns:=/<namespace> --params-file <params_file> \
        -r image:=/camera/image_raw -r image/compressed:=/camera/image_raw/compressed
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("pdn_perception")
    image = LaunchConfiguration("image")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "image", default_value="/camera/image_raw", description="input image topic"
            ),
            DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", "params.yaml"]),
                description="ROS parameters file (/**: ros__parameters: ...)",
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", description="use /clock (bag replay)"
            ),
            DeclareLaunchArgument("rviz", default_value="false", description="start RViz"),
            Node(
                package="pdn_perception",
                executable="pdn_perception_node",
                name="pdn_perception",
                namespace=LaunchConfiguration("namespace"),
                parameters=[LaunchConfiguration("params_file"), {"use_sim_time": use_sim_time}],
                # image_transport names: <image>/compressed carries the JPEG/PNG copy
                remappings=[("image", image), ("image/compressed", [image, "/compressed"])],
                output="screen",
                emulate_tty=True,
            ),
            Node(
                package="rviz2",
                executable="rviz2",
                name="pdn_perception_rviz",
                namespace=LaunchConfiguration("namespace"),
                arguments=["-d", PathJoinSubstitution([share, "rviz", "pdn_perception.rviz"])],
                parameters=[{"use_sim_time": use_sim_time}],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
