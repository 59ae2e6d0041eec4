"""Map persistence: the live map and the segmenter's memory in one file, written atomically.

ROS-free; the segmentation node (:mod:`occuseg_ros.ros.segmentation_node`) snapshots its map
with it and resumes from it. One state is one uncompressed ``.npz`` file,
``<directory>/occuseg_map_state.npz``, holding:

- ``xyz`` (N, 3) float32: the map's points, metres in the map frame ``frame_id`` (REP-105),
  in :meth:`occuseg_ros.core.surface_map.SurfaceMap.points` order;
- ``rgb`` (N, 3) uint8: their colours;
- ``instance_ids`` (I,) uint32: the persistent ids of the last published segmentation;
- ``segmenter.<name>``: every array of :meth:`occuseg_ros.core.segmenter.Segmenter.state_arrays`
  (opaque here: saved and returned as they are);
- ``meta``: UTF-8 JSON (format name and version, frame, voxel size, stamps, counts).

A state is written to a temporary file in the same directory, flushed and fsync'd, then
renamed over the old file with :func:`os.replace`, and the directory is fsync'd: a reader (or
a process restarted after a crash, even a power cut) finds the whole old state or the whole new
one, never a mixture. A writer killed mid-write leaves only its temporary file, which
:func:`discard_partial_writes` removes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

#: Name of the state file inside the map directory.
STATE_FILE = "occuseg_map_state.npz"
#: The ``format`` value of the metadata, and the version this module writes and reads.
FORMAT_NAME = "occuseg_map_state"
FORMAT_VERSION = 1
#: Prefix of the segmenter's arrays in the file.
_SEGMENTER_PREFIX = "segmenter."
#: Temporary files are ``.<STATE_FILE>.<random>.tmp`` (hidden, never matched by readers).
_TMP_PREFIX = f".{STATE_FILE}."
_TMP_SUFFIX = ".tmp"


class MapStateError(ValueError):
    """A state file that is corrupt, truncated, foreign or of another format version; the
    message says which and names the file."""


@dataclass
class MapState:
    """One snapshot of the map and of what the segmenter remembers.

    Attributes:
        xyz: (N, 3) float32 points, metres in ``frame_id``.
        rgb: (N, 3) uint8 colours.
        segmenter: named arrays of ``Segmenter.state_arrays()`` (numeric dtypes).
        voxel_size_m: voxel edge the segmenter worked at, metres (the model's).
        frame_id: the map frame (REP-105), "" before the first input.
        stamp_ns: stamp of the last input, nanoseconds of ROS time (its header's clock).
        instance_ids: (I,) uint32 ids of the instances of the last published segmentation.
        taken_unix_s: wall-clock time the state was taken, seconds since the UNIX epoch.
    """

    xyz: np.ndarray
    rgb: np.ndarray
    segmenter: dict[str, np.ndarray]
    voxel_size_m: float
    frame_id: str = ""
    stamp_ns: int = 0
    instance_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    taken_unix_s: float = field(default_factory=time.time)

    @property
    def num_points(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def num_instances(self) -> int:
        return int(self.instance_ids.shape[0])


def state_path(directory: str | Path) -> Path:
    """The state file of a map directory."""
    return Path(directory) / STATE_FILE


def save_map_state(directory: str | Path, state: MapState) -> Path:
    """Write ``state`` to ``<directory>/occuseg_map_state.npz`` atomically (see the module
    docstring); the directory is created if missing.

    Returns:
        The path of the state file.

    Raises:
        ValueError: the state's arrays have the wrong shapes or dtypes (nothing is written).
        OSError: the write failed; the previous file is intact and no temporary file is left.
    """
    arrays = _arrays_of(state)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = state_path(directory)
    tmp = directory / f"{_TMP_PREFIX}{secrets.token_hex(8)}{_TMP_SUFFIX}"
    # O_EXCL: never another writer's file; 0o666 less the umask, like any new file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)
    return path


def load_map_state(directory: str | Path) -> MapState:
    """Read the state file of ``directory``.

    Raises:
        FileNotFoundError: there is no state file.
        OSError: the file cannot be opened (permissions...).
        MapStateError: the file is corrupt, truncated, foreign or of another format version.
    """
    path = state_path(directory)
    with open(path, "rb") as f:
        try:
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise MapStateError(f"{path} is not an npz archive")
            with loaded:  # reading every member checks its CRC
                arrays = {name: loaded[name] for name in loaded.files}
        except MapStateError:
            raise
        except (ValueError, EOFError, OSError, KeyError, zipfile.BadZipFile,
                zlib.error) as exc:
            raise MapStateError(f"{path} is corrupt or not a map state: {exc}") from exc
    return _state_from(arrays, path)


def discard_partial_writes(directory: str | Path) -> int:
    """Remove the temporary files of writers that died mid-write (the state file itself is
    never partial). Only one process may write to a directory at a time.

    Returns:
        The number of files removed.
    """
    removed = 0
    for tmp in Path(directory).glob(f"{_TMP_PREFIX}*{_TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


def keep_aside(directory: str | Path, suffix: str = ".corrupt") -> Path:
    """Rename the state file of ``directory`` out of the way, to
    ``occuseg_map_state.npz.<UTC time><suffix>``, so that a fresh map does not overwrite it.

    Returns:
        The new path.
    """
    path = state_path(directory)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.{stamp}{suffix}")
    os.replace(path, aside)
    _fsync_directory(path.parent)
    return aside


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _arrays_of(state: MapState) -> dict[str, np.ndarray]:
    """The file's members for ``state``, validated."""
    xyz = np.ascontiguousarray(state.xyz, np.float32)
    rgb = np.ascontiguousarray(state.rgb, np.uint8)
    ids = np.ascontiguousarray(state.instance_ids, np.uint32)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"expected (N, 3) points and colours, got {xyz.shape} and {rgb.shape}")
    if ids.ndim != 1:
        raise ValueError(f"instance_ids must be a vector, got shape {ids.shape}")
    if not state.voxel_size_m > 0:
        raise ValueError(f"voxel_size_m must be positive, got {state.voxel_size_m}")
    segmenter = {}
    for name, value in state.segmenter.items():
        array = np.asarray(value)
        if not name or "/" in name or array.dtype.hasobject:
            raise ValueError(f"segmenter array {name!r} ({array.dtype}) cannot be saved: "
                             "names need no '/', arrays a numeric dtype")
        segmenter[_SEGMENTER_PREFIX + name] = array
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "frame_id": state.frame_id,
            "voxel_size_m": float(state.voxel_size_m), "stamp_ns": int(state.stamp_ns),
            "taken_unix_s": float(state.taken_unix_s), "num_points": int(xyz.shape[0]),
            "num_instances": int(ids.shape[0]), "segmenter_arrays": sorted(state.segmenter)}
    return {"meta": np.frombuffer(json.dumps(meta).encode("utf-8"), np.uint8), "xyz": xyz,
            "rgb": rgb, "instance_ids": ids, **segmenter}


def _state_from(arrays: Mapping[str, np.ndarray], path: Path) -> MapState:
    """Validate the members of a state file and build the state."""

    def fail(reason: str) -> MapStateError:
        return MapStateError(f"{path} is not a usable map state: {reason}")

    try:
        meta = json.loads(np.asarray(arrays["meta"], np.uint8).tobytes().decode("utf-8"))
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise fail(f"no readable metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise fail("foreign file (no occuseg_map_state metadata)")
    if meta.get("version") != FORMAT_VERSION:
        raise fail(f"format version {meta.get('version')!r}, this build reads {FORMAT_VERSION}")
    try:
        xyz, rgb, ids = arrays["xyz"], arrays["rgb"], arrays["instance_ids"]
        names = [str(n) for n in meta["segmenter_arrays"]]
        segmenter = {n: arrays[_SEGMENTER_PREFIX + n] for n in names}
        num_points, num_instances = int(meta["num_points"]), int(meta["num_instances"])
        voxel_size_m, stamp_ns = float(meta["voxel_size_m"]), int(meta["stamp_ns"])
        frame_id, taken = str(meta["frame_id"]), float(meta["taken_unix_s"])
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"missing or mistyped member {exc}") from exc
    if xyz.dtype != np.float32 or xyz.shape != (num_points, 3):
        raise fail(f"xyz is {xyz.dtype} {xyz.shape}, expected float32 ({num_points}, 3)")
    if rgb.dtype != np.uint8 or rgb.shape != (num_points, 3):
        raise fail(f"rgb is {rgb.dtype} {rgb.shape}, expected uint8 ({num_points}, 3)")
    if ids.dtype != np.uint32 or ids.shape != (num_instances,):
        raise fail(f"instance_ids is {ids.dtype} {ids.shape}, expected uint32 "
                   f"({num_instances},)")
    if not np.isfinite(xyz).all():
        raise fail("non-finite points")
    if not voxel_size_m > 0:
        raise fail(f"voxel size {voxel_size_m}")
    return MapState(xyz, rgb, segmenter, voxel_size_m, frame_id, stamp_ns, ids, taken)


@dataclass
class SnapshotStats:
    """What a :class:`SnapshotWriter` has done.

    Attributes:
        written: states written.
        failed: writes that failed.
        last_taken_unix_s: when the last written state was taken (UNIX seconds), None before.
        last_write_s: seconds the last successful write took (serialise, fsync, rename).
        last_points: points of the last written state.
        last_error: the last failure's message, "" once a later write succeeded.
    """

    written: int = 0
    failed: int = 0
    last_taken_unix_s: float | None = None
    last_write_s: float = 0.0
    last_points: int = 0
    last_error: str = ""


class SnapshotWriter:
    """Writes map states to one directory from a single background thread.

    :meth:`submit` never blocks on the disk: the state waits in a one-state slot, and a newer
    state submitted before the thread takes it replaces it (the latest wins; at most one
    state writing and one waiting). Failures are counted, handed to ``on_error`` and do not
    stop the thread.

    Args:
        directory: the map directory.
        on_error: called from the writer thread with each failure.
    """

    def __init__(self, directory: str | Path,
                 on_error: Callable[[Exception], None] | None = None) -> None:
        self.directory = Path(directory)
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: MapState | None = None
        self._closing = False
        self._stats = SnapshotStats()
        self._thread = threading.Thread(target=self._run, name="map-snapshot-writer",
                                        daemon=True)
        self._thread.start()

    @property
    def stats(self) -> SnapshotStats:
        """A copy of the counters."""
        with self._cond:
            return replace(self._stats)

    def submit(self, state: MapState) -> None:
        """Queue ``state`` for writing, replacing one still waiting."""
        with self._cond:
            if self._closing:
                raise RuntimeError("the snapshot writer is closed")
            self._pending = state
            self._cond.notify()

    def close(self, final: MapState | None = None) -> None:
        """Finish the write in progress and stop the thread; then write ``final`` (which
        supersedes a state still waiting) in the calling thread, or else the waiting one.
        Later calls do nothing."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            if final is not None:
                self._pending = None
            self._cond.notify()
        self._thread.join()
        if final is not None:
            self._write(final)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                state, self._pending = self._pending, None
            if state is None:
                return
            self._write(state)

    def _write(self, state: MapState) -> None:
        start = time.perf_counter()
        try:
            save_map_state(self.directory, state)
        except (OSError, ValueError) as exc:
            with self._cond:
                self._stats.failed += 1
                self._stats.last_error = str(exc)
            if self._on_error is not None:
                self._on_error(exc)
            return
        with self._cond:
            self._stats.written += 1
            self._stats.last_taken_unix_s = state.taken_unix_s
            self._stats.last_write_s = time.perf_counter() - start
            self._stats.last_points = state.num_points
            self._stats.last_error = ""
