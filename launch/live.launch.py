"""Live OccuSeg: camera (simulated or external), RGB-D reconstructor, segmentation, RViz.

    ros2 launch occuseg_ros live.launch.py
    ros2 launch occuseg_ros live.launch.py camera:=external device:=cuda use_rviz:=false

The node list comes from ``occuseg_ros.ros.live.live_nodes``, the same list ``occuseg live``
runs in one process, so the two cannot drift apart. With ``camera:=external`` the
reconstructor reads the realsense2_camera topics (aligned depth) and expects the camera pose
on ``camera_pose`` (or TF with ``-p use_tf:=true`` in the parameter file).
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from occuseg_ros.ros.live import live_nodes

PACKAGE = "occuseg_ros"

#: Launch arguments: name -> (default, description). An empty default is filled in below.
ARGUMENTS = {
    "camera": ("sim", "sim: the simulated RGB-D camera in a generated room; external: "
                      "remap the reconstructor to the realsense2_camera topics"),
    "params_file": ("", "ROS 2 parameter file for every node (default: the package's "
                        "config/occuseg.yaml)"),
    "model": ("", "checkpoint for the segmentation node (default: the shipped model)"),
    "device": ("auto", "auto | cpu | cuda, for the network and the TSDF"),
    "use_rviz": ("true", "start RViz with config/occuseg.rviz"),
}


def _nodes(context, *args, **kwargs):
    share = Path(get_package_share_directory(PACKAGE))
    params_file = LaunchConfiguration("params_file").perform(context) or str(
        share / "config" / "occuseg.yaml")
    device = LaunchConfiguration("device").perform(context)
    model = LaunchConfiguration("model").perform(context)
    overrides = {"occuseg": {"device": device, **({"model_path": model} if model else {})},
                 "rgbd_reconstructor": {"device": device}}
    return [Node(package=PACKAGE, executable=spec.executable, name=spec.name, output="screen",
                 parameters=[params_file, overrides.get(spec.name, {})],
                 remappings=list(spec.remappings))
            for spec in live_nodes(LaunchConfiguration("camera").perform(context))]


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory(PACKAGE))
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=default, description=description)
          for name, (default, description) in ARGUMENTS.items()),
        OpaqueFunction(function=_nodes),
        Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
             arguments=["-d", str(share / "config" / "occuseg.rviz")],
             condition=IfCondition(LaunchConfiguration("use_rviz"))),
    ])
