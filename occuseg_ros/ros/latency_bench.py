"""``occuseg bench-node``: input-to-output latency of the node on a scene streamed as increments.

The scene is cut into blocks (the node's ``block_size_m``) and sent as ``increments`` surface
increments, slab by slab along x as a camera sweeping the room would add them. Each increment
is published over DDS once the previous one came back segmented; the latency is the time from
publishing it to receiving the segmented cloud with its stamp (decode, map update, the whole
method, tracking, encoding and both DDS hops, in one process).
"""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from ..core.bench import machine_description
from ..core.checkpoint import resolve_device
from ..core.scene import load_scene
from .conversions import cloud_msg_from_arrays, packed_from_rgb
from .graph import NodeThreads
from .segmentation_node import SegmentationNode


def run_latency_benchmark(scene_path: Path, model: Path | None = None, device: str = "cpu",
                          increments: int = 20, block_size_m: float = 0.16,
                          timeout_s: float = 120.0) -> str:
    """Stream the scene into a node and return the latency table (Markdown)."""
    if increments < 1:
        raise ValueError(f"increments must be positive, got {increments}")
    scene = load_scene(scene_path)
    block_x = np.floor(scene.xyz[:, 0] / block_size_m).astype(np.int64)
    edges = np.unique(np.quantile(block_x, np.linspace(0, 1, increments + 1)).astype(np.int64))
    edges[-1] += 1
    rclpy.init()
    try:
        params = {"device": device, "segment_rate_hz": 100.0, "input_qos": "reliable",
                  "block_size_m": block_size_m, "input_mode": "increment"}
        if model is not None:
            params["model_path"] = str(model)
        node = SegmentationNode(parameter_overrides=[Parameter(k, value=v)
                                                     for k, v in params.items()])
        client = Node("occuseg_bench_client")
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        pub = client.create_publisher(PointCloud2, "surface_cloud", reliable)
        arrived: dict[int, float] = {}
        done = threading.Condition()

        def output_callback(msg: PointCloud2) -> None:
            with done:
                arrived[msg.header.stamp.sec] = time.perf_counter()
                done.notify_all()

        client.create_subscription(PointCloud2, "/occuseg/segmented_cloud", output_callback,
                                   QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                                              durability=DurabilityPolicy.TRANSIENT_LOCAL))
        spinners = NodeThreads(node, client)
        deadline = time.monotonic() + 30.0
        while pub.get_subscription_count() < 1 or client.count_publishers(
                "/occuseg/segmented_cloud") < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the node did not appear on DDS within 30 s")
            time.sleep(0.05)
        rows = []
        for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]), start=1):
            part = (block_x >= lo) & (block_x < hi)
            header = Header(frame_id="map")
            header.stamp.sec = k
            msg = cloud_msg_from_arrays(header, {
                "x": scene.xyz[part, 0], "y": scene.xyz[part, 1], "z": scene.xyz[part, 2],
                "rgb": packed_from_rgb(scene.rgb[part])})
            sent = time.perf_counter()
            pub.publish(msg)
            with done:
                if not done.wait_for(lambda: k in arrived, timeout=timeout_s):
                    raise RuntimeError(f"increment {k} was not segmented within {timeout_s} s")
            latency_ms = (arrived[k] - sent) * 1000.0
            stats = node.last_timings_ms
            rows.append((k, int(part.sum()), node.map_points, stats.get("total_ms", 0.0),
                         stats.get("network_ms", 0.0), stats.get("publish_ms", 0.0),
                         latency_ms, node.num_instances))
        spinners.stop()
        node.destroy_node()
        client.destroy_node()
    finally:
        rclpy.shutdown()
    latencies = np.array([r[6] for r in rows])
    # The first update also compiles the Numba kernels and warms the allocator: reported,
    # but left out of the percentiles.
    steady = latencies[1:] if latencies.size > 1 else latencies
    lines = [
        f"occuseg bench-node, {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        f"machine: {machine_description(resolve_device(device))}",
        f"scene {scene.name}: {scene.num_points} points in {len(rows)} increments of "
        f"{block_size_m} m blocks; model {model or 'shipped'}",
        f"latency input -> segmented output: p50 {np.percentile(steady, 50):.0f} ms, "
        f"p95 {np.percentile(steady, 95):.0f} ms, max {steady.max():.0f} ms "
        f"(first update {latencies[0]:.0f} ms, with JIT warm-up)",
        "",
        "| increment | points in | map points | method ms | network ms | publish ms | latency ms "
        "| instances |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {k} | {n} | {m} | {t:.0f} | {net:.0f} | {pub:.1f} | {lat:.0f} | {i} |"
              for k, n, m, t, net, pub, lat, i in rows]
    return "\n".join(lines)

