"""Hostile input fuzzed with hypothesis through everything that decodes input.

Every decoder either returns a sane result or raises its module's clear error
(:class:`MessageError` for messages, :class:`SceneError` for scene files, :class:`BagError` for
bags), never another exception type and never a hang. Where the contract is simple enough an
independent oracle (``struct``, hand-written quaternion maths) says whether the input is valid,
so garbage cannot pass silently and good input cannot be refused; otherwise the output's
invariants are checked. Inputs are real: rclpy messages and serialisation, bags written by
``rosbags``, files written by the module's own writers and numpy, then mutated.

The budget is bounded and reproducible (``derandomize``, no example database). The number of
cases tried per decoder is printed at the end of the module (``fuzz cases: ...``, shown with
or without ``-s``).
"""

from __future__ import annotations

import math
import shutil
import signal
import struct
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import yaml
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, Transform, Vector3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from occuseg_ros.core.scene import PredictionFile, SceneError, load_scene, write_ply
from occuseg_ros.ros.bag import BagError, bag_info, bag_messages, message_class
from occuseg_ros.ros.conversions import (
    MessageError,
    cloud_fields,
    cloud_msg_from_arrays,
    depth_m_from_image,
    image_array,
    image_msg_from_array,
    intrinsics_from_camera_info,
    matrix_from_pose,
    matrix_from_transform,
    mesh_from_marker,
    message_from_bytes,
    packed_from_rgb,
    rgb_from_image,
    seconds_from_stamp,
    xyz_rgb_from_cloud_msg,
)

#: Cases tried per decoder in this run, and how many of them it decoded (printed when the
#: module finishes).
CASES: Counter[str] = Counter()
DECODED: Counter[str] = Counter()
#: Wall-clock seconds after which a single decoder call counts as hung.
HANG_S = 20.0


def fuzz_settings(max_examples: int, deadline_ms: int) -> settings:
    """Reproducible, bounded hypothesis settings (deadlines generous for a loaded machine)."""
    return settings(max_examples=max_examples, deadline=deadline_ms, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow,
                                                          HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def case_summary(request) -> Iterator[None]:
    """Print the number of cases tried per decoder once the module is done."""
    yield
    total = sum(CASES.values())
    per_decoder = ", ".join(f"{name} {count} ({DECODED[name]} decoded)"
                            for name, count in sorted(CASES.items()))
    line = f"fuzz cases: {total} in total; {per_decoder}"
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)


class Hang(BaseException):
    """A decoder ran past :data:`HANG_S` (a BaseException: no decoder may swallow it)."""


@contextmanager
def hang_guard(seconds: float = HANG_S) -> Iterator[None]:
    """Interrupt the block with :class:`Hang` after ``seconds`` of wall-clock time."""
    def expire(signum, frame):
        raise Hang(f"still decoding after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


_REJECTED = object()


def decode(name: str, error: type[Exception], function: Callable, *args) -> object:
    """``function(*args)`` counted under ``name``, hang-guarded; ``_REJECTED`` when it raises
    ``error`` with a non-empty reason. Any other exception fails the example."""
    CASES[name] += 1
    with hang_guard():
        try:
            result = function(*args)
        except error as exc:
            assert str(exc).strip(), f"{name} raised {type(exc).__name__} without a reason"
            return _REJECTED
    DECODED[name] += 1
    return result


def expect(name: str, result: object, valid: bool, why: object = "") -> bool:
    """Assert the decoder accepted exactly the input the oracle calls valid."""
    if valid:
        assert result is not _REJECTED, f"{name} refused valid input {why}"
    else:
        assert result is _REJECTED, f"{name} accepted invalid input {why}"
    return valid


# ---------------------------------------------------------------------------------------------
# Shared strategies
# ---------------------------------------------------------------------------------------------

U32 = st.integers(0, 2**32 - 1)
I32 = st.integers(-2**31, 2**31 - 1)
#: Doubles a hostile sender picks: NaN, infinities, zeros, subnormals, huge, ordinary.
HOSTILE_FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, -1.0, math.nan, math.inf, -math.inf, 5e-324, 1e-310,
                     1e-160, 1e154, 1e200, 1.7e308, 3.5e38]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-10.0, 10.0),
)


def small_or_any(small: int, strategy=U32) -> st.SearchStrategy[int]:
    """Mostly small values (that reach the decoding), sometimes anything in range."""
    return st.one_of(st.integers(0, small), st.integers(0, small), strategy)


@st.composite
def byte_data(draw, length: int) -> bytes:
    """``length`` bytes: zeros, 0xff (NaN as floats) or random, from a drawn seed."""
    fill = draw(st.sampled_from(["random", "zero", "ones", "random"]))
    if fill == "zero":
        return bytes(length)
    if fill == "ones":
        return b"\xff" * length
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.integers(0, 256, length, dtype=np.uint8).tobytes()


def lengths_around(need: int, limit: int = 4096) -> st.SearchStrategy[int]:
    """Data lengths near what a layout needs (exact, one short, longer) or small random."""
    near = [n for n in (need, need - 1, need + 7) if 0 <= n <= limit]
    return st.one_of(st.sampled_from(near), st.integers(0, 64)) if near else st.integers(0, 64)


# ---------------------------------------------------------------------------------------------
# PointCloud2
# ---------------------------------------------------------------------------------------------

_FIELD_FORMATS = {PointField.INT8: "b", PointField.UINT8: "B", PointField.INT16: "h",
                  PointField.UINT16: "H", PointField.INT32: "i", PointField.UINT32: "I",
                  PointField.FLOAT32: "f", PointField.FLOAT64: "d"}
_NUMPY_OF_FORMAT = {"b": "i1", "B": "u1", "h": "i2", "H": "u2", "i": "i4", "I": "u4",
                    "f": "f4", "d": "f8"}
_CLOUD_NAMES = ["x", "y", "z", "rgb", "rgba", "r", "g", "b", "intensity", ""]


@st.composite
def point_clouds(draw) -> PointCloud2:
    """Clouds from consistent to absurd: fields, steps, sizes, endianness and data length."""
    fields = []
    for name in draw(st.lists(st.one_of(st.sampled_from(_CLOUD_NAMES), st.text(max_size=3)),
                              max_size=7)):
        fields.append(PointField(
            name=name,
            offset=draw(small_or_any(24)),
            datatype=draw(st.one_of(st.sampled_from(sorted(_FIELD_FORMATS)),
                                    st.integers(0, 255))),
            count=draw(st.one_of(st.just(1), small_or_any(3)))))
    packed = max((f.offset + struct.calcsize(_FIELD_FORMATS.get(f.datatype, "B"))
                  for f in fields), default=0)
    point_step = draw(st.one_of(
        st.sampled_from([s for s in (packed, packed + 3) if s < 2**32] or [0]),
        small_or_any(40)))
    width, height = draw(small_or_any(6)), draw(small_or_any(3))
    row_step = draw(st.one_of(
        st.sampled_from([s for s in (width * point_step, width * point_step + 5) if s < 2**32]
                        or [0]),
        small_or_any(200)))
    data = draw(byte_data(draw(lengths_around(row_step * height))))
    return PointCloud2(height=height, width=width, fields=fields,
                       is_bigendian=draw(st.booleans()), point_step=point_step,
                       row_step=row_step, data=data, is_dense=draw(st.booleans()))


def _cloud_columns_expected(msg: PointCloud2, names: list[str]) -> dict[str, np.ndarray] | None:
    """Oracle: the requested columns of a cloud decoded point by point with ``struct``, or None
    when the cloud must be refused (``names`` must all exist)."""
    by_name = Counter(field.name for field in msg.fields)
    fields = {field.name: field for field in msg.fields}
    for name in names:
        field = fields[name]
        if by_name[name] != 1 or field.count != 1 or field.datatype not in _FIELD_FORMATS:
            return None
    height, width = msg.height, msg.width
    num_points = height * width
    if num_points > 20_000_000:
        return None
    formats = {name: _FIELD_FORMATS[fields[name].datatype] for name in names}
    if num_points == 0:
        return {name: np.empty(0, _NUMPY_OF_FORMAT[formats[name]]) for name in names}
    if msg.point_step == 0 or msg.row_step < width * msg.point_step or \
            len(msg.data) < msg.row_step * height:
        return None
    if any(fields[name].offset + struct.calcsize(formats[name]) > msg.point_step
           for name in names):
        return None
    data = bytes(msg.data)
    order = ">" if msg.is_bigendian else "<"
    columns = {}
    for name in names:
        values = [struct.unpack_from(order + formats[name], data,
                                     row * msg.row_step + col * msg.point_step
                                     + fields[name].offset)[0]
                  for row in range(height) for col in range(width)]
        columns[name] = np.array(values, dtype=_NUMPY_OF_FORMAT[formats[name]])
    return columns


def same_values(actual: np.ndarray, expected: np.ndarray) -> bool:
    """Equal dtype, shape and bits (NaN payloads included)."""
    return actual.dtype == expected.dtype and actual.shape == expected.shape and \
        np.ascontiguousarray(actual).tobytes() == np.ascontiguousarray(expected).tobytes()


def check_cloud(msg: PointCloud2, required: tuple[str, ...] = ("x", "y", "z"),
                optional: tuple[str, ...] = ()) -> None:
    present = {field.name for field in msg.fields}
    wanted = [*dict.fromkeys([*required, *(n for n in optional if n in present)])]
    expected = _cloud_columns_expected(msg, wanted) if set(required) <= present else None
    fields = decode("cloud_fields", MessageError, cloud_fields, msg, required, optional)
    if expect("cloud_fields", fields, expected is not None, msg):
        assert list(fields) == wanted
        for name in wanted:
            assert fields[name].dtype.isnative
            assert same_values(fields[name], expected[name]), name
    check_xyz_rgb(msg)


def check_xyz_rgb(msg: PointCloud2) -> None:
    present = {field.name for field in msg.fields}
    colours = [n for n in ("rgb", "rgba", "r", "g", "b") if n in present]
    expected = (_cloud_columns_expected(msg, ["x", "y", "z", *colours])
                if {"x", "y", "z"} <= present else None)
    colour = None
    if expected is not None:
        if any(expected[axis].dtype.kind != "f" for axis in "xyz"):
            expected = None
        elif "rgb" in expected or "rgba" in expected:
            packed = expected["rgb" if "rgb" in expected else "rgba"]
            if packed.dtype.str[1:] in ("f4", "u4"):
                bits = packed.view(np.uint32).astype(np.int64)
                colour = np.stack([(bits >> 16) & 255, (bits >> 8) & 255, bits & 255],
                                  axis=1).astype(np.uint8)
            else:
                expected = None
        elif {"r", "g", "b"} <= set(expected):
            if all(expected[c].dtype == np.uint8 for c in "rgb"):
                colour = np.stack([expected[c] for c in "rgb"], axis=1)
            else:
                expected = None
    result = decode("xyz_rgb_from_cloud_msg", MessageError, xyz_rgb_from_cloud_msg, msg)
    if expect("xyz_rgb_from_cloud_msg", result, expected is not None, msg):
        xyz, rgb = result
        num_points = msg.width * msg.height
        assert xyz.shape == (num_points, 3) and xyz.dtype == np.float32
        assert xyz.flags.c_contiguous
        with np.errstate(over="ignore"):
            want = np.stack([expected[a].astype(np.float32) for a in "xyz"], axis=1)
        assert same_values(xyz, want)  # NaNs kept, bit for bit
        if colour is None:
            assert rgb is None
        else:
            assert same_values(rgb, colour)


@fuzz_settings(500, 1000)
@given(msg=point_clouds(), optional=st.lists(st.sampled_from(_CLOUD_NAMES), max_size=3),
       extra=st.lists(st.sampled_from(["rgb", "intensity", "w"]), max_size=2))
def test_fuzz_point_clouds(msg, optional, extra):
    check_cloud(msg, ("x", "y", "z", *extra), tuple(optional))


@fuzz_settings(100, 1000)
@given(n=st.integers(0, 9), bigendian=st.booleans(), seed=st.integers(0, 2**32 - 1),
       pad=st.integers(0, 4))
def test_fuzz_valid_clouds_decode_exactly(n, bigendian, seed, pad):
    """Well-formed clouds (any endianness, padded points) always decode, bit for bit."""
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, 256, n * 16, dtype=np.uint8).view(np.float32)
    header = Header(frame_id="map")
    cloud = cloud_msg_from_arrays(header, {"x": raw[0::4], "y": raw[1::4], "z": raw[2::4],
                                           "rgb": packed_from_rgb(rng.integers(0, 256, (n, 3),
                                                                  dtype=np.uint8))})
    if bigendian or pad:
        points = np.frombuffer(bytes(cloud.data), np.uint8).reshape(n, 16)
        if bigendian:
            points = points.reshape(n, 4, 4)[:, :, ::-1].reshape(n, 16)
        padded = np.zeros((n, 16 + pad), np.uint8)
        padded[:, :16] = points
        cloud.data = padded.tobytes()
        cloud.is_bigendian, cloud.point_step, cloud.row_step = bigendian, 16 + pad, n * (16 + pad)
    check_cloud(cloud, ("x", "y", "z"), ("rgb",))


# ---------------------------------------------------------------------------------------------
# Marker meshes
# ---------------------------------------------------------------------------------------------


def _quaternion_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (x, y, z, w) quaternions."""
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array([aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw,
                     aw * bw - ax * bx - ay * by - az * bz])


def _rotation_oracle(q: tuple[float, float, float, float]) -> np.ndarray | None:
    """(3, 3) rotation of a quaternion by q v q* on the basis vectors, None when q has no
    direction (non-finite or all zero)."""
    quaternion = np.array(q, dtype=np.float64)
    if not np.isfinite(quaternion).all() or not quaternion.any():
        return None
    quaternion /= np.abs(quaternion).max()  # no overflow or underflow in the norm
    quaternion /= math.sqrt(float(quaternion @ quaternion))
    conjugate = quaternion * [-1.0, -1.0, -1.0, 1.0]
    return np.stack([_quaternion_product(_quaternion_product(quaternion, [*axis, 0.0]),
                                         conjugate)[:3] for axis in np.eye(3)], axis=1)


_VALUES = st.one_of(st.floats(-5.0, 5.0), HOSTILE_FLOATS)


@st.composite
def points(draw, values: st.SearchStrategy[float] = _VALUES) -> Point:
    return Point(x=draw(values), y=draw(values), z=draw(values))


@st.composite
def colours(draw, hostile: bool = False) -> ColorRGBA:
    channel = (st.one_of(st.floats(width=32), st.sampled_from([math.nan, math.inf]))
               if hostile else st.floats(-0.5, 1.5, width=32))
    return ColorRGBA(r=draw(channel), g=draw(channel), b=draw(channel), a=draw(channel))


@st.composite
def quaternions(draw, values: st.SearchStrategy[float] = st.one_of(st.floats(-1.0, 1.0),
                                                                    HOSTILE_FLOATS)
                ) -> Quaternion:
    return Quaternion(**{k: draw(values) for k in "xyzw"})


@st.composite
def markers(draw) -> Marker:
    """Triangle-list markers with coordinates clean, of any finite magnitude or hostile, and
    at most one structural defect (type, action, point count, colour count or colours)."""
    values = draw(st.sampled_from([
        st.floats(-5.0, 5.0), st.floats(allow_nan=False, allow_infinity=False), _VALUES]))
    defect = draw(st.sampled_from(["none", "type", "action", "points", "colors", "colours"]))
    corners = draw(st.lists(points(values), max_size=4))
    triangles = draw(st.lists(st.tuples(*[st.integers(0, 3)] * 3), max_size=4))
    mesh = [corners[i] for t in triangles if max(t) < len(corners) for i in t]
    if defect == "points":
        mesh += draw(st.lists(points(values), min_size=1, max_size=2))
    count = draw(st.sampled_from([0, len(mesh)]))
    if defect == "colors":
        count = draw(st.integers(0, 7).filter(lambda c: c not in (0, len(mesh))))
    hostile = defect == "colours"
    marker = Marker(
        type=draw(st.integers(-1, 12)) if defect == "type" else Marker.TRIANGLE_LIST,
        action=draw(st.integers(-1, 4)) if defect == "action" else Marker.ADD,
        points=mesh, colors=[draw(colours(hostile)) for _ in range(count)],
        color=draw(colours(hostile)))
    marker.pose = Pose(position=draw(points(values)), orientation=draw(quaternions(values)))
    scale = st.one_of(st.just(1.0), values)
    marker.scale = Vector3(x=draw(scale), y=draw(scale), z=draw(scale))
    return marker


def check_marker(marker: Marker) -> None:
    p = np.array([[q.x, q.y, q.z] for q in marker.points], dtype=np.float64).reshape(-1, 3)
    if marker.colors:
        c = np.array([[q.r, q.g, q.b] for q in marker.colors], dtype=np.float64)
    else:
        c = np.tile([marker.color.r, marker.color.g, marker.color.b], (len(p), 1))
    o = marker.pose.orientation
    rotation = _rotation_oracle((o.x, o.y, o.z, o.w))
    t = np.array([marker.pose.position.x, marker.pose.position.y, marker.pose.position.z])
    s = np.array([marker.scale.x, marker.scale.y, marker.scale.z])
    valid = (marker.action == Marker.ADD and marker.type == Marker.TRIANGLE_LIST
             and len(p) % 3 == 0 and len(marker.colors) in (0, len(p))
             and np.isfinite(p).all() and np.isfinite(c).all() and np.isfinite(t).all()
             and rotation is not None and np.isfinite(s).all() and (s != 0.0).all())
    expected = None
    if valid:
        with np.errstate(over="ignore", invalid="ignore"):
            expected = (p * s) @ rotation.T + t
            # Vertices are float32 metres: a mesh beyond float32's range is garbage.
            valid = bool(np.isfinite(expected.astype(np.float32)).all())
    result = decode("mesh_from_marker", MessageError, mesh_from_marker, marker)
    if not expect("mesh_from_marker", result, valid, marker):
        return
    vertices, rgb, triangles = result
    assert vertices.dtype == np.float32 and rgb.dtype == np.uint8 and triangles.dtype == np.int32
    assert vertices.shape[1:] == (3,) and rgb.shape == vertices.shape
    assert triangles.shape == (len(p) // 3, 3)
    assert vertices.shape[0] <= len(p) and np.isfinite(vertices).all()
    corner = triangles.reshape(-1)
    assert ((corner >= 0) & (corner < vertices.shape[0])).all()
    assert np.unique(corner).size == vertices.shape[0]  # every vertex used
    # Each point lands where RViz draws it, with the colour of the first point there.
    scale = np.abs(p * s).sum(axis=1) + np.abs(t).sum() + 1e-30
    assert (np.abs(vertices[corner] - expected).max(axis=1, initial=0.0)
            <= 1e-5 * scale + 1e-37).all()
    first = {}
    for i, point in enumerate(map(tuple, (p + 0.0).tolist())):
        first.setdefault(point, i)
        assert corner[i] == corner[first[point]]
    want = np.rint(np.clip(c, 0.0, 1.0) * 255.0).astype(np.uint8)
    firsts = np.array([first[tuple(q)] for q in (p + 0.0).tolist()], dtype=np.int64)
    assert same_values(rgb[corner], want[firsts])


@fuzz_settings(400, 1000)
@given(marker=markers())
def test_fuzz_marker_meshes(marker):
    check_marker(marker)


# ---------------------------------------------------------------------------------------------
# Images and camera info
# ---------------------------------------------------------------------------------------------

_IMAGE_FORMATS = {"16UC1": ("H", 1, (0,)), "mono16": ("H", 1, (0,)), "32FC1": ("f", 1, (0,)),
                  "rgb8": ("B", 3, (0, 1, 2)), "bgr8": ("B", 3, (2, 1, 0)),
                  "rgba8": ("B", 4, (0, 1, 2)), "bgra8": ("B", 4, (2, 1, 0))}
_ENCODINGS = [*_IMAGE_FORMATS, "8UC3", "yuv422", "mono8", "16SC1", "RGB8", ""]


@st.composite
def images(draw) -> Image:
    encoding = draw(st.one_of(st.sampled_from(sorted(_IMAGE_FORMATS)), st.sampled_from(_ENCODINGS),
                              st.text(max_size=6)))
    code, channels, _ = _IMAGE_FORMATS.get(encoding, ("B", 3, ()))
    width, height = draw(small_or_any(5)), draw(small_or_any(4))
    row = width * channels * struct.calcsize(code)
    step = draw(st.one_of(st.sampled_from([s for s in (row, row + 3) if s < 2**32] or [0]),
                          small_or_any(64)))
    data = draw(byte_data(draw(lengths_around(step * height))))
    return Image(height=height, width=width, encoding=encoding,
                 is_bigendian=draw(st.one_of(st.integers(0, 1), st.integers(0, 255))),
                 step=step, data=data)


def _pixels_expected(msg: Image) -> np.ndarray | None:
    """Oracle: an image's pixels decoded with ``struct``, or None when it must be refused."""
    if msg.encoding not in _IMAGE_FORMATS:
        return None
    code, channels, order = _IMAGE_FORMATS[msg.encoding]
    height, width = msg.height, msg.width
    size = struct.calcsize(code)
    numpy_code = _NUMPY_OF_FORMAT[code]
    if height * width > 50_000_000:
        return None
    if height * width == 0:
        return np.empty((height, width) + ((3,) if channels > 1 else ()), numpy_code)
    if msg.step < width * channels * size or len(msg.data) < msg.step * height:
        return None
    data = bytes(msg.data)
    endian = ">" if msg.is_bigendian else "<"
    pixels = np.array([[struct.unpack_from(f"{endian}{channels}{code}", data,
                                           row * msg.step + col * channels * size)
                        for col in range(width)] for row in range(height)], dtype=numpy_code)
    return pixels[:, :, 0] if channels == 1 else pixels[:, :, list(order)]


def check_image(msg: Image) -> None:
    expected = _pixels_expected(msg)
    pixels = decode("image_array", MessageError, image_array, msg)
    if expect("image_array", pixels, expected is not None, msg):
        assert pixels.dtype.isnative and same_values(pixels, expected)
    depth = decode("depth_m_from_image", MessageError, depth_m_from_image, msg)
    is_depth = msg.encoding in ("16UC1", "mono16", "32FC1")
    if expect("depth_m_from_image", depth, expected is not None and is_depth, msg):
        if msg.encoding == "32FC1":
            want = np.where(np.isfinite(expected) & (expected > 0), expected, np.float32(0.0))
        else:
            want = expected.astype(np.float32) / np.float32(1000.0)
        assert same_values(depth, want.astype(np.float32))
        assert np.isfinite(depth).all() and (depth >= 0.0).all()
    rgb = decode("rgb_from_image", MessageError, rgb_from_image, msg)
    if expect("rgb_from_image", rgb, expected is not None and not is_depth, msg):
        assert rgb.shape == (msg.height, msg.width, 3) and same_values(rgb, expected)


@fuzz_settings(500, 1000)
@given(msg=images())
def test_fuzz_images(msg):
    check_image(msg)


@st.composite
def camera_infos(draw) -> CameraInfo:
    entries = st.one_of(st.floats(-600.0, 600.0), HOSTILE_FLOATS)
    if draw(st.booleans()):
        k = [draw(entries), 0.0, draw(entries), 0.0, draw(entries), draw(entries), 0.0, 0.0, 1.0]
    else:
        k = draw(st.lists(entries, min_size=9, max_size=9))
    return CameraInfo(width=draw(small_or_any(2)), height=draw(small_or_any(2)), k=k,
                      d=draw(st.lists(HOSTILE_FLOATS, max_size=14)),
                      p=draw(st.lists(entries, min_size=12, max_size=12)),
                      distortion_model=draw(st.text(max_size=8)))


def check_camera_info(msg: CameraInfo) -> None:
    k = np.array(msg.k, dtype=np.float64)
    valid = (msg.width > 0 and msg.height > 0 and np.isfinite(k).all() and k[0] > 0.0
             and k[4] > 0.0 and list(k[6:]) == [0.0, 0.0, 1.0])
    result = decode("intrinsics_from_camera_info", MessageError, intrinsics_from_camera_info,
                    msg)
    if expect("intrinsics_from_camera_info", result, valid, msg):
        matrix, width, height = result
        assert (width, height) == (msg.width, msg.height)
        assert matrix.shape == (3, 3) and matrix.dtype == np.float64
        assert same_values(matrix.reshape(9), k)


@fuzz_settings(300, 1000)
@given(msg=camera_infos())
def test_fuzz_camera_info(msg):
    check_camera_info(msg)


# ---------------------------------------------------------------------------------------------
# Poses, transforms and stamps
# ---------------------------------------------------------------------------------------------


def _check_rigid(name: str, function: Callable, message: object, q: Quaternion,
                 translation: Point | Vector3) -> None:
    rotation = _rotation_oracle((q.x, q.y, q.z, q.w))
    t = np.array([translation.x, translation.y, translation.z])
    matrix = decode(name, MessageError, function, message)
    if expect(name, matrix, rotation is not None and np.isfinite(t).all(), message):
        assert matrix.shape == (4, 4) and matrix.dtype == np.float64
        assert np.isfinite(matrix).all()
        assert matrix[3].tolist() == [0.0, 0.0, 0.0, 1.0]
        assert same_values(matrix[:3, 3], t)
        r = matrix[:3, :3]
        assert np.allclose(r.T @ r, np.eye(3), rtol=0.0, atol=1e-9)
        assert abs(np.linalg.det(r) - 1.0) < 1e-9
        assert np.allclose(r, rotation, rtol=0.0, atol=1e-9)


def check_pose(pose: Pose) -> None:
    _check_rigid("matrix_from_pose", matrix_from_pose, pose, pose.orientation, pose.position)


def check_stamp(stamp: Time) -> None:
    seconds = decode("seconds_from_stamp", MessageError, seconds_from_stamp, stamp)
    if expect("seconds_from_stamp", seconds, stamp.nanosec < 1_000_000_000, stamp):
        assert isinstance(seconds, float) and math.isfinite(seconds)
        assert seconds == stamp.sec + stamp.nanosec * 1e-9
        assert stamp.sec <= seconds <= stamp.sec + 1  # float64 rounds large seconds


@fuzz_settings(400, 1000)
@given(position=points(), orientation=quaternions())
def test_fuzz_poses_and_transforms(position, orientation):
    check_pose(Pose(position=position, orientation=orientation))
    transform = Transform(translation=Vector3(x=position.x, y=position.y, z=position.z),
                          rotation=orientation)
    _check_rigid("matrix_from_transform", matrix_from_transform, transform, orientation,
                 transform.translation)


@fuzz_settings(300, 1000)
@given(sec=I32, nanosec=st.one_of(st.integers(0, 999_999_999),
                                  st.integers(999_999_990, 1_000_000_010), U32))
def test_fuzz_stamps(sec, nanosec):
    check_stamp(Time(sec=sec, nanosec=nanosec))


# ---------------------------------------------------------------------------------------------
# Serialised messages (what raw subscriptions and bags hand over)
# ---------------------------------------------------------------------------------------------


def sample_messages() -> dict[str, tuple[str, object]]:
    """Topic -> (type name, a real message of that type) for the serialised-bytes fuzz."""
    rng = np.random.default_rng(3)
    header = Header(frame_id="map")
    header.stamp.sec, header.stamp.nanosec = 5, 250_000_000
    xyz = rng.uniform(-2.0, 2.0, (4, 3)).astype(np.float32)
    xyz[1, 0] = np.nan
    cloud = cloud_msg_from_arrays(header, {
        "x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2],
        "rgb": packed_from_rgb(rng.integers(0, 256, (4, 3), dtype=np.uint8))})
    depth = image_msg_from_array(header, np.array([[500, 0], [1200, 65535]], np.uint16),
                                 "16UC1")
    colour = image_msg_from_array(header, rng.integers(0, 256, (2, 3, 3), dtype=np.uint8),
                                  "bgr8")
    info = CameraInfo(header=header, width=2, height=2, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=[2.0, 0.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0],
                      p=[2.0, 0.0, 1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    pose = PoseStamped(header=header, pose=Pose(
        position=Point(x=1.0, y=-2.0, z=0.5), orientation=Quaternion(x=0.0, y=0.0, z=0.6,
                                                                     w=0.8)))
    triangle = [Point(x=0.0), Point(x=1.0), Point(y=1.0), Point(x=0.0), Point(y=1.0),
                Point(z=1.0)]
    marker = Marker(header=header, type=Marker.TRIANGLE_LIST, action=Marker.ADD,
                    points=triangle, scale=Vector3(x=1.0, y=1.0, z=1.0),
                    color=ColorRGBA(r=0.5, g=0.25, b=1.0, a=1.0))
    marker.pose.orientation.w = 1.0
    return {"/surface_cloud": ("sensor_msgs/msg/PointCloud2", cloud),
            "/depth/image": ("sensor_msgs/msg/Image", depth),
            "/color/image": ("sensor_msgs/msg/Image", colour),
            "/depth/camera_info": ("sensor_msgs/msg/CameraInfo", info),
            "/camera_pose": ("geometry_msgs/msg/PoseStamped", pose),
            "/surface_mesh": ("visualization_msgs/msg/MarkerArray",
                              MarkerArray(markers=[marker, marker]))}


SAMPLES = sample_messages()
SERIALISED = {topic: (message_class(kind), serialize_message(msg))
              for topic, (kind, msg) in SAMPLES.items()}
#: Little-endian words that make CDR lengths and counts absurd.
_NASTY_WORDS = [b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
                b"\x00\x00\x01\x00", b"\x00\x00\x00\x00", b"\x07\x00\x00\x00"]


@st.composite
def mutations(draw, length: int) -> list[tuple]:
    """Edits of a byte string: truncate, flip bits, overwrite words, insert, delete."""
    position = st.integers(0, max(length - 1, 0))
    edit = st.one_of(
        st.tuples(st.just("truncate"), st.integers(0, length)),
        st.tuples(st.just("flip"), position, st.integers(0, 7)),
        st.tuples(st.just("word"), position, st.sampled_from(_NASTY_WORDS)),
        st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=8)),
        st.tuples(st.just("delete"), position, st.integers(1, 8)),
    )
    return draw(st.lists(edit, min_size=1, max_size=4))


def mutate(data: bytes, edits: list[tuple]) -> bytes:
    out = bytearray(data)
    for kind, where, *what in edits:
        where = min(where, len(out))
        if kind == "truncate":
            del out[where:]
        elif kind == "flip" and where < len(out):
            out[where] ^= 1 << what[0]
        elif kind == "word":
            out[where:where + 4] = what[0]
        elif kind == "insert":
            out[where:where] = what[0]
        elif kind == "delete":
            del out[where:where + what[0]]
    return bytes(out)


def check_decoded(topic: str, msg: object) -> None:
    """Run every decoder a node applies to ``msg`` (received on ``topic``)."""
    if isinstance(msg, PointCloud2):
        check_cloud(msg, ("x", "y", "z"), ("rgb",))
    elif isinstance(msg, Image):
        check_image(msg)
        check_stamp(msg.header.stamp)
    elif isinstance(msg, CameraInfo):
        check_camera_info(msg)
    elif isinstance(msg, PoseStamped):
        check_pose(msg.pose)
        check_stamp(msg.header.stamp)
    elif isinstance(msg, MarkerArray):
        for marker in msg.markers[:4]:
            check_marker(marker)
    else:
        raise AssertionError(f"unexpected message {type(msg).__name__} on {topic}")


def check_bytes(topic: str, msg_type: type, data: bytes) -> None:
    msg = decode("message_from_bytes", MessageError, message_from_bytes, data, msg_type)
    if msg is not _REJECTED:
        assert isinstance(msg, msg_type)
        check_decoded(topic, msg)


@fuzz_settings(400, 1000)
@given(topic=st.sampled_from(sorted(SERIALISED)), data=st.data())
def test_fuzz_serialised_messages(topic, data):
    msg_type, good = SERIALISED[topic]
    check_bytes(topic, msg_type, mutate(good, data.draw(mutations(len(good)))))


@fuzz_settings(200, 1000)
@given(topic=st.sampled_from(sorted(SERIALISED)), data=st.binary(max_size=300))
def test_fuzz_random_bytes_as_messages(topic, data):
    check_bytes(topic, SERIALISED[topic][0], data)


def test_unmutated_messages_decode():
    for topic, (msg_type, data) in SERIALISED.items():
        msg = message_from_bytes(data, msg_type)
        assert msg == SAMPLES[topic][1]
        check_decoded(topic, msg)


# ---------------------------------------------------------------------------------------------
# Scene files
# ---------------------------------------------------------------------------------------------

#: What can be wrong with one array of a file.
FAULTS = ["none", "none", "missing", "dtype", "dtype", "dtype", "shape"]
#: Other types for an array, by what it holds: near misses first, then anything numpy saves.
_ARRAY_DTYPES = ["f2", "f4", "f8", "f16", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?",
                 "c8", "U3", "S2", "m8[s]", "M8[s]"]
_OTHER_DTYPES = {"coordinates": ["f8", "f16", "c8", "m8[s]", "U3", "?", "i8", "u8"],
                 "colours": ["f4", "f8", "i8", "U3", "S2", "c8", "?", "m8[s]"],
                 "ids": ["i8", "u8", "u4", "i2", "m8[s]", "f4", "?", "U3"]}


def other_dtype(kind: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(_OTHER_DTYPES[kind]), st.sampled_from(_ARRAY_DTYPES))


@st.composite
def scene_arrays(draw) -> dict[str, np.ndarray]:
    """The arrays of an .npz scene: usual shapes and types, each array sometimes missing or
    of any other type or shape, and any values of the type (NaN, huge) sometimes."""
    n = draw(st.integers(0, 5))
    usual = {"xyz": ("f4", (n, 3)), "rgb": ("u1", (n, 3)), "semantic": ("i4", (n,)),
             "instance": ("i4", (n,))}
    keys = ["xyz", *(key for key in list(usual)[1:] if draw(st.booleans()))]
    arrays = {}
    for key in keys:
        dtype, shape = usual[key]
        fault = draw(st.sampled_from(FAULTS))
        if fault == "missing":
            continue
        if fault == "dtype":
            dtype = draw(other_dtype({"xyz": "coordinates", "rgb": "colours"}.get(key, "ids")))
        if fault == "shape":
            shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
        elements = None  # anything of the type: NaN, infinities, extremes
        if draw(st.booleans()) and dtype == "f4":
            elements = st.floats(-10.0, 10.0, width=32)
        elif draw(st.booleans()) and key in ("semantic", "instance") and dtype == "i4":
            elements = st.integers(-1, 40)
        arrays[key] = draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))
    if draw(st.booleans()):
        arrays["extra"] = draw(hnp.arrays(np.dtype("f4"), (2,)))
    return arrays


def _scene_expected(arrays: dict[str, np.ndarray]) -> dict | None:
    """Oracle for an .npz scene: the expected points and labels, or None when it must fail."""
    xyz = arrays.get("xyz")
    if xyz is None or xyz.ndim != 2 or xyz.shape[1] != 3 or xyz.dtype.kind not in "iuf":
        return None
    n = xyz.shape[0]
    shapes = {"rgb": (n, 3), "semantic": (n,), "instance": (n,)}
    if any(key in arrays and arrays[key].shape != shape for key, shape in shapes.items()):
        return None
    if n == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        xyz32 = xyz.astype(np.float32)
    keep = np.isfinite(xyz32).all(axis=1)
    if not keep.any():
        return None
    rgb = arrays.get("rgb")
    if rgb is not None and rgb.dtype != np.uint8:
        if rgb.dtype.kind not in "iuf":
            return None
        with np.errstate(over="ignore"):
            if not np.isfinite(rgb[keep].astype(np.float64)).all():
                return None
    labels = {}
    for key in ("semantic", "instance"):
        value = arrays.get(key)
        if value is not None:
            if value.dtype.kind not in "iu":
                return None
            kept = value[keep]
            if kept.size and (kept.min() < -2**31 or kept.max() > 2**31 - 1):
                return None
            labels[key] = kept.astype(np.int64)
    return {"xyz": xyz32[keep], "keep": keep, "n": n, "labels": labels}


def check_scene(path: Path, expected: dict | None = None, known: bool = False) -> None:
    """``load_scene`` refuses with a SceneError or returns a sane scene; with ``known`` the
    oracle ``expected`` (None: must fail) decides, and the values must match it."""
    name = f"load_scene({path.suffix})"
    scene = decode(name, SceneError, load_scene, path)
    if known:
        expect(name, scene, expected is not None, path)
    if scene is _REJECTED:
        return
    n = scene.num_points
    assert n >= 1 and scene.xyz.shape == (n, 3) and scene.xyz.dtype == np.float32
    assert np.isfinite(scene.xyz).all()
    assert scene.rgb.shape == (n, 3) and scene.rgb.dtype == np.uint8
    for labels in (scene.semantic, scene.instance):
        assert labels is None or (labels.shape == (n,) and labels.dtype == np.int32)
    assert scene.source_points is not None and scene.source_points >= n
    if scene.source_index is None:
        assert scene.source_points == n
    else:
        index = scene.source_index
        assert index.shape == (n,) and (np.diff(index) > 0).all()
        assert index[0] >= 0 and index[-1] < scene.source_points and n < scene.source_points
    if known and expected is not None:
        assert same_values(scene.xyz, expected["xyz"])
        dropped = not expected["keep"].all()
        assert (scene.source_index is not None) == dropped and scene.source_points == \
            expected["n"]
        if dropped:
            assert np.array_equal(scene.source_index, np.flatnonzero(expected["keep"]))
        for key, want in expected["labels"].items():
            assert np.array_equal(getattr(scene, key).astype(np.int64), want), key


@fuzz_settings(250, 2000)
@given(arrays=scene_arrays(), compressed=st.booleans())
def test_fuzz_npz_scenes(arrays, compressed):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.npz"
        (np.savez_compressed if compressed else np.savez)(path, **arrays)
        check_scene(path, _scene_expected(arrays), known=True)


def _good_npz(compressed: bool) -> bytes:
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(6, 3)).astype(np.float32)
    xyz[2, 1] = np.nan
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "good.npz"
        (np.savez_compressed if compressed else np.savez)(
            path, xyz=xyz, rgb=rng.integers(0, 256, (6, 3), dtype=np.uint8),
            semantic=np.arange(6, dtype=np.int32), instance=np.full(6, -1, np.int32))
        return path.read_bytes()


GOOD_NPZ = {compressed: _good_npz(compressed) for compressed in (False, True)}


@fuzz_settings(200, 2000)
@given(compressed=st.booleans(), data=st.data())
def test_fuzz_mutated_npz_files(compressed, data):
    good = GOOD_NPZ[compressed]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.npz"
        path.write_bytes(mutate(good, data.draw(mutations(len(good)))))
        check_scene(path)


@fuzz_settings(150, 2000)
@given(data=st.binary(max_size=400), suffix=st.sampled_from([".npz", ".ply", ".PLY", ".txt"]),
       magic=st.sampled_from([b"", b"PK\x03\x04", b"\x93NUMPY", b"ply\n", b"ply\r\n"]))
def test_fuzz_random_scene_files(data, suffix, magic):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"scene{suffix}"
        path.write_bytes(magic + data)
        check_scene(path)


_PREDICTION_KEYS = ("semantic", "instance", "instance_ids", "instance_labels",
                    "instance_scores")


@st.composite
def prediction_arrays(draw) -> dict[str, np.ndarray]:
    """The arrays of a prediction file: consistent, each array sometimes missing or of any
    other type or shape, and any values of the type (NaN, huge) sometimes."""
    n, n_inst = draw(st.integers(0, 4)), draw(st.integers(0, 3))
    usual = {"semantic": ("i4", (n,)), "instance": ("i4", (n,)), "instance_ids": ("i4", (n_inst,)),
             "instance_labels": ("i4", (n_inst,)), "instance_scores": ("f4", (n_inst,))}
    arrays = {}
    for key, (dtype, shape) in usual.items():
        fault = draw(st.sampled_from(FAULTS))
        if fault == "missing":
            continue
        if fault == "dtype":
            dtype = draw(other_dtype("colours" if key == "instance_scores" else "ids"))
        if fault == "shape":
            shape = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3))
        elements = None  # anything of the type: NaN, infinities, extremes
        if draw(st.booleans()) and key == "instance" and dtype == "i4":
            elements = st.integers(-1, n_inst - 1)
        elif draw(st.booleans()) and key == "instance_scores" and dtype == "f4":
            elements = st.floats(0.0, 1.0, width=32)
        arrays[key] = draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))
    return arrays


def _prediction_valid(arrays: dict[str, np.ndarray]) -> bool:
    """Oracle: whether a prediction file of these arrays must load."""
    if any(key not in arrays for key in _PREDICTION_KEYS):
        return False
    semantic, instance, ids, labels, scores = (arrays[key] for key in _PREDICTION_KEYS)
    if any(a.dtype.kind not in "iu" for a in (semantic, instance, ids, labels)) or \
            scores.dtype.kind not in "iuf":
        return False
    if semantic.ndim != 1 or instance.shape != semantic.shape or ids.ndim != 1:
        return False
    n_inst = ids.shape[0]
    if labels.shape != (n_inst,) or scores.shape != (n_inst,):
        return False
    if not np.isfinite(scores).all():
        return False
    return not instance.size or (-1 <= instance.min() and instance.max() < n_inst)


def check_prediction_file(path: Path, arrays: dict[str, np.ndarray] | None = None) -> None:
    """``PredictionFile.load`` refuses with a SceneError or returns consistent predictions;
    with the ``arrays`` written, exactly those when the oracle calls them valid."""
    pred = decode("PredictionFile.load", SceneError, PredictionFile.load, path)
    if arrays is not None:
        expect("PredictionFile.load", pred, _prediction_valid(arrays), path)
    if pred is _REJECTED:
        return
    n_inst = pred.instance_ids.shape[0]
    assert pred.semantic.ndim == 1 and pred.instance.shape == pred.semantic.shape
    assert pred.instance_labels.shape == pred.instance_scores.shape == (n_inst,)
    assert np.isfinite(pred.instance_scores).all()
    assert ((pred.instance >= -1) & (pred.instance < n_inst)).all()
    if arrays is not None:
        for key in _PREDICTION_KEYS:
            assert same_values(getattr(pred, key), arrays[key])


@fuzz_settings(150, 2000)
@given(arrays=prediction_arrays())
def test_fuzz_prediction_files(arrays):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pred.npz"
        np.savez(path, **arrays)
        check_prediction_file(path, arrays)


def _good_prediction_file() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pred.npz"
        PredictionFile(semantic=np.array([5, 5, 1, 3]), instance=np.array([0, 0, -1, 1]),
                       instance_ids=np.array([0, 1]), instance_labels=np.array([5, 3]),
                       instance_scores=np.array([0.9, 0.4])).save(path)
        return path.read_bytes()


GOOD_PREDICTIONS = _good_prediction_file()


@fuzz_settings(100, 2000)
@given(data=st.data())
def test_fuzz_mutated_prediction_files(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pred.npz"
        path.write_bytes(mutate(GOOD_PREDICTIONS, data.draw(mutations(len(GOOD_PREDICTIONS)))))
        check_prediction_file(path)


_PLY_NUMPY = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4",
              "uint": "u4", "float": "f4", "double": "f8", "int8": "i1", "uint8": "u1",
              "int32": "i4", "float32": "f4", "float64": "f8"}


@st.composite
def ply_files(draw) -> tuple[bytes, dict | None]:
    """A well-formed PLY (any format, elements before and after the vertices) and the scene
    it holds as the oracle expects it (None when the scene itself is not valid)."""
    fmt = draw(st.sampled_from(["ascii", "binary_little_endian", "binary_big_endian"]))
    n = draw(st.integers(0, 4))
    props = [("x", draw(st.sampled_from(["float", "double", "float32"]))), ("y", "float"),
             ("z", draw(st.sampled_from(["float", "double", "int"])))]
    if draw(st.booleans()):
        props += [(c, draw(st.sampled_from(["uchar", "uint8"]))) for c in ("red", "green", "blue")]
    if draw(st.booleans()):
        props += [("label", draw(st.sampled_from(["int", "ushort", "uint"]))), ("instance", "int")]
    props += draw(st.lists(st.tuples(st.sampled_from(["nx", "alpha", "quality"]),
                                     st.sampled_from(sorted(_PLY_NUMPY))), max_size=2,
                           unique_by=lambda p: p[0]))
    endian = ">" if fmt == "binary_big_endian" else "<"
    dtype = np.dtype([(name, endian + _PLY_NUMPY[kind]) for name, kind in props])
    vertices = np.zeros(n, dtype)
    for name, kind in props:
        vertices[name] = draw(hnp.arrays(np.dtype(_PLY_NUMPY[kind]), n, elements=(
            st.floats(-3.0, 3.0, width=32) if "f" in _PLY_NUMPY[kind] and name in "xyz"
            else None)))
    before = draw(st.integers(0, 2))
    header = ["ply", f"format {fmt} 1.0", "comment fuzzed"]
    if before:
        header += [f"element camera {before}", "property float gain", "property uchar id"]
    header += [f"element vertex {n}"] + [f"property {kind} {name}" for name, kind in props]
    header += ["element face 1", "property list uchar int vertex_indices", "end_header"]
    camera = np.zeros(before, [("gain", endian + "f4"), ("id", "u1")])
    if fmt == "ascii":
        body = "".join(f"{g} {i}\n" for g, i in camera.tolist())
        body += "".join(" ".join(repr(v) for v in row) + "\n" for row in vertices.tolist())
        body = (body + "3 0 1 2\n").encode()
    else:
        body = camera.tobytes() + vertices.tobytes() + b"\x03" + np.array(
            [0, 1, 2], endian + "i4").tobytes()
    data = ("\n".join(header) + "\n").encode() + body
    arrays = {"xyz": np.stack([vertices[a] for a in "xyz"], axis=1)} if n else {
        "xyz": np.zeros((0, 3), np.float32)}
    names = [name for name, _ in props]
    if n and "label" in names:
        arrays["semantic"], arrays["instance"] = vertices["label"], vertices["instance"]
    return data, _scene_expected(arrays)


@fuzz_settings(250, 2000)
@given(ply=ply_files(), data=st.data())
def test_fuzz_ply_scenes(ply, data):
    good, expected = ply
    header_end = good.index(b"end_header")
    edits = data.draw(st.one_of(st.just([]), mutations(len(good)),
                                mutations(header_end)))  # header only
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.ply"
        path.write_bytes(mutate(good, edits))
        check_scene(path, expected, known=not edits)


@fuzz_settings(200, 2000)
@given(lines=st.lists(st.one_of(
    st.sampled_from(["element vertex 2", "element vertex -1", "element vertex x",
                     "element vertex 99999999999999999999", "element vertex", "element",
                     "property float x", "property float y", "property float z", "property",
                     "property list", "property list uchar", "property float", "property x y",
                     "property uchar red", "property float x extra", "format ascii 1.0",
                     "format binary_little_endian 1.0", "format", "format binary_big_endian",
                     "element face 1", "property list uchar int vertex_indices", "comment",
                     "obj_info", "", "property double x", "property int label"]),
    st.text(max_size=12)), max_size=10),
    body=st.one_of(st.binary(max_size=64),
                   st.sampled_from([b"1 2 3\n4 5 6\n", b"nan 1 2\n1e400 0 0\n", b"1 2\n",
                                    b"a b c\n", b"\n\n", b"1 2 3 4\n1 2 3\n",
                                    b"3 0 1 2\n1 2 3\n"])))
def test_fuzz_ply_headers(lines, body):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scene.ply"
        path.write_bytes(("\n".join(["ply", *lines, "end_header"]) + "\n").encode(
            "utf-8", "surrogatepass") + body)
        check_scene(path)


@pytest.mark.parametrize("lines, body", [
    (["format binary_little_endian 1.0", "element vertex -1", "property float x",
      "property float y", "property float z"], bytes(24)),  # was: read every vertex there
    (["format ascii 1.0", "element vertex 1", "property float x", "property float y",
      "property float z", "property uchar red", "property uchar green", "property uchar blue"],
     b"1 2 3 300 -1 2.5\n"),  # was: colours wrapped to (44, 255, 2)
    (["format ascii 1.0", "element vertex 1", "property float x", "property float y",
      "property float z", "property int label"], b"1 2 3 1e12\n"),  # was: label -2**31
    (["format ascii 1.0", "property float x", "element vertex 1", "property float x",
      "property float y", "property float z"], b"1 2 3\n"),  # was: the stray line ignored
    (["format ascii 1.0", "element vertex 1", "property"], b"1\n"),  # was: IndexError
    (["format ascii 1.0", "element vertex 1", "property float x", "property float x",
      "property float y", "property float z"], b"1 2 3 4\n"),  # was: numpy's ValueError
])
def test_ply_headers_and_values_that_do_not_fit_are_refused(tmp_path, lines, body):
    path = tmp_path / "bad.ply"
    path.write_bytes(("\n".join(["ply", *lines, "end_header"]) + "\n").encode() + body)
    with pytest.raises(SceneError, match="PLY"):
        load_scene(path)


def test_write_ply_files_round_trip_through_the_fuzz_oracle(tmp_path):
    rng = np.random.default_rng(4)
    xyz = rng.normal(size=(5, 3)).astype(np.float32)
    xyz[0] = np.inf
    label = np.array([1, 2, 3, 4, 2**31 - 1], np.int32)
    instance = np.array([-1, 0, 0, 1, 1], np.int32)
    path = tmp_path / "written.ply"
    write_ply(path, xyz, rng.integers(0, 256, (5, 3), dtype=np.uint8),
              {"label": label, "instance": instance})
    check_scene(path, _scene_expected({"xyz": xyz, "semantic": label, "instance": instance}),
                known=True)


# ---------------------------------------------------------------------------------------------
# Bags
# ---------------------------------------------------------------------------------------------


def write_bag(out: Path, storage: str) -> list[tuple[str, str, int, bytes]]:
    """A small real bag of every sample message twice; returns what was written."""
    typestore = get_typestore(Stores.ROS2_KILTED)
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    writer = Writer(out, version=9, storage_plugin=plugin)
    writer.open()
    connections = {topic: writer.add_connection(topic, kind, typestore=typestore)
                   for topic, (kind, _) in SAMPLES.items()}
    written = []
    for step in range(2):
        for i, (topic, (kind, _)) in enumerate(SAMPLES.items()):
            timestamp = 1_700_000_000_000_000_000 + 10_000_000 * (step * len(SAMPLES) + i)
            data = SERIALISED[topic][1]
            writer.write(connections[topic], timestamp, data)
            written.append((topic, kind, timestamp, data))
    writer.close()
    return written


class GoodBags(dict):
    """storage -> (bag directory, messages written); short in hypothesis' failure reports."""

    def __repr__(self) -> str:
        return f"GoodBags({sorted(self)})"


@pytest.fixture(scope="module")
def good_bags(tmp_path_factory) -> GoodBags:
    root = tmp_path_factory.mktemp("fuzz_bags")
    return GoodBags({storage: (root / storage, write_bag(root / storage, storage))
                     for storage in ("mcap", "sqlite3")})


def check_bag(path: Path, written: list | None = None, topics: list[str] | None = None
              ) -> None:
    """bag_info and bag_messages refuse with a BagError or give a sane summary and messages;
    ``written`` (an untouched bag) must read back exactly; ``topics`` selects exactly those."""
    info = decode("bag_info", BagError, bag_info, path)
    if info is not _REJECTED:
        assert info.storage in ("mcap", "sqlite3")
        assert isinstance(info.duration_s, float) and 0.0 <= info.duration_s < math.inf
        assert isinstance(info.start_ns, int) and info.start_ns >= 0
        for topic, (kind, count) in info.topics.items():
            assert isinstance(topic, str) and isinstance(kind, str)
            assert type(count) is int and count >= 0
        assert info.format()
    messages = decode("bag_messages", BagError, lambda p: list(bag_messages(p)), path)
    if written is not None:
        assert messages == written
        assert info.topics == {t: (k, 2) for t, (k, _) in SAMPLES.items()}
    if messages is _REJECTED:
        return
    if topics is not None:
        chosen = decode("bag_messages", BagError, lambda p: list(bag_messages(p, topics)), path)
        if chosen is not _REJECTED:
            assert chosen == [m for m in messages if m[0] in topics]
    timestamps = [timestamp for _, _, timestamp, _ in messages]
    assert timestamps == sorted(timestamps), "bag messages out of time order"
    for topic, kind, timestamp, data in messages[:12]:
        assert isinstance(topic, str) and isinstance(kind, str) and isinstance(data, bytes)
        assert type(timestamp) is int and timestamp >= 0
        if info is not _REJECTED:
            assert info.topics.get(topic, (kind,))[0] == kind
        msg_type = decode("message_class", ValueError, message_class, kind)
        if msg_type is not _REJECTED:
            check_bytes(topic, msg_type, data)


def test_good_bags_read_back(good_bags):
    for path, written in good_bags.values():
        check_bag(path, written, ["/camera_pose", "/not_recorded"])
        assert list(bag_messages(path, ["/not_recorded"])) == []


_TOPIC_CHOICES = st.lists(st.sampled_from([*SAMPLES, "/not_recorded"]), max_size=3)


def test_sqlite_row_timestamp_out_of_index_order_is_a_bag_error(good_bags):
    """A bit flip in a message row's timestamp leaves sqlite's timestamp index as it was, so
    the rows come back out of time order: refused, not passed on."""
    good, written = good_bags["sqlite3"]
    original = _storage_file(good).read_bytes()
    stamp = struct.pack(">q", written[1][2])  # sqlite stores integers big-endian
    offsets = [i for i in range(len(original)) if original.startswith(stamp, i)]
    assert offsets
    refused = 0
    for offset in offsets:
        with tempfile.TemporaryDirectory() as tmp:
            bag = Path(tmp) / "bag"
            shutil.copytree(good, bag)
            _storage_file(bag).write_bytes(mutate(original, [("flip", offset + 2, 0)]))
            try:
                timestamps = [t for _, _, t, _ in bag_messages(bag)]
            except BagError:
                refused += 1
            else:
                assert timestamps == sorted(timestamps)
    assert refused


def _storage_file(bag: Path) -> Path:
    return next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))


@fuzz_settings(50, 10_000)
@given(storage=st.sampled_from(["mcap", "sqlite3"]), topics=_TOPIC_CHOICES, data=st.data())
def test_fuzz_corrupt_bag_storage(good_bags, storage, topics, data):
    good, _ = good_bags[storage]
    original = _storage_file(good).read_bytes()
    edits = data.draw(st.one_of(
        st.lists(st.tuples(st.just("truncate"), st.integers(0, len(original))), min_size=1,
                 max_size=1),
        mutations(len(original)),
        st.lists(st.tuples(st.just("flip"), st.integers(0, len(original) - 1),
                           st.integers(0, 7)), min_size=1, max_size=24)))
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bag"
        shutil.copytree(good, bag)
        _storage_file(bag).write_bytes(mutate(original, edits))
        check_bag(bag, topics=topics)


def _metadata_paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a parsed metadata.yaml."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _metadata_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            paths += _metadata_paths(value, (*prefix, i))
    return paths


_YAML_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.integers(-3, 3),
    st.floats(allow_nan=True), st.text(max_size=8), st.sampled_from(
        ["sqlite3", "mcap", "zstd", "file", "message", "cdr", "sensor_msgs/msg/Image",
         "os/path/join", "no_such_pkg/msg/X", "sensor_msgs/msg", "../../x.mcap", ""]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                         max_size=2))


@fuzz_settings(50, 10_000)
@given(storage=st.sampled_from(["mcap", "sqlite3"]), topics=_TOPIC_CHOICES, data=st.data())
def test_fuzz_bag_metadata(good_bags, storage, topics, data):
    good, _ = good_bags[storage]
    text = (good / "metadata.yaml").read_text()
    if data.draw(st.integers(0, 5)) == 0:
        text = data.draw(st.one_of(
            st.text(max_size=80),
            st.sampled_from(["", "[", "a: &a [*a]", "rosbag2_bagfile_information: 3",
                             "rosbag2_bagfile_information: {version: 9}", "\x00\x01",
                             "!!python/object:os.system 'true'"]),
            st.builds(lambda cut: text[:cut], st.integers(0, len(text)))))
    else:
        metadata = yaml.safe_load(text)
        paths = _metadata_paths(metadata)
        for path in data.draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3)):
            parent = metadata
            try:
                for key in path[:-1]:
                    parent = parent[key]
                if data.draw(st.booleans()) and isinstance(parent, dict):
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = data.draw(_YAML_VALUES)
            except (KeyError, IndexError, TypeError):
                continue  # an earlier edit replaced what this path went through
        text = yaml.safe_dump(metadata)
    with tempfile.TemporaryDirectory() as tmp:
        bag = Path(tmp) / "bag"
        shutil.copytree(good, bag)
        (bag / "metadata.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        check_bag(bag, topics=topics)


def test_not_a_bag_is_a_bag_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "missing", tmp_path / "empty"):
        for read in (bag_info, lambda p: list(bag_messages(p))):
            with pytest.raises(BagError, match="not a rosbag2 directory"):
                read(path)


@fuzz_settings(200, 1000)
@given(name=st.one_of(st.sampled_from(
    ["sensor_msgs/msg/Image", "sensor_msgs/msg/PointCloud2", "geometry_msgs/msg/PoseStamped",
     "os/path/join", "sensor_msgs/msg/", "sensor_msgs//Image", "sensor_msgs/msg/Image/x",
     "sensor_msgs/srv/Image", "no_such_pkg/msg/X", "sensor_msgs/msg/__name__",
     "sensor_msgs/msg/_image", ".sensor_msgs/msg/Image", "", "/", "//"]),
    st.text(max_size=12)))
def test_fuzz_message_type_names(name):
    msg_type = decode("message_class", ValueError, message_class, name)
    if msg_type is not _REJECTED:
        assert isinstance(msg_type, type) and hasattr(msg_type, "get_fields_and_field_types")
        assert f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}" == name
