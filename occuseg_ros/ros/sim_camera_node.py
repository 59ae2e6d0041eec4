"""A simulated RGB-D camera node: a generated furnished room seen by a moving camera.

Publishes, per frame (stamps in simulated time: ``start + index / rate_hz``, so a run slower
than real time still has the camera's own timing), on the topics the RGB-D reconstructor
reads, with ``qos_profile_sensor_data``:

- ``depth/image`` sensor_msgs/Image 16UC1 millimetres (0 = no measurement), frame
  ``camera_frame`` (optical: z forward, x right, y down);
- ``color/image`` sensor_msgs/Image rgb8, registered to the depth image;
- ``depth/camera_info`` sensor_msgs/CameraInfo (plumb_bob, no distortion);
- ``camera_pose`` geometry_msgs/PoseStamped ``T_map_camera``, frame ``map_frame``.

The room, trajectory and sensor model are :class:`occuseg_ros.core.sim_camera.SimulatedRgbdCamera`;
its ground truth scores the live run (``occuseg live``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from ..core.sim_camera import RgbdFrame, SimulatedRgbdCamera
from .conversions import image_msg_from_array, pose_from_matrix
from .graph import spin_node

NODE_PARAMETERS: dict[str, tuple[Any, str]] = {
    "seed": (7, "generated room (occuseg generate --seed)"),
    "width": (640, "image width, pixels"),
    "height": (480, "image height, pixels"),
    "rate_hz": (30.0, "frames per second of the simulated camera (and of its stamps)"),
    "loop_s": (40.0, "seconds of simulated time for one loop through the room"),
    "depth_max_m": (4.5, "no depth beyond this range, metres"),
    "dropout": (0.02, "share of depth pixels lost at random"),
    "map_frame": ("map", "frame of camera_pose"),
    "camera_frame": ("camera_depth_optical_frame", "optical frame of the images"),
}


class SimCameraNode(Node):
    """Publishes simulated depth, colour, camera info and pose; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("sim_camera", **kwargs)
        for name, (default, description) in NODE_PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = {name: self.get_parameter(name).value for name in NODE_PARAMETERS}
        self._params = p
        self.camera = SimulatedRgbdCamera(p["seed"], p["width"], p["height"], p["rate_hz"],
                                          p["loop_s"], p["depth_max_m"], p["dropout"])
        self.frames_published = 0
        self._start_ns = self.get_clock().now().nanoseconds
        self._depth_pub = self.create_publisher(Image, "depth/image", qos_profile_sensor_data)
        self._colour_pub = self.create_publisher(Image, "color/image", qos_profile_sensor_data)
        self._info_pub = self.create_publisher(CameraInfo, "depth/camera_info",
                                               qos_profile_sensor_data)
        self._pose_pub = self.create_publisher(PoseStamped, "camera_pose",
                                               qos_profile_sensor_data)
        self._timer = self.create_timer(1.0 / p["rate_hz"], self.frame_callback,
                                        callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(
            f"room {p['seed']} ({self.camera.layout.kind}), {p['width']}x{p['height']} at "
            f"{p['rate_hz']:g} Hz, {self.camera.frames_per_loop} frames per loop")

    def pause(self) -> None:
        """Stop publishing frames (the end of a run)."""
        self._timer.cancel()

    def frame_callback(self) -> None:
        """Render and publish the next frame (as fast as the timer and the CPU allow)."""
        index = self.frames_published
        frame = self.camera.frame(index)
        stamp_ns = self._start_ns + int(round(index * 1e9 / self._params["rate_hz"]))
        header = Header(frame_id=self._params["camera_frame"])
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        for pub, msg in zip((self._depth_pub, self._colour_pub, self._info_pub,
                             self._pose_pub), self.messages(frame, header)):
            pub.publish(msg)
        self.frames_published += 1

    def messages(self, frame: RgbdFrame, header: Header
                 ) -> tuple[Image, Image, CameraInfo, PoseStamped]:
        """The four messages of one frame, all with ``header``'s stamp."""
        h, w = frame.depth_mm.shape
        depth = image_msg_from_array(header, frame.depth_mm, "16UC1")
        colour = image_msg_from_array(header, frame.rgb, "rgb8")
        K = self.camera.K
        info = CameraInfo(header=header, height=h, width=w, distortion_model="plumb_bob")
        info.d = [0.0] * 5
        info.k = K.reshape(-1).tolist()
        info.r = np.eye(3).reshape(-1).tolist()
        info.p = np.hstack([K, np.zeros((3, 1))]).reshape(-1).tolist()
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = header.stamp, self._params["map_frame"]
        pose.pose = pose_from_matrix(frame.T_map_camera)
        return depth, colour, info, pose


def main(args: list[str] | None = None) -> None:
    """Run the simulated camera until Ctrl-C (``ros2 run occuseg_ros sim_camera``)."""
    spin_node(SimCameraNode, "sim_camera", args)


if __name__ == "__main__":
    main()
