"""Approximate-time pairing of N message streams, with drop accounting (no message_filters here).

Stamps are integer nanoseconds. A set is emitted when every queue has a message within ``slop`` of
the newest queue head; heads that can no longer be part of any set (older than that head minus
``slop``) are dropped and counted. Thread-safe: callbacks from several executor threads may call
``add`` concurrently. Pure Python, no rclpy: testable on its own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class ApproxTimeSync:
    """Pair messages from ``n`` inputs whose stamps differ by at most ``slop`` seconds."""

    def __init__(self, n: int, slop: float, callback: Callable[[list[Any]], None], queue_size: int = 10) -> None:
        if n < 2:
            raise ValueError("need at least two inputs to synchronise")
        self.slop_ns = int(round(slop * 1e9))
        self.callback = callback
        self.queues: list[deque[tuple[int, Any]]] = [deque() for _ in range(n)]
        self.queue_size = max(1, int(queue_size))
        self.dropped = [0] * n  # messages per input that never became part of a set
        self.emitted = 0
        # The last message dropped as unpairable: (input index, signed offset in ns from it to the
        # nearest message then queued on another input, or None when the others were empty), so
        # the node can say *why* nothing pairs ("nearest depth +0.040 s" vs "no depth at all").
        self.last_unpaired: tuple[int, int | None] | None = None
        self._lock = threading.Lock()

    def add(self, index: int, stamp_ns: int, msg: Any) -> None:
        """Queue ``msg`` from input ``index``; emits (calls back) every set that becomes complete."""
        ready = []
        with self._lock:
            q = self.queues[index]
            if q and stamp_ns < q[-1][0]:  # out of order or time jumped back: start this input over
                self.dropped[index] += len(q)
                q.clear()
            q.append((stamp_ns, msg))
            if len(q) > self.queue_size:
                self._drop(index, q.popleft()[0])
            while all(self.queues):
                pivot = max(q[0][0] for q in self.queues)
                stale = False
                for i, qi in enumerate(self.queues):
                    while qi and qi[0][0] < pivot - self.slop_ns:
                        self._drop(i, qi.popleft()[0])
                        stale = True
                if stale:
                    continue
                chosen = []
                for i, qi in enumerate(self.queues):  # closest to the pivot in each queue
                    j = min(range(len(qi)), key=lambda k, qi=qi: abs(qi[k][0] - pivot))
                    if abs(qi[j][0] - pivot) > self.slop_ns:
                        j = 0
                    chosen.append(qi[j][1])
                    self.dropped[i] += j
                    for _ in range(j + 1):
                        qi.popleft()
                self.emitted += 1
                ready.append(chosen)
        for group in ready:
            self.callback(group)

    def _drop(self, index: int, stamp_ns: int) -> None:
        """Count one unpairable message and remember its nearest partner (called under the lock)."""
        self.dropped[index] += 1
        others = [s for j, q in enumerate(self.queues) if j != index for s, _ in q]
        if not others:
            self.last_unpaired = (index, None)
            return
        nearest = min(others, key=lambda s: abs(s - stamp_ns))
        self.last_unpaired = (index, nearest - stamp_ns)
