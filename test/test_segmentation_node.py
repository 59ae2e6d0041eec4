"""The segmentation node over real DDS: real publishers, subscribers, services and spconv."""

from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from occuseg_ros.core.scene import load_scene
from occuseg_ros.core.surface_map import grid_keys
from occuseg_ros.core.synthetic import generate_room
from occuseg_ros.ros.conversions import (cloud_fields, cloud_msg_from_arrays, packed_from_rgb,
                                         xyz_rgb_from_cloud_msg)
from occuseg_ros.ros.segmentation_node import SegmentationNode
from ros_harness import Probe, Spinner, wait_for, wait_for_subscribers

BLOCK_M = 0.16
OUT = "/occuseg/segmented_cloud"
QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)


def make_node(model_path, tmp_path, **params) -> SegmentationNode:
    values = {"model_path": str(model_path), "device": "cpu", "segment_rate_hz": 20.0,
              "input_qos": "reliable", "block_size_m": BLOCK_M, "output_dir": str(tmp_path),
              "diagnostics_period_s": 0.2, **params}
    return SegmentationNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])


def cloud(xyz: np.ndarray, rgb: np.ndarray, stamp_s: float = 1.0, frame: str = "map",
          **extra: np.ndarray) -> PointCloud2:
    header = Header(frame_id=frame)
    header.stamp.sec, header.stamp.nanosec = int(stamp_s), int((stamp_s % 1) * 1e9)
    return cloud_msg_from_arrays(header, {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
                                          "rgb": packed_from_rgb(rgb), **extra})


class Session:
    """A node under test, a probe publishing its inputs and recording its outputs."""

    def __init__(self, node: SegmentationNode, mesh: bool = False) -> None:
        self.node = node
        self.probe = Probe()
        self.cloud_pub = self.probe.create_publisher(PointCloud2, "surface_cloud", QOS)
        self.tsdf_pub = self.probe.create_publisher(PointCloud2, "tsdf_voxels", QOS)
        self.mesh_pub = self.probe.create_publisher(MarkerArray, "surface_mesh", QOS)
        for msg_type, topic in ((PointCloud2, OUT), (MarkerArray, "/occuseg/instance_markers"),
                                (PointCloud2, "/occuseg/instances")):
            self.probe.listen(msg_type, topic)
        self.probe.listen(DiagnosticArray, "/diagnostics", latched=False)
        self.spinner = Spinner(node, self.probe)
        for pub in (self.cloud_pub, self.tsdf_pub, self.mesh_pub):
            wait_for_subscribers(pub)

    def close(self) -> None:
        self.spinner.close()

    def publish_and_wait(self, pub, msg, timeout_s: float = 60.0) -> PointCloud2:
        """Publish and return the next segmented cloud."""
        before = len(self.probe.messages(OUT))
        pub.publish(msg)
        wait_for(lambda: len(self.probe.messages(OUT)) > before, timeout_s, "a segmented cloud")
        return self.probe.messages(OUT)[-1]

    def diagnostics(self) -> dict[str, str]:
        """Key-values of the node's latest diagnostics message."""
        for msg in reversed(self.probe.messages("/diagnostics")):
            for status in msg.status:
                if status.name.startswith("occuseg"):
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def call(self, service: str) -> Trigger.Response:
        client = self.probe.create_client(Trigger, service)
        assert client.wait_for_service(timeout_sec=10.0), service
        future = client.call_async(Trigger.Request())
        wait_for(future.done, 30.0, f"{service} to answer")
        return future.result()


def labels_of(msg: PointCloud2) -> dict[str, np.ndarray]:
    fields = cloud_fields(msg, ("x", "y", "z", "rgb", "label", "instance", "score"))
    return {k: np.array(v) for k, v in fields.items()}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two per-point labelings group the points identically (0 = none in both)."""
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return (np.unique(pairs[:, 0]).size == pairs.shape[0]
            and np.unique(pairs[:, 1]).size == pairs.shape[0])


@pytest.fixture
def room():
    """A small generated room (about 3.5 m), segmented in well under a second."""
    return generate_room(5, size_range_m=(3.0, 3.5))


def test_scannet_scene_gives_every_output(ros_context, model_path, tmp_path,
                                          scannet_scene_path):
    scene = load_scene(scannet_scene_path)
    session = Session(make_node(model_path, tmp_path, input_mode="snapshot"))
    try:
        out = session.publish_and_wait(session.cloud_pub, cloud(scene.xyz, scene.rgb))
        assert out.header.frame_id == "map" and out.header.stamp.sec == 1
        assert out.width * out.height == scene.num_points
        f = labels_of(out)
        assert [pf.name for pf in out.fields] == ["x", "y", "z", "rgb", "label", "instance",
                                                  "score"]
        assert {pf.name: pf.datatype for pf in out.fields}["instance"] == PointField.UINT32
        # Same points, in the map's canonical order (blocks by key).
        got = np.stack([f["x"], f["y"], f["z"]], axis=1)
        order = np.argsort(grid_keys(scene.xyz, BLOCK_M), kind="stable")
        np.testing.assert_array_equal(got, scene.xyz[order])
        ids = np.unique(f["instance"][f["instance"] > 0])
        instances = wait_for(lambda: session.probe.messages("/occuseg/instances"), 10, "list")
        table = cloud_fields(instances[-1], ("id", "label", "score", "voxels", "x", "y", "z",
                                             "min_x", "max_z"))
        np.testing.assert_array_equal(np.sort(table["id"]), ids)
        for row, inst in enumerate(table["id"]):
            inside = f["instance"] == inst
            assert np.all(f["label"][inside] == table["label"][row])
            assert np.allclose(f["score"][inside], table["score"][row])
            assert table["min_x"][row] <= table["x"][row]
            # Boxes enclose the instance's voxels (5 cm for the model fixture).
            assert 0.0 <= table["max_z"][row] - f["z"][inside].max() <= 0.05 + 1e-5
        markers = wait_for(lambda: session.probe.messages("/occuseg/instance_markers"), 10,
                           "markers")[-1].markers
        boxes = sorted(m.id for m in markers if m.ns == "instance_boxes"
                       and m.action == Marker.ADD)
        texts = [m for m in markers if m.ns == "instance_labels"]
        assert boxes == ids.tolist() and len(texts) == ids.size
        assert all(f"#{m.id} " in m.text for m in texts)

        response = session.call("/occuseg/save_map")
        assert response.success, response.message
        saved = load_scene(tmp_path / "occuseg_map.npz")
        assert saved.num_points == scene.num_points
        assert (tmp_path / "occuseg_map.ply").stat().st_size > scene.num_points * 15
        assert (tmp_path / "instances.json").is_file()
    finally:
        session.close()


def test_increments_give_the_snapshot_instances_with_stable_ids(ros_context, model_path,
                                                                tmp_path, room):
    """Blocks streamed in slabs along x end as the same map as one snapshot; instance ids
    that are assigned stay with their points while the map grows. Margins beyond the room
    make every update exact (test_incremental.py covers the default margins)."""
    xyz, rgb = room.xyz, room.rgb
    snapshot = Session(make_node(model_path, tmp_path, input_mode="snapshot"))
    try:
        reference = labels_of(snapshot.publish_and_wait(snapshot.cloud_pub, cloud(xyz, rgb)))
    finally:
        snapshot.close()

    session = Session(make_node(model_path, tmp_path, input_mode="increment",
                                refresh_margin_m=50.0))
    try:
        block_x = np.floor(xyz[:, 0] / BLOCK_M).astype(int)
        edges = np.linspace(block_x.min(), block_x.max() + 1, 5).astype(int)
        history = []
        for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            part = (block_x >= lo) & (block_x < hi)
            out = session.publish_and_wait(session.cloud_pub,
                                           cloud(xyz[part], rgb[part], stamp_s=1.0 + k))
            history.append(labels_of(out))
        final = history[-1]
        for key in ("x", "y", "z", "label"):
            np.testing.assert_array_equal(final[key], reference[key])
        assert same_partition(final["instance"], reference["instance"])
        # An instance that is essentially the same object after an update (80 % of its points
        # in one new instance, which on the points seen before is 80 % the old one) keeps
        # its id.
        kept = 0
        for before, after in zip(history[:-1], history[1:]):
            pos = {tuple(p): i for i, p in enumerate(np.stack(
                [after["x"], after["y"], after["z"]], axis=1).tolist())}
            idx = np.array([pos[tuple(p)] for p in np.stack(
                [before["x"], before["y"], before["z"]], axis=1).tolist()])
            now_on_old = after["instance"][idx]
            for inst in np.unique(before["instance"][before["instance"] > 0]):
                mine = before["instance"] == inst
                ids, counts = np.unique(now_on_old[mine], return_counts=True)
                best, common = ids[counts.argmax()], counts.max()
                if best == 0 or common < 0.8 * mine.sum():
                    continue
                if common >= 0.8 * (now_on_old == best).sum():
                    assert best == inst, f"instance {inst} was renamed {best}"
                    kept += 1
        assert kept > 0, "no instance survived an update recognisably"
    finally:
        session.close()


def test_mesh_marker_gives_the_cloud_instances(ros_context, model_path, tmp_path, room):
    xyz, rgb = room.xyz, room.rgb
    session = Session(make_node(model_path, tmp_path, input_mode="snapshot"))
    try:
        reference = labels_of(session.publish_and_wait(session.cloud_pub, cloud(xyz, rgb)))
        session.call("/occuseg/reset")
        marker = Marker(type=Marker.TRIANGLE_LIST, action=Marker.ADD, ns="mesh", id=0)
        marker.header.frame_id = "map"
        marker.header.stamp.sec = 2
        marker.pose.orientation.w = 1.0
        marker.scale.x = marker.scale.y = marker.scale.z = 1.0
        pad = (-xyz.shape[0]) % 3  # repeated vertices: removed again by de-duplication
        verts = np.concatenate([xyz, np.repeat(xyz[-1:], pad, axis=0)])
        cols = np.concatenate([rgb, np.repeat(rgb[-1:], pad, axis=0)]) / 255.0
        from geometry_msgs.msg import Point
        from std_msgs.msg import ColorRGBA
        marker.points = [Point(x=float(a), y=float(b), z=float(c)) for a, b, c in verts]
        marker.colors = [ColorRGBA(r=float(r), g=float(g), b=float(b), a=1.0)
                         for r, g, b in cols]
        out = labels_of(session.publish_and_wait(session.mesh_pub, MarkerArray(markers=[marker])))
        for key in ("x", "y", "z", "label"):
            np.testing.assert_array_equal(out[key], reference[key])
        assert same_partition(out["instance"], reference["instance"])
    finally:
        session.close()


def test_tsdf_voxels_keep_the_surface_band(ros_context, model_path, tmp_path, room):
    session = Session(make_node(model_path, tmp_path, tsdf_band_m=0.02, tsdf_min_weight=1.0))
    try:
        centres = (np.unique(np.floor(room.xyz / 0.02), axis=0) + 0.5) * 0.02
        rng = np.random.default_rng(0)
        tsdf = rng.uniform(-0.04, 0.04, centres.shape[0]).astype(np.float32)
        weight = rng.uniform(0.0, 3.0, centres.shape[0]).astype(np.float32)
        keep = (np.abs(tsdf) <= 0.02) & (weight >= 1.0)
        rgb = np.full(centres.shape, 150, np.uint8)
        out = session.publish_and_wait(session.tsdf_pub, cloud(
            centres.astype(np.float32), rgb, tsdf=tsdf, weight=weight))
        assert out.width == keep.sum()
        # The same voxels again, now all off the surface: they leave the map.
        session.probe.clear(OUT)
        session.tsdf_pub.publish(cloud(centres[:100].astype(np.float32), rgb[:100], stamp_s=2.0,
                                       tsdf=np.ones(100, np.float32), weight=weight[:100]))
        wait_for(lambda: session.probe.messages(OUT), 30, "the next segmented cloud")
        assert session.probe.messages(OUT)[-1].width == keep.sum() - keep[:100].sum()
    finally:
        session.close()


def test_bad_input_is_counted_and_dropped_and_the_map_survives(ros_context, model_path,
                                                              tmp_path, room):
    xyz, rgb = room.xyz[:20000], room.rgb[:20000]
    session = Session(make_node(model_path, tmp_path, input_mode="snapshot", max_points=100000))
    try:
        good = session.publish_and_wait(session.cloud_pub, cloud(xyz, rgb, stamp_s=10.0))
        assert good.width == xyz.shape[0]

        header = Header(frame_id="map")
        header.stamp.sec = 11
        no_z = cloud_msg_from_arrays(header, {"x": xyz[:, 0], "y": xyz[:, 1]})
        truncated = cloud(xyz, rgb, stamp_s=11.0)
        truncated.data = bytes(truncated.data)[:1000]
        wrong_type = cloud(xyz, rgb, stamp_s=11.0)
        wrong_type.fields[2].datatype = 99
        all_nan = cloud(np.full((50, 3), np.nan, np.float32), rgb[:50], stamp_s=11.0)
        empty = cloud(xyz[:0], rgb[:0], stamp_s=11.0)
        wrong_frame = cloud(xyz, rgb, stamp_s=11.0, frame="odom")
        backwards = cloud(xyz, rgb, stamp_s=5.0)
        absurd = cloud(xyz, rgb, stamp_s=11.0)
        absurd.width, absurd.row_step = 10**9, 10**9 * absurd.point_step
        corrupt = bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))
        bad = {"corrupt": [corrupt], "undecodable": [no_z, truncated, wrong_type, absurd],
               "empty": [all_nan, empty],
               "wrong_frame": [wrong_frame], "time_backwards": [backwards]}
        expected: dict[str, int] = {}
        for kind, msgs in bad.items():
            for msg in msgs:  # one at a time: the input queue keeps only the latest few
                expected[kind] = expected.get(kind, 0) + 1
                session.cloud_pub.publish(msg)
                wait_for(lambda: int(session.diagnostics().get(
                    f"rejected_surface_cloud_{kind}", 0)) >= expected[kind], 20,
                    f"rejection {expected[kind]} of kind {kind} in /diagnostics")
        d = session.diagnostics()
        for kind, msgs in bad.items():
            assert int(d[f"rejected_surface_cloud_{kind}"]) == len(msgs), kind
        assert int(d["map_points"]) == xyz.shape[0]  # the map is intact

        # Partly NaN: the NaN points are dropped and counted, the rest is used.
        half = xyz.copy()
        half[::2] = np.nan
        out = session.publish_and_wait(session.cloud_pub, cloud(half, rgb, stamp_s=12.0))
        assert out.width == xyz.shape[0] // 2
        wait_for(lambda: int(session.diagnostics().get("nonfinite_points_dropped", 0))
                 == xyz.shape[0] // 2 + 50, 10, "the NaN count (and the all-NaN cloud)")
        # And it keeps serving.
        back = xyz_rgb_from_cloud_msg(session.publish_and_wait(
            session.cloud_pub, cloud(xyz, rgb, stamp_s=13.0)))[0]
        assert back.shape[0] == xyz.shape[0]
        # A publisher of the wrong type on an input topic (another process: DDS refuses two
        # types on one topic within one participant) cannot deliver; it is reported.
        import os
        import subprocess
        import sys
        other = subprocess.Popen([sys.executable, "-c", (
            "import rclpy, time; from std_msgs.msg import String; rclpy.init(); "
            "n = rclpy.create_node('wrong_type'); n.create_publisher(String, "
            "'/surface_cloud', 10); time.sleep(60)")], env=os.environ.copy())
        try:
            wait_for(lambda: session.diagnostics().get(
                "rejected_surface_cloud_wrong_type_publishers") == "1", 30,
                "the wrong-type publisher in /diagnostics")
        finally:
            other.kill()
            other.wait()
    finally:
        session.close()


def test_reset_clears_markers_and_ids(ros_context, model_path, tmp_path, room):
    session = Session(make_node(model_path, tmp_path, input_mode="snapshot"))
    try:
        session.publish_and_wait(session.cloud_pub, cloud(room.xyz, room.rgb, stamp_s=5.0))
        assert session.call("/occuseg/reset").success
        assert not session.call("/occuseg/save_map").success  # nothing segmented since
        wait_for(lambda: any(m.action == Marker.DELETEALL for msg in session.probe.messages(
            "/occuseg/instance_markers") for m in msg.markers), 10, "DELETEALL")
        # After a reset, earlier stamps are accepted again (a bag replayed from the start).
        out = labels_of(session.publish_and_wait(session.cloud_pub,
                                                 cloud(room.xyz, room.rgb, stamp_s=1.0)))
        ids = np.unique(out["instance"][out["instance"] > 0])
        if ids.size:
            assert ids.min() == 1  # ids restart
    finally:
        session.close()


def test_occuseg_node_command_runs_the_node_in_its_own_process(ros_context, model_path,
                                                               tmp_path, room):
    """``occuseg node`` (what ``ros2 run occuseg_ros occuseg_node`` starts) with the shipped
    parameter file, across processes; Ctrl-C ends it cleanly."""
    import os
    import signal
    import subprocess
    import sys

    node = subprocess.Popen(
        [sys.executable, "-m", "occuseg_ros.cli", "node", "--model", str(model_path),
         "--device", "cpu", "--ros-args", "-p", "input_mode:=snapshot",
         "-p", "input_qos:=reliable", "-r", "surface_cloud:=/camera/surface"],
        env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probe = Probe("command_probe")
    pub = probe.create_publisher(PointCloud2, "/camera/surface", QOS)
    probe.listen(PointCloud2, OUT)
    spinner = Spinner(probe)
    try:
        wait_for_subscribers(pub, timeout_s=60.0)
        pub.publish(cloud(room.xyz, room.rgb))
        out = wait_for(lambda: probe.messages(OUT), 60.0, "a segmented cloud from the process")
        assert out[-1].width == room.num_points
    finally:
        spinner.close()
        node.send_signal(signal.SIGINT)
        output = node.communicate(timeout=20)[0]
    assert node.returncode == 0, output
    assert "occuseg_default" in output or str(model_path) in output
    # The shipped file leaves the margins to the device: the CPU's.
    assert "margins refresh 0.4 m, context 0.4 m" in output, output


def test_shipped_parameter_file_matches_the_node_defaults():
    import yaml

    from conftest import REPO_ROOT
    from occuseg_ros.core.pipeline import PipelineConfig
    from occuseg_ros.ros.segmentation_node import NODE_PARAMETERS

    document = yaml.safe_load((REPO_ROOT / "config" / "occuseg.yaml").read_text())
    shipped = document["occuseg"]["ros__parameters"]
    expected = {**{k: v for k, (v, _) in NODE_PARAMETERS.items()},
                **PipelineConfig().to_params()}
    assert shipped == expected


def test_console_scripts_point_at_the_node_mains():
    """What ``ros2 run occuseg_ros occuseg_node`` / ``rgbd_reconstructor`` start."""
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")
               if ep.value.startswith("occuseg_ros")}
    assert scripts["occuseg_node"] == "occuseg_ros.ros.segmentation_node:main"
    assert scripts["rgbd_reconstructor"] == "occuseg_ros.ros.reconstructor_node:main"
    for value in scripts.values():
        module, _, function = value.partition(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function))
