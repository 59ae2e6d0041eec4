"""Rosbag2 record, replay and summary, with ``rosbags`` (rosbag2_py is not on PyPI).

Bags are standard rosbag2 directories (``metadata.yaml`` plus one ``.mcap`` or ``.db3``
file, format version 9), so ``ros2 bag info`` and ``ros2 bag play`` of a ROS install read
them. Messages travel as serialised CDR end to end: the recorder subscribes in raw mode and
writes the bytes it receives, and the player publishes the recorded bytes, so nothing is
decoded on the way (a corrupt message reaches the node under test as it was recorded).
"""

from __future__ import annotations

import importlib
import queue
import re
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

#: What ``occuseg bag record`` takes by default: the simulated camera stream.
CAMERA_TOPICS: dict[str, str] = {
    "/depth/image": "sensor_msgs/msg/Image",
    "/color/image": "sensor_msgs/msg/Image",
    "/depth/camera_info": "sensor_msgs/msg/CameraInfo",
    "/camera_pose": "geometry_msgs/msg/PoseStamped",
}
#: The reconstructor's output, recorded with ``--topics /surface_cloud``.
SURFACE_TOPICS: dict[str, str] = {"/surface_cloud": "sensor_msgs/msg/PointCloud2"}

_STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_MESSAGE_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]*/msg/[A-Za-z][A-Za-z0-9_]*")


class BagError(ValueError):
    """A bag that cannot be read (no bag there, malformed metadata, corrupt storage);
    ``str(error)`` names the bag and what is wrong."""


def message_class(msgtype: str) -> type:
    """The rclpy message class of a ROS 2 type name such as ``sensor_msgs/msg/Image``.

    Raises:
        ValueError: not a ``package/msg/Name`` type name, or no such message installed.
    """
    if not isinstance(msgtype, str) or not _MESSAGE_TYPE.fullmatch(msgtype):
        raise ValueError(f"{msgtype!r} is not a ROS 2 message type name (package/msg/Name)")
    package, kind, name = msgtype.split("/")
    try:
        cls = getattr(importlib.import_module(f"{package}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"message type {msgtype} is not installed") from exc
    if not isinstance(cls, type) or not hasattr(cls, "get_fields_and_field_types"):
        raise ValueError(f"{msgtype} is not a message class")
    return cls


class BagRecorder:
    """Writes every message of the given topics into a new bag, as received.

    Subscriptions are raw (the serialised bytes are written), best effort for sensor data;
    the timestamp of each record is the receive time in nanoseconds, as ``ros2 bag record``.
    One writer thread owns the bag (sqlite3 connections are bound to their thread); callbacks
    hand it messages through a bounded queue, and count what they drop when it is full.

    Args:
        node: the node that subscribes (spun by the caller's executor).
        out: bag directory to create (must not exist).
        topics: topic -> ROS 2 type name.
        storage: ``mcap`` or ``sqlite3``.
        queue_size: messages waiting for the writer at most.
    """

    def __init__(self, node: Node, out: Path, topics: dict[str, str],
                 storage: str = "mcap", queue_size: int = 1000) -> None:
        if storage not in _STORAGE:
            raise ValueError(f"storage must be one of {sorted(_STORAGE)}, got {storage!r}")
        if Path(out).exists():
            raise ValueError(f"{out} exists; a bag is written to a new directory")
        self.counts: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._write_all,
                                        args=(Path(out), topics, storage), daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        self._closed = False
        for topic, msgtype in topics.items():
            node.create_subscription(message_class(msgtype), topic,
                                     lambda data, topic=topic: self._receive(topic, data),
                                     qos_profile_sensor_data, raw=True)

    def _receive(self, topic: str, data: bytes) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait((topic, time.time_ns(), data))
        except queue.Full:
            self.dropped[topic] += 1

    def _write_all(self, out: Path, topics: dict[str, str], storage: str) -> None:
        try:
            typestore = get_typestore(Stores.ROS2_KILTED)
            writer = Writer(out, version=9, storage_plugin=_STORAGE[storage])
            writer.open()
            connections = {topic: writer.add_connection(topic, msgtype, typestore=typestore)
                           for topic, msgtype in topics.items()}
        except Exception as exc:  # noqa: BLE001 - reported to the constructor
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while (item := self._queue.get()) is not None:
                topic, timestamp, data = item
                writer.write(connections[topic], timestamp, data)
                self.counts[topic] += 1
        finally:
            writer.close()

    def close(self) -> None:
        """Stop recording, write what is queued and finish the bag (metadata.yaml).

        The subscriptions stay until their node is destroyed (destroying them under a
        spinning executor races with its wait set); they ignore what arrives after this.
        """
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()


@dataclass
class BagSummary:
    """What ``occuseg bag info`` prints."""

    path: Path
    storage: str
    duration_s: float
    start_ns: int
    topics: dict[str, tuple[str, int]]  # topic -> (type, message count)

    def format(self) -> str:
        width = max((len(t) for t in self.topics), default=5)
        lines = [f"bag:       {self.path}", f"storage:   {self.storage}",
                 f"duration:  {self.duration_s:.3f} s",
                 f"messages:  {sum(c for _, c in self.topics.values())}", "topics:"]
        lines += [f"  {topic:<{width}}  {count:6d}  {msgtype}"
                  for topic, (msgtype, count) in sorted(self.topics.items())]
        return "\n".join(lines)


def bag_info(path: Path) -> BagSummary:
    """Topics, types, counts and duration of a bag (as its metadata records them).

    Raises:
        BagError: not a bag, a corrupt one, or metadata with topic names or types that are
            not strings, or counts, start or duration that are not whole numbers >= 0.
    """
    with _reader(path) as reader:
        counts: Counter[str] = Counter()
        types: dict[str, str] = {}
        for connection in reader.connections:
            topic, msgtype, count = connection.topic, connection.msgtype, connection.msgcount
            if not isinstance(topic, str) or not isinstance(msgtype, str) or \
                    not _is_natural(count):
                raise BagError(f"{path}: bad topic metadata (topic {topic!r}, type {msgtype!r}, "
                               f"message count {count!r})")
            types[topic] = msgtype
            counts[topic] += count
        start_ns, duration_ns = (reader.start_time, reader.duration) if counts else (0, 0)
        if not _is_natural(start_ns) or not _is_natural(duration_ns):
            raise BagError(f"{path}: bad metadata start {start_ns!r} or duration "
                           f"{duration_ns!r} (whole nanoseconds >= 0)")
        storage = "mcap" if any(Path(path).glob("*.mcap")) else "sqlite3"
        return BagSummary(Path(path), storage, duration_ns / 1e9, start_ns,
                          {t: (types[t], counts[t]) for t in types})


def _is_natural(value: object) -> bool:
    """Whether a metadata value is a whole number >= 0 (YAML booleans are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def bag_messages(path: Path, topics: Iterable[str] | None = None
                 ) -> Iterator[tuple[str, str, int, bytes]]:
    """(topic, type, timestamp ns, serialised bytes) in time order, of ``topics`` (all when
    None).

    Raises:
        BagError: not a bag, or a corrupt one; among that, records whose data is not bytes,
            whose timestamp is not whole nanoseconds >= 0, or out of time order (a corrupt
            index), raised when iteration reaches them.
    """
    with _reader(path) as reader:
        chosen = None if topics is None else set(topics)
        wanted = [c for c in reader.connections if chosen is None or c.topic in chosen]
        if not wanted:  # rosbags reads every connection when given none
            return
        previous = 0
        for connection, timestamp, data in reader.messages(connections=wanted):
            if not _is_natural(timestamp) or timestamp < previous or \
                    not isinstance(data, (bytes, bytearray, memoryview)):
                raise BagError(f"{path}: corrupt {connection.topic} record (timestamp "
                               f"{timestamp!r} ns after {previous} ns, "
                               f"{type(data).__name__} data)")
            previous = timestamp
            yield connection.topic, connection.msgtype, timestamp, bytes(data)


@contextmanager
def _reader(path: Path) -> Iterator[AnyReader]:
    """An open reader of the bag at ``path``, for ``with``.

    Raises:
        BagError: no bag at ``path``, or whatever reading it raised (rosbags, its YAML, sqlite
            and mcap parsers raise a zoo of types on a malformed bag), with that as the cause.
    """
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml)")
    try:
        with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED)) as reader:
            yield reader
    except BagError:
        raise
    except Exception as exc:  # noqa: BLE001 - see Raises
        raise BagError(f"{path}: corrupt bag ({type(exc).__name__}: {exc})") from exc


class BagPlayer:
    """Publishes a bag's messages with their recorded timing, and the bag time on /clock.

    Args:
        node: the node that publishes (spun or not: publishing needs no executor).
        path: the bag.
        rate: playback speed factor (2.0 = twice as fast).
        remap: topic -> new topic.
        clock: publish rosgraph_msgs/Clock (for nodes with ``use_sim_time``).
    """

    def __init__(self, node: Node, path: Path, rate: float = 1.0,
                 remap: dict[str, str] | None = None, clock: bool = True) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.summary = bag_info(path)
        self.path, self.rate, self.remap = Path(path), float(rate), remap or {}
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        # One type per topic (DDS allows no other within a process): connections of a
        # second type on a topic are skipped and counted, the first type seen is played.
        self._publishers: dict[tuple[str, str], object] = {}
        self.skipped: Counter[str] = Counter()
        with _reader(path) as reader:
            connections = [(c.topic, c.msgtype) for c in reader.connections]
        played: dict[str, str] = {}
        for topic, msgtype in connections:
            if played.setdefault(topic, msgtype) == msgtype and \
                    (topic, msgtype) not in self._publishers:
                self._publishers[(topic, msgtype)] = node.create_publisher(
                    message_class(msgtype), self.remap.get(topic, topic), reliable)
        self._clock = None
        if clock:
            from rosgraph_msgs.msg import Clock
            self._clock_type = Clock
            self._clock = node.create_publisher(Clock, "/clock", 10)
        self.published: Counter[str] = Counter()

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait until every topic has a subscriber (DDS discovery), at most ``timeout_s``;
        return whether they all do."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in self._publishers.values()):
                return True
            time.sleep(0.05)
        return False

    def topics(self) -> dict[str, str]:
        """Recorded topic -> topic it is published on."""
        return {t: self.remap.get(t, t) for t in self.summary.topics}

    def play(self, stop: threading.Event | None = None) -> int:
        """Publish the whole bag once, in recorded time order; return the message count."""
        start_wall = time.monotonic()
        start_bag = None
        count = 0
        for topic, msgtype, timestamp, data in bag_messages(self.path):
            if stop is not None and stop.is_set():
                break
            publisher = self._publishers.get((topic, msgtype))
            if publisher is None:
                self.skipped[f"{topic} ({msgtype})"] += 1
                continue
            if start_bag is None:
                start_bag = timestamp
            delay = (timestamp - start_bag) / 1e9 / self.rate - (time.monotonic() - start_wall)
            if delay > 0:
                time.sleep(delay)
            if self._clock is not None:
                clock = self._clock_type()
                clock.clock.sec, clock.clock.nanosec = divmod(timestamp, 1_000_000_000)
                self._clock.publish(clock)
            publisher.publish(data)
            self.published[topic] += 1
            count += 1
        return count


def record_live(out: Path, duration_s: float, topics: dict[str, str], storage: str = "mcap",
                simulate: bool = True, overrides: dict[str, dict] | None = None) -> Counter:
    """Record ``topics`` for ``duration_s`` seconds into a new bag.

    With ``simulate`` the simulated camera (and, when ``/surface_cloud`` is asked for, the
    RGB-D reconstructor) run in this process; otherwise whatever publishes on the graph is
    recorded. Returns the message count per topic.
    """
    import rclpy
    from .graph import NodeThreads

    from .live import create_node, live_nodes

    overrides = overrides or {}
    rclpy.init()
    nodes: list[Node] = []
    try:
        if simulate:
            wanted = {"sim_camera"} | ({"rgbd_reconstructor"} if "/surface_cloud" in topics
                                       else set())
            nodes += [create_node(spec, overrides.get(spec.name))
                      for spec in live_nodes("sim") if spec.executable in wanted]
        recorder_node = Node("occuseg_bag_recorder")
        nodes.append(recorder_node)
        recorder = BagRecorder(recorder_node, out, topics, storage)
        spinners = NodeThreads(*nodes)
        try:
            time.sleep(duration_s)
        except KeyboardInterrupt:
            pass
        recorder.close()
        spinners.stop()
        return recorder.counts
    finally:
        for node in nodes:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def play_bag(path: Path, rate: float = 1.0, loop: bool = False,
             remap: dict[str, str] | None = None, clock: bool = True) -> int:
    """Replay a bag into live topics (``occuseg bag play``); Ctrl-C stops. Returns the number
    of messages published."""
    import rclpy

    rclpy.init()
    node = Node("occuseg_bag_player")
    try:
        player = BagPlayer(node, path, rate, remap, clock)
        player.wait_for_subscribers(10.0)
        total = 0
        try:
            while True:
                total += player.play()
                if not loop:
                    break
        except KeyboardInterrupt:
            pass
        for what, count in sorted(player.skipped.items()):
            print(f"skipped {count} messages of {what}: the topic was played with another "
                  "type", file=sys.stderr)
        return total
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def segment_bag(path: Path, segmenter, tsdf_config=None, block_size_m: float = 0.16,
                sync_tolerance_s: float = 0.02):
    """Replay a bag offline, as fast as possible, through the reconstructor and segmenter.

    Camera topics (depth, colour, camera info, pose) are fused into a TSDF frame by frame
    (depth, colour and pose matched by stamp within ``sync_tolerance_s``); a bag holding only
    ``/surface_cloud`` increments builds the map from them. Messages that do not decode are
    skipped and counted.

    Args:
        path: the bag.
        segmenter: a :class:`occuseg_ros.core.segmenter.Segmenter`.
        tsdf_config: :class:`occuseg_ros.core.tsdf.TsdfConfig` (defaults when None).
        block_size_m: block edge of surface increments.

    Returns:
        (the :class:`MapSegmentation` of the final map, Counter of skipped messages by reason,
        number of frames integrated).
    """
    from rclpy.serialization import deserialize_message

    from ..core.surface_map import SurfaceMap
    from ..core.tsdf import TsdfConfig, TsdfReconstructor
    from .conversions import (MessageError, depth_m_from_image, intrinsics_from_camera_info,
                              matrix_from_pose, rgb_from_image, seconds_from_stamp,
                              xyz_rgb_from_cloud_msg)

    summary = bag_info(path)
    camera = all(t in summary.topics for t in CAMERA_TOPICS)
    if not camera and "/surface_cloud" not in summary.topics:
        raise ValueError(f"{path} has neither the camera topics {sorted(CAMERA_TOPICS)} nor "
                         "/surface_cloud")
    skipped: Counter[str] = Counter()
    tsdf = TsdfReconstructor(tsdf_config or TsdfConfig()) if camera else None
    surface = SurfaceMap(block_size_m)
    pending: dict[str, dict[float, object]] = {"/depth/image": {}, "/color/image": {},
                                               "/camera_pose": {}}
    intrinsics = None
    frames = 0
    for topic, msgtype, _, data in bag_messages(path):
        try:
            msg = deserialize_message(data, message_class(msgtype))
        except Exception:  # noqa: BLE001 - rclpy raises bare errors on corrupt CDR
            skipped[f"{topic}: corrupt serialisation"] += 1
            continue
        try:
            if topic == "/surface_cloud" and not camera:
                xyz, rgb = xyz_rgb_from_cloud_msg(msg)
                finite = np.isfinite(xyz).all(axis=1)
                if rgb is None:
                    rgb = np.full(xyz.shape, 128, np.uint8)
                if finite.any():
                    surface.replace_blocks(xyz[finite], rgb[finite])
            elif topic == "/depth/camera_info":
                intrinsics = intrinsics_from_camera_info(msg)
            elif topic in pending:
                stamp = seconds_from_stamp(msg.header.stamp)
                decoded = (depth_m_from_image(msg) if topic == "/depth/image" else
                           rgb_from_image(msg) if topic == "/color/image" else
                           matrix_from_pose(msg.pose))
                pending[topic][stamp] = decoded
                frames += _integrate_ready(tsdf, pending, intrinsics, sync_tolerance_s,
                                           skipped)
        except (MessageError, ValueError) as exc:
            skipped[f"{topic}: {str(exc)[:80]}"] += 1
    if camera:
        xyz, rgb = tsdf.surface()
    else:
        xyz, rgb = surface.points()
    return segmenter.segment(xyz, rgb), skipped, frames


def _integrate_ready(tsdf, pending: dict, intrinsics, tolerance_s: float,
                     skipped: Counter) -> int:
    """Integrate every depth frame that has a colour image and a pose within tolerance."""
    done = 0
    depth, colour, poses = (pending["/depth/image"], pending["/color/image"],
                            pending["/camera_pose"])
    for stamp in sorted(depth):
        c = min(colour, key=lambda t: abs(t - stamp), default=None)
        p = min(poses, key=lambda t: abs(t - stamp), default=None)
        if c is None or p is None or abs(c - stamp) > tolerance_s or \
                abs(p - stamp) > tolerance_s or intrinsics is None:
            continue
        K, width, height = intrinsics
        image = depth.pop(stamp)
        if image.shape != (height, width) or colour[c].shape[:2] != image.shape:
            skipped["/depth/image: size differs from camera_info or colour"] += 1
            continue
        try:
            tsdf.integrate(image, colour.pop(c), K, poses.pop(p))
            done += 1
        except ValueError as exc:
            skipped[f"/depth/image: {str(exc)[:80]}"] += 1
    # Unmatched messages older than a second behind the newest are dropped.
    for items in pending.values():
        if items:
            newest = max(items)
            for stamp in [t for t in items if t < newest - 1.0]:
                del items[stamp]
    return done
