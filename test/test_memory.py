"""The RSS sampler behind ``occuseg live``'s memory.csv, on a process grown by a known amount."""

from __future__ import annotations

import csv
import subprocess
import sys
import time

import pytest

from occuseg_ros.core.memory import MemorySampler, rss_mib

GROWTH_MIB = 256
# A process that waits, then allocates GROWTH_MIB and writes every byte of it (so every
# page is resident), then waits again.
CHILD = f"""
import sys
print("ready", flush=True)
sys.stdin.readline()
block = bytearray(b"\\x01") * ({GROWTH_MIB} * 1024 * 1024)
print("grown", flush=True)
sys.stdin.readline()
"""


def test_sampler_sees_a_process_grow_by_a_known_amount(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        sampler = MemorySampler(period_s=0.05, pid=child.pid)
        sampler.start()
        time.sleep(0.3)
        grow_at = sampler.samples[-1].elapsed_s  # this sample and earlier: before growth
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "grown"
        time.sleep(0.3)
        last = sampler.stop()
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=10)
    finally:
        child.kill()
    samples = sampler.samples
    assert samples[-1] == last and len(samples) >= 8
    times = [s.elapsed_s for s in samples]
    assert times[0] == pytest.approx(0.0, abs=0.01)
    assert all(b > a for a, b in zip(times, times[1:]))
    before = [s.rss_mib for s in samples if s.elapsed_s <= grow_at]
    assert len(before) >= 3 and all(0 < r < 100 for r in before)
    assert last.rss_mib - before[0] == pytest.approx(GROWTH_MIB, abs=12)

    summary = sampler.summary(warmup_end_s=times[1] + 0.001)  # the third sample
    assert summary["rss_start_mib"] == pytest.approx(before[0], abs=0.01)
    assert summary["warmup_end_s"] == pytest.approx(times[2], abs=0.001)
    assert summary["rss_warmup_mib"] == pytest.approx(before[2], abs=0.01)
    assert summary["rss_end_mib"] == pytest.approx(last.rss_mib, abs=0.01)
    assert summary["rss_max_mib"] >= summary["rss_end_mib"]
    assert summary["growth_after_warmup_pct"] > 100 * GROWTH_MIB / summary["rss_warmup_mib"] - 10
    assert summary["samples"] == len(samples) and summary["period_s"] == 0.05
    # The steadier figures see the same growth: the first fifth after warm-up is before it,
    # the last fifth after it.
    assert summary["median_growth_after_warmup_pct"] > 100 * GROWTH_MIB / before[2] - 10
    assert summary["slope_after_warmup_mib_per_h"] > 0
    # Warm-up after the last sample, or none at all: no growth figure.
    for late in (times[-1] + 1.0, None):
        assert sampler.summary(late)["growth_after_warmup_pct"] is None
        assert sampler.summary(late)["slope_after_warmup_mib_per_h"] is None

    rows = list(csv.reader(sampler.write_csv(tmp_path / "memory.csv").open()))
    assert rows[0] == ["elapsed_s", "rss_mib"] and len(rows) == len(samples) + 1
    assert float(rows[-1][1]) == pytest.approx(last.rss_mib, abs=0.01)


def test_rss_of_this_process_and_bad_arguments():
    assert 10 < rss_mib() < 100_000
    with pytest.raises(ValueError, match="period_s"):
        MemorySampler(period_s=0)
    sampler = MemorySampler(period_s=60.0)
    assert not sampler.running
    with pytest.raises(RuntimeError, match="not running"):
        sampler.stop()
    with pytest.raises(RuntimeError, match="no samples"):
        sampler.summary(None)
    sampler.start()
    assert sampler.running and len(sampler.samples) == 1
    with pytest.raises(RuntimeError, match="already"):
        sampler.start()
    sampler.stop()
    assert not sampler.running and len(sampler.samples) == 2
