"""Scene and prediction files: the ``.npz`` scene format of ``shared/data/README.md`` and PLY.

A scene is a coloured point cloud in metres (REP-103, z up for rooms) with optional ground
truth: ``semantic`` nyu40 ids (0 = unannotated) and ``instance`` ids (-1 = none).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)
_INT32 = np.iinfo(np.int32)


class SceneError(ValueError):
    """A scene or prediction file that cannot be used, with the reason in the message."""


@dataclass
class Scene:
    """A coloured point cloud with optional per-point ground truth.

    Attributes:
        xyz: (N, 3) float32 metres, all finite.
        rgb: (N, 3) uint8 colour.
        semantic: (N,) int32 nyu40 ids (0 = unannotated), or None.
        instance: (N,) int32 instance ids (-1 = none), or None.
        name: a label for tables and logs (the file stem).
        source_index: (N,) int64 row of each point in the source arrays (points with NaN or
            Inf coordinates were dropped), or None when nothing was dropped.
        source_points: number of rows in the source arrays.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    semantic: np.ndarray | None = None
    instance: np.ndarray | None = None
    name: str = "scene"
    source_index: np.ndarray | None = None
    source_points: int | None = None

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def has_ground_truth(self) -> bool:
        return self.semantic is not None and self.instance is not None

    def to_source(self, per_point: np.ndarray, fill: int) -> np.ndarray:
        """Spread a per-point array back over the source rows, ``fill`` for dropped rows."""
        if self.source_index is None:
            return per_point
        out = np.full((self.source_points,) + per_point.shape[1:], fill, per_point.dtype)
        out[self.source_index] = per_point
        return out

    def from_source(self, per_source_row: np.ndarray) -> np.ndarray:
        """Select this scene's points from an array over the source rows."""
        return per_source_row if self.source_index is None else per_source_row[self.source_index]


def make_scene(xyz: np.ndarray, rgb: np.ndarray | None = None,
               semantic: np.ndarray | None = None, instance: np.ndarray | None = None,
               name: str = "scene") -> Scene:
    """Validate and normalise arrays into a :class:`Scene`.

    Points with NaN or Inf coordinates (or beyond float32's range) are dropped with a logged
    warning (with their labels).

    Raises:
        SceneError: wrong shapes, mismatched lengths, types other than real numbers (integer
            labels in int32's range), or no valid points.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise SceneError(f"{name}: xyz must have shape (N, 3), got {xyz.shape}")
    if xyz.dtype.kind not in "iuf":
        raise SceneError(f"{name}: xyz must be real numbers, got {xyz.dtype}")
    n = xyz.shape[0]
    arrays = {"rgb": rgb, "semantic": semantic, "instance": instance}
    for key, value in arrays.items():
        if value is None:
            continue
        value = np.asarray(value)
        want = (n, 3) if key == "rgb" else (n,)
        if value.shape != want:
            raise SceneError(
                f"{name}: '{key}' has shape {value.shape} but xyz has {n} points (expected {want})")
        arrays[key] = value
    if n == 0:
        raise SceneError(f"{name}: the scene has no points")
    with np.errstate(over="ignore"):
        xyz = xyz.astype(np.float32)
    finite = np.isfinite(xyz).all(axis=1)
    source_index = None
    if not finite.all():
        dropped = int(n - finite.sum())
        if dropped == n:
            raise SceneError(f"{name}: all {n} points have NaN or Inf coordinates")
        LOG.warning("%s: dropped %d of %d points with NaN or Inf coordinates", name, dropped, n)
        xyz = xyz[finite]
        arrays = {k: (v[finite] if v is not None else None) for k, v in arrays.items()}
        source_index = np.flatnonzero(finite)
    colour = arrays["rgb"]
    if colour is None:
        colour = np.full((xyz.shape[0], 3), 128, np.uint8)
    elif colour.dtype != np.uint8:
        if colour.dtype.kind not in "iuf":
            raise SceneError(f"{name}: rgb must be real numbers, got {colour.dtype}")
        colour = np.asarray(colour, np.float64)
        if not np.isfinite(colour).all():
            raise SceneError(f"{name}: rgb contains NaN or Inf")
        if colour.max(initial=0.0) <= 1.0:
            colour = colour * 255.0
        colour = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    labels = {}
    for key in ("semantic", "instance"):
        value = arrays[key]
        if value is not None and value.dtype.kind not in "iu":
            raise SceneError(f"{name}: '{key}' must be integer, got {value.dtype}")
        if value is not None and value.size and (value.min() < _INT32.min or
                                                 value.max() > _INT32.max):
            raise SceneError(f"{name}: '{key}' has ids outside int32 "
                             f"[{value.min()}, {value.max()}]")
        labels[key] = None if value is None else value.astype(np.int32)
    return Scene(xyz=xyz, rgb=colour, name=name, source_index=source_index, source_points=n,
                 **labels)


def load_scene(path: str | Path) -> Scene:
    """Read a scene from ``.npz`` (keys ``xyz``, ``rgb``, optional ``semantic``, ``instance``)
    or ``.ply`` (vertex ``x y z``, optional ``red green blue``, ``label``, ``instance``).

    Raises:
        SceneError: missing file, unknown format, missing keys, bad shapes, no points.
    """
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"scene file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        arrays = _read_npz(path)
        if "xyz" not in arrays:
            raise SceneError(f"{path}: no 'xyz' array (keys: {sorted(arrays)})")
        return make_scene(arrays["xyz"], arrays.get("rgb"), arrays.get("semantic"),
                          arrays.get("instance"), name=path.stem)
    if suffix == ".ply":
        vertex = read_ply_vertices(path)
        names = vertex.dtype.names or ()
        for axis in "xyz":
            if axis not in names:
                raise SceneError(f"{path}: vertex element has no '{axis}' property")
        xyz = np.stack([vertex[a] for a in "xyz"], axis=1)
        rgb = (np.stack([vertex[c] for c in ("red", "green", "blue")], axis=1)
               if {"red", "green", "blue"} <= set(names) else None)
        semantic = vertex["label"] if "label" in names else None
        instance = vertex["instance"] if "instance" in names else None
        return make_scene(xyz, rgb, semantic, instance, name=path.stem)
    raise SceneError(f"{path}: unsupported scene format '{suffix}' (use .npz or .ply)")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read without pickles.

    Raises:
        SceneError: not an ``.npz`` archive, or a corrupt one (numpy, zipfile and zlib raise
            many types on those: bad zip structure, CRC or compressed data, EOF, an array
            header declaring more than memory holds), with the original as the cause.
    """
    try:
        with open(path, "rb") as fh:
            loaded = np.load(fh, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise SceneError(f"{path}: not a readable .npz file (a single .npy array)")
            with loaded:
                return {k: loaded[k] for k in loaded.files}
    except SceneError:
        raise
    except Exception as exc:  # noqa: BLE001 - see Raises
        raise SceneError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})"
                         ) from exc


def save_scene(path: str | Path, scene: Scene) -> None:
    """Write a scene as compressed ``.npz`` in the shared-data format."""
    arrays = {"xyz": scene.xyz.astype(np.float32), "rgb": scene.rgb.astype(np.uint8)}
    if scene.semantic is not None:
        arrays["semantic"] = scene.semantic.astype(np.int32)
    if scene.instance is not None:
        arrays["instance"] = scene.instance.astype(np.int32)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def read_ply_vertices(path: str | Path) -> np.ndarray:
    """Read the ``vertex`` element of a PLY file (ascii or binary, either endianness).

    Returns a numpy structured array with one field per vertex property. Elements after
    the vertices (faces) are ignored; elements before them must have fixed-size records.

    Raises:
        SceneError: not a PLY file, a malformed header line, no vertex element, list
            properties before the vertices, a truncated body, or ascii values that are not
            numbers (integers in range for integer properties).
    """
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.readline().strip() != b"ply":
            raise SceneError(f"{path}: not a PLY file (no 'ply' magic line)")
        fmt = None
        elements: list[tuple[str, int, list[tuple[str, str]]]] = []
        while True:
            line = fh.readline()
            if not line:
                raise SceneError(f"{path}: PLY header has no 'end_header'")
            words = line.decode("ascii", "replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "end_header":
                break
            if words[0] == "format" and len(words) >= 2:
                fmt = words[1]
            elif words[0] == "element":
                if len(words) != 3 or not re.fullmatch(r"[0-9]+", words[2]):
                    raise SceneError(f"{path}: bad PLY element line: {line!r}")
                elements.append((words[1], int(words[2]), []))
            elif words[0] == "property":
                if len(words) == 5 and words[1] == "list":
                    prop = (words[4], "list")
                elif len(words) == 3 and words[1] in _PLY_TYPES:
                    prop = (words[2], _PLY_TYPES[words[1]])
                else:
                    raise SceneError(f"{path}: unsupported PLY property line: {line!r}")
                if not elements or prop[0] in (pname for pname, _ in elements[-1][2]):
                    raise SceneError(f"{path}: PLY property outside an element or repeated: "
                                     f"{line!r}")
                elements[-1][2].append(prop)
        if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
            raise SceneError(f"{path}: unsupported PLY format {fmt!r}")
        endian = ">" if fmt == "binary_big_endian" else "<"
        body = fh.read()
    offset = 0
    text_lines: list[bytes] = body.splitlines() if fmt == "ascii" else []
    for name, count, props in elements:
        if any(kind == "list" for _, kind in props):
            if name == "vertex":
                raise SceneError(f"{path}: list properties in the vertex element")
            break
        dtype = np.dtype([(pname, endian + kind) for pname, kind in props])
        if name != "vertex":
            offset += count * (1 if fmt == "ascii" else dtype.itemsize)
            continue
        if fmt == "ascii":
            return _ascii_ply_vertices(path, text_lines[offset:offset + count], count, props)
        need = count * dtype.itemsize
        if len(body) - offset < need:
            raise SceneError(f"{path}: truncated PLY: {len(body) - offset} bytes for "
                             f"{count} vertices of {dtype.itemsize} bytes")
        return np.frombuffer(body, dtype=dtype, count=count, offset=offset).astype(
            dtype.newbyteorder("="))
    raise SceneError(f"{path}: no 'vertex' element (or it follows an element with lists)")


def _ascii_ply_vertices(path: Path, rows: list[bytes], count: int,
                        props: list[tuple[str, str]]) -> np.ndarray:
    """The vertex records of an ascii PLY body (one line each) in the properties' types."""
    if len(rows) < count:
        raise SceneError(f"{path}: truncated PLY: {len(rows)} of {count} vertices")
    tokens = [row.split() for row in rows]
    for i, words in enumerate(tokens):
        if len(words) != len(props):
            raise SceneError(f"{path}: PLY vertex {i} has {len(words)} values, header "
                             f"declares {len(props)}")
    try:
        values = np.array(tokens, dtype=np.float64).reshape(count, len(props))
    except ValueError as exc:
        raise SceneError(f"{path}: PLY vertex values are not numbers ({exc})") from exc
    out = np.empty(count, [(pname, kind) for pname, kind in props])
    for column, (pname, kind) in zip(values.T, props):
        if out.dtype[pname].kind in "iu":
            limits = np.iinfo(out.dtype[pname])
            if not (np.isfinite(column) & (column == np.round(column)) & (column >= limits.min)
                    & (column <= limits.max)).all():
                raise SceneError(f"{path}: PLY vertex property '{pname}' has values that are "
                                 f"not {limits.dtype} integers")
        with np.errstate(over="ignore"):
            out[pname] = column
    return out


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray,
              extra: dict[str, np.ndarray] | None = None) -> None:
    """Write a binary little-endian PLY point cloud with colours and extra per-vertex fields.

    Args:
        xyz: (N, 3) metres. rgb: (N, 3) uint8.
        extra: name -> (N,) arrays (int32 or float32), e.g. ``label``, ``instance``.
    """
    extra = extra or {}
    for key in extra:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"invalid PLY property name {key!r}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
              ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    ply_names = {"<f4": "float", "u1": "uchar", "<i4": "int"}
    for key, value in extra.items():
        fields.append((key, "<f4" if np.issubdtype(np.asarray(value).dtype, np.floating)
                       else "<i4"))
    data = np.empty(len(xyz), dtype=fields)
    for i, axis in enumerate("xyz"):
        data[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        data[channel] = rgb[:, i]
    for key, value in extra.items():
        data[key] = value
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(xyz)}"]
    header += [f"property {ply_names[kind]} {name}" for name, kind in fields]
    header.append("end_header")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(data.tobytes())


@dataclass
class PredictionFile:
    """Per-point instance segmentation output (the ``occuseg segment --out`` format).

    Attributes:
        semantic: (N,) int32 nyu40 id per input point.
        instance: (N,) int32 index into the per-instance arrays, -1 = none.
        instance_ids: (I,) int32 instance ids (``0..I-1`` for a single segmentation).
        instance_labels: (I,) int32 nyu40 class of each instance.
        instance_scores: (I,) float32 confidence in [0, 1].
    """

    semantic: np.ndarray
    instance: np.ndarray
    instance_ids: np.ndarray
    instance_labels: np.ndarray
    instance_scores: np.ndarray

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, semantic=self.semantic.astype(np.int32),
                            instance=self.instance.astype(np.int32),
                            instance_ids=self.instance_ids.astype(np.int32),
                            instance_labels=self.instance_labels.astype(np.int32),
                            instance_scores=self.instance_scores.astype(np.float32))

    @classmethod
    def load(cls, path: str | Path) -> "PredictionFile":
        """Read and validate a prediction file.

        Raises:
            SceneError: missing file or keys, ids and labels that are not integers, scores
                that are not finite numbers, inconsistent shapes or ids.
        """
        path = Path(path)
        if not path.is_file():
            raise SceneError(f"prediction file not found: {path}")
        keys = ("semantic", "instance", "instance_ids", "instance_labels", "instance_scores")
        arrays = _read_npz(path)
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise SceneError(f"{path}: missing arrays {missing}")
        for key in keys:
            kinds, what = ("iuf", "numbers") if key == "instance_scores" else ("iu", "integers")
            if arrays[key].dtype.kind not in kinds:
                raise SceneError(f"{path}: '{key}' must be {what}, got {arrays[key].dtype}")
        pred = cls(**{k: arrays[k] for k in keys})
        if pred.semantic.shape != pred.instance.shape or pred.semantic.ndim != 1:
            raise SceneError(f"{path}: 'semantic' and 'instance' must be (N,) arrays of one length")
        if pred.instance_ids.ndim != 1:
            raise SceneError(f"{path}: 'instance_ids' must be an (I,) array, got shape "
                             f"{pred.instance_ids.shape}")
        n_inst = pred.instance_ids.shape[0]
        if pred.instance_labels.shape != (n_inst,) or pred.instance_scores.shape != (n_inst,):
            raise SceneError(f"{path}: per-instance arrays have different lengths")
        if not np.isfinite(pred.instance_scores).all():
            raise SceneError(f"{path}: 'instance_scores' are not all finite")
        if pred.instance.size and (pred.instance.max() >= n_inst or pred.instance.min() < -1):
            raise SceneError(f"{path}: 'instance' indexes outside the {n_inst} instances")
        return pred
