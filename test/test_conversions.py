"""Tests of occuseg_ros.ros.conversions on real ROS 2 message objects (no DDS, no mocks).

Quaternion maths here is written independently of the module (Hamilton product, q v q*), so
rotations are checked by rotating vectors both ways.
"""

from __future__ import annotations

import array

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker

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
    packed_from_rgb,
    pose_from_matrix,
    rgb_from_image,
    rgb_from_packed,
    seconds_from_stamp,
    xyz_rgb_from_cloud_msg,
)

_DATATYPES = {
    "i1": PointField.INT8,
    "u1": PointField.UINT8,
    "i2": PointField.INT16,
    "u2": PointField.UINT16,
    "i4": PointField.INT32,
    "u4": PointField.UINT32,
    "f4": PointField.FLOAT32,
    "f8": PointField.FLOAT64,
}
_SUPPORTED_DTYPES = [
    np.float32, np.float64, np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32
]


def _header() -> Header:
    header = Header(frame_id="map")
    header.stamp.sec = 7
    return header


def _bytes_of(msg: PointCloud2 | Image) -> np.ndarray:
    return np.frombuffer(msg.data, dtype=np.uint8)


def _hand_cloud(
    columns: dict[str, np.ndarray],
    offsets: list[int],
    point_step: int,
    *,
    shape: tuple[int, int] | None = None,
    big_endian: bool = False,
    row_pad: int = 0,
) -> PointCloud2:
    """A cloud laid out by hand: given offsets, garbage in point and row padding."""
    first = next(iter(columns.values()))
    height, width = shape if shape is not None else (1, first.shape[0])
    order = ">" if big_endian else "<"
    dtype = np.dtype(
        {
            "names": list(columns),
            "formats": [order + np.dtype(c.dtype).str[1:] for c in columns.values()],
            "offsets": offsets,
            "itemsize": point_step,
        }
    )
    grid = np.frombuffer(bytearray(b"\xab" * point_step * height * width), dtype=dtype)
    grid = grid.reshape(height, width)
    for name, values in columns.items():
        grid[name] = np.asarray(values).reshape(height, width)
    data = b"".join(grid[row].tobytes() + b"\xcd" * row_pad for row in range(height))
    fields = [
        PointField(name=name, offset=offset, datatype=_DATATYPES[np.dtype(c.dtype).str[1:]],
                   count=1)
        for (name, c), offset in zip(columns.items(), offsets)
    ]
    return PointCloud2(
        header=_header(),
        height=height,
        width=width,
        fields=fields,
        is_bigendian=big_endian,
        point_step=point_step,
        row_step=point_step * width + row_pad,
        data=array.array("B", data),
        is_dense=False,
    )


def _xyz_cloud(num_points: int = 5) -> PointCloud2:
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(num_points, 3)).astype(np.float32)
    return cloud_msg_from_arrays(_header(), {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})


def _image_msg(wire: np.ndarray, encoding: str, pad: int = 0) -> Image:
    """An image whose rows are ``wire``'s rows (bytes as stored) followed by ``pad`` bytes."""
    height, width = wire.shape[:2]
    row_bytes = wire.dtype.itemsize * int(np.prod(wire.shape[1:]))
    data = b"".join(np.ascontiguousarray(wire[r]).tobytes() + b"\xee" * pad for r in range(height))
    return Image(
        header=_header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(wire.dtype.byteorder == ">"),
        step=row_bytes + pad,
        data=array.array("B", data),
    )


def _quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of quaternions stored (x, y, z, w)."""
    av, aw = a[:3], a[3]
    bv, bw = b[:3], b[3]
    return np.concatenate([aw * bv + bw * av + np.cross(av, bv), [aw * bw - av @ bv]])


def _rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vector v by quaternion q (any norm) as q v q^-1."""
    q = q / np.linalg.norm(q)
    conjugate = q * np.array([-1.0, -1.0, -1.0, 1.0])
    return _quat_multiply(_quat_multiply(q, np.append(v, 0.0)), conjugate)[:3]


def _axis_angle(axis: list[float], angle: float) -> np.ndarray:
    axis_unit = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    return np.append(np.sin(angle / 2) * axis_unit, np.cos(angle / 2))


# ---------------------------------------------------------------------------------------------
# PointCloud2
# ---------------------------------------------------------------------------------------------


def _extremes(dtype: type) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)
    info = np.finfo(dtype)
    return np.array([info.min, info.max, np.nan, -0.0, np.inf, 1.5e-3], dtype=dtype)


@pytest.mark.parametrize("dtype", _SUPPORTED_DTYPES, ids=lambda d: np.dtype(d).name)
def test_round_trip_each_dtype(dtype: type) -> None:
    values = _extremes(dtype)
    other = np.arange(values.shape[0], dtype=np.float64) * 0.25
    msg = cloud_msg_from_arrays(_header(), {"a": other, "value": values})
    assert (msg.height, msg.width) == (1, values.shape[0])
    assert not msg.is_bigendian and not msg.is_dense
    assert msg.point_step == 8 + np.dtype(dtype).itemsize
    assert msg.row_step == msg.point_step * msg.width == len(msg.data)
    assert [(f.name, f.offset, f.count) for f in msg.fields] == [("a", 0, 1), ("value", 8, 1)]
    assert msg.fields[1].datatype == _DATATYPES[np.dtype(dtype).str[1:]]
    assert msg.header.frame_id == "map"
    fields = cloud_fields(msg, ["value"], ["a"])
    assert list(fields) == ["value", "a"]
    assert fields["value"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fields["value"], values)
    np.testing.assert_array_equal(fields["a"], other)


def test_all_dtypes_in_one_cloud_round_trip() -> None:
    arrays = {f"f{i}": _extremes(d)[:5] for i, d in enumerate(_SUPPORTED_DTYPES)}
    msg = cloud_msg_from_arrays(_header(), arrays)
    assert msg.point_step == sum(np.dtype(d).itemsize for d in _SUPPORTED_DTYPES)
    fields = cloud_fields(msg, list(arrays))
    for name, values in arrays.items():
        assert fields[name].dtype == values.dtype
        np.testing.assert_array_equal(fields[name], values)


def test_cloud_msg_from_arrays_rejects_bad_arrays() -> None:
    good = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="at least one field"):
        cloud_msg_from_arrays(_header(), {})
    with pytest.raises(ValueError, match="1-D"):
        cloud_msg_from_arrays(_header(), {"x": np.zeros((3, 1), np.float32)})
    with pytest.raises(ValueError, match="unsupported dtype int64"):
        cloud_msg_from_arrays(_header(), {"x": good, "label": np.zeros(3, np.int64)})
    with pytest.raises(ValueError, match="different lengths"):
        cloud_msg_from_arrays(_header(), {"x": good, "y": np.zeros(4, np.float32)})


def test_xyz_rgb_round_trip_exact_colours() -> None:
    rng = np.random.default_rng(1)
    num_points = 300
    xyz = rng.uniform(-50.0, 50.0, size=(num_points, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(num_points, 3), dtype=np.uint8)
    rgb[:4] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [1, 2, 3]]
    msg = cloud_msg_from_arrays(
        _header(),
        {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "rgb": packed_from_rgb(rgb),
         "label": np.arange(num_points, dtype=np.int32)},
    )
    assert msg.fields[3].datatype == PointField.FLOAT32
    xyz_out, rgb_out = xyz_rgb_from_cloud_msg(msg)
    assert xyz_out.dtype == np.float32 and xyz_out.flags.c_contiguous
    np.testing.assert_array_equal(xyz_out, xyz)
    assert rgb_out is not None and rgb_out.dtype == np.uint8
    np.testing.assert_array_equal(rgb_out, rgb)


def test_packed_rgb_every_channel_value() -> None:
    levels = np.arange(256, dtype=np.uint8)
    rgb = np.stack([levels, levels[::-1], np.roll(levels, 7)], axis=1)
    packed = packed_from_rgb(rgb)
    assert packed.dtype == np.float32 and np.isfinite(packed).all()
    assert packed.view(np.uint32)[1] == (1 << 16) | (254 << 8) | 250
    np.testing.assert_array_equal(rgb_from_packed(packed), rgb)
    np.testing.assert_array_equal(rgb_from_packed(packed.view(np.uint32)), rgb)
    np.testing.assert_array_equal(rgb_from_packed(packed.astype(">f4")), rgb)
    rgba = packed.view(np.uint32) | np.uint32(0xFF000000)
    np.testing.assert_array_equal(rgb_from_packed(rgba.view(np.float32)), rgb)


def test_packed_rgb_rejects_bad_input() -> None:
    with pytest.raises(MessageError, match="float32 or uint32"):
        rgb_from_packed(np.zeros(3, np.float64))
    with pytest.raises(MessageError, match="1-D"):
        rgb_from_packed(np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 3\) uint8"):
        packed_from_rgb(np.zeros((3, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, 3\) uint8"):
        packed_from_rgb(np.zeros((3, 3), np.float32))


def test_other_colour_layouts() -> None:
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(20, 3))
    rgb = rng.integers(0, 256, size=(20, 3), dtype=np.uint8)
    base = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    rgba = packed_from_rgb(rgb).view(np.uint32) | np.uint32(0x80000000)
    for colours in (
        {"rgba": rgba},
        {"r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2]},
    ):
        msg = cloud_msg_from_arrays(_header(), base | colours)
        xyz_out, rgb_out = xyz_rgb_from_cloud_msg(msg)
        np.testing.assert_array_equal(xyz_out, xyz.astype(np.float32))
        np.testing.assert_array_equal(rgb_out, rgb)
    assert xyz_rgb_from_cloud_msg(cloud_msg_from_arrays(_header(), base))[1] is None
    partial = base | {"r": rgb[:, 0]}
    assert xyz_rgb_from_cloud_msg(cloud_msg_from_arrays(_header(), partial))[1] is None


def test_xyz_rgb_rejects_wrong_field_types() -> None:
    integer_xyz = {name: np.zeros(4, np.int16) for name in "xyz"}
    with pytest.raises(MessageError, match="'x' is int16; x, y, z must be float"):
        xyz_rgb_from_cloud_msg(cloud_msg_from_arrays(_header(), integer_xyz))
    xyz = {name: np.zeros(4, np.float32) for name in "xyz"}
    byte_rgb = cloud_msg_from_arrays(_header(), xyz | {"rgb": np.zeros(4, np.uint8)})
    with pytest.raises(MessageError, match="'rgb' is uint8; packed colour"):
        xyz_rgb_from_cloud_msg(byte_rgb)
    float_channels = {name: np.zeros(4, np.float32) for name in "rgb"}
    with pytest.raises(MessageError, match="'r' is float32; must be UINT8"):
        xyz_rgb_from_cloud_msg(cloud_msg_from_arrays(_header(), xyz | float_channels))


def _padded_cloud(big_endian: bool = False, **kwargs) -> tuple[PointCloud2, dict]:
    """48-byte points: x y z, a gap, intensity, normal_x, rgb, ring, then padding."""
    rng = np.random.default_rng(3)
    num_points = 12
    columns = {
        "x": rng.normal(size=num_points).astype(np.float32),
        "y": rng.normal(size=num_points).astype(np.float32),
        "z": rng.normal(size=num_points).astype(np.float32),
        "intensity": rng.uniform(0, 100, size=num_points).astype(np.float32),
        "normal_x": rng.normal(size=num_points).astype(np.float64),
        "rgb": packed_from_rgb(rng.integers(0, 256, size=(num_points, 3), dtype=np.uint8)),
        "ring": rng.integers(0, 64, size=num_points).astype(np.uint16),
    }
    offsets = [0, 4, 8, 16, 24, 32, 36]
    return _hand_cloud(columns, offsets, 48, big_endian=big_endian, **kwargs), columns


def test_point_step_padding_extra_fields_and_zero_copy() -> None:
    msg, columns = _padded_cloud()
    msg.fields = list(reversed(msg.fields))  # field order in the message must not matter
    fields = cloud_fields(msg, ["x", "y", "z"], ["intensity", "rgb", "not_there"])
    assert list(fields) == ["x", "y", "z", "intensity", "rgb"]
    buffer = _bytes_of(msg)
    for name, values in fields.items():
        np.testing.assert_array_equal(values, columns[name])
        assert np.shares_memory(values, buffer), f"{name} was copied"
        assert values.strides == (48,)
    xyz, rgb = xyz_rgb_from_cloud_msg(msg)
    np.testing.assert_array_equal(xyz, np.stack([columns[n] for n in "xyz"], axis=1))
    np.testing.assert_array_equal(rgb, rgb_from_packed(columns["rgb"]))


def test_row_step_padding_organised_cloud() -> None:
    height, width = 3, 4
    values = np.arange(height * width, dtype=np.float32)
    labels = np.arange(height * width, dtype=np.int32)
    columns = {"x": values, "y": -values, "z": values * 2, "label": labels}
    msg = _hand_cloud(columns, [0, 4, 8, 12], 20, shape=(height, width), row_pad=10)
    assert msg.row_step == 90 and len(msg.data) == 270
    fields = cloud_fields(msg, ["x", "y", "z", "label"])
    for name, expected in columns.items():
        assert fields[name].shape == (height * width,)
        np.testing.assert_array_equal(fields[name], expected)
    unpadded = _hand_cloud(columns, [0, 4, 8, 12], 20, shape=(height, width))
    organised = cloud_fields(unpadded, ["x"])["x"]
    np.testing.assert_array_equal(organised, values)
    assert np.shares_memory(organised, _bytes_of(unpadded))


@pytest.mark.parametrize("row_pad", [0, 6])
def test_big_endian_cloud_matches_little_endian(row_pad: int) -> None:
    kwargs = {"shape": (3, 4), "row_pad": row_pad}
    little, columns = _padded_cloud(big_endian=False, **kwargs)
    big, _ = _padded_cloud(big_endian=True, **kwargs)
    assert bytes(little.data) != bytes(big.data)
    names = list(columns)
    from_little = cloud_fields(little, names)
    from_big = cloud_fields(big, names)
    for name in names:
        assert from_big[name].dtype.isnative
        assert from_big[name].dtype == from_little[name].dtype == columns[name].dtype
        np.testing.assert_array_equal(from_big[name], from_little[name])
        np.testing.assert_array_equal(from_big[name], columns[name])
    xyz_l, rgb_l = xyz_rgb_from_cloud_msg(little)
    xyz_b, rgb_b = xyz_rgb_from_cloud_msg(big)
    np.testing.assert_array_equal(xyz_b, xyz_l)
    np.testing.assert_array_equal(rgb_b, rgb_l)


def test_nan_points_are_kept() -> None:
    xyz = np.arange(30, dtype=np.float32).reshape(10, 3)
    xyz[[2, 7]] = np.nan
    xyz[5, 1] = np.inf
    msg = cloud_msg_from_arrays(_header(), {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    xyz_out, _ = xyz_rgb_from_cloud_msg(msg)
    assert xyz_out.shape == (10, 3)
    np.testing.assert_array_equal(xyz_out, xyz)


def test_float64_xyz_becomes_float32() -> None:
    xyz = np.array([[1.0, 2.0, 3.0], [1e-9, -4.25, 1e6]])
    msg = cloud_msg_from_arrays(_header(), {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]})
    xyz_out, _ = xyz_rgb_from_cloud_msg(msg)
    assert xyz_out.dtype == np.float32
    np.testing.assert_array_equal(xyz_out, xyz.astype(np.float32))


def test_empty_cloud_is_not_an_error() -> None:
    empty = np.zeros(0, np.float32)
    msg = cloud_msg_from_arrays(_header(), {"x": empty, "y": empty, "z": empty, "rgb": empty})
    assert msg.width == 0 and len(msg.data) == 0
    fields = cloud_fields(msg, ["x"], ["rgb"])
    assert fields["x"].shape == (0,) and fields["x"].dtype == np.float32
    xyz, rgb = xyz_rgb_from_cloud_msg(msg)
    assert xyz.shape == (0, 3) and rgb is not None and rgb.shape == (0, 3)
    organised = _xyz_cloud()
    organised.height, organised.width, organised.data = 0, 640, array.array("B")
    assert cloud_fields(organised, ["x"])["x"].shape == (0,)


def test_missing_required_field_names_it_and_lists_present() -> None:
    msg = _xyz_cloud()
    with pytest.raises(MessageError, match=r"no field 'label' \(fields present: x, y, z\)"):
        cloud_fields(msg, ["x", "label"])
    assert set(cloud_fields(msg, ["x"], ["label"])) == {"x"}


def test_truncated_cloud_rejected() -> None:
    msg = _xyz_cloud()
    msg.data = msg.data[:-1]
    with pytest.raises(MessageError, match="fewer than row_step \\* height = 60 .truncated"):
        cloud_fields(msg, ["x"])


def test_bad_offset_rejected() -> None:
    msg = _xyz_cloud()
    msg.fields[2].offset = 10
    with pytest.raises(MessageError, match="'z' .4 bytes at offset 10. does not fit in point_step"
                                           " 12"):
        cloud_fields(msg, ["x", "y", "z"])


@pytest.mark.parametrize("datatype", [0, 9, 255])
def test_bad_datatype_rejected(datatype: int) -> None:
    msg = _xyz_cloud()
    msg.fields[1].datatype = datatype
    with pytest.raises(MessageError, match=f"'y' has unknown datatype {datatype}"):
        cloud_fields(msg, ["x", "y"])
    assert set(cloud_fields(msg, ["x"])) == {"x"}  # unasked fields are not inspected


def test_count_other_than_one_rejected_only_when_asked() -> None:
    msg = _xyz_cloud()
    msg.fields.append(PointField(name="descriptor", offset=0, datatype=PointField.FLOAT32,
                                 count=3))
    with pytest.raises(MessageError, match="'descriptor' has count 3"):
        cloud_fields(msg, ["x"], ["descriptor"])
    assert set(cloud_fields(msg, ["x", "y", "z"])) == {"x", "y", "z"}
    xyz, _ = xyz_rgb_from_cloud_msg(msg)
    assert xyz.shape == (5, 3)


def test_duplicate_field_rejected_only_when_asked() -> None:
    msg = _xyz_cloud()
    msg.fields.append(PointField(name="y", offset=8, datatype=PointField.FLOAT32, count=1))
    with pytest.raises(MessageError, match="'y' appears 2 times"):
        cloud_fields(msg, ["x", "y"])
    assert set(cloud_fields(msg, ["x", "z"])) == {"x", "z"}


def test_absurd_size_rejected_before_reading() -> None:
    msg = _xyz_cloud()
    msg.height, msg.width = 100_000, 100_000
    with pytest.raises(MessageError, match="10000000000 points .100000 x 100000., over the "
                                           "limit of 20000000"):
        cloud_fields(msg, ["x"])
    with pytest.raises(MessageError, match="5 points .5 x 1., over the limit of 4"):
        cloud_fields(_xyz_cloud(), ["x"], max_points=4)


def test_inconsistent_steps_rejected() -> None:
    msg = _xyz_cloud()
    msg.row_step = 59
    with pytest.raises(MessageError, match="row_step 59 is smaller than width \\* point_step = 60"):
        cloud_fields(msg, ["x"])
    msg = _xyz_cloud()
    msg.point_step = 0
    with pytest.raises(MessageError, match="point_step is 0"):
        cloud_fields(msg, ["x"])


def test_read_only_bytes_data_is_read_without_copy() -> None:
    msg = _xyz_cloud()
    raw = bytes(msg.data)
    msg._data = raw  # what a zero-copy transport may hand over; the setter would convert it
    x = cloud_fields(msg, ["x"])["x"]
    assert np.shares_memory(x, np.frombuffer(raw, np.uint8)) and not x.flags.writeable
    np.testing.assert_array_equal(x, cloud_fields(_xyz_cloud(), ["x"])["x"])


# ---------------------------------------------------------------------------------------------
# Marker meshes
# ---------------------------------------------------------------------------------------------

_CUBE_CORNERS = np.array(
    [[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)]
)
# Two triangles per face, as corner indices (corner index = 4*ix + 2*iy + iz).
_CUBE_TRIANGLES = np.array(
    [
        [0, 1, 3], [0, 3, 2],  # x = -0.5
        [4, 6, 7], [4, 7, 5],  # x = +0.5
        [0, 4, 5], [0, 5, 1],  # y = -0.5
        [2, 3, 7], [2, 7, 6],  # y = +0.5
        [0, 2, 6], [0, 6, 4],  # z = -0.5
        [1, 5, 7], [1, 7, 3],  # z = +0.5
    ]
)


def _cube_marker(q: np.ndarray, translation: list[float], scale: list[float],
                 colours: np.ndarray | None) -> Marker:
    marker = Marker(header=_header(), type=Marker.TRIANGLE_LIST, action=Marker.ADD)
    marker.pose.position = Point(x=translation[0], y=translation[1], z=translation[2])
    marker.pose.orientation = Quaternion(x=q[0], y=q[1], z=q[2], w=q[3])
    marker.scale = Vector3(x=scale[0], y=scale[1], z=scale[2])
    corners = _CUBE_TRIANGLES.reshape(-1)
    marker.points = [Point(x=c[0], y=c[1], z=c[2]) for c in _CUBE_CORNERS[corners]]
    if colours is not None:
        marker.colors = [ColorRGBA(r=c[0] / 255, g=c[1] / 255, b=c[2] / 255, a=1.0)
                         for c in colours[corners]]
    return marker


def test_cube_mesh_with_pose_scale_and_vertex_colours() -> None:
    q = 2.0 * _axis_angle([1.0, -2.0, 0.5], 2.1)  # not unit: must be normalised
    translation = [1.0, -2.0, 0.5]
    scale = [2.0, 0.5, 3.0]
    corner_colours = np.array([[i * 30, 255 - i * 30, (i * 77) % 256] for i in range(8)],
                              dtype=np.uint8)
    marker = _cube_marker(q, translation, scale, corner_colours)
    assert len(marker.points) == 36

    vertices, colours, triangles = mesh_from_marker(marker)

    assert vertices.shape == (8, 3) and vertices.dtype == np.float32
    assert colours.shape == (8, 3) and colours.dtype == np.uint8
    assert triangles.shape == (12, 3) and triangles.dtype == np.int32
    # Vertices are numbered in order of first appearance in the triangle list.
    first_corners = list(dict.fromkeys(_CUBE_TRIANGLES.reshape(-1).tolist()))
    expected = np.array([_rotate(q, _CUBE_CORNERS[c] * scale) + translation
                         for c in first_corners])
    np.testing.assert_allclose(vertices, expected, atol=1e-5)
    np.testing.assert_array_equal(colours, corner_colours[first_corners])
    rank = {corner: i for i, corner in enumerate(first_corners)}
    np.testing.assert_array_equal(triangles, np.vectorize(rank.get)(_CUBE_TRIANGLES))
    # Each vertex keeps the cube's edge lengths (scaled) to its neighbours.
    edge = np.linalg.norm(vertices[rank[4]] - vertices[rank[0]])
    assert edge == pytest.approx(scale[0], abs=1e-5)


def test_mesh_uses_marker_colour_when_colors_empty() -> None:
    marker = _cube_marker(np.array([0.0, 0.0, 0.0, 1.0]), [0.0, 0.0, 0.0], [1.0, 1.0, 1.0],
                          None)
    marker.color = ColorRGBA(r=1.0, g=0.5, b=0.0, a=0.3)
    vertices, colours, triangles = mesh_from_marker(marker)
    np.testing.assert_array_equal(colours, np.tile([255, 128, 0], (8, 1)))
    np.testing.assert_array_equal(vertices[triangles].reshape(-1, 3),
                                  _CUBE_CORNERS[_CUBE_TRIANGLES.reshape(-1)])


def test_mesh_keeps_first_colour_of_shared_vertex() -> None:
    marker = Marker(type=Marker.TRIANGLE_LIST, scale=Vector3(x=1.0, y=1.0, z=1.0))
    marker.points = [Point(x=0.0), Point(x=1.0), Point(y=1.0),
                     Point(x=-0.0), Point(y=1.0), Point(x=-1.0)]
    marker.colors = [ColorRGBA(r=1.0), ColorRGBA(g=1.0), ColorRGBA(b=1.0),
                     ColorRGBA(r=0.5), ColorRGBA(g=0.5), ColorRGBA(b=0.5)]
    vertices, colours, triangles = mesh_from_marker(marker)
    assert vertices.shape == (4, 3)
    np.testing.assert_array_equal(triangles, [[0, 1, 2], [0, 2, 3]])
    np.testing.assert_array_equal(colours, [[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 128]])


def test_empty_triangle_list_gives_empty_mesh() -> None:
    marker = Marker(type=Marker.TRIANGLE_LIST, scale=Vector3(x=1.0, y=1.0, z=1.0))
    vertices, colours, triangles = mesh_from_marker(marker)
    assert vertices.shape == (0, 3) and colours.shape == (0, 3) and triangles.shape == (0, 3)


def _unit_cube() -> Marker:
    return _cube_marker(np.array([0.0, 0.0, 0.0, 1.0]), [0.0, 0.0, 0.0], [1.0, 1.0, 1.0],
                        np.zeros((8, 3), np.uint8))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda m: setattr(m, "type", Marker.CUBE), "type 1 is not TRIANGLE_LIST"),
        (lambda m: setattr(m, "action", Marker.DELETE), "action 2 is not ADD"),
        (lambda m: setattr(m, "action", Marker.DELETEALL), "action 3 is not ADD"),
        (lambda m: m.points.pop(), "35 points, not a multiple of 3"),
        (lambda m: setattr(m, "colors", m.colors[:5]), "5 colors for 36 points"),
        (lambda m: setattr(m.points[7], "y", float("nan")), "point 7 has non-finite"),
        (lambda m: setattr(m.points[3], "z", float("inf")), "point 3 has non-finite"),
        (lambda m: setattr(m.colors[0], "g", float("nan")), "non-finite colours"),
        (lambda m: setattr(m.pose, "orientation", Quaternion(w=0.0)), "quaternion is all zeros"),
        (lambda m: setattr(m.pose.orientation, "x", float("nan")), "quaternion .* not finite"),
        (lambda m: setattr(m.pose.position, "x", float("inf")), "translation .* not finite"),
        (lambda m: setattr(m, "scale", Vector3(x=1.0, y=0.0, z=1.0)), "scale .* non-zero"),
    ],
)
def test_bad_markers_rejected(mutate, message: str) -> None:
    marker = _unit_cube()
    mutate(marker)
    with pytest.raises(MessageError, match=message):
        mesh_from_marker(marker)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize(
    ("encoding", "to_wire"),
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[:, :, ::-1]),
        ("rgba8", lambda rgb: np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 9, np.uint8)],
                                             axis=2)),
        ("bgra8", lambda rgb: np.concatenate([rgb[:, :, ::-1],
                                              np.full(rgb.shape[:2] + (1,), 9, np.uint8)],
                                             axis=2)),
    ],
)
def test_colour_images(encoding: str, to_wire, pad: int) -> None:
    rgb = np.random.default_rng(4).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    msg = _image_msg(to_wire(rgb), encoding, pad)
    for pixels in (image_array(msg), rgb_from_image(msg)):
        assert pixels.shape == (4, 5, 3) and pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, rgb)
    if encoding in ("rgb8", "rgba8"):
        assert np.shares_memory(image_array(msg), _bytes_of(msg))


@pytest.mark.parametrize("pad", [0, 3])
@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(("encoding", "code"), [("16UC1", "u2"), ("mono16", "u2"),
                                                 ("32FC1", "f4")])
def test_single_channel_images(encoding: str, code: str, order: str, pad: int) -> None:
    values = np.array([[0, 1, 2, 3], [255, 256, 1000, 65535], [7, 8, 9, 10]]).astype(code)
    msg = _image_msg(values.astype(order + code), encoding, pad)
    assert bool(msg.is_bigendian) == (order == ">")
    pixels = image_array(msg)
    assert pixels.dtype == np.dtype(code) and pixels.dtype.isnative
    np.testing.assert_array_equal(pixels, values)


def test_depth_m_from_16uc1() -> None:
    millimetres = np.array([[0, 1000, 65535], [1, 500, 2500]], dtype=np.uint16)
    for order in ("<", ">"):
        depth = depth_m_from_image(_image_msg(millimetres.astype(order + "u2"), "16UC1", pad=2))
        assert depth.dtype == np.float32
        np.testing.assert_allclose(depth, [[0.0, 1.0, 65.535], [0.001, 0.5, 2.5]], rtol=1e-7)
        assert depth[0, 0] == 0.0 and depth[0, 1] == 1.0


def test_depth_m_from_32fc1_zeroes_invalid() -> None:
    metres = np.array([[np.nan, np.inf, -np.inf], [-1.0, 0.0, 2.5]], dtype=np.float32)
    for order in ("<", ">"):
        msg = _image_msg(metres.astype(order + "f4"), "32FC1")
        depth = depth_m_from_image(msg)
        assert depth.dtype == np.float32
        np.testing.assert_array_equal(depth, [[0.0, 0.0, 0.0], [0.0, 0.0, 2.5]])
    np.testing.assert_array_equal(image_array(msg)[0, 1], np.inf)  # the message is untouched


def test_encoding_mismatches_rejected() -> None:
    colour = _image_msg(np.zeros((2, 2, 3), np.uint8), "rgb8")
    depth = _image_msg(np.zeros((2, 2), np.uint16), "16UC1")
    with pytest.raises(MessageError, match="'rgb8' is not a depth encoding"):
        depth_m_from_image(colour)
    with pytest.raises(MessageError, match="'16UC1' is depth, not colour"):
        rgb_from_image(depth)
    unknown = _image_msg(np.zeros((2, 2, 2), np.uint8), "yuv422")
    with pytest.raises(MessageError, match="unsupported image encoding 'yuv422' .supported: "
                                           "16UC1, mono16, 32FC1, rgb8"):
        image_array(unknown)


def test_bad_image_layouts_rejected() -> None:
    msg = _image_msg(np.zeros((3, 4), np.float32), "32FC1", pad=4)
    msg.data = msg.data[:-1]
    with pytest.raises(MessageError, match="59 bytes, fewer than step \\* height = 60 .truncated"):
        image_array(msg)
    msg = _image_msg(np.zeros((3, 4, 3), np.uint8), "rgb8")
    msg.step = 11
    with pytest.raises(MessageError, match="step 11 is smaller than width \\* 3 bytes = 12"):
        image_array(msg)
    with pytest.raises(MessageError, match="12 pixels .4 x 3., over the limit of 10"):
        image_array(_image_msg(np.zeros((3, 4), np.uint16), "16UC1"), max_pixels=10)


def test_empty_images() -> None:
    msg = Image(height=0, width=640, encoding="bgr8", step=1920)
    assert image_array(msg).shape == (0, 640, 3)
    msg = Image(height=0, width=0, encoding="32FC1")
    assert depth_m_from_image(msg).shape == (0, 0)


# ---------------------------------------------------------------------------------------------
# CameraInfo, poses, time
# ---------------------------------------------------------------------------------------------


def _camera_info(**overrides) -> CameraInfo:
    values = {"width": 640, "height": 480,
              "k": [525.0, 0.0, 319.5, 0.0, 520.0, 239.5, 0.0, 0.0, 1.0]} | overrides
    return CameraInfo(**values)


def test_intrinsics_from_camera_info() -> None:
    k, width, height = intrinsics_from_camera_info(_camera_info())
    assert (width, height) == (640, 480) and k.dtype == np.float64 and k.shape == (3, 3)
    point = np.array([0.2, -0.1, 2.0])  # optical frame, metres
    u, v, w = k @ point
    assert (u / w, v / w) == pytest.approx((525.0 * 0.1 + 319.5, 520.0 * -0.05 + 239.5))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"width": 0}, "zero size"),
        ({"k": [0.0] * 9}, "fx=0.0, fy=0.0 must be > 0"),
        ({"k": [525.0, 0, 319.5, 0, -1.0, 239.5, 0, 0, 1.0]}, "fy=-1.0 must be > 0"),
        ({"k": [np.nan, 0, 319.5, 0, 520.0, 239.5, 0, 0, 1.0]}, "not finite"),
        ({"k": [525.0, 0, 319.5, 0, 520.0, 239.5, 0, 0, 2.0]}, "last row"),
    ],
)
def test_bad_camera_info_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        intrinsics_from_camera_info(_camera_info(**overrides))


_ROTATIONS = [
    np.array([0.0, 0.0, 0.0, 1.0]),
    _axis_angle([0.0, 0.0, 1.0], np.pi / 2),
    _axis_angle([1.0, 0.0, 0.0], np.pi),  # w = 0, x dominant
    _axis_angle([0.1, 1.0, 0.0], 3.0),  # y dominant
    _axis_angle([0.2, -0.3, 1.0], -2.9),  # z dominant, w < 0 before canonicalisation
    3.0 * _axis_angle([1.0, 2.0, 3.0], 0.7),  # not unit
]


@pytest.mark.parametrize("q", _ROTATIONS, ids=range(len(_ROTATIONS)))
def test_pose_round_trip_rotates_vectors_like_quaternions(q: np.ndarray) -> None:
    position = np.array([1.5, -0.25, 3.0])
    pose = Pose(position=Point(x=position[0], y=position[1], z=position[2]),
                orientation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]))
    matrix = matrix_from_pose(pose)
    assert matrix.shape == (4, 4) and matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix[3], [0.0, 0.0, 0.0, 1.0])
    vectors = np.random.default_rng(5).normal(size=(5, 3))
    for v in vectors:
        np.testing.assert_allclose(matrix[:3, :3] @ v, _rotate(q, v), atol=1e-12)
        np.testing.assert_allclose((matrix @ np.append(v, 1.0))[:3], _rotate(q, v) + position,
                                   atol=1e-12)

    back = pose_from_matrix(matrix)
    q_back = np.array([back.orientation.x, back.orientation.y, back.orientation.z,
                       back.orientation.w])
    assert np.linalg.norm(q_back) == pytest.approx(1.0) and q_back[3] >= 0.0
    np.testing.assert_allclose(abs(q_back @ q) / np.linalg.norm(q), 1.0, atol=1e-12)
    for v in vectors:
        np.testing.assert_allclose(_rotate(q_back, v), _rotate(q, v), atol=1e-12)
    np.testing.assert_array_equal([back.position.x, back.position.y, back.position.z], position)
    np.testing.assert_allclose(matrix_from_pose(back), matrix, atol=1e-12)


def test_matrix_from_transform_matches_pose() -> None:
    q = _axis_angle([0.3, 0.4, -1.0], 1.2)
    transform = Transform(translation=Vector3(x=0.1, y=0.2, z=-0.3),
                          rotation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]))
    pose = Pose(position=Point(x=0.1, y=0.2, z=-0.3), orientation=transform.rotation)
    np.testing.assert_array_equal(matrix_from_transform(transform), matrix_from_pose(pose))
    with pytest.raises(MessageError, match="transform quaternion is all zeros"):
        matrix_from_transform(Transform(rotation=Quaternion(w=0.0)))


def test_bad_poses_rejected() -> None:
    with pytest.raises(MessageError, match="pose quaternion is all zeros"):
        matrix_from_pose(Pose(orientation=Quaternion(w=0.0)))
    with pytest.raises(MessageError, match="pose quaternion .* not finite"):
        matrix_from_pose(Pose(orientation=Quaternion(x=float("inf"))))
    with pytest.raises(MessageError, match="pose translation .* not finite"):
        matrix_from_pose(Pose(position=Point(z=float("nan"))))


def test_pose_from_matrix_rejects_non_rigid() -> None:
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        pose_from_matrix(np.eye(3))
    with pytest.raises(ValueError, match="not a rotation"):
        pose_from_matrix(np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="not a rotation"):
        pose_from_matrix(np.diag([-1.0, 1.0, 1.0, 1.0]))  # a reflection
    bad_row = np.eye(4)
    bad_row[3, 0] = 0.5
    with pytest.raises(ValueError, match="last row"):
        pose_from_matrix(bad_row)
    with pytest.raises(ValueError, match="not finite"):
        pose_from_matrix(np.full((4, 4), np.nan))


def test_seconds_from_stamp() -> None:
    assert seconds_from_stamp(Time(sec=12, nanosec=500_000_000)) == 12.5
    assert seconds_from_stamp(Time(sec=1_700_000_000, nanosec=1)) == pytest.approx(
        1_700_000_000.000000001, abs=1e-6)
    with pytest.raises(MessageError, match="nanosec 1000000000"):
        seconds_from_stamp(Time(sec=0, nanosec=1_000_000_000))


@pytest.mark.parametrize("encoding, image", [
    ("16UC1", np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000),
    ("32FC1", np.linspace(0.5, 4.0, 12, dtype=np.float32).reshape(3, 4)),
    ("rgb8", np.arange(36, dtype=np.uint8).reshape(3, 4, 3)),
])
def test_image_msg_from_array_round_trips(encoding, image):
    msg = image_msg_from_array(Header(frame_id="cam"), image, encoding)
    assert (msg.width, msg.height, msg.encoding) == (4, 3, encoding)
    np.testing.assert_array_equal(image_array(msg), image)


def test_image_msg_from_array_rejects_mismatches():
    with pytest.raises(ValueError, match="16UC1"):
        image_msg_from_array(Header(), np.zeros((3, 4), np.float32), "16UC1")
    with pytest.raises(ValueError, match="supported"):
        image_msg_from_array(Header(), np.zeros((3, 4), np.uint8), "yuv422")
