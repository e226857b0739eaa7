"""Frame accounting for the node's /diagnostics, ROS-free: losses seen in header stamps, and
figures over a time window.

Why stamps: frames can be lost before a subscriber's callback ever runs (a best-effort reader's
history overwritten while the executor is busy, a dropped fragment). The RMW's message-lost
event does not see every loss (measured here with Fast DDS 3.2, 640x480 at 30-60 Hz: once 0
reported for 199 lost, once 152 reported for 148 inferred from stamps) and is missing from some
RMWs, so the one measure that always works is the camera's own clock: a camera publishes at a
steady rate, and a stamp gap spanning k periods means k - 1 frames never arrived.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class StampGaps:
    """Frames missing between consecutive header stamps of one topic.

    The period is a low quantile (``QUANTILE``) of the last ``history`` positive stamp deltas,
    not the median: with half the frames lost the median delta is two periods and would hide the
    loss, while the 25th percentile still sees the camera's real period until ~75% are lost.
    A delta of k periods (rounded; more than 1.5) counts k - 1 missing frames. A stamp that is
    not after the previous one (a bag played in a loop, a camera restart) starts afresh, and a
    gap longer than ``max_gap_s`` is a pause (the camera stopped, a paused bag), not a loss:
    stamps alone cannot tell the two apart, and a pause is the likelier cause of a long one.
    """

    QUANTILE = 25.0

    def __init__(self, history: int = 64, min_deltas: int = 3, max_gap_s: float = 2.0) -> None:
        self.deltas: deque[int] = deque(maxlen=history)
        self.min_deltas = min_deltas
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.pauses = 0  # gaps longer than max_gap_s (not counted as losses)
        self.last_ns: int | None = None
        self.missing = 0  # frames inferred lost, over the node's life
        self.restarts = 0  # stamps that went back (not a loss)

    def period_ns(self) -> float | None:
        """The camera's estimated period, or None until enough deltas were seen."""
        if len(self.deltas) < self.min_deltas:
            return None
        return float(np.percentile(np.fromiter(self.deltas, np.int64), self.QUANTILE))

    def add(self, stamp_ns: int) -> int:
        """Record one arrival; return how many frames the gap before it skipped."""
        last, self.last_ns = self.last_ns, stamp_ns
        if last is None:
            return 0
        delta = stamp_ns - last
        if delta <= 0:
            if delta < 0:
                self.restarts += 1
                self.deltas.clear()
            return 0
        if delta > self.max_gap_ns:
            self.pauses += 1
            return 0
        period = self.period_ns()
        self.deltas.append(delta)
        if period is None or period <= 0 or delta <= 1.5 * period:
            return 0
        skipped = int(round(delta / period)) - 1
        self.missing += skipped
        return skipped


class TimeWindow:
    """Values with their time, kept for the last ``seconds`` (latency over the last N seconds, so
    a change of input size shows within one window instead of after N frames). Thread-safe: the
    node's worker adds while its diagnostics timer reads."""

    def __init__(self, seconds: float = 5.0) -> None:
        self.seconds = float(seconds)
        self._items: deque[tuple[float, float]] = deque()
        self._lock = threading.Lock()

    def add(self, value: float, now: float | None = None) -> None:
        t = time.monotonic() if now is None else now
        with self._lock:
            self._items.append((t, float(value)))
            self._prune(t)

    def _prune(self, now: float) -> None:
        while self._items and self._items[0][0] < now - self.seconds:
            self._items.popleft()

    def values(self, now: float | None = None) -> np.ndarray:
        """The values of the last ``seconds`` (float64)."""
        with self._lock:
            self._prune(time.monotonic() if now is None else now)
            return np.fromiter((v for _, v in self._items), np.float64, len(self._items))

    def percentile(self, q: float, now: float | None = None) -> float:
        """The ``q``-th percentile of the window's values; 0.0 when it is empty."""
        v = self.values(now)
        return float(np.percentile(v, q)) if len(v) else 0.0


class RateCounter:
    """Events per second over a sliding window (for diagnostics)."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self.times: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        self.times.append(time.monotonic() if now is None else now)

    def rate(self) -> float:
        now = time.monotonic()
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()
        if len(self.times) < 2:
            return 0.0
        return (len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-9)
