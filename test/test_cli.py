"""The ``occuseg`` command, run as a user runs it: a real process, real files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from occuseg_ros.core.scene import PredictionFile, load_scene, save_scene
from occuseg_ros.core.synthetic import generate_room


def occuseg(*args, check=True):
    script = Path(sys.executable).with_name("occuseg")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "occuseg_ros.cli"]
    proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"occuseg {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _scores(stdout):
    last = stdout.strip().splitlines()[-1].split()
    assert last[0::2] == ["AP", "AP50", "AP25"], last
    return dict(zip(last[0::2], map(float, last[1::2])))


def test_oracle_segment_then_evaluate_real_scene(scannet_scene_path, tmp_path):
    occuseg("segment", scannet_scene_path, "--out", tmp_path / "full.npz",
            "--predictions", "oracle", "--oracle-noise", "0.05")
    occuseg("segment", scannet_scene_path, "--out", tmp_path / "noocc.npz",
            "--predictions", "oracle", "--oracle-noise", "0.05", "--no-occupancy")
    full = _scores(occuseg("evaluate", "--pred", tmp_path / "full.npz",
                           "--gt", scannet_scene_path).stdout)
    without = _scores(occuseg("evaluate", "--pred", tmp_path / "noocc.npz",
                              "--gt", scannet_scene_path).stdout)
    assert full["AP50"] >= 0.9
    assert full["AP"] >= without["AP"]
    pred = PredictionFile.load(tmp_path / "full.npz")
    assert pred.semantic.shape == (load_scene(scannet_scene_path).num_points,)


def test_network_segment_with_a_checkpoint_and_json_evaluate(tmp_path):
    import torch

    from occuseg_ros.core.checkpoint import save_checkpoint
    from occuseg_ros.core.labels import SCANNET20_IDS
    from occuseg_ros.core.model import NetworkConfig, OccuSegNet

    torch.manual_seed(0)
    model = OccuSegNet(NetworkConfig(base_channels=8, num_levels=3))
    save_checkpoint(tmp_path / "tiny.pt", model, np.array(SCANNET20_IDS), 0.02)
    scene = generate_room(4)
    save_scene(tmp_path / "room.npz", scene)
    out = occuseg("segment", tmp_path / "room.npz", "--out", tmp_path / "pred.npz",
                  "--model", tmp_path / "tiny.pt", "--device", "cpu")
    assert "network predictions" in out.stdout
    pred = PredictionFile.load(tmp_path / "pred.npz")
    assert pred.semantic.shape == (scene.num_points,)
    assert set(np.unique(pred.semantic)) <= set(SCANNET20_IDS)
    result = json.loads(occuseg("evaluate", "--pred", tmp_path / "pred.npz",
                                "--gt", tmp_path / "room.npz", "--json").stdout)
    assert {"ap", "ap50", "ap25", "per_class"} <= set(result)


def test_export_keeps_the_model_and_its_provenance_but_not_the_optimizer(tmp_path):
    import torch

    from occuseg_ros.core.checkpoint import load_checkpoint, save_checkpoint
    from occuseg_ros.core.labels import SCANNET20_IDS
    from occuseg_ros.core.model import NetworkConfig, OccuSegNet

    torch.manual_seed(0)
    model = OccuSegNet(NetworkConfig(base_channels=8, num_levels=3))
    optimiser = torch.optim.Adam(model.parameters())
    xyz = torch.unique(torch.randint(0, 16, (400, 3)), dim=0)
    coords = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], 1)  # batch, x, y, z
    model(torch.rand(len(xyz), 3), coords, 1)["semantic_logits"].sum().backward()
    optimiser.step()  # Adam's moments: twice the weights
    extra = {"optimizer": optimiser.state_dict(), "step": 7, "best_ap50": 0.5,
             "train_config": {"steps": 9}, "validation": {"ap50": 0.25}}
    save_checkpoint(tmp_path / "last.pt", model, np.array(SCANNET20_IDS), 0.05, extra)
    out = occuseg("export", tmp_path / "last.pt", tmp_path / "model.pt")
    assert "step 7, 0.05 m voxels, validation AP50 0.250" in out.stdout
    exported, meta = load_checkpoint(tmp_path / "model.pt", torch.device("cpu"))
    assert "optimizer" not in meta and "best_ap50" not in meta
    assert meta["step"] == 7 and meta["train_config"] == {"steps": 9}
    assert meta["voxel_size_m"] == 0.05 and meta["label_ids"] == list(SCANNET20_IDS)
    for (name, a), b in zip(model.state_dict().items(), exported.state_dict().values()):
        assert torch.equal(a, b), name
    assert (tmp_path / "model.pt").stat().st_size < 0.6 * (tmp_path / "last.pt").stat().st_size
    assert occuseg("export", tmp_path / "nope.pt", tmp_path / "x.pt", check=False).returncode == 2


def test_generate_and_bench(tmp_path):
    out = occuseg("generate", "--seed", "9", "--out", tmp_path / "g.npz")
    assert "wrote" in out.stdout
    scene = load_scene(tmp_path / "g.npz")
    np.testing.assert_array_equal(scene.xyz, generate_room(9).xyz)
    small = generate_room(9)
    keep = small.xyz[:, 0] < 1.5
    save_scene(tmp_path / "small.npz", type(small)(small.xyz[keep], small.rgb[keep],
                                                  small.semantic[keep], small.instance[keep]))
    table = occuseg("bench", "--no-generated", "--repeat", "1", tmp_path / "small.npz").stdout
    assert "machine:" in table
    header = [c.strip() for c in table.splitlines()[4].split("|")[1:-1]]
    assert header[-5:] == ["voxelise ms", "network ms", "supervoxels ms", "clustering ms",
                           "total ms"]
    row = [c.strip() for c in table.splitlines()[6].split("|")[1:-1]]
    assert row[0] == "small" and int(row[1]) == int(keep.sum())


def test_scaling_columns_are_whole_disjoint_blocks_under_a_column():
    """The scaling benchmark's increments: each a set of whole blocks under a 1 m column of
    the map, no block in two of them, as many as asked while they fit."""
    from occuseg_ros.core.bench import PATCH_M, disjoint_columns, tiled_map
    from occuseg_ros.core.surface_map import grid_keys

    room = generate_room(2, size_range_m=(4.0, 4.5))
    xyz, _ = tiled_map(room.xyz.astype(np.float32), room.rgb, 0.05, 60_000)
    columns = disjoint_columns(xyz, 0.16, 6, np.random.default_rng(0))
    assert len(columns) == 6
    blocks = grid_keys(xyz, 0.16)
    owner = np.full(xyz.shape[0], -1)
    for k, column in enumerate(columns):
        assert column.any() and (owner[column] == -1).all(), "columns share points"
        owner[column] = k
        inside = np.isin(blocks, blocks[column])
        np.testing.assert_array_equal(inside, column)  # whole blocks, nothing else
        extent = xyz[column, :2].max(axis=0) - xyz[column, :2].min(axis=0)
        assert (extent <= PATCH_M + 2 * 0.16 + 1e-6).all()
    # A map too small for that many: fewer columns, still disjoint.
    small = disjoint_columns(xyz[:2000], 0.16, 50, np.random.default_rng(1))
    assert 1 <= len(small) < 50


def test_bench_scaling_table():
    """Two small map sizes, one increment each: both rows per size, the map sizes asked for
    and an incremental pass that ran the network on part of the map only."""
    table = occuseg("bench", "--scaling", "--sizes", "4000,8000", "--patches", "1",
                    "--device", "cpu").stdout
    assert "machine:" in table and "margins refresh" in table
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    assert [r[1] for r in rows] == ["full", "incremental (p50)"] * 2
    sizes = [int(r[0]) for r in rows[::2]]
    assert abs(sizes[0] - 4000) < 400 and abs(sizes[1] - 8000) < 800
    full_voxels, inc_voxels = int(rows[2][-3]), int(rows[3][-3])
    assert 0 < inc_voxels < full_voxels
    same_class = float(rows[3][-2].rstrip("%"))
    assert 50.0 < same_class <= 100.0 and rows[3][-1].endswith("%")


def test_bench_node_streams_a_room_through_the_node(tmp_path, monkeypatch):
    """A generated room in three increments through the node over DDS: one row per increment,
    the map growing to the whole room, and the latency covering the method and publishing."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(1 + (os.getpid() + 50) % 100))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "ros_log"))
    room = generate_room(4, size_range_m=(3.0, 3.5))
    save_scene(tmp_path / "room.npz", room)
    table = occuseg("bench-node", tmp_path / "room.npz", "--increments", "3",
                    "--device", "cpu").stdout
    assert "machine:" in table and "latency input -> segmented output: p50" in table
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in table.splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    assert sum(int(r[1]) for r in rows) == int(rows[-1][2]) == room.num_points
    for row in rows:
        method, network, publish, latency = (float(x) for x in row[3:7])
        assert 0.0 < network <= method and publish > 0.0
        assert latency >= method + publish


@pytest.mark.parametrize("case", ["missing", "empty", "mismatch", "no_gt_oracle", "no_gt_half",
                                  "bad_model"])
def test_bad_input_gives_a_clear_error(tmp_path, case):
    scene_path = tmp_path / "s.npz"
    xyz = np.random.default_rng(0).random((50, 3)).astype(np.float32)
    args = ["segment", scene_path, "--out", tmp_path / "p.npz", "--predictions", "oracle"]
    expected = {"missing": "scene file not found", "empty": "no points",
                "mismatch": "'rgb' has shape", "no_gt_oracle": "needs 'semantic'",
                "no_gt_half": "oracle-instances needs 'semantic'",
                "bad_model": "not a readable checkpoint"}[case]
    if case == "empty":
        np.savez(scene_path, xyz=np.zeros((0, 3), np.float32), rgb=np.zeros((0, 3), np.uint8))
    elif case == "mismatch":
        np.savez(scene_path, xyz=xyz, rgb=np.zeros((49, 3), np.uint8))
    elif case in ("no_gt_oracle", "no_gt_half", "bad_model"):
        np.savez(scene_path, xyz=xyz, rgb=np.zeros((50, 3), np.uint8))
    if case == "no_gt_half":
        args[-1] = "oracle-instances"
    if case == "bad_model":
        (tmp_path / "m.pt").write_bytes(b"garbage")
        args = ["segment", scene_path, "--out", tmp_path / "p.npz", "--model", tmp_path / "m.pt"]
    proc = occuseg(*args, check=False)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_nan_points_are_dropped_with_a_warning(tmp_path):
    scene = generate_room(3)
    xyz = scene.xyz.copy()
    xyz[::100] = np.nan
    np.savez(tmp_path / "nan.npz", xyz=xyz, rgb=scene.rgb, semantic=scene.semantic,
             instance=scene.instance)
    proc = occuseg("segment", tmp_path / "nan.npz", "--out", tmp_path / "p.npz",
                   "--predictions", "oracle")
    assert "NaN or Inf" in proc.stderr
    pred = PredictionFile.load(tmp_path / "p.npz")
    assert pred.semantic.shape == (scene.num_points,)  # one row per input row
    dropped = np.isnan(xyz).any(axis=1)
    assert (pred.instance[dropped] == -1).all() and (pred.semantic[dropped] == 0).all()
    scores = _scores(occuseg("evaluate", "--pred", tmp_path / "p.npz",
                             "--gt", tmp_path / "nan.npz").stdout)
    assert scores["AP50"] > 0.9


def test_validate_prints_occupancy_and_ap():
    out = occuseg("validate", "--seeds", "100000:100001", "--predictions", "oracle").stdout
    assert "occupancy: R_c < 0.3 for" in out
    assert _scores(out)["AP50"] >= 0.9
    result = json.loads(occuseg("validate", "--seeds", "100000:100001", "--predictions",
                                "oracle", "--no-occupancy", "--json").stdout)
    assert result["occupancy_accuracy"] == 1.0 and result["ap50"] is not None


def test_one_half_ideal_takes_classes_and_instances_from_their_sources(tmp_path):
    # A seed outside the training, validation, tuning and held-out ranges.
    occuseg("generate", "--seed", "400000", "--out", tmp_path / "room.npz")
    gt = load_scene(tmp_path / "room.npz")
    pred, ap = {}, {}
    for source in ("network", "oracle-semantics", "oracle-instances", "oracle"):
        out = tmp_path / f"{source}.npz"
        occuseg("segment", tmp_path / "room.npz", "--out", out, "--predictions", source)
        pred[source] = PredictionFile.load(out)
        ap[source] = json.loads(occuseg("evaluate", "--pred", out, "--gt", tmp_path / "room.npz",
                                        "--json").stdout)["ap"]
    accuracy = {k: float((p.semantic == gt.semantic).mean()) for k, p in pred.items()}
    # Ideal classes: the labels follow the ground truth, unlike the network's.
    assert accuracy["oracle-semantics"] > 0.98 > accuracy["network"]
    # The network's classes with ideal instance outputs: the same labels, other instances.
    np.testing.assert_array_equal(pred["oracle-instances"].semantic, pred["network"].semantic)
    assert ap["network"] < ap["oracle-instances"] < ap["oracle"], ap
