"""Scene and prediction files: formats, round trips and clear errors for bad input."""

import logging

import numpy as np
import pytest

from occuseg_ros.core.scene import (PredictionFile, SceneError, load_scene, make_scene,
                                    read_ply_vertices, save_scene, write_ply)


def _arrays(n=5):
    rng = np.random.default_rng(1)
    return (rng.random((n, 3)).astype(np.float32), rng.integers(0, 255, (n, 3)).astype(np.uint8),
            rng.integers(0, 40, n).astype(np.int32), rng.integers(-1, 3, n).astype(np.int32))


def test_npz_round_trip(tmp_path):
    xyz, rgb, sem, ins = _arrays()
    save_scene(tmp_path / "s.npz", make_scene(xyz, rgb, sem, ins))
    scene = load_scene(tmp_path / "s.npz")
    np.testing.assert_array_equal(scene.xyz, xyz)
    np.testing.assert_array_equal(scene.rgb, rgb)
    np.testing.assert_array_equal(scene.semantic, sem)
    np.testing.assert_array_equal(scene.instance, ins)
    assert scene.name == "s" and scene.has_ground_truth


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_formats_with_faces(tmp_path, fmt):
    xyz, rgb, sem, ins = _arrays(4)
    props = ("property float x\nproperty float y\nproperty float z\nproperty uchar red\n"
             "property uchar green\nproperty uchar blue\nproperty int label\n")
    header = (f"ply\nformat {fmt} 1.0\ncomment made by a test\nelement vertex 4\n{props}"
              "element face 1\nproperty list uchar int vertex_indices\nend_header\n")
    endian = ">" if fmt == "binary_big_endian" else "<"
    dtype = np.dtype([("x", endian + "f4"), ("y", endian + "f4"), ("z", endian + "f4"),
                      ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("label", endian + "i4")])
    rows = np.empty(4, dtype)
    for i, a in enumerate("xyz"):
        rows[a] = xyz[:, i]
    for i, c in enumerate(("red", "green", "blue")):
        rows[c] = rgb[:, i]
    rows["label"] = sem
    path = tmp_path / "m.ply"
    with open(path, "wb") as fh:
        fh.write(header.encode())
        if fmt == "ascii":
            for r in rows:
                fh.write((" ".join(str(v) for v in r.tolist()) + "\n").encode())
            fh.write(b"3 0 1 2\n")
        else:
            fh.write(rows.tobytes() + b"\x03" + np.array([0, 1, 2], endian + "i4").tobytes())
    scene = load_scene(path)
    np.testing.assert_allclose(scene.xyz, xyz, rtol=1e-6)
    np.testing.assert_array_equal(scene.rgb, rgb)
    np.testing.assert_array_equal(scene.semantic, sem)
    assert scene.instance is None


def test_write_ply_round_trip(tmp_path):
    xyz, rgb, sem, ins = _arrays(6)
    write_ply(tmp_path / "o.ply", xyz, rgb, {"label": sem, "instance": ins,
                                            "score": np.linspace(0, 1, 6, dtype=np.float32)})
    vertex = read_ply_vertices(tmp_path / "o.ply")
    np.testing.assert_array_equal(vertex["instance"], ins)
    np.testing.assert_allclose(vertex["score"], np.linspace(0, 1, 6))
    scene = load_scene(tmp_path / "o.ply")
    np.testing.assert_array_equal(scene.instance, ins)


def test_bad_scenes_give_clear_errors(tmp_path):
    with pytest.raises(SceneError, match="not found"):
        load_scene(tmp_path / "missing.npz")
    np.savez(tmp_path / "empty.npz", xyz=np.zeros((0, 3), np.float32),
             rgb=np.zeros((0, 3), np.uint8))
    with pytest.raises(SceneError, match="no points"):
        load_scene(tmp_path / "empty.npz")
    np.savez(tmp_path / "mismatch.npz", xyz=np.zeros((4, 3), np.float32),
             rgb=np.zeros((3, 3), np.uint8))
    with pytest.raises(SceneError, match="'rgb' has shape"):
        load_scene(tmp_path / "mismatch.npz")
    np.savez(tmp_path / "nokey.npz", points=np.zeros((4, 3)))
    with pytest.raises(SceneError, match="no 'xyz'"):
        load_scene(tmp_path / "nokey.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(SceneError, match="not a readable"):
        load_scene(tmp_path / "junk.npz")
    (tmp_path / "trunc.ply").write_bytes(
        b"ply\nformat binary_little_endian 1.0\nelement vertex 10\nproperty float x\n"
        b"property float y\nproperty float z\nend_header\n" + b"\0" * 20)
    with pytest.raises(SceneError, match="truncated"):
        load_scene(tmp_path / "trunc.ply")
    (tmp_path / "a.xyz").write_text("1 2 3\n")
    with pytest.raises(SceneError, match="unsupported scene format"):
        load_scene(tmp_path / "a.xyz")


def test_nan_points_dropped_with_warning(caplog):
    xyz, rgb, sem, ins = _arrays(5)
    xyz[1, 0] = np.nan
    xyz[3, 2] = np.inf
    with caplog.at_level(logging.WARNING):
        scene = make_scene(xyz, rgb, sem, ins, name="nan")
    assert scene.num_points == 3
    np.testing.assert_array_equal(scene.semantic, sem[[0, 2, 4]])
    assert "dropped 2 of 5 points" in caplog.text
    xyz[:] = np.nan
    with pytest.raises(SceneError, match="all 5 points"):
        make_scene(xyz, rgb)


def test_prediction_file_round_trip_and_validation(tmp_path):
    pred = PredictionFile(semantic=np.array([5, 5, 1], np.int32),
                          instance=np.array([0, 0, -1], np.int32),
                          instance_ids=np.array([0], np.int32),
                          instance_labels=np.array([5], np.int32),
                          instance_scores=np.array([0.9], np.float32))
    pred.save(tmp_path / "p.npz")
    back = PredictionFile.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.instance, pred.instance)
    np.savez(tmp_path / "bad.npz", semantic=pred.semantic, instance=np.array([0, 3, -1]),
             instance_ids=pred.instance_ids, instance_labels=pred.instance_labels,
             instance_scores=pred.instance_scores)
    with pytest.raises(SceneError, match="indexes outside"):
        PredictionFile.load(tmp_path / "bad.npz")
