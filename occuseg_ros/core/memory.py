"""Memory of a running process over time: resident set size (RSS) from ``/proc``.

:class:`MemorySampler` records ``(elapsed_s, rss_mib)`` every ``period_s`` seconds in a
background thread; ``occuseg live`` writes the samples to ``memory.csv`` and a summary
(:meth:`MemorySampler.summary`) to ``scores.json``, so a soak run shows whether memory keeps
growing once the map of a fixed-size room is complete. Linux only (``/proc/<pid>/status``).
"""

from __future__ import annotations

import csv
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_MIB = 1024.0 * 1024.0


def rss_mib(pid: int | None = None) -> float:
    """Resident set size of process ``pid`` (None: this one) in MiB, from the ``VmRSS`` line
    of ``/proc/<pid>/status`` (which the kernel gives in KiB).

    Raises:
        OSError: no such process, or no ``/proc`` (not Linux).
        ValueError: the file has no ``VmRSS`` line (a zombie process).
    """
    status = Path("/proc") / ("self" if pid is None else str(pid)) / "status"
    with status.open() as f:
        for line in f:
            if line.startswith("VmRSS:"):
                value, unit = line.split()[1:3]
                if unit != "kB":
                    raise ValueError(f"unexpected VmRSS unit {unit!r} in {status}")
                return int(value) * 1024 / _MIB
    raise ValueError(f"no VmRSS line in {status}")


@dataclass(frozen=True)
class MemorySample:
    """One reading: ``elapsed_s`` seconds after :meth:`MemorySampler.start`, RSS in MiB."""

    elapsed_s: float
    rss_mib: float


class MemorySampler:
    """Samples a process's RSS every ``period_s`` seconds in a daemon thread.

    :meth:`start` takes the first sample at once, :meth:`stop` a last one, so a run of any
    length has its start and end figures. Holds one small record per period (a 30-minute
    soak at 10 s: about 180).

    Args:
        period_s: seconds between samples (> 0).
        pid: process to watch; None: this process.
    """

    def __init__(self, period_s: float = 10.0, pid: int | None = None) -> None:
        if not period_s > 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.period_s = float(period_s)
        self.pid = pid
        self._samples: list[MemorySample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    @property
    def running(self) -> bool:
        """Whether the periodic sampling is on (between :meth:`start` and :meth:`stop`)."""
        return self._thread is not None

    @property
    def samples(self) -> list[MemorySample]:
        """The samples so far, oldest first."""
        with self._lock:
            return list(self._samples)

    def start(self) -> None:
        """Take the first sample (elapsed 0 s) and sample every ``period_s`` from now on."""
        if self._thread is not None:
            raise RuntimeError("the sampler is already running")
        self._started = time.monotonic()
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> MemorySample:
        """Stop the periodic sampling and take a last sample, which is returned."""
        if self._thread is None:
            raise RuntimeError("the sampler is not running")
        self._stop.set()
        self._thread.join()
        self._thread = None
        return self.sample()

    def sample(self) -> MemorySample:
        """Record the RSS now (seconds since :meth:`start`) and return it."""
        rss = rss_mib(self.pid)
        with self._lock:
            sample = MemorySample(time.monotonic() - self._started, rss)
            self._samples.append(sample)
        return sample

    def _run(self) -> None:
        deadline = self._started + self.period_s
        while not self._stop.wait(max(0.0, deadline - time.monotonic())):
            self.sample()
            deadline += self.period_s

    def write_csv(self, path: Path) -> Path:
        """Write ``elapsed_s,rss_mib`` rows (with that header) to ``path``; returns it."""
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(("elapsed_s", "rss_mib"))
            writer.writerows((f"{s.elapsed_s:.3f}", f"{s.rss_mib:.2f}") for s in self.samples)
        return path

    def summary(self, warmup_end_s: float | None) -> dict[str, Any]:
        """RSS figures in MiB: at the start, at the end of warm-up (the first sample at or
        after ``warmup_end_s`` seconds; None: warm-up never ended), at the end (the last
        sample) and the largest, and the growth from the end of warm-up to the end in per
        cent (None without a warm-up sample before the last one).

        Single samples swing by a few per cent with the work in flight (a segmentation's
        temporaries), so two steadier figures come with them: the growth between the
        medians of the first and the last fifth of the samples after warm-up, and the slope
        of a least-squares line through those samples, in MiB per hour (None with fewer than
        ten samples after warm-up)."""
        samples = self.samples
        if not samples:
            raise RuntimeError("no samples: start the sampler first")
        warm = None
        if warmup_end_s is not None:
            warm = next((s for s in samples[:-1] if s.elapsed_s >= warmup_end_s), None)
        end = samples[-1]
        after = [s for s in samples if warm is not None and s.elapsed_s >= warm.elapsed_s]
        median_growth = slope = None
        if len(after) >= 10:
            fifth = len(after) // 5
            first = float(np.median([s.rss_mib for s in after[:fifth]]))
            last = float(np.median([s.rss_mib for s in after[-fifth:]]))
            median_growth = round((last - first) / first * 100.0, 2)
            t = np.array([s.elapsed_s for s in after])
            slope = round(float(np.polyfit(t, [s.rss_mib for s in after], 1)[0]) * 3600.0, 1)
        return {
            "period_s": self.period_s, "samples": len(samples),
            "warmup_end_s": None if warm is None else round(warm.elapsed_s, 3),
            "rss_start_mib": round(samples[0].rss_mib, 2),
            "rss_warmup_mib": None if warm is None else round(warm.rss_mib, 2),
            "rss_end_mib": round(end.rss_mib, 2),
            "rss_max_mib": round(max(s.rss_mib for s in samples), 2),
            "end_s": round(end.elapsed_s, 3),
            "growth_after_warmup_pct": None if warm is None else
            round((end.rss_mib - warm.rss_mib) / warm.rss_mib * 100.0, 2),
            "median_growth_after_warmup_pct": median_growth,
            "slope_after_warmup_mib_per_h": slope,
        }
