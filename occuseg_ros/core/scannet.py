"""Readers for ScanNet v2's released scan format, and conversion to the project's ``.npz``.

A ScanNet v2 scan directory ``<scene>/`` (e.g. ``scans/scene0000_00/``) holds:

* ``<scene>_vh_clean_2.ply``: the decimated annotation mesh (vertex ``x y z red green blue
  alpha``, then faces);
* ``<scene>_vh_clean_2.0.010000.segs.json``: ``segIndices``, one over-segmentation segment
  id per mesh vertex;
* ``<scene>.aggregation.json``: ``segGroups``, the annotated objects, each with an
  ``objectId`` (or ``id``), a raw ``label`` and the ``segments`` it covers.

Raw labels become nyu40 ids through ``scannetv2-labels.combined.tsv`` (columns
``raw_category`` and ``nyu40id``). Instance ids are ScanNet's 0-based object ids; vertices
in no object get instance -1 and semantic 0 (unannotated).

A few ScanNet scans have segments claimed by two objects. As in ScanNet's own benchmark
export scripts, which paint objects in file order, the **last** object listed wins; each
such scene logs a warning with the number of contested segments.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from occuseg_ros.core.scene import Scene, SceneError, make_scene, read_ply_vertices, save_scene

LOG = logging.getLogger(__name__)

#: File name of ScanNet's raw-category → nyu40 mapping.
LABEL_MAP_NAME = "scannetv2-labels.combined.tsv"

#: Suffix of the over-segmentation file of the ``_vh_clean_2`` annotation mesh.
SEGS_SUFFIX = "_vh_clean_2.0.010000.segs.json"


def read_label_map(tsv_path: str | Path) -> dict[str, int]:
    """Read ``scannetv2-labels.combined.tsv`` into raw category name → nyu40 id.

    The file is tab-separated with a header row naming (among others) the ``raw_category``
    and ``nyu40id`` columns. Rows with an empty ``nyu40id`` are skipped.

    Raises:
        SceneError: missing file, missing columns, a non-integer or out-of-range (0..40)
            nyu40 id, or one raw category mapped to two different ids.
    """
    path = Path(tsv_path)
    if not path.is_file():
        raise SceneError(f"ScanNet label map not found: {path}")
    mapping: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = {"raw_category", "nyu40id"} - set(reader.fieldnames or ())
        if missing:
            raise SceneError(f"{path}: header lacks column(s) {sorted(missing)} "
                             f"(found {reader.fieldnames})")
        for row in reader:
            raw = row["raw_category"]
            value = (row["nyu40id"] or "").strip()
            if raw is None or not value:
                continue
            try:
                nyu40 = int(value)
            except ValueError:
                raise SceneError(f"{path}, line {reader.line_num}: nyu40id {value!r} "
                                 "is not an integer") from None
            if not 0 <= nyu40 <= 40:
                raise SceneError(f"{path}, line {reader.line_num}: nyu40id {nyu40} "
                                 "is outside 0..40")
            if mapping.get(raw, nyu40) != nyu40:
                raise SceneError(f"{path}, line {reader.line_num}: raw category {raw!r} "
                                 f"maps to both {mapping[raw]} and {nyu40}")
            mapping[raw] = nyu40
    if not mapping:
        raise SceneError(f"{path}: no label rows")
    return mapping


def _read_json(path: Path, what: str) -> Any:
    """Parse a JSON file, turning a missing file or bad JSON into :class:`SceneError`."""
    if not path.is_file():
        raise SceneError(f"ScanNet {what} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SceneError(f"{path}: malformed JSON ({exc})") from exc


def _is_int(value: Any) -> bool:
    """True for a JSON integer (``bool`` excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def read_segmentation(segs_json_path: str | Path) -> np.ndarray:
    """Read ``segIndices`` (one segment id per mesh vertex) from a ``*.segs.json`` file.

    Returns:
        (N,) int64 segment ids, all >= 0.

    Raises:
        SceneError: missing file, malformed JSON, no ``segIndices`` list, or entries that
            are not non-negative integers.
    """
    path = Path(segs_json_path)
    data = _read_json(path, "segmentation")
    indices = data.get("segIndices") if isinstance(data, dict) else None
    if not isinstance(indices, list):
        raise SceneError(f"{path}: no 'segIndices' list")
    if not all(_is_int(v) and v >= 0 for v in indices):
        raise SceneError(f"{path}: 'segIndices' must hold non-negative integers")
    return np.asarray(indices, dtype=np.int64).reshape(-1)


def read_aggregation(aggregation_json_path: str | Path) -> list[tuple[int, str, list[int]]]:
    """Read the annotated objects of a ``*.aggregation.json`` file, in file order.

    Returns:
        One ``(object_id, label, segments)`` per entry of ``segGroups``; the object id is
        ``objectId`` (``id`` where that is absent), the label the raw annotation string.

    Raises:
        SceneError: missing file, malformed JSON, no ``segGroups`` list, a group without an
            integer id >= 0, a string label or an integer segment list, or an object id used
            twice.
    """
    path = Path(aggregation_json_path)
    return _parse_aggregation(_read_json(path, "aggregation"), path)


def _parse_aggregation(data: Any, path: Path) -> list[tuple[int, str, list[int]]]:
    """Validate parsed aggregation JSON into ``(object_id, label, segments)`` tuples."""
    groups = data.get("segGroups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise SceneError(f"{path}: no 'segGroups' list")
    objects: list[tuple[int, str, list[int]]] = []
    seen: set[int] = set()
    for i, group in enumerate(groups):
        if not isinstance(group, dict):
            raise SceneError(f"{path}: segGroups[{i}] is not an object")
        object_id = group.get("objectId", group.get("id"))
        label = group.get("label")
        segments = group.get("segments")
        if not _is_int(object_id) or object_id < 0:
            raise SceneError(f"{path}: segGroups[{i}] has no integer objectId/id >= 0")
        if object_id in seen:
            raise SceneError(f"{path}: object id {object_id} appears in two segGroups")
        if not isinstance(label, str):
            raise SceneError(f"{path}: segGroups[{i}] (object {object_id}) has no string label")
        if not isinstance(segments, list) or not all(_is_int(s) for s in segments):
            raise SceneError(f"{path}: segGroups[{i}] (object {object_id}) needs a list of "
                             "integer 'segments'")
        seen.add(object_id)
        objects.append((object_id, label, list(segments)))
    return objects


def find_label_map(scene_dir: str | Path) -> Path:
    """Locate ``scannetv2-labels.combined.tsv`` in ``scene_dir`` or up to two levels above.

    Raises:
        SceneError: no such file in any of the three directories.
    """
    scene_dir = Path(scene_dir).absolute()
    candidates = [d / LABEL_MAP_NAME for d in (scene_dir, *scene_dir.parents[:2])]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise SceneError(f"no {LABEL_MAP_NAME} found for {scene_dir} (looked in "
                     f"{', '.join(str(c.parent) for c in candidates)}); pass label_map")


def _aggregation_path(scene_dir: Path, scene_id: str) -> Path:
    """The scene's low-res aggregation file, else its ``_vh_clean`` one."""
    primary = scene_dir / f"{scene_id}.aggregation.json"
    fallback = scene_dir / f"{scene_id}_vh_clean.aggregation.json"
    if primary.is_file() or not fallback.is_file():
        return primary
    return fallback


def _check_segments_file(data: Any, aggregation_path: Path, segs_path: Path) -> None:
    """Reject an aggregation whose ``segmentsFile`` names another over-segmentation."""
    named = data.get("segmentsFile") if isinstance(data, dict) else None
    if isinstance(named, str) and not named.endswith(segs_path.name):
        raise SceneError(f"{aggregation_path}: annotates segments of {named!r}, not of "
                         f"{segs_path.name} (use <scene>.aggregation.json, which indexes the "
                         "_vh_clean_2 mesh)")


def load_scannet_scene(scene_dir: str | Path,
                       label_map: Mapping[str, int] | str | Path | None = None) -> Scene:
    """Load a ScanNet v2 scan directory as a :class:`Scene` with per-vertex ground truth.

    Reads ``<scene>_vh_clean_2.ply``, ``<scene>_vh_clean_2.0.010000.segs.json`` and
    ``<scene>.aggregation.json`` (``<scene>_vh_clean.aggregation.json`` when that is the only
    one, provided its ``segmentsFile`` is the ``_vh_clean_2`` over-segmentation), where
    ``<scene>`` is the directory name. Each vertex gets its object's id as instance and the
    nyu40 id of the object's label as semantic; vertices in no object get -1 and 0, and
    labels absent from the label map get semantic 0 (logged). Where two objects claim a
    segment the last one listed wins (logged).

    Args:
        scene_dir: the scan directory; its name becomes the scene name.
        label_map: raw category → nyu40 id, or the path of ``scannetv2-labels.combined.tsv``;
            by default that file in ``scene_dir`` or up to two levels above.

    Raises:
        SceneError: missing files, no label map, a vertex/segment count mismatch, an object
            naming a segment the mesh does not have, malformed JSON or PLY.
    """
    scene_dir = Path(scene_dir).absolute()
    if not scene_dir.is_dir():
        raise SceneError(f"ScanNet scene directory not found: {scene_dir}")
    scene_id = scene_dir.name
    if label_map is None:
        label_map = find_label_map(scene_dir)
    if isinstance(label_map, (str, Path)):
        label_map = read_label_map(label_map)

    ply_path = scene_dir / f"{scene_id}_vh_clean_2.ply"
    segs_path = scene_dir / f"{scene_id}{SEGS_SUFFIX}"
    aggregation_path = _aggregation_path(scene_dir, scene_id)
    for path, what in ((ply_path, "mesh"), (segs_path, "segmentation"),
                       (aggregation_path, "aggregation")):
        if not path.is_file():
            raise SceneError(f"ScanNet {what} file not found: {path}")

    vertex = read_ply_vertices(ply_path)
    names = set(vertex.dtype.names or ())
    missing = [p for p in ("x", "y", "z", "red", "green", "blue") if p not in names]
    if missing:
        raise SceneError(f"{ply_path}: vertex element lacks {missing}")
    if vertex.shape[0] == 0:
        raise SceneError(f"{ply_path}: the mesh has no vertices")
    seg_indices = read_segmentation(segs_path)
    if seg_indices.shape[0] != vertex.shape[0]:
        raise SceneError(f"{segs_path}: {seg_indices.shape[0]} segment ids for the "
                         f"{vertex.shape[0]} vertices of {ply_path.name}")
    aggregation = _read_json(aggregation_path, "aggregation")
    _check_segments_file(aggregation, aggregation_path, segs_path)
    objects = _parse_aggregation(aggregation, aggregation_path)

    # Owner (index into ``objects``) of each distinct segment id; later objects overwrite.
    segment_ids, vertex_segment = np.unique(seg_indices, return_inverse=True)
    owner = np.full(segment_ids.shape[0], -1, np.int64)
    contested = 0
    for index, (object_id, _, segments) in enumerate(objects):
        claimed = np.asarray(segments, np.int64)
        slot = np.searchsorted(segment_ids, claimed)
        known = (slot < segment_ids.shape[0]) & (
            segment_ids[np.minimum(slot, segment_ids.shape[0] - 1)] == claimed)
        if not known.all():
            unknown = sorted(set(claimed[~known].tolist()))
            raise SceneError(f"{aggregation_path}: object {object_id} names segment id(s) "
                             f"{unknown[:10]} absent from {segs_path.name}")
        slot = np.unique(slot)
        contested += int(np.count_nonzero(owner[slot] >= 0))
        owner[slot] = index
    if contested:
        LOG.warning("%s: %d segment(s) claimed by more than one object; the last one wins",
                    scene_id, contested)

    object_ids = np.array([o[0] for o in objects] + [-1], np.int32)
    unknown_labels = sorted({o[1] for o in objects if o[1] not in label_map})
    if unknown_labels:
        LOG.warning("%s: label(s) not in the label map, set to unannotated (0): %s",
                    scene_id, unknown_labels)
    semantic_ids = np.array([int(label_map.get(o[1], 0)) for o in objects] + [0], np.int32)
    vertex_owner = owner[vertex_segment]  # -1 indexes the trailing "no object" entry
    xyz = np.stack([vertex[a] for a in "xyz"], axis=1)
    rgb = np.stack([vertex[c] for c in ("red", "green", "blue")], axis=1)
    return make_scene(xyz, rgb, semantic_ids[vertex_owner], object_ids[vertex_owner],
                      name=scene_id)


def convert_scannet(scene_dirs: Iterable[str | Path], out_dir: str | Path,
                    label_map: Mapping[str, int] | str | Path | None = None) -> list[Path]:
    """Convert ScanNet v2 scan directories to ``<out_dir>/<scene>.npz`` scene files.

    Args:
        scene_dirs: scan directories (see :func:`load_scannet_scene`).
        out_dir: output directory, created if needed.
        label_map: as for :func:`load_scannet_scene`; a path is read once for all scenes.

    Returns:
        The written paths, in the order of ``scene_dirs``.

    Raises:
        SceneError: two scene directories with the same name, or any scene that fails to load.
    """
    scene_dirs = [Path(d) for d in scene_dirs]
    names = [d.absolute().name for d in scene_dirs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SceneError(f"scene directories share names {duplicates}; outputs would collide")
    if isinstance(label_map, (str, Path)):
        label_map = read_label_map(label_map)
    out_dir = Path(out_dir)
    written = []
    for scene_dir in scene_dirs:
        scene = load_scannet_scene(scene_dir, label_map)
        path = out_dir / f"{scene.name}.npz"
        save_scene(path, scene)
        LOG.info("wrote %s (%d points)", path, scene.num_points)
        written.append(path)
    return written
