"""Training: targets from scenes, a real CPU smoke run where the loss falls, resume."""

import numpy as np
import pytest
import torch

from occuseg_ros.core.checkpoint import load_checkpoint, save_checkpoint
from occuseg_ros.core.labels import SCANNET20_IDS
from occuseg_ros.core.losses import IGNORE_INDEX, LossConfig
from occuseg_ros.core.model import NetworkConfig, OccuSegNet
from occuseg_ros.core.scene import Scene, save_scene
from occuseg_ros.core.synthetic import generate_room
from occuseg_ros.core.training import (
    CLASS_WEIGHT_RANGE,
    SceneSource,
    TrainConfig,
    batch_loss,
    class_balance_weights,
    make_sample,
    train,
)

TINY = NetworkConfig(base_channels=8, num_levels=3, embedding_dim=8).to_dict()

pytestmark = pytest.mark.usefixtures("two_threads")


def _small_room(seed):
    return generate_room(seed, spacing_m=0.04, size_range_m=(2.5, 3.0))


def test_targets_follow_labels_and_crops_drop_cut_instances():
    scene = _small_room(1)
    rng = np.random.default_rng(0)
    whole = make_sample(scene, rng, 0.02, 0.0, SCANNET20_IDS, augmentation=False)
    # Stuff (wall, floor) has a class but no instance; objects have both.
    wall = np.flatnonzero(np.array(SCANNET20_IDS) == 1)[0]
    assert (whole.instance[whole.semantic == wall] == -1).all()
    assert (whole.instance >= 0).any()
    assert set(np.unique(whole.semantic)) <= set(range(len(SCANNET20_IDS))) | {IGNORE_INDEX}
    assert np.abs(whole.features).max() <= 1.0
    crop = make_sample(scene, np.random.default_rng(3), 0.02, 1.0, SCANNET20_IDS,
                       augmentation=False)
    assert crop.coords.shape[0] < whole.coords.shape[0]
    extent = np.ptp(crop.positions[:, :2], axis=0)
    assert (extent <= 1.0).all()
    # Every instance left in the crop is complete: as many voxels as in the whole scene.
    for inst in np.unique(crop.instance[crop.instance >= 0]):
        assert (crop.instance == inst).sum() == (whole.instance == inst).sum()


def test_loss_falls_on_two_tiny_rooms():
    torch.manual_seed(0)
    samples = [make_sample(_small_room(s), np.random.default_rng(s), 0.02, 1.5, SCANNET20_IDS)
               for s in (2, 3)]
    model = OccuSegNet(NetworkConfig.from_dict(TINY))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss, terms = batch_loss(model, samples, torch.device("cpu"), LossConfig())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        assert np.isfinite(list(terms.values())).all()
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


def test_train_writes_resumable_checkpoints(tmp_path):
    config = TrainConfig(out_dir=str(tmp_path), steps=2, batch_size=1, crop_m=1.5,
                         train_seeds=(0, 2), val_seeds=(500, 501), val_every=2, network=TINY)
    messages = []
    best = train(config, torch.device("cpu"), log=messages.append)
    assert best.is_file() and (tmp_path / "last.pt").is_file()
    model, meta = load_checkpoint(tmp_path / "last.pt", torch.device("cpu"))
    assert meta["step"] == 2 and meta["label_ids"] == list(SCANNET20_IDS)
    assert "validation AP" in messages[-1]
    assert len((tmp_path / "log.tsv").read_text().splitlines()) == 1
    config.steps = 3
    train(config, torch.device("cpu"), resume=tmp_path / "last.pt", log=messages.append)
    assert any("resumed" in m for m in messages)
    _, meta = load_checkpoint(tmp_path / "last.pt", torch.device("cpu"))
    assert meta["step"] == 3


def test_init_from_takes_the_checkpoint_weights_and_shape(tmp_path):
    source = tmp_path / "source.pt"
    model = OccuSegNet(NetworkConfig.from_dict(TINY))
    save_checkpoint(source, model, np.array(SCANNET20_IDS), 0.05)
    config = TrainConfig(out_dir=str(tmp_path / "tuned"), steps=1, batch_size=1, crop_m=1.5,
                         lr=1e-12, train_seeds=(0, 1), val_seeds=(500, 501), val_every=1,
                         voxel_size_m=0.02, init_from=str(source))
    messages = []
    train(config, torch.device("cpu"), log=messages.append)
    assert any("starting from the weights" in m for m in messages)
    assert any("0.05 m voxels" in m for m in messages)  # the voxel size mismatch is reported
    tuned, meta = load_checkpoint(tmp_path / "tuned" / "last.pt", torch.device("cpu"))
    assert meta["network"] == model.config.to_dict()  # the checkpoint's shape, not the default
    tuned_weights = dict(tuned.named_parameters())
    for name, weight in model.named_parameters():  # lr 1e-12: one step leaves the weights
        assert torch.allclose(tuned_weights[name], weight, atol=1e-6), name


def test_overlapping_validation_seeds_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        TrainConfig(train_seeds=(0, 10), val_seeds=(5, 6))


def test_class_balance_weights_follow_label_frequencies(tmp_path):
    # Two scene files: wall (1) 800 points, chair (5) 200, table (7) 50, sink (34) 1, and a
    # label outside the training set (40) that must not count.
    labels = np.repeat([1, 5, 7, 34, 40], [800, 200, 50, 1, 30])
    files = []
    for k, part in enumerate((labels[:500], labels[500:])):
        path = tmp_path / f"s{k}.npz"
        save_scene(path, Scene(xyz=np.zeros((part.size, 3), np.float32),
                               rgb=np.zeros((part.size, 3), np.uint8), semantic=part,
                               instance=np.zeros(part.size, np.int64)))
        files.append(str(path))
    ids = list(SCANNET20_IDS)
    weights = dict(zip(ids, class_balance_weights(SceneSource((0, 1), files), ids, 0.5)))
    median = np.median([800, 200, 50, 1])  # 125
    assert weights[1] == pytest.approx((800 / median) ** -0.5)
    assert weights[5] == pytest.approx((200 / median) ** -0.5)
    assert weights[7] == pytest.approx((50 / median) ** -0.5)
    assert weights[34] == CLASS_WEIGHT_RANGE  # (1 / 125) ** -0.5 = 11.2, clipped
    assert weights[2] == 1.0  # floor is in no scene
    flat = class_balance_weights(SceneSource((0, 1), files), ids, 0.0)
    assert flat == (1.0,) * len(ids)


def test_class_balance_puts_the_weights_in_the_run_config(tmp_path):
    config = TrainConfig(out_dir=str(tmp_path), steps=1, batch_size=1, crop_m=1.5,
                         train_seeds=(0, 2), val_seeds=(500, 501), val_every=1, network=TINY,
                         class_balance=0.5)
    messages = []
    train(config, torch.device("cpu"), log=messages.append)
    assert any(m.startswith("semantic class weights 1:") for m in messages)
    _, meta = load_checkpoint(tmp_path / "last.pt", torch.device("cpu"))
    stored = meta["train_config"]["loss"]["class_weights"]
    assert len(stored) == len(SCANNET20_IDS) and min(stored) < 1.0 < max(stored)
