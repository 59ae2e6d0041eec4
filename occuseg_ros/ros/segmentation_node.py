"""The OccuSeg ROS 2 node: a live reconstruction in, labelled instances out.

Inputs (relative names, remappable), all in one map frame (REP-105):

- ``surface_cloud`` sensor_msgs/PointCloud2 (x y z, rgb): snapshots or block increments
  (``input_mode``; blocks of ``block_size_m``, see :mod:`occuseg_ros.core.surface_map`);
- ``tsdf_voxels`` sensor_msgs/PointCloud2 (x y z tsdf weight, rgb): changed TSDF voxels; those
  with ``|tsdf| <= tsdf_band_m`` and ``weight >= tsdf_min_weight`` are surface;
- ``surface_mesh`` visualization_msgs/MarkerArray of TRIANGLE_LIST blocks, or one Marker
  (``surface_mesh_type``): the mesh vertices, as snapshots or increments like the cloud.

Outputs (node-private): ``~/segmented_cloud`` (x y z rgb label instance score per map point),
``~/instance_markers`` (a box and a text per instance), ``~/instances`` (one PointCloud2 record
per instance), ``~/detections`` (vision_msgs/Detection3DArray, where vision_msgs imports),
``/diagnostics``. Services ``~/save_map``, ``~/reset`` and ``~/load_map`` (std_srvs/Trigger).

Callbacks only validate and store into the map; a timer in its own callback group segments
at ``segment_rate_hz`` when the map changed. The callback groups make the node safe under a
multi-threaded executor; its own processes spin it single-threaded
(:func:`occuseg_ros.ros.graph.spin_node`, which says why), where inputs arriving during a
segmentation wait in their DDS queue and are stored right after it. Each tick is incremental
(:mod:`occuseg_ros.core.incremental`): only the blocks changed since the last tick are
recomputed, within ``refresh_margin_m`` (network context ``context_margin_m``).

Persistence (``map_dir``, see :mod:`occuseg_ros.core.map_store`): every
``snapshot_period_s`` when the map changed, and on shutdown, the map, its frame and the
segmenter's memory (instance ids included) are snapshotted to ``map_dir``, written atomically
by a background thread; a node started on the same directory resumes from it, and
``~/load_map`` loads it back. The snapshot timer and ``~/load_map`` share the segmentation
timer's mutually exclusive callback group, so they never see the segmenter mid-update.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import ColorRGBA, Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from ..core.checkpoint import NetworkPredictor, default_model_path
from ..core.incremental import IncrementalConfig
from ..core.labels import colour_by_instance, instance_colours, label_name
from ..core.map_store import (MapState, MapStateError, SnapshotWriter, discard_partial_writes,
                              keep_aside, load_map_state, state_path)
from ..core.pipeline import PARAMETERS, PipelineConfig
from ..core.segmenter import MapSegmentation, Segmenter, save_labelled_map
from ..core.surface_map import SurfaceMap
from .conversions import (MessageError, cloud_fields, cloud_msg_from_arrays, mesh_from_marker,
                          packed_from_rgb, seconds_from_stamp,
                          xyz_rgb_from_cloud_msg)
from .graph import decoding, spin_node, type_name, wrong_type_publishers

try:  # a full ROS install has vision_msgs; PyPI does not
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose
except ImportError:
    Detection3DArray = None

#: Colour of map points outside every instance (walls, floors, unclustered).
_NO_INSTANCE_GREY = 110

#: The node's own parameters: name -> (default, description). The method's parameters
#: (:data:`occuseg_ros.core.pipeline.PARAMETERS`) are declared too, from config/occuseg.yaml.
NODE_PARAMETERS: dict[str, tuple[Any, str]] = {
    "model_path": ("", "checkpoint to run; empty: the model shipped in models/"),
    "device": ("auto", "auto | cpu | cuda: where the network runs"),
    "half_precision": (False, "run the network in float16 on CUDA (ignored on the CPU)"),
    "torch_threads": (0, "CPU threads for the network; 0 keeps torch's default"),
    "segment_rate_hz": (1.0, "most segmentations per second (only when the map changed)"),
    "input_mode": ("increment", "increment: messages replace the blocks they touch; "
                                "snapshot: each message is the whole surface"),
    "block_size_m": (0.16, "block edge of surface increments, metres (the reconstructor's)"),
    "refresh_margin_m": (-1.0,
                         "network outputs and super-voxels are recomputed within this distance "
                         "of a changed voxel, metres; negative: the device's default (0.4 on "
                         "the CPU, 0.8 on CUDA)"),
    "context_margin_m": (-1.0,
                         "further context the network sees around the refreshed region, "
                         "metres; negative: the device's default (0.4 on the CPU, 0.8 on "
                         "CUDA)"),
    "colour_tolerance": (IncrementalConfig.colour_tolerance,
                         "a voxel whose mean colour (RGB in [0, 1]) moved by at most this since "
                         "the network saw it is not refreshed; 0: exact"),
    "tsdf_voxel_size_m": (0.02, "voxel edge of the tsdf_voxels stream, metres"),
    "tsdf_band_m": (0.02, "a TSDF voxel is surface when |tsdf| <= this, metres"),
    "tsdf_min_weight": (1.0, "a TSDF voxel is surface when its weight >= this"),
    "surface_mesh_type": ("marker_array", "marker_array | marker: message type on surface_mesh"),
    "map_frame": ("", "frame of every input; empty: the first input's frame"),
    "max_points": (5_000_000, "most points in the map and in one message"),
    "input_qos": ("reliable", "reliable (the last 50 messages; a lost map increment would leave "
                              "its blocks stale) | sensor_data (best effort): input "
                              "subscriptions"),
    "instance_min_overlap": (0.5, "voxel overlap that keeps an instance's id between updates"),
    "output_dir": ("occuseg_maps", "directory ~/save_map writes to"),
    "diagnostics_period_s": (1.0, "seconds between /diagnostics messages"),
    "map_dir": ("", "directory the map, its frame and the instance ids are snapshotted to "
                    "(occuseg_map_state.npz) and resumed from at start and by ~/load_map; "
                    "empty: no persistence"),
    "snapshot_period_s": (10.0, "seconds between map snapshots to map_dir (only when the map "
                                "changed); one is also written on shutdown"),
}


class SegmentationNode(Node):
    """OccuSeg instance segmentation of a live map; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("occuseg", **kwargs)
        for name, (default, description) in NODE_PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        for name, default in PipelineConfig().to_params().items():
            part, attr = PARAMETERS[name]
            self.declare_parameter(name, default, ParameterDescriptor(
                description=f"method parameter {part + '.' if part else ''}{attr}"))
        p = {name: self.get_parameter(name).value for name in NODE_PARAMETERS}
        config = PipelineConfig.from_params(
            {name: self.get_parameter(name).value for name in PARAMETERS})
        for key, allowed in (("input_mode", ("increment", "snapshot")),
                             ("surface_mesh_type", ("marker_array", "marker")),
                             ("input_qos", ("sensor_data", "reliable")),
                             ("device", ("auto", "cpu", "cuda"))):
            if p[key] not in allowed:
                raise ValueError(f"parameter {key} must be one of {allowed}, got {p[key]!r}")
        if not (p["segment_rate_hz"] > 0 and p["diagnostics_period_s"] > 0
                and p["snapshot_period_s"] > 0):
            raise ValueError("segment_rate_hz, diagnostics_period_s and snapshot_period_s "
                             "must be positive")
        self._params = p

        import torch

        if p["torch_threads"] > 0:
            torch.set_num_threads(int(p["torch_threads"]))
        model_path = p["model_path"] or default_model_path()
        if model_path is None:
            raise RuntimeError("no model: set model_path, or ship one in models/")
        predictor = NetworkPredictor.from_checkpoint(model_path, p["device"],
                                                     p["half_precision"])
        config.voxel_size_m = predictor.voxel_size_m  # the model was trained at its size
        margins = IncrementalConfig.for_device(
            predictor.device.type,
            p["refresh_margin_m"] if p["refresh_margin_m"] >= 0 else None,
            p["context_margin_m"] if p["context_margin_m"] >= 0 else None,
            p["colour_tolerance"])
        self.get_logger().info(f"model {model_path} on {predictor.device}, "
                               f"{config.voxel_size_m * 100:.0f} cm voxels; margins refresh "
                               f"{margins.refresh_margin_m} m, context "
                               f"{margins.context_margin_m} m")
        self._segmenter = Segmenter(predictor, config, p["instance_min_overlap"], margins,
                                    p["block_size_m"])
        self._map = SurfaceMap(p["block_size_m"], min(p["tsdf_voxel_size_m"],
                                                      p["block_size_m"]), p["max_points"])

        # Shared between the input callbacks and the segmentation tick, under _lock.
        self._lock = threading.Lock()
        self._frame: str = p["map_frame"]
        self._last_stamp: dict[str, float] = {}
        self._header = Header()
        self._changed_at = 0.0  # monotonic time of the last map change
        self._generation = 0  # bumped by ~/reset
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        # Owned by the segmentation tick.
        self._segmented_version = -1
        self._tracker_generation = 0
        self._marker_ids: set[int] = set()
        self._last: MapSegmentation | None = None
        self._stats: dict[str, float] = {}
        self._publish_ms = 0.0
        self._latencies: deque[float] = deque(maxlen=100)  # input to output, ms
        # Persistence, owned by the segmentation group (the writer has its own thread).
        # (map version, segmented version) of the last snapshot taken; the empty map needs none.
        self._snapshot_key = (self._map.version, self._segmented_version)
        self._writer: SnapshotWriter | None = None
        if p["map_dir"]:
            self._resume()
            self._writer = SnapshotWriter(p["map_dir"], self._snapshot_failed)

        input_qos = (qos_profile_sensor_data if p["input_qos"] == "sensor_data" else
                     QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             history=HistoryPolicy.KEEP_LAST)
        inputs = MutuallyExclusiveCallbackGroup()
        mesh_type = MarkerArray if p["surface_mesh_type"] == "marker_array" else Marker
        self._inputs = {"surface_cloud": PointCloud2, "tsdf_voxels": PointCloud2,
                        "surface_mesh": mesh_type}
        for topic, callback in (("surface_cloud", self.surface_cloud_callback),
                                ("tsdf_voxels", self.tsdf_voxels_callback),
                                ("surface_mesh", self.surface_mesh_callback)):
            self.create_subscription(self._inputs[topic], topic,
                                     self._decoding(topic, callback), input_qos,
                                     callback_group=inputs, raw=True)
        self._cloud_pub = self.create_publisher(PointCloud2, "~/segmented_cloud", latched)
        self._marker_pub = self.create_publisher(MarkerArray, "~/instance_markers", latched)
        self._instances_pub = self.create_publisher(PointCloud2, "~/instances", latched)
        self._detections_pub = (self.create_publisher(Detection3DArray, "~/detections", latched)
                                if Detection3DArray is not None else None)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/save_map", self.save_map_callback, callback_group=inputs)
        self.create_service(Trigger, "~/reset", self.reset_callback, callback_group=inputs)
        segmentation = MutuallyExclusiveCallbackGroup()  # every user of the segmenter
        self.create_service(Trigger, "~/load_map", self.load_map_callback,
                            callback_group=segmentation)
        if self._writer is not None:
            # Created before the segmentation timer: the executor offers ready timers in
            # creation order, so a busy segmentation loop cannot starve the snapshots.
            self.create_timer(p["snapshot_period_s"], self.snapshot_callback,
                              callback_group=segmentation)
        self.create_timer(1.0 / p["segment_rate_hz"], self.segment_callback,
                          callback_group=segmentation)
        self.create_timer(p["diagnostics_period_s"], self.diagnostics_callback,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self._last_diagnostics = time.monotonic()
        self._previous_counts: dict[str, int] = {}

    @property
    def map_points(self) -> int:
        """Points in the map now."""
        with self._lock:
            return self._map.num_points

    @property
    def num_instances(self) -> int:
        """Instances in the last published segmentation."""
        return len(self._last.instances) if self._last is not None else 0

    @property
    def rejected(self) -> dict[str, int]:
        """Input messages dropped so far, by ``<topic>_<reason>``."""
        with self._lock:
            return dict(self._rejected)

    @property
    def map_updates_coalesced(self) -> int:
        """Map updates segmented together with a later one (latest wins, nothing queued)."""
        return self._counts["map_updates_coalesced"]

    @property
    def segmentations(self) -> int:
        """Segmentations published so far."""
        return self._counts["segmentations"]

    @property
    def is_up_to_date(self) -> bool:
        """Whether the last segmentation is of the map as it is now."""
        with self._lock:
            return self._map.version == self._segmented_version

    @property
    def last_segmentation(self) -> MapSegmentation | None:
        """The last published segmentation (None before the first)."""
        return self._last

    @property
    def last_timings_ms(self) -> dict[str, float]:
        """Milliseconds per stage of the last segmentation (``network_ms``, ``total_ms``...)."""
        return {**self._stats, "publish_ms": self._publish_ms}

    # ----------------------------------------------------------------- input callbacks

    def surface_cloud_callback(self, msg: PointCloud2) -> None:
        """Store a surface snapshot or increment."""
        self._store("surface_cloud", msg.header, lambda: self._cloud_points(msg))

    def tsdf_voxels_callback(self, msg: PointCloud2) -> None:
        """Store changed TSDF voxels: surface ones replace, the others remove."""

        def decode() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            fields = cloud_fields(msg, ("x", "y", "z", "tsdf", "weight"), ("rgb", "rgba"),
                                  max_points=self._params["max_points"])
            xyz, rgb = xyz_rgb_from_cloud_msg(msg, self._params["max_points"])
            tsdf = fields["tsdf"].astype(np.float64)
            weight = fields["weight"].astype(np.float64)
            keep = (np.abs(tsdf) <= self._params["tsdf_band_m"]) & (
                weight >= self._params["tsdf_min_weight"])
            return xyz, self._colours(rgb, xyz.shape[0]), keep

        self._store("tsdf_voxels", msg.header, decode, tsdf=True)

    def surface_mesh_callback(self, msg: MarkerArray | Marker) -> None:
        """Store the vertices of a mesh (one Marker, or a MarkerArray of mesh blocks)."""
        markers = msg.markers if isinstance(msg, MarkerArray) else [msg]
        meshes = [m for m in markers if m.action == Marker.ADD]
        if not meshes:
            self._reject("surface_mesh", "empty", "no ADD marker in the message")
            return

        def decode() -> tuple[np.ndarray, np.ndarray]:
            parts = []
            for marker in meshes:
                if marker.header.frame_id != meshes[0].header.frame_id:
                    raise MessageError("markers in different frames")
                parts.append(mesh_from_marker(marker)[:2])
            return np.concatenate([v for v, _ in parts]), np.concatenate([c for _, c in parts])

        self._store("surface_mesh", meshes[0].header, decode)

    def _decoding(self, topic: str, callback):
        """The raw-subscription callback of an input topic."""

        def corrupt(reason: str) -> None:
            self._counts[f"{topic}_messages"] += 1
            self._reject(topic, "corrupt", reason)

        return decoding(self._inputs[topic], callback, corrupt)

    def _cloud_points(self, msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
        xyz, rgb = xyz_rgb_from_cloud_msg(msg, self._params["max_points"])
        return xyz, self._colours(rgb, xyz.shape[0])

    def _colours(self, rgb: np.ndarray | None, n: int) -> np.ndarray:
        if rgb is None:
            self._counts["points_without_colour"] += n
            return np.full((n, 3), 128, np.uint8)
        return rgb

    def _store(self, topic: str, header: Header, decode, tsdf: bool = False) -> None:
        """Validate the header, decode, drop non-finite points and update the map.

        Every failure is logged with its reason, counted and the message dropped.
        """
        received = time.monotonic()
        self._counts[f"{topic}_messages"] += 1
        stamp = seconds_from_stamp(header.stamp)
        with self._lock:
            frame_error = self._frame_error(header.frame_id)
            last = self._last_stamp.get(topic)
        if frame_error:
            self._reject(topic, "wrong_frame", frame_error)
            return
        if last is not None and stamp < last:
            self._reject(topic, "time_backwards", f"time went backwards by {last - stamp:.3f} s")
            return
        try:
            decoded = decode()
        except MessageError as exc:
            self._reject(topic, "undecodable", str(exc))
            return
        xyz = decoded[0]
        finite = np.isfinite(xyz).all(axis=1)
        if not finite.all():
            self._counts["nonfinite_points_dropped"] += int((~finite).sum())
            decoded = tuple(a[finite] for a in decoded)
        if decoded[0].shape[0] == 0:
            self._reject(topic, "empty", "no finite points")
            return
        with self._lock:
            if self._frame_error(header.frame_id):  # a reset may have changed the frame
                return
            try:
                if tsdf:
                    self._map.update_voxels(*decoded)
                elif self._params["input_mode"] == "snapshot":
                    self._map.replace_all(*decoded)
                else:
                    self._map.replace_blocks(*decoded)
            except ValueError as exc:
                reason = str(exc)
            else:
                reason = ""
                self._frame = header.frame_id
                self._last_stamp[topic] = stamp
                self._header = header
                self._changed_at = received
        if reason:
            self._reject(topic, "refused_by_map", reason)

    def _frame_error(self, frame_id: str) -> str:
        if not frame_id:
            return "empty frame_id"
        if self._frame and frame_id != self._frame:
            return f"frame '{frame_id}' is not the map frame '{self._frame}'"
        return ""

    def _reject(self, topic: str, kind: str, reason: str) -> None:
        """Count (per topic and kind, for diagnostics) and log a dropped message."""
        with self._lock:
            self._rejected[f"{topic}_{kind}"] += 1
        self.get_logger().warning(f"dropped a {topic} message: {reason}",
                                  throttle_duration_sec=2.0)

    # ----------------------------------------------------------------- segmentation tick

    def segment_callback(self) -> None:
        """Segment the map when it changed and publish every output."""
        with self._lock:
            if self._map.version == self._segmented_version or self._map.num_points == 0:
                return
            changes = self._map.take_changes()
            xyz, rgb = self._map.points()
            version, generation = self._map.version, self._generation
            header, changed_at = self._header, self._changed_at
        self._follow_reset(generation)
        try:
            seg = self._segmenter.update(changes, xyz, rgb)
        except Exception as exc:  # noqa: BLE001 - one bad map must not stop the node
            self._counts["segmentation_errors"] += 1
            self._segmented_version = version
            self.get_logger().error(f"segmentation failed: {exc!r}")
            return
        with self._lock:
            if generation != self._generation:  # reset while segmenting: stale
                return
        # Map updates that arrived while the last segmentation ran are segmented together:
        # the map merged them (bounded), nothing queued. Counted for /diagnostics.
        if self._segmented_version >= 0:
            self._counts["map_updates_coalesced"] += max(version - self._segmented_version - 1,
                                                         0)
        self._segmented_version = version
        mark = time.perf_counter()
        self._last = seg
        self._stats = {f"{k}_ms": v * 1000.0 for k, v in seg.timings_s.items()}
        self._publish(seg, Header(stamp=header.stamp, frame_id=header.frame_id))
        self._publish_ms = (time.perf_counter() - mark) * 1000.0
        self._latencies.append((time.monotonic() - changed_at) * 1000.0)
        self._counts["segmentations"] += 1

    def _follow_reset(self, generation: int) -> None:
        """Forget the instance ids if ``~/reset`` ran since the segmenter last saw the map
        (``generation`` read under the lock); segmentation group only."""
        if generation != self._tracker_generation:
            self._segmenter.reset()
            self._tracker_generation = generation

    def _publish(self, seg: MapSegmentation, header: Header) -> None:
        colour = colour_by_instance(seg.instance, np.full_like(seg.rgb, _NO_INSTANCE_GREY))
        self._cloud_pub.publish(cloud_msg_from_arrays(header, {
            "x": seg.xyz[:, 0], "y": seg.xyz[:, 1], "z": seg.xyz[:, 2],
            "rgb": packed_from_rgb(colour), "label": seg.semantic.astype(np.uint32),
            "instance": seg.instance, "score": seg.score}))
        table = seg.instances
        self._instances_pub.publish(cloud_msg_from_arrays(header, {
            "x": table.centroid_m[:, 0], "y": table.centroid_m[:, 1],
            "z": table.centroid_m[:, 2], "id": table.ids,
            "label": table.labels.astype(np.uint32), "score": table.scores,
            "voxels": table.voxels.astype(np.uint32),
            "min_x": table.box_min_m[:, 0], "min_y": table.box_min_m[:, 1],
            "min_z": table.box_min_m[:, 2], "max_x": table.box_max_m[:, 0],
            "max_y": table.box_max_m[:, 1], "max_z": table.box_max_m[:, 2]}))
        self._marker_pub.publish(self._markers(seg, header))
        if self._detections_pub is not None:
            self._detections_pub.publish(_detections(seg, header))

    def _markers(self, seg: MapSegmentation, header: Header) -> MarkerArray:
        """A box and a text per instance; marker id = instance id; vanished ones deleted."""
        table = seg.instances
        colours = instance_colours(table.ids) / 255.0
        out = MarkerArray()
        current = {int(i) for i in table.ids}
        for gone in sorted(self._marker_ids - current):
            for ns in ("instance_boxes", "instance_labels"):
                out.markers.append(Marker(header=header, ns=ns, id=gone, action=Marker.DELETE))
        for k in range(len(table)):
            centre = (table.box_min_m[k] + table.box_max_m[k]) / 2.0
            size = np.maximum(table.box_max_m[k] - table.box_min_m[k], 0.01)
            r, g, b = (float(c) for c in colours[k])
            box = Marker(header=header, ns="instance_boxes", id=int(table.ids[k]),
                         type=Marker.CUBE, action=Marker.ADD,
                         color=ColorRGBA(r=r, g=g, b=b, a=0.35))
            box.pose.position = Point(x=float(centre[0]), y=float(centre[1]),
                                      z=float(centre[2]))
            box.pose.orientation.w = 1.0
            box.scale.x, box.scale.y, box.scale.z = (float(s) for s in size)
            text = Marker(header=header, ns="instance_labels", id=int(table.ids[k]),
                          type=Marker.TEXT_VIEW_FACING, action=Marker.ADD,
                          color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0),
                          text=f"{label_name(int(table.labels[k]))} #{int(table.ids[k])} "
                               f"{float(table.scores[k]):.2f}")
            text.pose.position = Point(x=float(centre[0]), y=float(centre[1]),
                                       z=float(table.box_max_m[k][2]) + 0.1)
            text.pose.orientation.w = 1.0
            text.scale.z = 0.12
            out.markers += [box, text]
        self._marker_ids = current
        return out

    # ----------------------------------------------------------------- services

    def save_map_callback(self, request: Trigger.Request,
                          response: Trigger.Response) -> Trigger.Response:
        """Write the last labelled map to ``output_dir`` (PLY, scene npz, instances.json)."""
        seg = self._last
        if seg is None:
            response.success, response.message = False, "nothing segmented yet"
            return response
        out = Path(self._params["output_dir"])
        try:
            save_labelled_map(out, seg)
        except OSError as exc:
            response.success, response.message = False, f"cannot write {out}: {exc}"
            return response
        response.success = True
        response.message = (f"wrote {seg.xyz.shape[0]} points and {len(seg.instances)} "
                            f"instances to {out.resolve()}")
        return response

    def reset_callback(self, request: Trigger.Request,
                       response: Trigger.Response) -> Trigger.Response:
        """Forget the map and the instance ids; markers are cleared with DELETEALL."""
        with self._lock:
            self._map.clear()
            self._generation += 1
            self._last_stamp.clear()
            self._frame = self._params["map_frame"]
        self._last = None
        self._marker_pub.publish(MarkerArray(markers=[Marker(action=Marker.DELETEALL)]))
        response.success, response.message = True, "map cleared"
        return response

    def load_map_callback(self, request: Trigger.Request,
                          response: Trigger.Response) -> Trigger.Response:
        """Replace the map and the instance ids by the state saved in ``map_dir``; the next
        segmentation tick publishes it."""
        directory = self._params["map_dir"]
        if not directory:
            response.success, response.message = False, "map_dir is empty: persistence is off"
            return response
        try:
            state = load_map_state(directory)
            notes = self._restore(state)
        except FileNotFoundError:
            response.success = False
            response.message = f"no saved map at {state_path(directory)}"
            return response
        except (OSError, ValueError) as exc:  # MapStateError is a ValueError
            response.success, response.message = False, f"cannot load the map: {exc}"
            return response
        response.success = True
        response.message = (f"loaded {state.num_points} points and {state.num_instances} "
                            f"instances from {state_path(directory).resolve()}{notes}")
        return response

    # ----------------------------------------------------------------- persistence

    def snapshot_callback(self) -> None:
        """Hand the map and the segmenter's memory to the writer thread when either changed
        since the last snapshot (or the last write failed)."""
        if self._writer is not None and self._snapshot_due(self._writer):
            self._writer.submit(self._take_snapshot())

    def _snapshot_due(self, writer: SnapshotWriter) -> bool:
        """Whether the map or the segmenter changed since the last snapshot, or it failed."""
        with self._lock:
            key = (self._map.version, self._segmented_version)
        return key != self._snapshot_key or bool(writer.stats.last_error)

    def _take_snapshot(self) -> MapState:
        """A consistent state: the map as it is now, the segmenter's memory as the last tick
        left it. Only where no segmentation runs (the segmentation group, or after the
        executor stopped)."""
        with self._lock:
            xyz, rgb = self._map.points()  # read-only arrays, replaced (never changed) later
            key = (self._map.version, self._segmented_version)
            generation = self._generation
            frame, stamp = self._frame, self._header.stamp
        self._follow_reset(generation)
        seg = self._last
        # Copies: the writer thread reads them while the segmenter goes on.
        arrays = {name: np.array(value, copy=True)
                  for name, value in self._segmenter.state_arrays().items()}
        self._snapshot_key = key
        return MapState(xyz, rgb, arrays, self._segmenter.config.voxel_size_m, frame,
                        stamp.sec * 1_000_000_000 + stamp.nanosec,
                        seg.instances.ids.copy() if seg is not None else np.zeros(0, np.uint32))

    def _snapshot_failed(self, exc: Exception) -> None:
        """Writer-thread callback: a snapshot could not be written (retried next period)."""
        self.get_logger().error(f"map snapshot to {self._params['map_dir']} failed: {exc}",
                                throttle_duration_sec=10.0)

    def _resume(self) -> None:
        """At start: restore the state saved in ``map_dir``, if any. An unusable file is
        logged, kept aside (renamed to ``*.corrupt`` or ``*.rejected``) and the node starts
        empty."""
        directory = self._params["map_dir"]
        log = self.get_logger()
        try:
            discard_partial_writes(directory)
            state = load_map_state(directory)
        except FileNotFoundError:
            log.info(f"no saved map in {directory}: starting empty")
            return
        except MapStateError as exc:
            log.error(f"{exc}; {_set_aside(directory, '.corrupt')}, starting empty")
            return
        except OSError as exc:
            log.error(f"cannot read the saved map in {directory} ({exc}): starting empty")
            return
        try:
            notes = self._restore(state)
        except ValueError as exc:
            log.error(f"the saved map in {directory} cannot be used: {exc}; "
                      f"{_set_aside(directory, '.rejected')}, starting empty")
            return
        log.info(f"resumed {state.num_points} points and {state.num_instances} instances in "
                 f"frame '{state.frame_id}' from {state_path(directory)}{notes}")

    def _restore(self, state: MapState) -> str:
        """Make ``state`` the map, its frame and the segmenter's memory; segmentation group
        only (or before spinning). The next tick segments and publishes it.

        Returns:
            "" or a note on what could not be restored (the segmenter's memory: ids restart).

        Raises:
            ValueError: the state is in another frame than ``map_frame`` or over
                ``max_points``; nothing changed.
        """
        wanted = self._params["map_frame"]
        if wanted and state.frame_id not in ("", wanted):
            raise ValueError(f"the map is in frame '{state.frame_id}', map_frame is '{wanted}'")
        with self._lock:
            self._map.replace_all(state.xyz, state.rgb)
            self._frame = state.frame_id or wanted
            self._last_stamp.clear()
            self._header = Header(frame_id=state.frame_id, stamp=Time(
                sec=state.stamp_ns // 1_000_000_000, nanosec=state.stamp_ns % 1_000_000_000))
            self._changed_at = time.monotonic()
            self._snapshot_key = (self._map.version, self._segmented_version)
            self._tracker_generation = self._generation
        self._last = None
        note = ""
        if abs(state.voxel_size_m - self._segmenter.config.voxel_size_m) > 1e-9:
            note = (f"; its instance ids were made at {state.voxel_size_m} m voxels, the model's "
                    f"are {self._segmenter.config.voxel_size_m} m: ids restart")
        else:
            try:
                self._segmenter.load_state_arrays(state.segmenter)
            except ValueError as exc:
                note = f"; the segmenter's saved state is unusable ({exc}): ids restart"
        if note:
            self._segmenter.reset()
            self.get_logger().warning(note[2:])
        return note

    def destroy_node(self) -> None:
        """Write a last snapshot, then destroy the node. Call it once the executor has
        stopped (as :func:`occuseg_ros.ros.graph.spin_node` does), so no tick is running."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close(self._take_snapshot() if self._snapshot_due(writer) else None)
        super().destroy_node()

    # ----------------------------------------------------------------- diagnostics

    def diagnostics_callback(self) -> None:
        """Publish rates, per-stage milliseconds, map size and drop counts."""
        now = time.monotonic()
        with self._lock:
            points, blocks = self._map.num_points, self._map.num_blocks
            counts, rejected = dict(self._counts), dict(self._rejected)
        seg = self._last
        update = self._segmenter.engine.last_update
        for topic, msg_type in self._inputs.items():
            wrong = wrong_type_publishers(self, topic, msg_type)
            if wrong:
                rejected[f"{topic}_wrong_type_publishers"] = wrong
                self.get_logger().warning(
                    f"{wrong} publisher(s) on {topic} with a type other than "
                    f"{type_name(msg_type)}: their messages cannot reach this node",
                    throttle_duration_sec=10.0)
        elapsed = max(now - self._last_diagnostics, 1e-9)
        rates = {f"{k.replace('_messages', '').replace('segmentations', 'segment')}_rate_hz":
                 f"{(v - self._previous_counts.get(k, 0)) / elapsed:.2f}"
                 for k, v in counts.items() if k.endswith("_messages") or k == "segmentations"}
        values: dict[str, Any] = {
            "map_points": points, "map_blocks": blocks,
            "voxels": seg.num_voxels if seg else 0,
            # What the last update recomputed (occuseg_ros/core/incremental.py).
            "changed_voxels": update.changed_voxels,
            "refreshed_voxels": update.refreshed_voxels,
            "network_voxels": update.network_voxels,
            "resegmented_voxels": update.resegmented_voxels,
            "instances": len(seg.instances) if seg else 0, **rates,
            **{k: f"{v:.1f}" for k, v in self.last_timings_ms.items()}, **counts,
            **{f"rejected_{k}": v for k, v in rejected.items()}}
        latencies = list(self._latencies)  # one copy: the tick appends concurrently
        if latencies:
            values["latency_p50_ms"] = f"{np.percentile(latencies, 50):.0f}"
            values["latency_p95_ms"] = f"{np.percentile(latencies, 95):.0f}"
        problems = [f"{sum(rejected.values())} messages rejected"] if rejected else []
        writer = self._writer
        if writer is not None:
            snapshots = writer.stats
            taken = snapshots.last_taken_unix_s
            values.update({
                "snapshots_written": snapshots.written, "snapshot_failures": snapshots.failed,
                "last_snapshot_time": "never" if taken is None else time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(taken)),
                "last_snapshot_age_s": "" if taken is None else f"{time.time() - taken:.1f}",
                "snapshot_points": snapshots.last_points,
                "snapshot_write_ms": f"{snapshots.last_write_s * 1000.0:.1f}"})
            if snapshots.last_error:
                problems.append(f"map snapshot failing: {snapshots.last_error}")
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if problems else DiagnosticStatus.OK,
            name=f"{self.get_name()}: segmentation", hardware_id=self.get_fully_qualified_name(),
            message="; ".join(problems) if problems else "ok",
            values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
        self._diagnostics_pub.publish(DiagnosticArray(
            header=Header(stamp=self.get_clock().now().to_msg()), status=[status]))
        self._last_diagnostics, self._previous_counts = now, counts


def _set_aside(directory: str, suffix: str) -> str:
    """Move an unusable state file out of the way of the next snapshot; says where to."""
    try:
        return f"kept aside as {keep_aside(directory, suffix).name}"
    except OSError as exc:
        return f"could not be kept aside ({exc}): the next snapshot replaces it"


def _detections(seg: MapSegmentation, header: Header):
    """vision_msgs/Detection3DArray of the instances (full ROS installs only)."""
    table = seg.instances
    out = Detection3DArray(header=header)
    for k in range(len(table)):
        centre = (table.box_min_m[k] + table.box_max_m[k]) / 2.0
        size = table.box_max_m[k] - table.box_min_m[k]
        det = Detection3D(header=header, id=str(int(table.ids[k])))
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = label_name(int(table.labels[k]))
        hypothesis.hypothesis.score = float(table.scores[k])
        hypothesis.pose.pose = Pose()
        hypothesis.pose.pose.position = Point(x=float(table.centroid_m[k][0]),
                                              y=float(table.centroid_m[k][1]),
                                              z=float(table.centroid_m[k][2]))
        det.results.append(hypothesis)
        det.bbox.center.position = Point(x=float(centre[0]), y=float(centre[1]),
                                         z=float(centre[2]))
        det.bbox.center.orientation.w = 1.0
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(s) for s in size)
        out.detections.append(det)
    return out


def main(args: list[str] | None = None) -> None:
    """Run the node until Ctrl-C (``ros2 run occuseg_ros occuseg_node``)."""
    spin_node(SegmentationNode, "occuseg_node", args)


if __name__ == "__main__":
    main()
