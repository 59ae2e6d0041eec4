"""The browser view: served offline on loopback, and drawn (headless Chromium, SwiftShader)."""

from __future__ import annotations

import io
import json
import re
import urllib.request

import numpy as np
import open3d as o3d
import pytest

from headless_browser import chromium, screenshot
from occuseg_ros.core import viewer as viewer_module
from occuseg_ros.core.labels import instance_colours
from occuseg_ros.core.segmenter import InstanceTable, MapSegmentation
from occuseg_ros.core.synthetic import generate_room
from occuseg_ros.core.viewer import MapViewer


def labelled_room() -> MapSegmentation:
    """A generated room labelled with its ground truth (walls, floor: no instance)."""
    s = generate_room(7)
    keep = s.xyz[:, 2] < 2.2
    xyz, rgb, inst, sem = s.xyz[keep], s.rgb[keep], s.instance[keep], s.semantic[keep]
    ids = np.where((inst >= 0) & ~np.isin(sem, (1, 2, 22)), inst + 1, 0).astype(np.uint32)
    u = np.unique(ids[ids > 0])
    zeros = np.zeros((len(u), 3), np.float32)
    table = InstanceTable(u, np.array([np.bincount(sem[ids == i]).argmax() for i in u],
                                      np.int32), np.full(len(u), 0.9, np.float32),
                          np.ones(len(u), np.int64), zeros, zeros, zeros)
    return MapSegmentation(xyz, rgb, sem, ids, np.zeros(len(xyz), np.float32), table, 0, {})


def test_the_page_is_self_contained_and_served_on_loopback():
    page = viewer_module._PAGE
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page), "the page calls out"
    assert "<link" not in page and "src=" not in page
    view = MapViewer(port=0)
    try:
        assert view.url.startswith("http://127.0.0.1:")
        seg = labelled_room()
        view.update(seg)
        with urllib.request.urlopen(view.url + "status.json", timeout=5) as response:
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            status = json.loads(response.read())
        assert status["version"] == 1 and len(status["instances"]) == len(seg.instances)
        with urllib.request.urlopen(view.url + "map.bin", timeout=5) as response:
            data = response.read()
        n = int(np.frombuffer(data[:4], "<u4")[0])
        assert n == seg.xyz.shape[0] and len(data) == 4 + 15 * n
        np.testing.assert_array_equal(np.frombuffer(data[4:4 + 12 * n], "<f4").reshape(n, 3),
                                      seg.xyz)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(view.url + "../etc/passwd", timeout=5)
    finally:
        view.close()


@pytest.mark.skipif(chromium() is None, reason="no chromium (Debian package 'chromium')")
def test_chromium_draws_the_labelled_room(tmp_path):
    seg = labelled_room()
    view = MapViewer(port=0)
    try:
        view.update(seg)
        png = screenshot(view.url, wait_s=6.0)
    finally:
        view.close()
    (tmp_path / "view.png").write_bytes(png)
    image = np.asarray(o3d.io.read_image(str(tmp_path / "view.png")))[..., :3]
    assert image.shape[:2] == (700, 1000)
    background = np.all(np.abs(image.astype(int) - 24) <= 2, axis=-1)
    assert background.mean() < 0.8, "nothing was drawn"
    # Most instances show up in their own colour.
    colours = instance_colours(seg.instances.ids)
    seen = [np.all(np.abs(image.astype(int) - c.astype(int)) <= 3, axis=-1).sum() > 20
            for c in colours]
    assert np.mean(seen) > 0.6, f"{sum(seen)} of {len(seen)} instance colours drawn"
    assert io.BytesIO(png).getbuffer().nbytes > 10_000
