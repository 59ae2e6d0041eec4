"""The RGB-D reconstructor node over real DDS: rendered box-room frames in, surface increments
out, bad input counted and survived."""

from __future__ import annotations

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from occuseg_ros.core.rendering import BOX_FACE_COLOURS, MeshRenderer, box_room_mesh, look_at
from occuseg_ros.core.tsdf import block_coordinates
from occuseg_ros.ros.conversions import pose_from_matrix, xyz_rgb_from_cloud_msg
from occuseg_ros.ros.reconstructor_node import RgbdReconstructorNode
from ros_harness import Probe, Spinner, wait_for, wait_for_subscribers

ROOM_M = (4.0, 3.0, 2.5)
WIDTH, HEIGHT = 320, 240
K = np.array([[250.0, 0.0, (WIDTH - 1) / 2], [0.0, 250.0, (HEIGHT - 1) / 2], [0.0, 0.0, 1.0]])
BLOCK_M = 0.16
QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
CLOUD = "surface_cloud"


def header(stamp_s: float, frame: str) -> Header:
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
    return h


def image(array: np.ndarray, encoding: str, stamp_s: float) -> Image:
    array = np.ascontiguousarray(array)
    height, width = array.shape[:2]
    return Image(header=header(stamp_s, "camera_optical"), height=height, width=width,
                 encoding=encoding, is_bigendian=0, step=array.strides[0], data=array.tobytes())


def camera_info(width: int = WIDTH, height: int = HEIGHT) -> CameraInfo:
    return CameraInfo(header=header(0.0, "camera_optical"), width=width, height=height,
                      k=K.ravel().tolist(), distortion_model="plumb_bob")


class Session:
    """The node under test and a probe that feeds it frames and records its output."""

    def __init__(self) -> None:
        self.node = RgbdReconstructorNode(parameter_overrides=[
            Parameter(name, value=value) for name, value in (
                ("device", "cpu"), ("integrate_rate_hz", 30.0), ("publish_rate_hz", 5.0),
                ("diagnostics_period_s", 0.2), ("block_resolution", 8))])
        self.probe = Probe("reconstructor_probe")
        self.depth_pub = self.probe.create_publisher(Image, "depth/image", QOS)
        self.colour_pub = self.probe.create_publisher(Image, "color/image", QOS)
        self.info_pub = self.probe.create_publisher(CameraInfo, "depth/camera_info", QOS)
        self.pose_pub = self.probe.create_publisher(PoseStamped, "camera_pose", QOS)
        self.probe.listen(PointCloud2, CLOUD, latched=False)
        self.probe.listen(DiagnosticArray, "/diagnostics", latched=False)
        self.spinner = Spinner(self.node, self.probe)
        for pub in (self.depth_pub, self.colour_pub, self.info_pub, self.pose_pub):
            wait_for_subscribers(pub)
        self.renderer = MeshRenderer(*box_room_mesh(ROOM_M))

    def close(self) -> None:
        self.spinner.close()

    def publish_frame(self, T_map_camera: np.ndarray, stamp_s: float, *,
                      depth: Image | None = None, colour: Image | None = None,
                      pose: PoseStamped | None = None, info: CameraInfo | None = None) -> None:
        """Publish one frame rendered at the pose; any message can be swapped for another."""
        depth_m, rgb = self.renderer.render(K, T_map_camera, WIDTH, HEIGHT)
        depth_mm = np.rint(depth_m * 1000.0).astype(np.uint16)
        self.info_pub.publish(info or camera_info())
        self.pose_pub.publish(pose or PoseStamped(header=header(stamp_s, "map"),
                                                  pose=pose_from_matrix(T_map_camera)))
        self.colour_pub.publish(colour or image(rgb, "rgb8", stamp_s))
        self.depth_pub.publish(depth or image(depth_mm, "16UC1", stamp_s))

    def diagnostics(self) -> dict[str, str]:
        """Key-values of the node's latest diagnostics status."""
        for msg in reversed(self.probe.messages("/diagnostics")):
            for status in msg.status:
                if status.name.startswith("rgbd_reconstructor"):
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def count(self, key: str) -> int:
        return int(self.diagnostics().get(key, 0))


@pytest.fixture
def session(ros_context):
    s = Session()
    yield s
    s.close()


def trajectory(num_frames: int) -> list[np.ndarray]:
    """A camera at 1.4 m turning on the spot, looking a little down, then a little up."""
    poses = []
    for k in range(num_frames):
        yaw = 2.0 * np.pi * k / (num_frames // 2)
        eye = np.array([2.0, 1.5, 1.4])
        target = eye + np.array([np.cos(yaw), np.sin(yaw), -0.5 if 2 * k < num_frames else 0.5])
        poses.append(look_at(eye, target))
    return poses


def accumulate(clouds: list[PointCloud2]) -> np.ndarray:
    """The map the increments build: each replaces the blocks its points fall in."""
    blocks: dict[tuple[int, int, int], np.ndarray] = {}
    for msg in clouds:
        xyz, _ = xyz_rgb_from_cloud_msg(msg)
        keys = block_coordinates(xyz, BLOCK_M)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        for index, key in enumerate(unique):
            blocks[tuple(key)] = xyz[inverse.reshape(-1) == index]
    return np.concatenate(list(blocks.values()))


def box_distance(xyz: np.ndarray) -> np.ndarray:
    """Distance in metres of every point to the nearest face plane of the room."""
    faces = [np.abs(xyz[:, axis] - value) for axis in range(3) for value in (0.0, ROOM_M[axis])]
    return np.min(faces, axis=0)


def test_frames_give_surface_increments_on_the_box(session):
    stamps = [1.0 + 0.1 * k for k in range(16)]
    for k, (pose, stamp) in enumerate(zip(trajectory(16), stamps)):
        session.publish_frame(pose, stamp)
        wait_for(lambda: session.count("frames_integrated") > k, 10.0, f"frame {k} integrated")
    last_stamp = header(stamps[-1], "map").stamp
    wait_for(lambda: any(m.header.stamp == last_stamp for m in session.probe.messages(CLOUD)),
             10.0, "an increment stamped with the last frame")
    clouds = session.probe.messages(CLOUD)
    assert all(m.header.frame_id == "map" for m in clouds)
    assert [f.name for f in clouds[0].fields] == ["x", "y", "z", "rgb"]
    xyz = accumulate(clouds)
    assert xyz.shape[0] > 50_000
    distance = box_distance(xyz)
    assert distance.max() < 0.02
    assert np.percentile(distance, 95) < 0.008  # depth arrives in whole millimetres
    # The camera turned all the way round: all four walls are there.
    for axis in (0, 1):
        for value in (0.0, ROOM_M[axis]):
            assert (np.abs(xyz[:, axis] - value) < 0.02).sum() > 2000
    diagnostics = session.diagnostics()
    assert int(diagnostics["blocks"]) > 1000
    assert float(diagnostics["integrate_ms"]) > 0
    assert int(diagnostics["frames_dropped"]) == 0
    assert not any(key.startswith("rejected_") for key in diagnostics)
    # Nothing changes any more, so nothing more is published (over 3 publish periods).
    published = len(session.probe.messages(CLOUD))
    session.probe.clear("/diagnostics")
    wait_for(lambda: len(session.probe.messages("/diagnostics")) >= 4, 5.0, "0.6 s to pass")
    assert len(session.probe.messages(CLOUD)) == published


def test_bad_input_is_counted_and_survived(session):
    pose = look_at((2.0, 1.5, 1.4), (4.0, 1.5, 1.0))
    stamp = iter(1.0 + 0.1 * k for k in range(100))
    session.publish_frame(pose, next(stamp))
    wait_for(lambda: session.count("frames_integrated") >= 1, 10.0, "a first frame")

    depth_m, rgb = session.renderer.render(K, pose, WIDTH, HEIGHT)
    depth_mm = np.rint(depth_m * 1000.0).astype(np.uint16)
    nan_pose = PoseStamped(header=header(0.0, "map"), pose=pose_from_matrix(pose))
    nan_pose.pose.position.x = float("nan")

    def truncated(t: float) -> Image:
        msg = image(depth_mm, "16UC1", t)
        msg.data = msg.data[: len(msg.data) // 2]
        return msg

    cases = {
        "depth_undecodable": lambda t: {"depth": image(rgb, "rgb8", t)},  # wrong encoding
        "color_undecodable": lambda t: {"colour": image(depth_mm, "16UC1", t)},
        "pose_invalid": lambda t: {"pose": PoseStamped(header=header(t, "map"),
                                                       pose=nan_pose.pose)},
        "size_mismatch": lambda t: {"colour": image(rgb[::2, ::2], "rgb8", t)},
    }
    for reason, swap in cases.items():
        t = next(stamp)
        session.publish_frame(pose, t, **swap(t))
        if reason == "pose_invalid":  # the frame waits for a valid pose: give it one
            wait_for(lambda: session.count("rejected_pose_invalid") >= 1, 10.0, reason)
            session.pose_pub.publish(PoseStamped(header=header(t, "map"),
                                                 pose=pose_from_matrix(pose)))
            wait_for(lambda: session.count("frames_integrated") >= 2, 10.0, "the frame")
        else:
            wait_for(lambda: session.count(f"rejected_{reason}") >= 1, 10.0, reason)
    # A truncated depth image.
    t = next(stamp)
    session.publish_frame(pose, t, depth=truncated(t))
    wait_for(lambda: session.count("rejected_depth_undecodable") >= 2, 10.0, "truncation")
    # Camera info that does not fit the images.
    t = next(stamp)
    session.publish_frame(pose, t, info=camera_info(WIDTH // 2, HEIGHT // 2))
    wait_for(lambda: session.count("rejected_size_mismatch") >= 2, 10.0, "camera_info size")
    infos = session.count("camera_info_messages")
    session.info_pub.publish(camera_info())
    wait_for(lambda: session.count("camera_info_messages") > infos, 10.0, "good camera_info")
    # Time going backwards on the depth topic.
    session.depth_pub.publish(image(depth_mm, "16UC1", 0.5))
    wait_for(lambda: session.count("rejected_depth_time_backwards") >= 1, 10.0, "time check")
    integrated = session.count("frames_integrated")
    assert integrated == 2  # the first frame, and the invalid-pose frame once it got a pose

    # Still alive: a good frame from a new view, in the other encodings (depth in metres,
    # colour BGR), is integrated and published.
    published = len(session.probe.messages(CLOUD))
    t = next(stamp)
    west = look_at((2.0, 1.5, 1.4), (0.0, 1.5, 1.0))
    depth_m, rgb = session.renderer.render(K, west, WIDTH, HEIGHT)
    session.publish_frame(west, t, depth=image(depth_m, "32FC1", t),
                          colour=image(rgb[:, :, ::-1], "bgr8", t))
    wait_for(lambda: session.count("frames_integrated") > integrated, 10.0, "a good frame")
    wait_for(lambda: len(session.probe.messages(CLOUD)) > published, 10.0, "a new increment")
    xyz, colours = xyz_rgb_from_cloud_msg(session.probe.messages(CLOUD)[-1])
    assert box_distance(xyz).max() < 0.02
    to_other_faces = np.min([np.abs(xyz[:, 1]), np.abs(xyz[:, 1] - ROOM_M[1]),
                             np.abs(xyz[:, 2]), np.abs(xyz[:, 2] - ROOM_M[2])], axis=0)
    on_west_wall = (xyz[:, 0] < 0.02) & (to_other_faces > 0.1)
    np.testing.assert_allclose(np.median(colours[on_west_wall], axis=0), BOX_FACE_COLOURS[2],
                               atol=3)

    # ~/reset empties the volume.
    client = session.probe.create_client(Trigger, "/rgbd_reconstructor/reset")
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(Trigger.Request())
    wait_for(future.done, 10.0, "~/reset to answer")
    assert future.result().success
    session.probe.clear("/diagnostics")
    wait_for(lambda: session.diagnostics().get("blocks") == "0", 10.0, "an empty volume")


def test_shipped_parameter_file_matches_the_node_defaults():
    import yaml

    from conftest import REPO_ROOT
    from occuseg_ros.ros.reconstructor_node import NODE_PARAMETERS

    document = yaml.safe_load((REPO_ROOT / "config" / "occuseg.yaml").read_text())
    shipped = document["rgbd_reconstructor"]["ros__parameters"]
    assert shipped == {k: v for k, (v, _) in NODE_PARAMETERS.items()}
    assert NODE_PARAMETERS["device"][0] == "auto"


def test_device_cuda_without_a_gpu_is_a_clear_error(ros_context):
    import open3d as o3d

    if o3d.core.cuda.is_available():
        pytest.skip("open3d sees a CUDA device here")
    with pytest.raises(ValueError, match="cuda.*is_available"):
        RgbdReconstructorNode(parameter_overrides=[Parameter("device", value="cuda")])
    node = RgbdReconstructorNode(parameter_overrides=[Parameter("device", value="auto")])
    try:
        assert node.device == "CPU:0"
    finally:
        node.destroy_node()
