"""Conversions between ROS 2 messages and numpy arrays, named by direction (``b_from_a``).

Decoding (message to numpy) raises :class:`MessageError` with a short human reason for any
malformed message; the node logs it, counts it and drops the message. Encoding (numpy to
message) raises a plain ``ValueError`` for bad arrays, which is a bug in the caller rather than
bad input from the network. ``MessageError`` is a ``ValueError`` too.

Units are SI: lengths in metres, depth in metres (``16UC1``/``mono16`` depth images carry
millimetres on the wire), times in seconds. Frames follow REP-103 (right-handed; x forward,
y left, z up in body frames; z forward, x right, y down in ``*_optical`` camera frames). Nothing
here changes frame: every array is in the frame named by its message's ``header.frame_id``,
and a matrix ``T_parent_child`` maps child-frame points to the parent frame.

:func:`cloud_fields` and :func:`image_array` return views of ``msg.data`` where the layout
allows (native byte order, no row padding to squeeze out). Such views share memory with the
message: copy them before modifying them, or before changing ``msg.data``.
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

__all__ = [
    "MessageError",
    "cloud_fields",
    "cloud_msg_from_arrays",
    "depth_m_from_image",
    "image_array",
    "intrinsics_from_camera_info",
    "matrix_from_pose",
    "matrix_from_transform",
    "mesh_from_marker",
    "packed_from_rgb",
    "pose_from_matrix",
    "rgb_from_image",
    "rgb_from_packed",
    "seconds_from_stamp",
    "xyz_rgb_from_cloud_msg",
]


class MessageError(ValueError):
    """A ROS message that cannot be decoded; ``str(error)`` is a short human reason."""


# sensor_msgs/PointField datatype constants and the numpy type code (without byte order) of each.
_FIELD_CODES: dict[int, str] = {
    PointField.INT8: "i1",
    PointField.UINT8: "u1",
    PointField.INT16: "i2",
    PointField.UINT16: "u2",
    PointField.INT32: "i4",
    PointField.UINT32: "u4",
    PointField.FLOAT32: "f4",
    PointField.FLOAT64: "f8",
}
_FIELD_DATATYPES: dict[str, int] = {code: datatype for datatype, code in _FIELD_CODES.items()}
_PACKED_COLOUR_CODES = ("f4", "u4")
_XYZ = ("x", "y", "z")
_CLOUD_COLOUR_FIELDS = ("rgb", "rgba", "r", "g", "b")

# Image encoding -> (numpy type code without byte order, channels on the wire, RGB channel order).
_IMAGE_LAYOUTS: dict[str, tuple[str, int, tuple[int, ...]]] = {
    "16UC1": ("u2", 1, (0,)),
    "mono16": ("u2", 1, (0,)),
    "32FC1": ("f4", 1, (0,)),
    "rgb8": ("u1", 3, (0, 1, 2)),
    "bgr8": ("u1", 3, (2, 1, 0)),
    "rgba8": ("u1", 4, (0, 1, 2)),
    "bgra8": ("u1", 4, (2, 1, 0)),
}
_DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
_MILLIMETRE_ENCODINGS = ("16UC1", "mono16")

# Tolerance on |R^T R - I| and |det R - 1| for a rotation block given to pose_from_matrix.
_ROTATION_TOLERANCE = 1e-5


def message_from_bytes(data: bytes, msg_type: type) -> object:
    """Deserialise a CDR message received raw (``create_subscription(..., raw=True)``).

    Nodes subscribe raw so that a corrupt message is counted and logged here instead of
    being dropped silently inside the middleware.

    Raises:
        MessageError: the bytes are not a valid ``msg_type``.
    """
    from rclpy.serialization import deserialize_message

    try:
        return deserialize_message(data, msg_type)
    except Exception as exc:  # noqa: BLE001 - rclpy raises RMWError and others
        raise MessageError(f"corrupt serialisation of a {msg_type.__name__} "
                           f"({len(data)} bytes)") from exc


# ---------------------------------------------------------------------------------------------
# PointCloud2
# ---------------------------------------------------------------------------------------------


def cloud_fields(
    msg: PointCloud2,
    required: Sequence[str],
    optional: Sequence[str] = (),
    max_points: int = 20_000_000,
) -> dict[str, np.ndarray]:
    """Read named fields of a PointCloud2 as numpy arrays, without copying where possible.

    Args:
        msg: the cloud; organised clouds (height > 1) are read row by row.
        required: field names that must be present.
        optional: field names returned only when present.
        max_points: largest ``width * height`` accepted.

    Returns:
        For every required field and every optional field present, a (width * height,) array
        in native byte order, of the field's type (PointField INT8..FLOAT64 as int8..float64).
        Values are as on the wire: x, y, z in metres in ``msg.header.frame_id``, NaNs kept.
        With native byte order and ``row_step == width * point_step`` (or one row) each array
        is a strided view of ``msg.data``; otherwise it is a copy. A cloud of zero points gives
        empty arrays.

    Raises:
        MessageError: a required field is missing; a field asked for is duplicated, has
            ``count != 1``, an unknown datatype or does not fit in ``point_step``; the cloud is
            larger than ``max_points``; ``row_step``/``point_step`` are inconsistent; the data is
            shorter than ``row_step * height``.
    """
    layouts = _requested_fields(msg, required, optional)
    height, width, point_step, row_step, data = _cloud_layout(msg, max_points)
    num_points = height * width
    if num_points == 0:
        return {name: np.empty(0, np.dtype(code)) for name, (_, code) in layouts.items()}
    for name, (offset, code) in layouts.items():
        size = np.dtype(code).itemsize
        if offset + size > point_step:
            raise MessageError(
                f"cloud field '{name}' ({size} bytes at offset {offset}) does not fit in "
                f"point_step {point_step}"
            )
    byte_order = ">" if msg.is_bigendian else "<"
    point_dtype = np.dtype(
        {
            "names": list(layouts),
            "formats": [byte_order + code for _, code in layouts.values()],
            "offsets": [offset for offset, _ in layouts.values()],
            "itemsize": point_step,
        }
    )
    points = np.ndarray(
        (height, width), dtype=point_dtype, buffer=data, strides=(row_step, point_step)
    )
    fields: dict[str, np.ndarray] = {}
    for name in layouts:
        column = points[name]
        if not column.dtype.isnative:
            column = column.astype(column.dtype.newbyteorder("="))
        fields[name] = column.reshape(num_points)
    return fields


def _requested_fields(
    msg: PointCloud2, required: Sequence[str], optional: Sequence[str]
) -> dict[str, tuple[int, str]]:
    """Offset and numpy type code of each field asked for that exists, in request order."""
    by_name: dict[str, list[PointField]] = {}
    for field in msg.fields:
        by_name.setdefault(field.name, []).append(field)
    for name in required:
        if name not in by_name:
            present = ", ".join(field.name for field in msg.fields) or "none"
            raise MessageError(f"cloud has no field '{name}' (fields present: {present})")
    names = dict.fromkeys([*required, *(name for name in optional if name in by_name)])
    layouts: dict[str, tuple[int, str]] = {}
    for name in names:
        matches = by_name[name]
        if len(matches) > 1:
            raise MessageError(f"cloud field '{name}' appears {len(matches)} times")
        field = matches[0]
        if field.count != 1:
            raise MessageError(
                f"cloud field '{name}' has count {field.count}; only count 1 is supported"
            )
        code = _FIELD_CODES.get(field.datatype)
        if code is None:
            raise MessageError(
                f"cloud field '{name}' has unknown datatype {field.datatype} "
                f"(PointField datatypes are 1..8)"
            )
        layouts[name] = (int(field.offset), code)
    return layouts


def _cloud_layout(msg: PointCloud2, max_points: int) -> tuple[int, int, int, int, np.ndarray]:
    """Validated (height, width, point_step, row_step, data bytes) of a cloud."""
    height, width = int(msg.height), int(msg.width)
    num_points = height * width
    if num_points > max_points:
        raise MessageError(
            f"cloud has {num_points} points ({width} x {height}), over the limit of {max_points}"
        )
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    data = _byte_view(msg.data, "cloud")
    if num_points == 0:
        return height, width, point_step, row_step, data
    if point_step == 0:
        raise MessageError("cloud point_step is 0 but it has points")
    if row_step < width * point_step:
        raise MessageError(
            f"cloud row_step {row_step} is smaller than width * point_step = {width * point_step}"
        )
    if data.size < row_step * height:
        raise MessageError(
            f"cloud data has {data.size} bytes, fewer than row_step * height = "
            f"{row_step * height} (truncated)"
        )
    return height, width, point_step, row_step, data


def _byte_view(data: object, what: str) -> np.ndarray:
    """A (nbytes,) uint8 view of a message's ``data`` (array.array('B'), bytes, ...), no copy."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as error:
        raise MessageError(f"{what} data is not a byte buffer ({type(data).__name__})") from error


def rgb_from_packed(values: np.ndarray) -> np.ndarray:
    """Unpack PCL-packed colours into (N, 3) uint8 RGB.

    Args:
        values: (N,) float32 or uint32 holding ``0x00RRGGBB`` (field ``rgb``) or ``0xAARRGGBB``
            (field ``rgba``) bit patterns; float32 values are reinterpreted, not converted.
            Alpha is dropped.

    Raises:
        MessageError: ``values`` is not 1-D or not float32/uint32.
    """
    bits = _packed_bits(values)
    rgb = np.empty((bits.shape[0], 3), np.uint8)
    rgb[:, 0] = (bits >> 16) & 0xFF
    rgb[:, 1] = (bits >> 8) & 0xFF
    rgb[:, 2] = bits & 0xFF
    return rgb


def _packed_bits(values: np.ndarray) -> np.ndarray:
    """The (N,) native uint32 bit patterns of packed colours."""
    packed = np.asarray(values)
    if packed.ndim != 1:
        raise MessageError(f"packed colours must be 1-D (N,), got shape {packed.shape}")
    order, code = packed.dtype.str[0], packed.dtype.str[1:]
    if code not in _PACKED_COLOUR_CODES:
        raise MessageError(f"packed colours must be float32 or uint32, got {packed.dtype}")
    return packed.view(order + "u4").astype(np.uint32, copy=False)


def packed_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack (N, 3) uint8 RGB into PCL's ``rgb`` field: ``0x00RRGGBB`` reinterpreted as float32.

    The result is what ``cloud_msg_from_arrays(header, {..., "rgb": packed_from_rgb(rgb)})``
    expects; with the top byte zero the floats are never NaN or infinite.

    Raises:
        ValueError: ``rgb`` is not (N, 3) uint8.
    """
    colours = np.asarray(rgb)
    if colours.ndim != 2 or colours.shape[1] != 3 or colours.dtype != np.uint8:
        raise ValueError(f"rgb must be (N, 3) uint8, got {colours.shape} {colours.dtype}")
    wide = colours.astype(np.uint32)
    bits = (wide[:, 0] << 16) | (wide[:, 1] << 8) | wide[:, 2]
    return bits.view(np.float32)


def xyz_rgb_from_cloud_msg(
    msg: PointCloud2, max_points: int = 20_000_000
) -> tuple[np.ndarray, np.ndarray | None]:
    """Points and colours of a cloud.

    Args:
        msg: a cloud with FLOAT32 or FLOAT64 fields ``x``, ``y``, ``z`` and, optionally, colour
            as a packed ``rgb`` or ``rgba`` field (FLOAT32 or UINT32), or as UINT8 fields
            ``r``, ``g``, ``b`` (all three); ``rgb`` wins over ``rgba`` over ``r``/``g``/``b``.
        max_points: largest ``width * height`` accepted.

    Returns:
        (N, 3) float32 C-contiguous xyz in metres in ``msg.header.frame_id`` (every point, row
        by row, NaNs kept: the caller filters), and (N, 3) uint8 RGB or None when the cloud has
        no colour fields.

    Raises:
        MessageError: as :func:`cloud_fields`, or x/y/z not floating point, or colour fields of
            the wrong type.
    """
    fields = cloud_fields(msg, _XYZ, _CLOUD_COLOUR_FIELDS, max_points)
    num_points = fields["x"].shape[0]
    xyz = np.empty((num_points, 3), np.float32)
    for axis, name in enumerate(_XYZ):
        column = fields[name]
        if column.dtype.kind != "f":
            raise MessageError(f"cloud field '{name}' is {column.dtype}; x, y, z must be float")
        with np.errstate(over="ignore"):
            xyz[:, axis] = column
    return xyz, _cloud_rgb(fields)


def _cloud_rgb(fields: dict[str, np.ndarray]) -> np.ndarray | None:
    """(N, 3) uint8 RGB from a cloud's colour fields, or None without any."""
    for name in ("rgb", "rgba"):
        if name in fields:
            if fields[name].dtype.str[1:] not in _PACKED_COLOUR_CODES:
                raise MessageError(
                    f"cloud field '{name}' is {fields[name].dtype}; packed colour must be "
                    f"FLOAT32 or UINT32"
                )
            return rgb_from_packed(fields[name])
    channels = [fields.get(name) for name in ("r", "g", "b")]
    if any(channel is None for channel in channels):
        return None
    for name, channel in zip("rgb", channels):
        if channel.dtype != np.uint8:
            raise MessageError(f"cloud field '{name}' is {channel.dtype}; must be UINT8")
    return np.stack(channels, axis=1)


def cloud_msg_from_arrays(header: Header, arrays: dict[str, np.ndarray]) -> PointCloud2:
    """Build an unorganised little-endian PointCloud2 from per-point arrays.

    Args:
        header: stamp and frame of the points (coordinates in metres in ``header.frame_id``).
        arrays: field name -> (N,) array of float32, float64, uint8, int8, uint16, int16,
            uint32 or int32; fields are laid out packed in dict order. Pass colours as
            ``"rgb": packed_from_rgb(rgb)``.

    Returns:
        A cloud with height 1, width N, ``is_dense`` False and ``is_bigendian`` False; its data
        is one copy of the arrays, written straight into the message's buffer.

    Raises:
        ValueError: no fields, a bad name, an array not 1-D, an unsupported dtype or lengths
            that differ.
    """
    names, codes, num_points = _cloud_columns(arrays)
    point_dtype = np.dtype({"names": names, "formats": ["<" + code for code in codes]})
    buffer = array.array("B", b"\0") * (point_dtype.itemsize * num_points)
    if num_points:
        points = np.frombuffer(buffer, dtype=point_dtype)
        for name in names:
            points[name] = arrays[name]
    fields = [
        PointField(
            name=name,
            offset=point_dtype.fields[name][1],
            datatype=_FIELD_DATATYPES[code],
            count=1,
        )
        for name, code in zip(names, codes)
    ]
    return PointCloud2(
        header=header,
        height=1,
        width=num_points,
        fields=fields,
        is_bigendian=False,
        point_step=point_dtype.itemsize,
        row_step=point_dtype.itemsize * num_points,
        data=buffer,
        is_dense=False,
    )


def _cloud_columns(arrays: dict[str, np.ndarray]) -> tuple[list[str], list[str], int]:
    """Validated field names, numpy type codes and common length of the arrays of a cloud."""
    if not arrays:
        raise ValueError("a cloud needs at least one field")
    names: list[str] = []
    codes: list[str] = []
    lengths: set[int] = set()
    for name, values in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"cloud field names must be non-empty strings, got {name!r}")
        column = np.asarray(values)
        if column.ndim != 1:
            raise ValueError(f"cloud field '{name}' must be 1-D (N,), got shape {column.shape}")
        code = column.dtype.str[1:]
        if code not in _FIELD_DATATYPES:
            raise ValueError(
                f"cloud field '{name}' has unsupported dtype {column.dtype} (supported: "
                f"{', '.join(str(np.dtype(c)) for c in _FIELD_DATATYPES)})"
            )
        names.append(name)
        codes.append(code)
        lengths.add(column.shape[0])
    if len(lengths) != 1:
        raise ValueError(f"cloud fields have different lengths {sorted(lengths)}")
    return names, codes, lengths.pop()


# ---------------------------------------------------------------------------------------------
# Marker meshes
# ---------------------------------------------------------------------------------------------


def mesh_from_marker(marker: Marker) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The triangle mesh of a TRIANGLE_LIST marker, with shared vertices merged.

    Vertex ``p`` of the message is placed as RViz draws it: ``R @ (scale * p) + t`` with ``R``
    and ``t`` from ``marker.pose`` (quaternion normalised) and ``scale`` componentwise.
    Vertices with identical message coordinates are merged, keeping the first one's colour.

    Returns:
        (V, 3) float32 vertices in metres in ``marker.header.frame_id``, in order of first
        appearance; (V, 3) uint8 RGB per vertex (from ``marker.colors``, or ``marker.color``
        for all when ``colors`` is empty; alpha dropped); (T, 3) int32 triangles indexing the
        vertices, in message order. A marker without points gives empty arrays.

    Raises:
        MessageError: action not ADD (DELETE/DELETEALL carry no mesh), type not TRIANGLE_LIST,
            point count not a multiple of 3, ``colors`` neither empty nor one per point,
            non-finite coordinates or colours, zero or non-finite scale, zero-norm or
            non-finite orientation, vertices beyond float32's range.
    """
    _check_mesh_marker(marker)
    points = _marker_points(marker)
    colours = _marker_colours(marker, points.shape[0])
    rotation, translation = _rigid_parts(marker.pose.orientation, marker.pose.position, "marker")
    scale = _marker_scale(marker)
    first, vertex_of_point = _merge_duplicates(points)
    with np.errstate(over="ignore", invalid="ignore"):
        vertices = ((points[first] * scale) @ rotation.T + translation).astype(np.float32)
    if not np.isfinite(vertices).all():
        raise MessageError("marker vertices (points * scale, posed) are beyond float32's range")
    triangles = vertex_of_point.reshape(-1, 3).astype(np.int32)
    return vertices, colours[first], triangles


def _merge_duplicates(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge (P, 3) finite points with equal coordinates (0.0 equals -0.0).

    Returns:
        (V,) int64 index of the first point of each distinct position, in order of first
        appearance, and (P,) int64 index of each point's distinct position in that order.
    """
    order = np.lexsort((points[:, 2], points[:, 1], points[:, 0]))  # stable: first comes first
    ordered = points[order]
    starts = np.ones(points.shape[0], bool)
    np.any(ordered[1:] != ordered[:-1], axis=1, out=starts[1:])
    first_sorted = order[starts]
    appearance = np.argsort(first_sorted, kind="stable")
    rank = np.empty(appearance.shape[0], np.int64)
    rank[appearance] = np.arange(appearance.shape[0])
    vertex_of_point = np.empty(points.shape[0], np.int64)
    vertex_of_point[order] = rank[np.cumsum(starts) - 1]
    return first_sorted[appearance], vertex_of_point


def _check_mesh_marker(marker: Marker) -> None:
    """Reject markers that are not an ADD of a TRIANGLE_LIST."""
    if marker.action != Marker.ADD:
        raise MessageError(
            f"marker action {marker.action} is not ADD; DELETE and DELETEALL carry no mesh"
        )
    if marker.type != Marker.TRIANGLE_LIST:
        raise MessageError(
            f"marker type {marker.type} is not TRIANGLE_LIST ({Marker.TRIANGLE_LIST})"
        )


def _marker_points(marker: Marker) -> np.ndarray:
    """(P, 3) float64 finite point coordinates of a marker, P a multiple of 3."""
    count = len(marker.points)
    if count % 3:
        raise MessageError(f"TRIANGLE_LIST marker has {count} points, not a multiple of 3")
    points = np.fromiter(
        (c for p in marker.points for c in (p.x, p.y, p.z)), dtype=np.float64, count=3 * count
    ).reshape(count, 3)
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        raise MessageError(
            f"marker point {int(np.argmin(finite))} has non-finite coordinates"
        )
    return points


def _marker_colours(marker: Marker, count: int) -> np.ndarray:
    """(count, 3) uint8 RGB per point of a marker."""
    num_colours = len(marker.colors)
    if num_colours == 0:
        colours = np.tile([marker.color.r, marker.color.g, marker.color.b], (count, 1))
    elif num_colours == count:
        colours = np.fromiter(
            (v for c in marker.colors for v in (c.r, c.g, c.b)), dtype=np.float64,
            count=3 * count,
        ).reshape(count, 3)
    else:
        raise MessageError(
            f"marker has {num_colours} colors for {count} points (need 0 or one per point)"
        )
    if not np.isfinite(colours).all():
        raise MessageError("marker has non-finite colours")
    return np.rint(np.clip(colours, 0.0, 1.0) * 255.0).astype(np.uint8)


def _marker_scale(marker: Marker) -> np.ndarray:
    """(3,) float64 scale of a marker, finite and without zeros (RViz refuses those too)."""
    scale = _vector(marker.scale)
    if not np.isfinite(scale).all() or (scale == 0.0).any():
        raise MessageError(
            f"marker scale {scale.tolist()} must be finite and non-zero in x, y and z"
        )
    return scale


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def image_array(msg: Image, max_pixels: int = 50_000_000) -> np.ndarray:
    """Pixels of an image as numpy, in native byte order.

    Args:
        msg: an image of encoding 16UC1/mono16, 32FC1, rgb8, bgr8, rgba8 or bgra8.
        max_pixels: largest ``width * height`` accepted.

    Returns:
        (H, W) uint16 for 16UC1 and mono16 (raw values), (H, W) float32 for 32FC1, and
        (H, W, 3) uint8 in RGB order for the colour encodings (alpha dropped). Row 0 is the
        top of the image. A view of ``msg.data`` for native-endian 16UC1/mono16/32FC1, rgb8
        and rgba8 (strided where rows are padded), a copy otherwise.

    Raises:
        MessageError: unknown encoding, larger than ``max_pixels``, ``step`` smaller than a
            row, or data shorter than ``step * height``.
    """
    layout = _IMAGE_LAYOUTS.get(msg.encoding)
    if layout is None:
        raise MessageError(
            f"unsupported image encoding '{msg.encoding}' (supported: "
            f"{', '.join(_IMAGE_LAYOUTS)})"
        )
    code, channels, order = layout
    height, width, step, data = _image_layout(msg, np.dtype(code).itemsize * channels, max_pixels)
    dtype = np.dtype((">" if msg.is_bigendian else "<") + code)
    if height * width == 0:
        pixels = np.empty((height, width, channels), dtype)
    else:
        pixels = np.ndarray(
            (height, width, channels),
            dtype=dtype,
            buffer=data,
            strides=(step, channels * dtype.itemsize, dtype.itemsize),
        )
    if not dtype.isnative:
        pixels = pixels.astype(dtype.newbyteorder("="))
    if channels == 1:
        return pixels[:, :, 0]
    if order == (0, 1, 2):
        return pixels[:, :, :3]
    return pixels[:, :, list(order)]


def _image_layout(
    msg: Image, bytes_per_pixel: int, max_pixels: int
) -> tuple[int, int, int, np.ndarray]:
    """Validated (height, width, step, data bytes) of an image."""
    height, width = int(msg.height), int(msg.width)
    if height * width > max_pixels:
        raise MessageError(
            f"image has {height * width} pixels ({width} x {height}), over the limit of "
            f"{max_pixels}"
        )
    step = int(msg.step)
    data = _byte_view(msg.data, "image")
    if height * width == 0:
        return height, width, step, data
    if step < width * bytes_per_pixel:
        raise MessageError(
            f"image step {step} is smaller than width * {bytes_per_pixel} bytes = "
            f"{width * bytes_per_pixel} for {msg.encoding}"
        )
    if data.size < step * height:
        raise MessageError(
            f"image data has {data.size} bytes, fewer than step * height = {step * height} "
            f"(truncated)"
        )
    return height, width, step, data


def image_msg_from_array(header: Header, image: np.ndarray, encoding: str) -> Image:
    """Build an Image (little-endian, rows packed) from a numpy image.

    Args:
        header: stamp and optical frame of the image.
        image: (H, W) uint16 for ``16UC1``/``mono16``, (H, W) float32 for ``32FC1``,
            (H, W, 3) uint8 for ``rgb8``/``bgr8`` (given in that channel order).
        encoding: one of those encodings.

    Raises:
        ValueError: an unsupported encoding, or an array of the wrong dtype or shape for it.
    """
    layouts = {"16UC1": ("<u2", 2), "mono16": ("<u2", 2), "32FC1": ("<f4", 2),
               "rgb8": ("u1", 3), "bgr8": ("u1", 3)}
    if encoding not in layouts:
        raise ValueError(f"cannot build a {encoding!r} image; supported: {sorted(layouts)}")
    code, ndim = layouts[encoding]
    image = np.asarray(image)
    if image.ndim != ndim or (ndim == 3 and image.shape[2] != 3) or \
            image.dtype != np.dtype(code).newbyteorder("="):
        raise ValueError(f"a {encoding} image needs a {'(H, W, 3)' if ndim == 3 else '(H, W)'} "
                         f"{np.dtype(code).name} array, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    buffer = array.array("B", b"\0") * image.nbytes
    np.frombuffer(buffer, dtype=code).reshape(image.shape)[...] = image
    return Image(header=header, height=height, width=width, encoding=encoding,
                 is_bigendian=0, step=image.nbytes // max(height, 1), data=buffer)


def depth_m_from_image(msg: Image) -> np.ndarray:
    """Depth in metres along the camera's optical z axis, as a new (H, W) float32 array.

    16UC1/mono16 values are millimetres; 32FC1 values are metres. Pixels without a valid
    measurement (0, NaN, +-Inf, negative) become 0.0, the "no measurement" value.

    Raises:
        MessageError: as :func:`image_array`, or a non-depth encoding.
    """
    if msg.encoding not in _DEPTH_ENCODINGS:
        raise MessageError(
            f"image encoding '{msg.encoding}' is not a depth encoding "
            f"({', '.join(_DEPTH_ENCODINGS)})"
        )
    raw = image_array(msg)
    if msg.encoding in _MILLIMETRE_ENCODINGS:
        return raw.astype(np.float32) / np.float32(1000.0)
    valid = np.isfinite(raw) & (raw > 0.0)
    return np.where(valid, raw, np.float32(0.0)).astype(np.float32, copy=False)


def rgb_from_image(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of a colour image (rgb8, bgr8, rgba8, bgra8).

    Raises:
        MessageError: as :func:`image_array`, or a depth encoding.
    """
    if msg.encoding in _DEPTH_ENCODINGS:
        raise MessageError(f"image encoding '{msg.encoding}' is depth, not colour")
    return image_array(msg)


def intrinsics_from_camera_info(msg: CameraInfo) -> tuple[np.ndarray, int, int]:
    """Pinhole intrinsics of a camera.

    Returns:
        K (3, 3) float64 in pixels (``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``, mapping points in
        the REP-103 optical frame, z forward, to pixels), width and height in pixels.

    Raises:
        MessageError: zero width or height, non-finite K, fx or fy not positive, or a last
            row other than (0, 0, 1).
    """
    width, height = int(msg.width), int(msg.height)
    if width == 0 or height == 0:
        raise MessageError(f"camera_info has zero size ({width} x {height})")
    k = np.asarray(msg.k, dtype=np.float64)
    if k.shape != (9,):
        raise MessageError(f"camera_info k has {k.size} values, not 9")
    k = k.reshape(3, 3)
    if not np.isfinite(k).all():
        raise MessageError("camera_info k is not finite")
    if k[0, 0] <= 0.0 or k[1, 1] <= 0.0:
        raise MessageError(f"camera_info focal lengths fx={k[0, 0]}, fy={k[1, 1]} must be > 0")
    if not np.array_equal(k[2], [0.0, 0.0, 1.0]):
        raise MessageError(f"camera_info k last row is {k[2].tolist()}, not [0, 0, 1]")
    return k, width, height


# ---------------------------------------------------------------------------------------------
# Poses and time
# ---------------------------------------------------------------------------------------------


def matrix_from_pose(pose: Pose) -> np.ndarray:
    """(4, 4) float64 homogeneous ``T_parent_child`` of a pose (translation in metres).

    The pose gives the child frame's origin and orientation in the parent frame (its
    header's frame); the quaternion is normalised.

    Raises:
        MessageError: non-finite position, or a zero-norm or non-finite quaternion.
    """
    rotation, translation = _rigid_parts(pose.orientation, pose.position, "pose")
    return _homogeneous(rotation, translation)


def matrix_from_transform(transform: Transform) -> np.ndarray:
    """(4, 4) float64 homogeneous ``T_parent_child`` of a transform (translation in metres).

    Raises:
        MessageError: non-finite translation, or a zero-norm or non-finite quaternion.
    """
    rotation, translation = _rigid_parts(transform.rotation, transform.translation, "transform")
    return _homogeneous(rotation, translation)


def pose_from_matrix(matrix: np.ndarray) -> Pose:
    """The Pose of a (4, 4) homogeneous ``T_parent_child`` (translation in metres).

    The quaternion is unit length with ``w >= 0``.

    Raises:
        ValueError: not a finite (4, 4) rigid transform (rotation block orthonormal with
            determinant +1 within 1e-5, last row (0, 0, 0, 1)).
    """
    rotation, translation = _rigid_from_matrix(matrix)
    x, y, z, w = _quaternion_from_rotation(rotation)
    return Pose(
        position=Point(x=float(translation[0]), y=float(translation[1]), z=float(translation[2])),
        orientation=Quaternion(x=x, y=y, z=z, w=w),
    )


def seconds_from_stamp(stamp: Time) -> float:
    """Seconds of a ``builtin_interfaces/Time`` (sec + nanosec * 1e-9).

    Raises:
        MessageError: nanosec of 1e9 or more.
    """
    if not 0 <= stamp.nanosec < 1_000_000_000:
        raise MessageError(f"stamp nanosec {stamp.nanosec} is not in [0, 1e9)")
    return stamp.sec + stamp.nanosec * 1e-9


def _vector(value: Point | Vector3) -> np.ndarray:
    """(3,) float64 of a Point or Vector3."""
    return np.array([value.x, value.y, value.z], dtype=np.float64)


def _rigid_parts(
    orientation: Quaternion, position: Point | Vector3, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validated (3, 3) rotation and (3,) translation of a quaternion and position."""
    translation = _vector(position)
    if not np.isfinite(translation).all():
        raise MessageError(f"{what} translation {translation.tolist()} is not finite")
    quaternion = np.array(
        [orientation.x, orientation.y, orientation.z, orientation.w], dtype=np.float64
    )
    if not np.isfinite(quaternion).all():
        raise MessageError(f"{what} quaternion {quaternion.tolist()} is not finite")
    largest = float(np.abs(quaternion).max())
    if largest == 0.0:
        raise MessageError(f"{what} quaternion is all zeros")
    quaternion /= largest  # the norm below neither overflows (1e200) nor underflows (1e-320)
    return _rotation_from_quaternion(quaternion / np.linalg.norm(quaternion)), translation


def _rotation_from_quaternion(quaternion: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix of a unit quaternion (x, y, z, w)."""
    x, y, z, w = quaternion
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _homogeneous(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(4, 4) float64 homogeneous matrix of a rotation and translation."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def _rigid_from_matrix(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated rotation block and translation of a (4, 4) rigid transform."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"matrix must be (4, 4), got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("matrix is not finite")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], rtol=0.0, atol=_ROTATION_TOLERANCE):
        raise ValueError(f"matrix last row is {m[3].tolist()}, not [0, 0, 0, 1]")
    rotation = m[:3, :3]
    orthonormal = np.allclose(rotation.T @ rotation, np.eye(3), rtol=0.0, atol=_ROTATION_TOLERANCE)
    if not orthonormal or abs(np.linalg.det(rotation) - 1.0) > _ROTATION_TOLERANCE:
        raise ValueError("matrix rotation block is not a rotation (orthonormal, det +1)")
    return rotation, m[:3, 3]


def _quaternion_from_rotation(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion (x, y, z, w), w >= 0, of a rotation matrix (Shepperd's method)."""
    r = rotation
    trace = r[0, 0] + r[1, 1] + r[2, 2]
    diagonal = int(np.argmax([r[0, 0], r[1, 1], r[2, 2]]))
    if trace >= r[diagonal, diagonal]:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = np.array(
            [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
        )
    else:
        i = diagonal
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q = np.empty(4)
        q[i] = 0.25 * s
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
        q[3] = (r[k, j] - r[j, k]) / s
    q /= np.linalg.norm(q)
    if q[3] < 0.0:
        q = -q
    return float(q[0]), float(q[1]), float(q[2]), float(q[3])
