"""Map persistence: the state file (atomic writes, validation), the node snapshotting and
resuming its map in-process, and a node process killed with SIGKILL and restarted."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2

from occuseg_ros.core import map_store
from occuseg_ros.core.map_store import (STATE_FILE, MapState, MapStateError, SnapshotWriter,
                                        discard_partial_writes, keep_aside, load_map_state,
                                        save_map_state)
from occuseg_ros.core.surface_map import grid_keys
from occuseg_ros.core.synthetic import generate_room
from ros_harness import Probe, Spinner, wait_for, wait_for_subscribers
from test_segmentation_node import OUT, Session, cloud, labels_of, make_node


def make_state(n: int, seed: int = 0, frame: str = "map") -> MapState:
    rng = np.random.default_rng(seed)
    return MapState(
        xyz=rng.uniform(-5, 5, (n, 3)).astype(np.float32),
        rgb=rng.integers(0, 256, (n, 3), dtype=np.uint8),
        segmenter={"tracker_voxel_keys": np.sort(rng.integers(0, 2**60, n)),
                   "tracker_voxel_ids": rng.integers(1, 9, n).astype(np.uint32),
                   "tracker_next_id": np.array(9, np.int64),
                   "cached_logits": rng.standard_normal((n, 4)).astype(np.float16)},
        voxel_size_m=0.05, frame_id=frame, stamp_ns=1_700_000_000_123_456_789,
        instance_ids=np.arange(1, 9, dtype=np.uint32), taken_unix_s=1234.5)


def assert_same_state(a: MapState, b: MapState) -> None:
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.instance_ids, b.instance_ids)
    assert sorted(a.segmenter) == sorted(b.segmenter)
    for name, value in a.segmenter.items():
        assert b.segmenter[name].dtype == value.dtype, name
        np.testing.assert_array_equal(b.segmenter[name], value)
    assert (a.frame_id, a.stamp_ns, a.voxel_size_m, a.taken_unix_s) == (
        b.frame_id, b.stamp_ns, b.voxel_size_m, b.taken_unix_s)


# ------------------------------------------------------------------------- the state file


@pytest.mark.parametrize("n", [0, 1, 5000])
def test_state_round_trip(tmp_path, n):
    state = make_state(n)
    path = save_map_state(tmp_path / "new" / "dir", state)
    assert path == tmp_path / "new" / "dir" / STATE_FILE
    assert_same_state(state, load_map_state(path.parent))
    assert os.listdir(path.parent) == [STATE_FILE]


@pytest.mark.parametrize("failure", ["disk_full_mid_write", "fsync", "interrupted"])
def test_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch,
                                                                  failure):
    old = make_state(300, seed=1)
    save_map_state(tmp_path, old)

    def half_written(f, **arrays):
        f.write(b"PK\x03\x04" + bytes(5000))
        raise OSError(28, "No space left on device")

    def fsync_fails(fd):
        raise OSError(5, "Input/output error")

    def interrupted(f, **arrays):
        f.write(b"PK\x03\x04")
        raise KeyboardInterrupt

    patch = {"disk_full_mid_write": (map_store.np, "savez", half_written),
             "fsync": (map_store.os, "fsync", fsync_fails),
             "interrupted": (map_store.np, "savez", interrupted)}[failure]
    monkeypatch.setattr(*patch)
    with pytest.raises(KeyboardInterrupt if failure == "interrupted" else OSError):
        save_map_state(tmp_path, make_state(400, seed=2))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [STATE_FILE]
    assert_same_state(old, load_map_state(tmp_path))


def test_unsaveable_state_is_refused_before_writing(tmp_path):
    state = make_state(10)
    state.segmenter["bad"] = np.array([object()], dtype=object)
    with pytest.raises(ValueError, match="bad"):
        save_map_state(tmp_path, state)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        save_map_state(tmp_path, MapState(np.zeros((4, 2), np.float32),
                                          np.zeros((4, 3), np.uint8), {}, 0.05))
    assert os.listdir(tmp_path) == []


def test_readers_only_ever_see_a_whole_state(tmp_path):
    """A reader polling while a writer alternates two states reads one or the other, whole."""
    states = {n: make_state(n, seed=n) for n in (20000, 35000)}
    save_map_state(tmp_path, states[20000])
    done = threading.Event()

    def write() -> None:
        for k in range(40):
            save_map_state(tmp_path, states[(20000, 35000)[k % 2]])
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while not done.is_set():
        got = load_map_state(tmp_path)  # never raises: never a partial file
        assert_same_state(states[got.num_points], got)
        reads += 1
    writer.join()
    assert reads > 5
    assert os.listdir(tmp_path) == [STATE_FILE]


def _corrupt(path: Path, case: str) -> None:
    data = path.read_bytes()
    if case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "flipped_byte":
        flipped = bytearray(data)
        flipped[len(data) // 3] ^= 0xFF  # inside the xyz member: its CRC no longer matches
        path.write_bytes(bytes(flipped))
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "foreign_npz":
        with open(path, "wb") as f:
            np.savez(f, xyz=np.zeros((3, 3), np.float32))
    elif case == "plain_npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros((3, 3), np.float32))
    elif case in ("newer_version", "wrong_count"):
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(arrays["meta"].tobytes())
        if case == "newer_version":
            meta["version"] = 99
        else:
            meta["num_points"] += 1
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        with open(path, "wb") as f:
            np.savez(f, **arrays)


@pytest.mark.parametrize("case", ["truncated", "flipped_byte", "empty", "random",
                                  "foreign_npz", "plain_npy", "newer_version", "wrong_count"])
def test_corrupt_or_foreign_file_gives_a_clear_error(tmp_path, case):
    path = save_map_state(tmp_path, make_state(3000))
    _corrupt(path, case)
    with pytest.raises(MapStateError, match=STATE_FILE) as info:
        load_map_state(tmp_path)
    assert isinstance(info.value, ValueError)
    if case == "newer_version":
        assert "format version 99" in str(info.value)


def test_missing_file_is_not_corruption(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_map_state(tmp_path)


def test_partial_writes_are_discarded_and_bad_files_kept_aside(tmp_path):
    path = save_map_state(tmp_path, make_state(10))
    leftover = tmp_path / f".{STATE_FILE}.abc123.tmp"  # a writer killed mid-write
    leftover.write_bytes(b"PK\x03\x04")
    assert discard_partial_writes(tmp_path) == 1
    assert os.listdir(tmp_path) == [STATE_FILE]
    aside = keep_aside(tmp_path)
    assert aside.name.startswith(STATE_FILE + ".") and aside.name.endswith(".corrupt")
    assert not path.exists() and aside.is_file()


def test_snapshot_writer_keeps_only_the_latest_waiting_state(tmp_path, monkeypatch):
    """While one state is being written, later ones replace each other in a single slot."""
    written: list[int] = []
    started, release = threading.Event(), threading.Event()
    real_save = map_store.save_map_state

    def slow_save(directory, state):
        written.append(state.num_points)
        started.set()
        release.wait(10.0)
        return real_save(directory, state)

    monkeypatch.setattr(map_store, "save_map_state", slow_save)
    writer = SnapshotWriter(tmp_path)
    writer.submit(make_state(10))
    assert started.wait(10.0)
    for n in range(11, 20):
        writer.submit(make_state(n))
    release.set()
    writer.close()
    assert written == [10, 19]
    assert load_map_state(tmp_path).num_points == 19
    stats = writer.stats
    assert stats.written == 2 and stats.failed == 0 and stats.last_points == 19
    writer.close()  # twice is harmless
    with pytest.raises(RuntimeError):
        writer.submit(make_state(5))


def test_snapshot_writer_final_state_and_failures(tmp_path):
    errors: list[Exception] = []
    writer = SnapshotWriter(tmp_path / "maps", errors.append)
    writer.submit(make_state(7))
    writer.close(final=make_state(8))
    assert load_map_state(tmp_path / "maps").num_points == 8
    assert writer.stats.last_taken_unix_s == 1234.5 and writer.stats.last_write_s > 0
    blocked = tmp_path / "a_file"
    blocked.write_text("not a directory")
    failing = SnapshotWriter(blocked, errors.append)
    failing.close(final=make_state(3))
    assert failing.stats.failed == 1 and failing.stats.last_error and len(errors) == 1


# ------------------------------------------------------------------------- the node


@pytest.fixture(scope="module")
def room():
    """A small generated room (about 3 m): segmented in well under a second."""
    return generate_room(5, size_range_m=(3.0, 3.5))


def test_node_resumes_its_map_and_instance_ids(ros_context, model_path, tmp_path, room):
    """Snapshot, destroy, restart on the same map_dir: the same points and ids come out
    without any input; ~/load_map brings the map back after a reset."""
    map_dir = tmp_path / "map"
    first = Session(make_node(model_path, tmp_path, input_mode="snapshot",
                              map_dir=str(map_dir), snapshot_period_s=0.2))
    try:
        reference = labels_of(first.publish_and_wait(first.cloud_pub, cloud(
            room.xyz, room.rgb, stamp_s=7.25)))
        ids = set(np.unique(reference["instance"][reference["instance"] > 0]).tolist())
        assert ids, "the room gave no instance"

        def snapshot_of_the_segmentation():
            try:
                state = load_map_state(map_dir)
            except FileNotFoundError:
                return None
            return state if set(state.instance_ids.tolist()) == ids else None

        state = wait_for(snapshot_of_the_segmentation, 20.0, "a snapshot after segmenting")
        assert state.num_points == room.num_points and state.frame_id == "map"
        assert state.stamp_ns == 7_250_000_000
        diagnostics = wait_for(lambda: (d := first.diagnostics()).get(
            "snapshots_written", "0") != "0" and d, 10.0, "snapshots in /diagnostics")
        assert diagnostics["last_snapshot_time"] != "never"
        assert float(diagnostics["snapshot_write_ms"]) > 0
    finally:
        first.close()  # destroy_node: a last snapshot if anything changed since

    second = Session(make_node(model_path, tmp_path, map_dir=str(map_dir),
                               snapshot_period_s=60.0))
    try:
        assert second.node.map_points == room.num_points  # before any input
        out = wait_for(lambda: second.probe.messages(OUT), 30.0, "the resumed map's cloud")[-1]
        assert out.header.frame_id == "map"
        assert (out.header.stamp.sec, out.header.stamp.nanosec) == (7, 250_000_000)
        restored = labels_of(out)
        for key in ("x", "y", "z", "label", "instance"):
            np.testing.assert_array_equal(restored[key], reference[key], err_msg=key)

        assert second.call("/occuseg/reset").success
        wait_for(lambda: second.node.map_points == 0, 10.0, "the reset")
        second.probe.clear(OUT)
        response = second.call("/occuseg/load_map")
        assert response.success, response.message
        assert f"loaded {room.num_points} points and {len(ids)} instances" in response.message
        out = wait_for(lambda: second.probe.messages(OUT), 30.0, "the loaded map's cloud")[-1]
        np.testing.assert_array_equal(labels_of(out)["instance"], reference["instance"])
    finally:
        second.close()


def test_node_sets_a_corrupt_state_aside_and_starts_empty(ros_context, model_path, tmp_path):
    map_dir = tmp_path / "map"
    map_dir.mkdir()
    (map_dir / STATE_FILE).write_bytes(b"PK\x03\x04 half a file")
    node = make_node(model_path, tmp_path, map_dir=str(map_dir))
    try:
        assert node.map_points == 0
        assert [p.name.endswith(".corrupt") for p in map_dir.iterdir()] == [True]
    finally:
        node.destroy_node()
    assert not (map_dir / STATE_FILE).exists()  # nothing to snapshot: still empty


def test_load_map_without_map_dir_fails_cleanly(ros_context, model_path, tmp_path):
    session = Session(make_node(model_path, tmp_path))
    try:
        response = session.call("/occuseg/load_map")
        assert not response.success and "map_dir" in response.message
    finally:
        session.close()


# ------------------------------------------------------------------------- a killed process


def _node_process(model_path: Path, map_dir: Path, log: Path, period_s: float
                  ) -> subprocess.Popen:
    """``occuseg node`` as a user starts it (the installed package, as this test process
    imports it), on this test run's DDS domain, over UDP loopback.

    os.environ already holds what the ROS wheels' re-exec set (LD_LIBRARY_PATH and its
    guard), HOME, AMENT_PREFIX_PATH and the test run's ROS_DOMAIN_ID. UDP only: this test
    SIGKILLs the node while it writes clouds to the probe, and a process killed mid-write into
    another participant's Fast DDS shared-memory port can leave that port unusable
    (eProsima/Fast-DDS#2811, #5469); the kernel cleans up a killed process's sockets.
    """
    script = Path(sys.executable).with_name("occuseg")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "occuseg_ros.cli"]
    params = {"model_path": model_path, "device": "cpu", "torch_threads": 2,
              "map_dir": map_dir, "snapshot_period_s": period_s, "segment_rate_hz": 5.0,
              "input_mode": "increment", "input_qos": "reliable"}
    args = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
    env = {**os.environ, "FASTDDS_BUILTIN_TRANSPORTS": "UDPv4"}
    with open(log, "ab") as out:
        return subprocess.Popen(command + ["node", "--ros-args"] + args, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def _log_tail(log: Path) -> str:
    """The end of the node processes' log, for a failure message."""
    return f"node log:\n{log.read_text()[-3000:]}"


def _running(process: subprocess.Popen, log: Path, condition: Callable[[], Any]
             ) -> Callable[[], Any]:
    """``condition`` for wait_for that fails at once, with the log, if ``process`` exited."""

    def check() -> Any:
        if process.poll() is not None:
            raise AssertionError(f"the node exited with {process.returncode}; {_log_tail(log)}")
        return condition()

    return check


def test_sigkilled_node_restarts_with_its_map_and_instance_ids(ros_context, model_path,
                                                               tmp_path, room):
    """The issue's criterion: SIGKILL mid-run (inputs still streaming, snapshots every
    second), restart on the same map_dir: the restored map holds >= 99 % of the voxels of
    the last snapshot, and the same instance ids as were published before the kill."""
    import torch

    from occuseg_ros.core.checkpoint import load_checkpoint

    voxel_m = load_checkpoint(model_path, torch.device("cpu"))[1]["voxel_size_m"]
    map_dir, log = tmp_path / "map", tmp_path / "node.log"
    probe = Probe("persistence_probe")
    pub = probe.create_publisher(PointCloud2, "/surface_cloud",
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    probe.listen(PointCloud2, OUT)
    spinner = Spinner(probe)
    # The room in four slabs of whole 0.16 m blocks along x, sent round and round.
    block_x = np.floor(room.xyz[:, 0] / 0.16).astype(int)
    edges = np.linspace(block_x.min(), block_x.max() + 1, 5).astype(int)
    slabs = [(block_x >= lo) & (block_x < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    sent = [0]

    def publish_next() -> None:
        part = slabs[sent[0] % len(slabs)]
        pub.publish(cloud(room.xyz[part], room.rgb[part], stamp_s=10.0 + 0.1 * sent[0]))
        sent[0] += 1

    def streaming(condition):
        """``condition`` for wait_for that also sends the next slab every 0.25 s."""
        last = [0.0]

        def check():
            if time.monotonic() - last[0] > 0.25:
                publish_next()
                last[0] = time.monotonic()
            return condition()

        return check

    def full_clouds():
        return [m for m in probe.messages(OUT) if m.width == room.num_points]

    def full_snapshot():
        try:
            state = load_map_state(map_dir)
        except FileNotFoundError:
            return None
        return state if state.num_points == room.num_points and state.num_instances else None

    processes: list[subprocess.Popen] = []
    log_tail = functools.partial(_log_tail, log)
    try:
        processes.append(_node_process(model_path, map_dir, log, period_s=1.0))
        wait_for(_running(processes[0], log, lambda: pub.get_subscription_count() >= 1), 60.0,
                 "the node's input subscription", log_tail)
        first = wait_for(_running(processes[0], log, streaming(
            lambda: full_clouds() and full_snapshot())), 60.0,
            "the whole room segmented and snapshotted", log_tail)
        # Keep streaming over two more snapshot periods, then kill without warning.
        wait_for(_running(processes[0], log, streaming(
            lambda: load_map_state(map_dir).taken_unix_s > first.taken_unix_s + 1.5)), 30.0,
            "two more snapshots", log_tail)
        publish_next()
        processes[0].send_signal(signal.SIGKILL)
        assert processes[0].wait(timeout=10) == -signal.SIGKILL
        published_ids = {int(i) for m in full_clouds()
                         for i in np.unique(labels_of(m)["instance"]) if i > 0}
        snapshot = load_map_state(map_dir)  # whole, even if the kill came mid-write
        assert snapshot.voxel_size_m == pytest.approx(voxel_m)
        snapshot_ids = set(snapshot.instance_ids.tolist())
        assert snapshot_ids and snapshot_ids <= published_ids

        probe.clear(OUT)
        processes.append(_node_process(model_path, map_dir, log, period_s=60.0))
        out = wait_for(_running(processes[1], log, lambda: probe.messages(OUT)), 60.0,
                       "the restarted node's cloud", log_tail)[-1]
        assert not list(map_dir.glob("*.tmp")), "a killed write's temporary file survived"
        after = labels_of(out)
        restored = np.unique(grid_keys(np.stack([after["x"], after["y"], after["z"]], 1),
                                       voxel_m))
        saved = np.unique(grid_keys(snapshot.xyz, voxel_m))
        kept = np.isin(saved, restored).mean()
        assert kept >= 0.99, f"only {kept:.1%} of the snapshot's voxels restored"
        after_ids = set(np.unique(after["instance"][after["instance"] > 0]).tolist())

        # SIGTERM: a last snapshot on the way out (the period is too long to have written one).
        extra = slabs[0]
        pub.publish(cloud(room.xyz[extra] + np.float32([20.0, 0.0, 0.0]), room.rgb[extra],
                          stamp_s=100.0))
        wait_for(_running(processes[1], log, lambda: probe.messages(OUT)[-1].width
                          == room.num_points + extra.sum()), 30.0,
                 "the cloud with the new blocks", log_tail)
        processes[1].send_signal(signal.SIGTERM)
        assert processes[1].wait(timeout=30) == 0, log_tail()
    finally:
        spinner.close()
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    final = load_map_state(map_dir)
    assert final.num_points == room.num_points + extra.sum() and final.frame_id == "map"
    assert after_ids == snapshot_ids, (
        f"ids lost {sorted(snapshot_ids - after_ids)}, new {sorted(after_ids - snapshot_ids)}: "
        "the segmenter's restored state did not give back its instances")
