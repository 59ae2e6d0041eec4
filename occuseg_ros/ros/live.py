"""The live system: camera, RGB-D reconstructor and segmentation node, in one list.

:func:`live_nodes` is the single description of what runs; ``launch/live.launch.py`` turns
it into launch_ros ``Node`` actions (one process per node, ``ros2 launch``), and
``occuseg live`` (:func:`run_live`) instantiates the same nodes in one process, each spun in
a thread of its own (:class:`occuseg_ros.ros.graph.NodeThreads`), where ``ros2 launch`` is not
installed. The two cannot drift apart.
"""

from __future__ import annotations

import datetime
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

#: Topics of the realsense2_camera driver (ROS 2 wrapper 4.x, aligned depth) that an
#: external camera feeds the reconstructor from. The pose comes on ``camera_pose``.
REALSENSE_REMAPPINGS: tuple[tuple[str, str], ...] = (
    ("depth/image", "/camera/camera/aligned_depth_to_color/image_raw"),
    ("depth/camera_info", "/camera/camera/aligned_depth_to_color/camera_info"),
    ("color/image", "/camera/camera/color/image_raw"),
)


@dataclass(frozen=True)
class NodeSpec:
    """One node of the live system.

    Attributes:
        executable: its console script (``ros2 run occuseg_ros <executable>``).
        name: node name (the section of the parameter file it reads).
        remappings: (from, to) topic remappings.
    """

    executable: str
    name: str
    remappings: tuple[tuple[str, str], ...] = ()


def live_nodes(camera: str = "sim") -> list[NodeSpec]:
    """The nodes of the live system for ``camera`` ``sim`` or ``external``."""
    if camera not in ("sim", "external"):
        raise ValueError(f"camera must be 'sim' or 'external', got {camera!r}")
    nodes = [NodeSpec("sim_camera", "sim_camera")] if camera == "sim" else []
    nodes.append(NodeSpec("rgbd_reconstructor", "rgbd_reconstructor",
                          REALSENSE_REMAPPINGS if camera == "external" else ()))
    nodes.append(NodeSpec("occuseg_node", "occuseg"))
    return nodes


def create_node(spec: NodeSpec, overrides: dict[str, Any] | None = None) -> Any:
    """Instantiate a node of the list in this process, with its remappings and the given
    parameter overrides (rclpy must be initialised)."""
    from rclpy.parameter import Parameter

    cli_args = ["--ros-args"] + [a for f, t in spec.remappings for a in ("-r", f"{f}:={t}")]
    return _node_class(spec.executable)(
        cli_args=cli_args if spec.remappings else None,
        parameter_overrides=[Parameter(k, value=v) for k, v in (overrides or {}).items()])


def _node_class(executable: str) -> type:
    """The node class behind a console script of this package."""
    if executable == "sim_camera":
        from .sim_camera_node import SimCameraNode
        return SimCameraNode
    if executable == "rgbd_reconstructor":
        from .reconstructor_node import RgbdReconstructorNode
        return RgbdReconstructorNode
    if executable == "occuseg_node":
        from .segmentation_node import SegmentationNode
        return SegmentationNode
    raise ValueError(f"unknown executable {executable!r}")


@dataclass
class LiveResult:
    """What ``occuseg live`` leaves behind.

    Attributes:
        files: the files written.
        frames: camera frames rendered.
        seconds: wall-clock length of the run.
        segmentations: segmentations published.
        metrics: evaluation.EvaluationResult against the simulator's ground truth, or None
            without one.
        memory: the RSS summary (:meth:`occuseg_ros.core.memory.MemorySampler.summary`).
        dropped: inputs dropped on the way (see :func:`run_live`).
    """

    files: list[Path]
    frames: int
    seconds: float
    segmentations: int
    metrics: Any
    memory: dict[str, Any]
    dropped: dict[str, Any]

    def memory_line(self) -> str:
        """One line: RSS at start, end of warm-up, end and largest, growth, drops."""
        m = self.memory
        if m["rss_warmup_mib"] is None:
            warm = "warm-up not reached"
        else:
            warm = (f"{m['rss_warmup_mib']:.0f} MiB after warm-up ({m['warmup_end_s']:.0f} s), "
                    f"growth after warm-up {m['growth_after_warmup_pct']:+.1f} %")
            if m["median_growth_after_warmup_pct"] is not None:
                warm += (f" (medians of the first and last fifth "
                         f"{m['median_growth_after_warmup_pct']:+.1f} %, slope "
                         f"{m['slope_after_warmup_mib_per_h']:+.0f} MiB/h)")
        rejected = (sum(self.dropped["reconstructor_rejected"].values())
                    + sum(self.dropped["segmentation_rejected"].values()))
        return (f"memory: RSS {m['rss_start_mib']:.0f} MiB at start, {warm}, "
                f"{m['rss_end_mib']:.0f} MiB at end, max {m['rss_max_mib']:.0f} MiB | dropped: "
                f"{self.dropped['frames_not_received']} frames not received, "
                f"{self.dropped['frames_dropped']} superseded before integration, "
                f"{rejected} inputs rejected")


def run_live(out_dir: Path, duration_s: float = 90.0, params_file: Path | None = None,
             overrides: dict[str, dict[str, Any]] | None = None,
             status: TextIO | None = sys.stdout,
             viewer_address: tuple[str, int] | None = None,
             memory_period_s: float = 10.0) -> LiveResult:
    """Run the simulated live system for ``duration_s`` seconds (or until Ctrl-C), then
    write the labelled map, a picture and the scores against the simulator's ground truth.

    The process's RSS is sampled every ``memory_period_s`` seconds from the start of the run
    (the nodes up, the model loaded) to the end of ``duration_s`` (before the final flush
    and the writing) into ``memory.csv``. Warm-up ends when the camera has rendered one full
    loop through the room (the map then holds the whole room) or after the first 10 % of
    the run, whichever is later; ``scores.json`` holds under ``memory`` the RSS at the start,
    at the end of warm-up, at the end and the largest, and the growth after warm-up in per
    cent; under ``dropped`` the camera frames the reconstructor never accepted
    (``frames_not_received``: lost by the best-effort sensor-data QoS, or rejected), the
    frames superseded by a newer one before integration (``frames_dropped``: latest wins),
    the map updates segmented together with a later one (``map_updates_coalesced``) and
    every node's rejected inputs by reason (counted at the very end); under ``rates``
    frames rendered and integrated and segmentations per second over ``duration_s``.

    Args:
        out_dir: output directory (created).
        duration_s: wall-clock seconds to run.
        params_file: ROS 2 parameter file for every node (sections by node name).
        overrides: node name -> parameter overrides (e.g. ``{"occuseg": {"device": "cpu"}}``).
        status: where the one-line status goes (updated in place); None: silent.
        viewer_address: (host, port) to serve the browser view on
            (:class:`occuseg_ros.core.viewer.MapViewer`); None: no viewer.
        memory_period_s: seconds between two RSS samples.
    """
    import rclpy

    from ..core.evaluation import format_table
    from ..core.memory import MemorySampler
    from ..core.picture import room_picture, write_png
    from ..core.segmenter import save_labelled_map
    from .graph import NodeThreads

    sampler = MemorySampler(memory_period_s)  # checks the period before anything starts
    overrides = overrides or {}
    context_args = ["--ros-args"] + (["--params-file", str(params_file)] if params_file else [])
    rclpy.init(args=context_args)
    nodes: dict[str, Any] = {}
    viewer = None
    spinners = None
    started = time.monotonic()
    try:
        for spec in live_nodes("sim"):
            nodes[spec.name] = create_node(spec, overrides.get(spec.name))
        camera, reconstructor, segmenter = (nodes["sim_camera"], nodes["rgbd_reconstructor"],
                                            nodes["occuseg"])
        spinners = NodeThreads(*nodes.values())
        if viewer_address is not None:
            from ..core.viewer import MapViewer

            viewer = MapViewer(*viewer_address)
            if status is not None:
                status.write(f"live view: {viewer.url}\n")
        shown = 0
        loop_done_s = None  # when the camera finished its first loop through the room
        started = time.monotonic()
        sampler.start()
        # Ctrl-C (or SIGTERM) ends the run like --duration: flush, segment, write, score.
        # rclpy's own SIGINT handler would shut the executor down first, so ours replaces it.
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set())
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while not stop.wait(0.5) and time.monotonic() - started < duration_s:
                if loop_done_s is None and \
                        camera.frames_published >= camera.camera.frames_per_loop:
                    loop_done_s = time.monotonic() - started
                if viewer is not None and segmenter.segmentations != shown:
                    shown = segmenter.segmentations
                    viewer.update(segmenter.last_segmentation)
                if status is not None:
                    status.write("\r" + _status_line(time.monotonic() - started, camera,
                                                     reconstructor, segmenter))
                    status.flush()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        elapsed = time.monotonic() - started
        sampler.stop()
        memory = sampler.summary(None if loop_done_s is None else max(loop_done_s,
                                                                      0.1 * elapsed))
        window = max(elapsed, 1e-9)
        rates = {"frames_rendered_per_s": camera.frames_published / window,
                 "frames_integrated_per_s":
                     reconstructor.counts.get("frames_integrated", 0) / window,
                 "segmentations_per_s": segmenter.segmentations / window}
        # Let the last frames reach the map and the map its last segmentation, then stop.
        camera.pause()
        time.sleep(2.0 / reconstructor.publish_rate_hz + 0.5)
        deadline = time.monotonic() + 60.0
        while not segmenter.is_up_to_date and time.monotonic() < deadline:
            time.sleep(0.1)
        spinners.stop()
        spinners = None
        if status is not None:
            status.write("\r" + _status_line(elapsed, camera, reconstructor, segmenter) + "\n")
        seg = segmenter.last_segmentation
        if seg is None:
            raise RuntimeError("nothing was segmented: no frame reached the map")
        out_dir.mkdir(parents=True, exist_ok=True)
        files = save_labelled_map(out_dir, seg)
        picture = room_picture(seg.xyz, seg.rgb, seg.instance, seg.instances.ids,
                               seg.instances.labels)
        write_png(out_dir / "segmented_room.png", picture)
        files.append(out_dir / "segmented_room.png")
        metrics = seg.evaluate(*camera.camera.label_points(seg.xyz))
        counts = reconstructor.counts
        dropped = {
            "frames_not_received": max(0, camera.frames_published
                                       - counts.get("depth_messages", 0)),
            "frames_dropped": counts.get("frames_dropped", 0),
            "map_updates_coalesced": segmenter.map_updates_coalesced,
            "reconstructor_rejected": reconstructor.rejected,
            "segmentation_rejected": segmenter.rejected}
        summary = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "seconds": elapsed, "frames_rendered": camera.frames_published,
            "frames_integrated": counts.get("frames_integrated", 0),
            "segmentations": segmenter.segmentations, "map_points": int(seg.xyz.shape[0]),
            "voxels": seg.num_voxels, "instances": len(seg.instances),
            "room_seed": camera.camera.seed, **metrics.to_dict(),
            "memory": memory, "dropped": dropped,
            "rates": {k: round(v, 4) for k, v in rates.items()}}
        files.append(sampler.write_csv(out_dir / "memory.csv"))
        (out_dir / "scores.json").write_text(json.dumps(summary, indent=1))
        files.append(out_dir / "scores.json")
        (out_dir / "scores.txt").write_text(format_table(metrics) + "\n")
        files.append(out_dir / "scores.txt")
        return LiveResult(files, camera.frames_published, elapsed, segmenter.segmentations,
                          metrics, memory, dropped)
    finally:
        if sampler.running:
            sampler.stop()
        if viewer is not None:
            viewer.close()
        if spinners is not None:
            spinners.stop()
        for node in nodes.values():
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


def _status_line(elapsed_s: float, camera: Any, reconstructor: Any, segmenter: Any) -> str:
    """One line: frames, map, instances, per-stage milliseconds, rates."""
    counts = reconstructor.counts
    ms = segmenter.last_timings_ms
    frames = camera.frames_published
    return (f"{elapsed_s:5.0f} s | frames {frames} ({frames / max(elapsed_s, 1e-9):.1f}/s), "
            f"integrated {counts.get('frames_integrated', 0)} | map {segmenter.map_points} pts"
            f" | {segmenter.num_instances} instances | network {ms.get('network_ms', 0):.0f} ms"
            f" super-voxels {ms.get('supervoxels_ms', 0):.0f} ms clustering "
            f"{ms.get('clustering_ms', 0):.0f} ms | {segmenter.segmentations} segmentations "
            f"({segmenter.segmentations / max(elapsed_s, 1e-9):.2f}/s)   ")
