"""The live system: its node list, live.launch.py, the simulated camera node and `occuseg live`."""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import open3d as o3d
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from conftest import REPO_ROOT
from occuseg_ros.core.scene import load_scene
from occuseg_ros.ros.conversions import (depth_m_from_image, intrinsics_from_camera_info,
                                         matrix_from_pose, rgb_from_image)
from occuseg_ros.ros.live import REALSENSE_REMAPPINGS, live_nodes
from occuseg_ros.ros.sim_camera_node import SimCameraNode
from ros_harness import Probe, Spinner, wait_for

LAUNCH_FILE = REPO_ROOT / "launch" / "live.launch.py"


def test_node_lists_for_both_cameras():
    sim = live_nodes("sim")
    assert [n.executable for n in sim] == ["sim_camera", "rgbd_reconstructor", "occuseg_node"]
    external = live_nodes("external")
    assert [n.executable for n in external] == ["rgbd_reconstructor", "occuseg_node"]
    assert external[0].remappings == REALSENSE_REMAPPINGS
    with pytest.raises(ValueError, match="camera"):
        live_nodes("kinect")


def test_launch_file_uses_the_live_node_list_and_declares_its_arguments():
    tree = ast.parse(LAUNCH_FILE.read_text())
    imports = {(node.module, alias.name) for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) for alias in node.names}
    assert ("occuseg_ros.ros.live", "live_nodes") in imports
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", None) == "live_nodes"]
    assert len(calls) == 1
    arguments = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and getattr(node.targets[0], "id", None) == "ARGUMENTS")
    declared = {key.value: value.elts[1] for key, value in zip(arguments.keys, arguments.values)}
    assert set(declared) == {"camera", "params_file", "model", "device", "use_rviz"}
    for name, description in declared.items():
        text = description.value if isinstance(description, ast.Constant) else \
            "".join(part.value for part in ast.walk(description) if isinstance(part, ast.Constant))
        assert len(text) > 10, f"argument {name} has no description"


def test_launch_file_builds_where_ros2_launch_is_installed():
    # (The repository's own launch/ directory imports as an empty namespace package.)
    try:
        import launch
        from launch import LaunchDescription  # noqa: F401
    except ImportError:
        pytest.skip("ros2 launch (package 'launch') is not installed; it is not on PyPI")
    import importlib.util

    spec = importlib.util.spec_from_file_location("live_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, launch.LaunchDescription)
    names = {a.name for a in description.entities
             if isinstance(a, launch.actions.DeclareLaunchArgument)}
    assert names == set(module.ARGUMENTS)


def test_rviz_config_shows_the_outputs_in_the_map_frame():
    import yaml

    config = yaml.safe_load((REPO_ROOT / "config" / "occuseg.rviz").read_text())
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "map"
    topics = {d["Class"].split("/")[-1]: d["Topic"]["Value"] for d in manager["Displays"]
              if "Topic" in d}
    assert topics["PointCloud2"] == "/occuseg/segmented_cloud"
    assert topics["MarkerArray"] == "/occuseg/instance_markers"
    assert topics["Pose"] == "/camera_pose"


def test_sim_camera_node_publishes_consistent_frames(ros_context):
    node = SimCameraNode(parameter_overrides=[
        Parameter("width", value=160), Parameter("height", value=120),
        Parameter("rate_hz", value=20.0), Parameter("seed", value=3)])
    probe = Probe("sim_probe")
    for msg_type, topic in ((Image, "depth/image"), (Image, "color/image"),
                            (CameraInfo, "depth/camera_info"), (PoseStamped, "camera_pose")):
        probe.received[topic] = []
        probe.create_subscription(msg_type, topic, lambda m, t=topic: probe.received[t].append(m),
                                  qos_profile_sensor_data)
    spinner = Spinner(node, probe)
    try:
        wait_for(lambda: all(len(v) >= 3 for v in probe.received.values()), 30, "3 frames")
    finally:
        spinner.close()
    depth, colour = probe.received["depth/image"][1], probe.received["color/image"][1]
    info, pose = probe.received["depth/camera_info"][1], probe.received["camera_pose"][1]
    stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in (depth, colour, info, pose)}
    assert len(stamps) == 1
    assert depth.encoding == "16UC1" and colour.encoding == "rgb8"
    assert depth.header.frame_id == "camera_depth_optical_frame"
    assert pose.header.frame_id == "map"
    K, w, h = intrinsics_from_camera_info(info)
    assert (w, h) == (160, 120) and K[0, 0] == pytest.approx(525.0 / 4)
    # The published frame is the simulator's frame at that index.
    index = round((depth.header.stamp.sec + depth.header.stamp.nanosec * 1e-9
                   - probe.received["depth/image"][0].header.stamp.sec
                   - probe.received["depth/image"][0].header.stamp.nanosec * 1e-9) * 20.0)
    np.testing.assert_allclose(matrix_from_pose(pose.pose), node.camera.pose_at(index),
                               atol=1e-6)
    assert (depth_m_from_image(depth) > 0).mean() > 0.5
    assert rgb_from_image(colour).std() > 5


def test_occuseg_live_writes_the_map_picture_and_scores(tmp_path, model_path):
    """Ctrl-C ends a run like --duration does: the outputs are written, exit status 0."""
    import signal

    out = tmp_path / "live"
    process = subprocess.Popen(
        [sys.executable, "-m", "occuseg_ros.cli", "live", "--duration", "600", "--out",
         str(out), "--width", "320", "--height", "240", "--loop-s", "1", "--model",
         str(model_path), "--device", "cpu", "--memory-period-s", "1"],
        env={**os.environ, "ROS_DOMAIN_ID": str(101 - os.getpid() % 50)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Ctrl-C about 12 s into the run, counted from its first status line (the nodes are up
    # and Ctrl-C is handled from then on, however long a busy machine took to get there).
    started = ""
    while " s | frames" not in started and process.poll() is None:
        started += process.stdout.read(1)
    time.sleep(12.0)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=240)
    result = subprocess.CompletedProcess(process.args, process.returncode, started + stdout,
                                         stderr)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "AP50" in result.stdout
    scores = json.loads((out / "scores.json").read_text())
    assert scores["frames_integrated"] > 10 and scores["segmentations"] >= 1
    assert 0.0 <= scores["ap50"] <= 1.0
    saved = load_scene(out / "occuseg_map.npz")
    assert saved.num_points == scores["map_points"] > 10000
    instances = json.loads((out / "instances.json").read_text())
    assert len(instances) == scores["instances"]
    assert {i["id"] for i in instances} == set(np.unique(saved.instance[saved.instance >= 0]))
    picture = np.asarray(o3d.io.read_image(str(out / "segmented_room.png")))
    assert picture.shape == (760, 1260, 3) and picture.std() > 10
    assert (out / "occuseg_map.ply").stat().st_size > 15 * saved.num_points

    # Memory over time: a sample a second from the start to the end of the run.
    rows = list(csv.reader((out / "memory.csv").open()))
    assert rows[0] == ["elapsed_s", "rss_mib"]
    times = [float(t) for t, _ in rows[1:]]
    rss = [float(r) for _, r in rows[1:]]
    assert len(times) >= 8 and times[0] < 0.1 and times[-1] == pytest.approx(
        scores["seconds"], abs=1.0)
    assert all(b > a for a, b in zip(times, times[1:])) and min(rss) > 50
    memory = scores["memory"]
    assert memory["period_s"] == 1.0 and memory["samples"] == len(times)
    assert memory["rss_start_mib"] == rss[0] and memory["rss_end_mib"] == rss[-1]
    assert memory["rss_max_mib"] == max(rss)
    if memory["rss_warmup_mib"] is not None:  # the camera finished a loop before the end
        assert memory["warmup_end_s"] >= 0.1 * scores["seconds"] - 1.0
        assert memory["rss_warmup_mib"] == rss[times.index(memory["warmup_end_s"])]
        assert memory["growth_after_warmup_pct"] == pytest.approx(
            (rss[-1] / memory["rss_warmup_mib"] - 1.0) * 100.0, abs=0.01)
    # Drops: counted, and they add up with what was integrated.
    dropped = scores["dropped"]
    assert set(dropped) == {"frames_not_received", "frames_dropped", "map_updates_coalesced",
                            "reconstructor_rejected", "segmentation_rejected"}
    assert 0 <= dropped["map_updates_coalesced"]
    assert dropped["reconstructor_rejected"] == {} and dropped["segmentation_rejected"] == {}
    assert (scores["frames_integrated"] + dropped["frames_dropped"]
            + dropped["frames_not_received"]) <= scores["frames_rendered"]
    # Rates over the run itself (the final flush adds frames and a segmentation after it).
    rates = scores["rates"]
    assert 0 < rates["frames_integrated_per_s"] <= rates["frames_rendered_per_s"]
    for rate, count in (("frames_rendered_per_s", "frames_rendered"),
                        ("frames_integrated_per_s", "frames_integrated")):
        assert rates[rate] * scores["seconds"] <= scores[count] + 0.01
    assert "memory: RSS" in result.stdout and "dropped:" in result.stdout
