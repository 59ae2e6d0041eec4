"""RGB-D to surface: a ROS 2 node fusing posed depth + colour frames into a TSDF volume.

Inputs (relative names, remappable; ``qos_profile_sensor_data``):

- ``depth/image`` sensor_msgs/Image, 16UC1 (millimetres) or 32FC1 (metres), z-depth in the
  camera optical frame (z forward, x right, y down);
- ``color/image`` sensor_msgs/Image, rgb8 or bgr8, registered to the depth image (same size);
- ``depth/camera_info`` sensor_msgs/CameraInfo of the depth image (the latest one is used);
- ``camera_pose`` geometry_msgs/PoseStamped (``pose_type: pose``) or TransformStamped
  (``pose_type: transform``): ``T_map_camera`` of the depth optical frame, header frame
  ``map_frame``. With ``use_tf`` (and tf2_ros installed) the pose comes from TF instead.

A frame is integrated when a depth image, a colour image and a pose whose stamps are within
``sync_tolerance_s`` of each other have arrived (the nearest colour and pose, no
interpolation). Callbacks only validate headers and store into small bounded buffers; a timer
in its own callback group integrates the newest complete frame at ``integrate_rate_hz``
(latest wins: older depth frames never integrated are dropped and counted).

Outputs: ``surface_cloud`` sensor_msgs/PointCloud2 (x y z rgb, frame ``map_frame``, stamp of
the newest integrated frame) at ``publish_rate_hz``, holding only the surface of the blocks
changed since the previous message (an increment; see :mod:`occuseg_ros.core.tsdf` for the
block convention; nothing is published when nothing changed). A block whose surface
vanished has no points to send, so a subscriber keeps its old points until the block gets
surface again. ``/diagnostics`` once per ``diagnostics_period_s``. Service ``~/reset``
(std_srvs/Trigger) clears the volume.

Bad input (undecodable messages, size mismatches, time going backwards, invalid poses) is
logged (throttled per reason) with the reason, counted per reason in the diagnostics and
dropped; the node keeps running.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, TransformStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from ..core.tsdf import TsdfConfig, TsdfReconstructor
from .conversions import (MessageError, cloud_msg_from_arrays, depth_m_from_image, image_array,
                          intrinsics_from_camera_info, matrix_from_pose, matrix_from_transform,
                          packed_from_rgb, rgb_from_image, seconds_from_stamp)
from .graph import decoding, spin_node, type_name, wrong_type_publishers

try:  # a full ROS install has tf2_ros; PyPI does not
    from tf2_ros import Buffer, TransformException, TransformListener
except ImportError:
    Buffer = None

#: Images kept per topic while waiting for their partners (about 0.3 s at 30 Hz).
IMAGE_BUFFER = 10
#: Poses kept while waiting for images (1 s at 200 Hz).
POSE_BUFFER = 200
#: Image encodings accepted on depth/image and color/image.
_DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
_COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")
#: Seconds between two log lines for the same rejection reason.
LOG_THROTTLE_S = 2.0

#: The node's parameters: name -> (default, description).
NODE_PARAMETERS: dict[str, tuple[Any, str]] = {
    "voxel_size_m": (0.02, "TSDF voxel edge, metres"),
    "block_resolution": (8, "voxels per block edge; surface increments replace blocks of "
                            "voxel_size_m * block_resolution metres"),
    "sdf_trunc_m": (0.08, "truncation distance of the signed distance, metres"),
    "depth_min_m": (0.1, "depth below this is ignored, metres"),
    "depth_max_m": (4.0, "depth beyond this is ignored, metres"),
    "min_weight": (1.0, "surface points need voxels observed in at least this many frames"),
    "block_count": (40_000, "initial block capacity of the volume (6 KiB per block at 8^3)"),
    "device": ("auto", "auto | cpu | cuda: where the volume lives (auto: CUDA when available)"),
    "integrate_rate_hz": (15.0, "most frames integrated per second (the newest complete one)"),
    "publish_rate_hz": (2.0, "surface_cloud increments per second (only when changed)"),
    "map_frame": ("map", "frame of the poses and of surface_cloud"),
    "pose_type": ("pose", "pose: camera_pose is geometry_msgs/PoseStamped; transform: "
                          "geometry_msgs/TransformStamped"),
    "sync_tolerance_s": (0.02, "largest stamp difference between depth, colour and pose, s"),
    "use_tf": (False, "look T_map_camera up in TF (map_frame <- depth frame) instead of "
                      "camera_pose; falls back to camera_pose when tf2_ros is missing"),
    "input_qos": ("sensor_data", "sensor_data (best effort, latest few) | reliable (depth 50, "
                                 "for bag replays that must not lose a frame)"),
    "diagnostics_period_s": (1.0, "seconds between /diagnostics messages"),
}


class RgbdReconstructorNode(Node):
    """Posed RGB-D frames in, TSDF surface increments out; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("rgbd_reconstructor", **kwargs)
        for name, (default, description) in NODE_PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        p = {name: self.get_parameter(name).value for name in NODE_PARAMETERS}
        if p["pose_type"] not in ("pose", "transform"):
            raise ValueError(f"parameter pose_type must be 'pose' or 'transform', "
                             f"got {p['pose_type']!r}")
        for key in ("integrate_rate_hz", "publish_rate_hz", "diagnostics_period_s"):
            if not p[key] > 0:
                raise ValueError(f"parameter {key} must be positive, got {p[key]}")
        if not p["sync_tolerance_s"] >= 0:
            raise ValueError(f"sync_tolerance_s must be >= 0, got {p['sync_tolerance_s']}")
        if not p["map_frame"]:
            raise ValueError("parameter map_frame must not be empty")
        self._params = p
        self._reconstructor = TsdfReconstructor(TsdfConfig(
            voxel_size_m=p["voxel_size_m"], block_resolution=p["block_resolution"],
            sdf_trunc_m=p["sdf_trunc_m"], depth_min_m=p["depth_min_m"],
            depth_max_m=p["depth_max_m"], block_count=p["block_count"], device=p["device"],
            min_weight=p["min_weight"]))
        self.get_logger().info(
            f"TSDF on {self._reconstructor.device}: {p['voxel_size_m'] * 100:.1f} cm voxels, "
            f"{self._reconstructor.config.block_size_m:.2f} m blocks")

        # Shared between the input callbacks and the timers, under _lock.
        self._lock = threading.Lock()
        self._depth: deque[Image] = deque(maxlen=IMAGE_BUFFER)
        self._colour: deque[Image] = deque(maxlen=IMAGE_BUFFER)
        self._poses: deque[tuple[float, np.ndarray]] = deque(maxlen=POSE_BUFFER)
        self._camera_info: tuple[np.ndarray, int, int] | None = None
        self._last_stamp: dict[str, float] = {}
        self._integrated_stamp = -np.inf
        self._integrated_header = Header(frame_id=p["map_frame"])
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self._latest: dict[str, str] = {}  # latest timings and increment size
        self._last_logged: dict[str, float] = {}
        self._previous_rejected = 0  # owned by the diagnostics timer
        # Held for a whole integration step, by each increment and by ~/reset.
        self._integrate_lock = threading.Lock()

        self._tf_buffer = None
        if p["use_tf"]:
            if Buffer is None:
                self.get_logger().warning("use_tf is set but tf2_ros does not import; "
                                          "taking poses from camera_pose instead")
            else:
                self._tf_buffer = Buffer()
                self._tf_listener = TransformListener(self._tf_buffer, self)

        inputs = MutuallyExclusiveCallbackGroup()
        # Raw subscriptions: a corrupt message is counted and logged, not dropped unseen.
        subscriptions = [(Image, "depth/image", self.depth_callback),
                         (Image, "color/image", self.colour_callback),
                         (CameraInfo, "depth/camera_info", self.camera_info_callback)]
        if self._tf_buffer is None:
            pose_msg = PoseStamped if p["pose_type"] == "pose" else TransformStamped
            subscriptions.append((pose_msg, "camera_pose", self.pose_callback))
        self._inputs = {topic: msg_type for msg_type, topic, _ in subscriptions}
        if p["input_qos"] not in ("sensor_data", "reliable"):
            raise ValueError(f"input_qos must be sensor_data or reliable, got {p['input_qos']!r}")
        input_qos = (qos_profile_sensor_data if p["input_qos"] == "sensor_data" else
                     QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        for msg_type, topic, callback in subscriptions:
            receive = decoding(msg_type, callback,
                               lambda reason: self._reject("corrupt", reason))
            self.create_subscription(msg_type, topic, receive,
                                     input_qos, callback_group=inputs, raw=True)
        self._cloud_pub = self.create_publisher(
            PointCloud2, "surface_cloud", QoSProfile(depth=10,
                                                     reliability=ReliabilityPolicy.RELIABLE))
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/reset", self.reset_callback, callback_group=inputs)
        self.create_timer(1.0 / p["integrate_rate_hz"], self.integrate_callback,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0 / p["publish_rate_hz"], self.publish_callback,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.create_timer(p["diagnostics_period_s"], self.diagnostics_callback,
                          callback_group=MutuallyExclusiveCallbackGroup())

    @property
    def device(self) -> str:
        """Where the TSDF volume lives: ``CPU:0`` or ``CUDA:0`` (parameter ``device``)."""
        return str(self._reconstructor.device)

    @property
    def publish_rate_hz(self) -> float:
        """Rate of the surface_cloud increments."""
        return float(self._params["publish_rate_hz"])

    @property
    def rejected(self) -> dict[str, int]:
        """Inputs rejected so far, by reason."""
        with self._lock:
            return dict(self._rejected)

    @property
    def counts(self) -> dict[str, int]:
        """Counters so far (``frames_integrated``, ``frames_dropped``, ``increments_published``,
        messages per topic)."""
        with self._lock:
            return dict(self._counts)

    # ----------------------------------------------------------------- input callbacks

    def depth_callback(self, msg: Image) -> None:
        """Check and store a depth image (converted to metres when its frame is integrated)."""
        if self._image_ok("depth", msg, _DEPTH_ENCODINGS):
            with self._lock:
                if len(self._depth) == self._depth.maxlen:
                    self._counts["frames_dropped"] += 1
                self._depth.append(msg)

    def colour_callback(self, msg: Image) -> None:
        """Check and store a colour image (converted when its frame is integrated)."""
        if self._image_ok("color", msg, _COLOUR_ENCODINGS):
            with self._lock:
                self._colour.append(msg)

    def _image_ok(self, topic: str, msg: Image, encodings: tuple[str, ...]) -> bool:
        """Whether an image has an accepted encoding, consistent size, step and data (checked
        on a view: nothing is copied) and a stamp not older than the last; else rejected."""
        if msg.encoding not in encodings:
            self._reject(f"{topic}_undecodable",
                         f"{topic} encoding {msg.encoding!r} is not one of {encodings}")
            return False
        try:
            image_array(msg)
        except MessageError as exc:
            self._reject(f"{topic}_undecodable", str(exc))
            return False
        return self._accept_stamp(topic, msg.header) is not None

    def camera_info_callback(self, msg: CameraInfo) -> None:
        """Keep the latest valid intrinsics."""
        try:
            info = intrinsics_from_camera_info(msg)
        except MessageError as exc:
            self._reject("camera_info_undecodable", str(exc))
            return
        with self._lock:
            self._camera_info = info
            self._counts["camera_info_messages"] += 1

    def pose_callback(self, msg: PoseStamped | TransformStamped) -> None:
        """Store ``T_map_camera`` of a PoseStamped or TransformStamped."""
        frame = msg.header.frame_id
        if frame != self._params["map_frame"]:
            self._reject("pose_wrong_frame",
                         f"pose frame '{frame}' is not the map frame '{self._params['map_frame']}'")
            return
        try:
            matrix = (matrix_from_pose(msg.pose) if isinstance(msg, PoseStamped)
                      else matrix_from_transform(msg.transform))
        except MessageError as exc:
            self._reject("pose_invalid", str(exc))
            return
        stamp = self._accept_stamp("pose", msg.header)
        if stamp is not None:
            with self._lock:
                self._poses.append((stamp, matrix))

    def _accept_stamp(self, topic: str, header: Header) -> float | None:
        """The stamp in seconds, or None (rejected) when invalid or older than the last one."""
        try:
            stamp = seconds_from_stamp(header.stamp)
        except MessageError as exc:
            self._reject(f"{topic}_bad_stamp", str(exc))
            return None
        with self._lock:
            last = self._last_stamp.get(topic)
            if last is None or stamp >= last:
                self._last_stamp[topic] = stamp
                self._counts[f"{topic}_messages"] += 1
                return stamp
        self._reject(f"{topic}_time_backwards",
                     f"{topic} stamp {stamp:.3f} s is {last - stamp:.3f} s older than the last")
        return None

    def _reject(self, kind: str, reason: str) -> None:
        """Count a dropped input under ``kind`` and log the reason (throttled per kind)."""
        now = time.monotonic()
        with self._lock:
            self._rejected[kind] += 1
            last = self._last_logged.get(kind)
            if last is not None and now - last < LOG_THROTTLE_S:
                return
            self._last_logged[kind] = now
        self.get_logger().warning(f"dropped input ({kind}): {reason}")

    # ----------------------------------------------------------------- integration

    def integrate_callback(self) -> None:
        """Integrate the newest complete frame, if there is one not integrated yet."""
        with self._integrate_lock:
            frame = self._take_frame()
            if frame is None:
                return
            depth_msg, colour_msg, T_map_camera, (K, width, height) = frame
            start = time.perf_counter()
            try:
                depth_m = depth_m_from_image(depth_msg)
            except MessageError as exc:
                self._reject("depth_undecodable", str(exc))
                return
            try:
                rgb = rgb_from_image(colour_msg)
            except MessageError as exc:
                self._reject("color_undecodable", str(exc))
                return
            if rgb.shape[:2] != depth_m.shape:
                self._reject("size_mismatch", f"colour {rgb.shape[1]} x {rgb.shape[0]} and "
                             f"depth {depth_m.shape[1]} x {depth_m.shape[0]} differ")
                return
            if (width, height) != (depth_m.shape[1], depth_m.shape[0]):
                self._reject("size_mismatch", f"camera_info {width} x {height} and depth "
                             f"{depth_m.shape[1]} x {depth_m.shape[0]} differ")
                return
            decoded = time.perf_counter()
            try:
                self._reconstructor.integrate(depth_m, np.ascontiguousarray(rgb), K,
                                              T_map_camera)
            except ValueError as exc:
                self._reject("integrate_refused", str(exc))
                return
            except RuntimeError as exc:  # open3d: device memory, a full CUDA hash map
                self._reject("integrate_failed", str(exc))
                return
            done = time.perf_counter()
            with self._lock:
                self._counts["frames_integrated"] += 1
                self._integrated_header = Header(stamp=depth_msg.header.stamp,
                                                 frame_id=self._params["map_frame"])
                self._latest["decode_ms"] = f"{(decoded - start) * 1000.0:.1f}"
                self._latest["integrate_ms"] = f"{(done - decoded) * 1000.0:.1f}"

    def _take_frame(self) -> tuple[Image, Image, np.ndarray, tuple[np.ndarray, int, int]] | None:
        """Remove and return the newest complete frame (depth, colour, pose, intrinsics).

        Depth images older than it are dropped and counted, as are colour images and poses
        at or before its stamp.
        """
        tolerance = self._params["sync_tolerance_s"]
        with self._lock:
            if self._camera_info is None or not self._depth:
                return None
            depth_msgs = list(self._depth)
            colour = [(seconds_from_stamp(m.header.stamp), m) for m in self._colour]
            poses = list(self._poses)
            camera_info = self._camera_info
            integrated = self._integrated_stamp
        for depth_msg in reversed(depth_msgs):
            stamp = seconds_from_stamp(depth_msg.header.stamp)
            if stamp <= integrated:
                break
            colour_msg = _nearest(colour, stamp, tolerance)
            pose = self._pose_at(depth_msg.header, stamp, poses, tolerance)
            if colour_msg is None or pose is None:
                continue
            with self._lock:
                dropped = sum(1 for m in self._depth
                              if seconds_from_stamp(m.header.stamp) < stamp)
                self._counts["frames_dropped"] += dropped
                self._depth = deque((m for m in self._depth
                                     if seconds_from_stamp(m.header.stamp) > stamp),
                                    maxlen=IMAGE_BUFFER)
                self._colour = deque((m for m in self._colour
                                      if seconds_from_stamp(m.header.stamp) > stamp),
                                     maxlen=IMAGE_BUFFER)
                self._poses = deque(((t, T) for t, T in self._poses if t > stamp),
                                    maxlen=POSE_BUFFER)
                self._integrated_stamp = stamp
            return depth_msg, colour_msg, pose, camera_info
        return None

    def _pose_at(self, header: Header, stamp: float, poses: list[tuple[float, np.ndarray]],
                 tolerance: float) -> np.ndarray | None:
        """``T_map_camera`` at a depth image's stamp: from TF, or the nearest stored pose."""
        if self._tf_buffer is None:
            return _nearest(poses, stamp, tolerance)
        try:
            transform = self._tf_buffer.lookup_transform(
                self._params["map_frame"], header.frame_id, Time.from_msg(header.stamp))
        except TransformException:
            return None
        try:
            return matrix_from_transform(transform.transform)
        except MessageError as exc:
            self._reject("pose_invalid", str(exc))
            return None

    # ----------------------------------------------------------------- output

    def publish_callback(self) -> None:
        """Publish the surface of the blocks changed since the previous increment."""
        # Under the integration lock, so that the stamp is that of the newest frame whose
        # changes are in the increment.
        with self._integrate_lock:
            start = time.perf_counter()
            xyz, rgb, blocks = self._reconstructor.changed_surface()
            extracted = time.perf_counter()
            with self._lock:
                header = self._integrated_header
        if xyz.shape[0] == 0:
            return
        self._cloud_pub.publish(cloud_msg_from_arrays(header, {
            "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "rgb": packed_from_rgb(rgb)}))
        with self._lock:
            self._counts["increments_published"] += 1
            self._counts["points_published"] += int(xyz.shape[0])
            self._latest["changed_surface_ms"] = f"{(extracted - start) * 1000.0:.1f}"
            self._latest["publish_ms"] = f"{(time.perf_counter() - extracted) * 1000.0:.1f}"
            self._latest["increment_points"] = str(xyz.shape[0])
            self._latest["increment_blocks"] = str(blocks.shape[0])

    def reset_callback(self, request: Trigger.Request,
                       response: Trigger.Response) -> Trigger.Response:
        """Clear the volume, the buffers and the stamp history."""
        with self._integrate_lock:
            self._reconstructor.reset()
            with self._lock:
                self._depth.clear()
                self._colour.clear()
                self._poses.clear()
                self._last_stamp.clear()
                self._integrated_stamp = -np.inf
        response.success, response.message = True, "TSDF volume cleared"
        return response

    def diagnostics_callback(self) -> None:
        """Publish frame counts, rejections per reason, timings and the volume size."""
        with self._lock:
            counts, rejected = dict(self._counts), dict(self._rejected)
            latest = dict(self._latest)
        total_rejected = sum(rejected.values())
        for topic, msg_type in self._inputs.items():
            wrong = wrong_type_publishers(self, topic, msg_type)
            if wrong:
                rejected[f"{topic.replace('/', '_')}_wrong_type_publishers"] = wrong
                self.get_logger().warning(
                    f"{wrong} publisher(s) on {topic} with a type other than "
                    f"{type_name(msg_type)}: their messages cannot reach this node",
                    throttle_duration_sec=10.0)
        values: dict[str, Any] = {
            "frames_integrated": counts.pop("frames_integrated", 0),
            "frames_dropped": counts.pop("frames_dropped", 0),
            "blocks": self._reconstructor.num_blocks,
            **latest, **counts,
            **{f"rejected_{k}": v for k, v in sorted(rejected.items())}}
        new_rejections = total_rejected - self._previous_rejected
        self._previous_rejected = total_rejected
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if new_rejections else DiagnosticStatus.OK,
            name=f"{self.get_name()}: reconstruction", hardware_id=self.get_fully_qualified_name(),
            message=f"{new_rejections} inputs rejected" if new_rejections else "ok",
            values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
        self._diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))


def _nearest(items: list[tuple[float, Any]], stamp: float, tolerance: float) -> Any | None:
    """The item whose stamp (seconds) is nearest ``stamp`` and within ``tolerance``."""
    if not items:
        return None
    gaps = [abs(t - stamp) for t, _ in items]
    best = int(np.argmin(gaps))
    return items[best][1] if gaps[best] <= tolerance else None


def main(args: list[str] | None = None) -> None:
    """Run the node until Ctrl-C (``ros2 run occuseg_ros rgbd_reconstructor``)."""
    spin_node(RgbdReconstructorNode, "rgbd_reconstructor", args)


if __name__ == "__main__":
    main()
