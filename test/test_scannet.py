"""ScanNet v2 readers: a tiny scan written in the released layout, loaded and converted."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from occuseg_ros.core.scannet import (convert_scannet, find_label_map, load_scannet_scene,
                                      read_aggregation, read_label_map, read_segmentation)
from occuseg_ros.core.scene import SceneError, load_scene

SCENE = "scene0007_01"

TSV_HEADER = ("id\traw_category\tcategory\tcount\tnyu40id\teigen13id\tnyuClass\tnyu40class\t"
              "eigen13class\tModelNet40\tModelNet10\tShapeNetCore55\tsynsetoffset\twnsynsetid\t"
              "wnsynsetkey\tmpcat40\tmpcat40index")
TSV_ROWS = [
    "1\twall\twall\t8277\t1\t12\twall\twall\tWall\t\t\t\t\tn04546855\twall.n.01\twall\t1",
    "2\tchair\tchair\t4646\t5\t4\tchair\tchair\tChair\tchair\tchair\tchair\t03001627\t"
    "n03001627\tchair.n.01\tchair\t3",
    "3\tfloor\tfloor\t4358\t2\t5\tfloor\tfloor\tFloor\t\t\t\t\tn03365592\tfloor.n.01\tfloor\t2",
    "5\tkitchen cabinets\tcabinet\t310\t3\t6\tcabinet\tcabinet\tFurniture\t\t\tcabinet\t"
    "02933112\tn02933112\tcabinet.n.01\tcabinet\t7",
    "9\ttrash can\ttrash can\t1090\t39\t6\tgarbage bin\totherfurniture\tFurniture\t\t\t"
    "trash bin\t02747177\tn02747177\tashcan.n.01\tobjects\t39",
]

# Ten vertices over five segments with ScanNet-like sparse ids; segment 977 is in no object.
SEG_INDICES = [12, 12, 12, 305, 305, 977, 4410, 4410, 305, 9000]
# Objects in file order: "trash can" (object 3) also claims segment 305 of "kitchen cabinets"
# (object 1), so its later entry wins there; "mystery box" is not in the label map.
GROUPS = [
    {"id": 0, "objectId": 0, "label": "floor", "segments": [12]},
    {"id": 1, "objectId": 1, "label": "kitchen cabinets", "segments": [305]},
    {"id": 2, "objectId": 2, "label": "mystery box", "segments": [9000]},
    {"id": 3, "objectId": 3, "label": "trash can", "segments": [4410, 305]},
]
WANT_INSTANCE = [0, 0, 0, 3, 3, -1, 3, 3, 3, 2]
WANT_SEMANTIC = [2, 2, 2, 39, 39, 0, 39, 39, 39, 0]


def _write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """ScanNet's ``_vh_clean_2.ply`` layout: binary little endian, RGBA vertices, faces."""
    header = (f"ply\nformat binary_little_endian 1.0\ncomment VCGLIB generated\n"
              f"element vertex {len(xyz)}\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
              "property uchar alpha\nelement face 2\nproperty list uchar int vertex_indices\n"
              "end_header\n")
    vertex = np.empty(len(xyz), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"),
                                 ("green", "u1"), ("blue", "u1"), ("alpha", "u1")])
    for i, axis in enumerate("xyz"):
        vertex[axis] = xyz[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertex[channel] = rgb[:, i]
    vertex["alpha"] = 255
    face = np.dtype([("n", "u1"), ("v", "<i4", (3,))])
    faces = np.array([(3, (0, 1, 2)), (3, (3, 4, 5))], face)
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii") + vertex.tobytes() + faces.tobytes())


def _write_scan(root: Path, seg_indices=SEG_INDICES, groups=GROUPS,
                aggregation_name: str = f"{SCENE}.aggregation.json") -> tuple[Path, dict]:
    """Write a tiny scan directory ``root/<SCENE>``; return it and its vertex arrays."""
    scene_dir = root / SCENE
    scene_dir.mkdir(parents=True)
    rng = np.random.default_rng(7)
    n = len(SEG_INDICES)
    arrays = {"xyz": rng.uniform(-2, 2, (n, 3)).astype(np.float32),
              "rgb": rng.integers(0, 256, (n, 3)).astype(np.uint8)}
    _write_ply(scene_dir / f"{SCENE}_vh_clean_2.ply", arrays["xyz"], arrays["rgb"])
    segs = {"params": {"kThresh": "0.0001", "segMinVerts": "20", "minPoints": "750",
                       "maxPoints": "30000", "thinThresh": "0.05", "flatThresh": "0.001",
                       "minLength": "0.02", "maxLength": "1"},
            "sceneId": SCENE, "segIndices": list(seg_indices)}
    (scene_dir / f"{SCENE}_vh_clean_2.0.010000.segs.json").write_text(json.dumps(segs))
    aggregation = {"sceneId": f"scannet.{SCENE}", "appId": "Aggregator.v2",
                   "segGroups": groups,
                   "segmentsFile": f"scannet.{SCENE}_vh_clean_2.0.010000.segs.json"}
    (scene_dir / aggregation_name).write_text(json.dumps(aggregation))
    return scene_dir, arrays


def _write_tsv(directory: Path) -> Path:
    path = directory / "scannetv2-labels.combined.tsv"
    path.write_text("\n".join([TSV_HEADER, *TSV_ROWS]) + "\n")
    return path


def test_read_label_map(tmp_path):
    labels = read_label_map(_write_tsv(tmp_path))
    assert labels == {"wall": 1, "chair": 5, "floor": 2, "kitchen cabinets": 3, "trash can": 39}


def test_read_segmentation_and_aggregation(tmp_path):
    scene_dir, _ = _write_scan(tmp_path)
    segs = read_segmentation(scene_dir / f"{SCENE}_vh_clean_2.0.010000.segs.json")
    np.testing.assert_array_equal(segs, SEG_INDICES)
    objects = read_aggregation(scene_dir / f"{SCENE}.aggregation.json")
    assert objects == [(g["objectId"], g["label"], g["segments"]) for g in GROUPS]


def test_load_scene_labels_every_vertex(tmp_path, caplog):
    scene_dir, arrays = _write_scan(tmp_path)
    tsv = _write_tsv(tmp_path)
    with caplog.at_level(logging.WARNING, logger="occuseg_ros.core.scannet"):
        scene = load_scannet_scene(scene_dir, label_map=tsv)
    assert scene.name == SCENE and scene.num_points == len(SEG_INDICES)
    np.testing.assert_array_equal(scene.xyz, arrays["xyz"])
    np.testing.assert_array_equal(scene.rgb, arrays["rgb"])
    np.testing.assert_array_equal(scene.instance, WANT_INSTANCE)
    np.testing.assert_array_equal(scene.semantic, WANT_SEMANTIC)
    assert scene.instance.dtype == np.int32 and scene.semantic.dtype == np.int32
    assert "1 segment(s) claimed by more than one object" in caplog.text
    assert "mystery box" in caplog.text


def test_first_listed_object_loses_contested_segment(tmp_path):
    swapped = [GROUPS[0], GROUPS[3], GROUPS[2], GROUPS[1]]
    scene_dir, _ = _write_scan(tmp_path, groups=swapped)
    scene = load_scannet_scene(scene_dir, label_map={"floor": 2, "kitchen cabinets": 3,
                                                     "trash can": 39})
    np.testing.assert_array_equal(scene.instance, [0, 0, 0, 1, 1, -1, 3, 3, 1, 2])
    np.testing.assert_array_equal(scene.semantic, [2, 2, 2, 3, 3, 0, 39, 39, 3, 0])


@pytest.mark.parametrize("levels_up", [0, 1, 2])
def test_label_map_found_beside_or_above_the_scan(tmp_path, levels_up):
    scene_dir, _ = _write_scan(tmp_path / "ScanNet" / "scans")
    tsv = _write_tsv([scene_dir, *scene_dir.parents][levels_up])
    assert find_label_map(scene_dir) == tsv
    np.testing.assert_array_equal(load_scannet_scene(scene_dir).semantic, WANT_SEMANTIC)


def test_no_label_map_is_a_clear_error(tmp_path):
    _write_tsv(tmp_path)  # three levels above the scan: out of reach
    scene_dir, _ = _write_scan(tmp_path / "ScanNet" / "scans")
    with pytest.raises(SceneError, match="no scannetv2-labels.combined.tsv found"):
        load_scannet_scene(scene_dir)


def test_vh_clean_aggregation_fallback(tmp_path):
    scene_dir, _ = _write_scan(tmp_path, aggregation_name=f"{SCENE}_vh_clean.aggregation.json")
    scene = load_scannet_scene(scene_dir, label_map=_write_tsv(tmp_path))
    np.testing.assert_array_equal(scene.instance, WANT_INSTANCE)
    hi_res = json.loads((scene_dir / f"{SCENE}_vh_clean.aggregation.json").read_text())
    hi_res["segmentsFile"] = f"scannet.{SCENE}_vh_clean.segs.json"
    (scene_dir / f"{SCENE}_vh_clean.aggregation.json").write_text(json.dumps(hi_res))
    with pytest.raises(SceneError, match="annotates segments of"):
        load_scannet_scene(scene_dir, label_map=_write_tsv(tmp_path))


@pytest.mark.parametrize("suffix, what", [
    ("_vh_clean_2.ply", "mesh"),
    ("_vh_clean_2.0.010000.segs.json", "segmentation"),
    (".aggregation.json", "aggregation"),
])
def test_missing_file(tmp_path, suffix, what):
    scene_dir, _ = _write_scan(tmp_path)
    (scene_dir / f"{SCENE}{suffix}").unlink()
    with pytest.raises(SceneError, match=f"ScanNet {what} file not found"):
        load_scannet_scene(scene_dir, label_map={})


def test_count_mismatch(tmp_path):
    scene_dir, _ = _write_scan(tmp_path, seg_indices=SEG_INDICES[:-1])
    with pytest.raises(SceneError, match="9 segment ids for the 10 vertices"):
        load_scannet_scene(scene_dir, label_map={})


def test_unknown_segment_id(tmp_path):
    groups = GROUPS + [{"id": 4, "objectId": 4, "label": "chair", "segments": [12, 31337]}]
    scene_dir, _ = _write_scan(tmp_path, groups=groups)
    with pytest.raises(SceneError, match=r"object 4 names segment id\(s\) \[31337\]"):
        load_scannet_scene(scene_dir, label_map={})


@pytest.mark.parametrize("name, text, match", [
    (".aggregation.json", '{"segGroups": [', "malformed JSON"),
    (".aggregation.json", '{"groups": []}', "no 'segGroups' list"),
    (".aggregation.json", '{"segGroups": [{"objectId": 0, "label": "chair", "segments": "12"}]}',
     "list of integer 'segments'"),
    (".aggregation.json", '{"segGroups": [{"objectId": 0, "label": "a", "segments": []}, '
                          '{"objectId": 0, "label": "b", "segments": []}]}', "two segGroups"),
    ("_vh_clean_2.0.010000.segs.json", "not json", "malformed JSON"),
    ("_vh_clean_2.0.010000.segs.json", '{"segIndices": [1, -2]}', "non-negative integers"),
])
def test_bad_json(tmp_path, name, text, match):
    scene_dir, _ = _write_scan(tmp_path)
    (scene_dir / f"{SCENE}{name}").write_text(text)
    with pytest.raises(SceneError, match=match):
        load_scannet_scene(scene_dir, label_map={})


@pytest.mark.parametrize("text, match", [
    ("raw_category\tcategory\nchair\tchair\n", r"lacks column\(s\) \['nyu40id'\]"),
    (f"{TSV_HEADER}\n1\tchair\tchair\t3\tfive\n", "'five' is not an integer"),
    (f"{TSV_HEADER}\n1\tchair\tchair\t3\t5\n2\tchair\tchair\t3\t6\n", "maps to both 5 and 6"),
])
def test_bad_label_map(tmp_path, text, match):
    path = tmp_path / "labels.tsv"
    path.write_text(text)
    with pytest.raises(SceneError, match=match):
        read_label_map(path)
    with pytest.raises(SceneError, match="label map not found"):
        read_label_map(tmp_path / "absent.tsv")


def test_convert_round_trip(tmp_path):
    scene_dir, arrays = _write_scan(tmp_path / "scans")
    tsv = _write_tsv(tmp_path)
    written = convert_scannet([scene_dir], tmp_path / "out", label_map=tsv)
    assert written == [tmp_path / "out" / f"{SCENE}.npz"]
    scene = load_scene(written[0])
    assert scene.name == SCENE
    np.testing.assert_array_equal(scene.xyz, arrays["xyz"])
    np.testing.assert_array_equal(scene.rgb, arrays["rgb"])
    np.testing.assert_array_equal(scene.semantic, WANT_SEMANTIC)
    np.testing.assert_array_equal(scene.instance, WANT_INSTANCE)
    with pytest.raises(SceneError, match="share names"):
        convert_scannet([scene_dir, tmp_path / "elsewhere" / SCENE], tmp_path / "out2")


def test_missing_scene_directory(tmp_path):
    with pytest.raises(SceneError, match="scene directory not found"):
        load_scannet_scene(tmp_path / SCENE)


def test_occuseg_scannet_command_converts_a_scan(tmp_path):
    from test_cli import occuseg

    scene_dir, _ = _write_scan(tmp_path / "scans")
    _write_tsv(tmp_path / "scans")  # found one level above the scan
    out = occuseg("scannet", scene_dir, "--out", tmp_path / "npz")
    assert f"wrote {tmp_path / 'npz' / SCENE}.npz" in out.stdout
    np.testing.assert_array_equal(load_scene(tmp_path / "npz" / f"{SCENE}.npz").instance,
                                  WANT_INSTANCE)
    missing = occuseg("scannet", tmp_path / "nowhere", "--out", tmp_path / "npz", check=False)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
