"""Frame accounting for the node's /diagnostics, ROS-free: losses seen in header stamps, and
figures over a time window.

Why stamps: frames can be lost before a subscriber's callback ever runs (a best-effort reader's
history overwritten while the executor is busy, a dropped fragment). The RMW's message-lost
event does not see every loss (measured here with Fast DDS 3.2, 640x480 at 30-60 Hz: once 0
reported for 199 lost, once 152 reported for 148 inferred from stamps) and is missing from some
RMWs, so the one measure that always works is the camera's own clock: a camera publishes at a
steady rate, and a stamp gap spanning k periods means k - 1 frames never arrived (``StampGaps``
estimates that rate from the stamps and follows it when it changes, takes jitter back, tells a
long gap that lost frames from stamps that jumped ahead by the arrival times, and reports stamps
that repeat, which cannot tell losses).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np


class StampGaps:
    """Frames missing between consecutive header stamps of one topic.

    The grid. Stamps are laid on a grid, slot ``s`` at ``t0 + s * period``: each stamp takes the
    slot nearest to where the grid's line puts it (``TOLERANCE``: more than half a period past
    a slot is the next one), and a stamp ``k`` slots past the previous one means ``k - 1``
    frames never arrived. The line is a least-squares fit through the last ``history`` (slot,
    stamp) pairs (kept as running sums: O(1) per stamp), so it follows the camera's clock and a
    stamp is measured from the line, not from the previous (jittery) stamp. A stamp that jitter
    puts a slot late is made good by the next one, which then lands on the slot already taken
    (k = 0 takes the miscounted frame back; k = -1 likewise), so jitter costs at most the frame
    of the newest stamp instead of adding up: 4 ms of Gaussian jitter at 30 Hz counts nothing.

    The period. The first ``min_deltas`` deltas give a provisional period (their median); the
    grid is then estimated afresh at ``SURVEYS`` deltas and its stamps counted again. An
    estimate (``_period_of``) tries the peaks of a periodogram of the stamps (how closely they
    line up on a grid of each period: no slot assignment, so no delta needs to be a single
    period) and a few seeds (the median delta over 1..4, the median of the single-period-like
    deltas, the current period); each places the stamps on its grid, fits a line, and the
    likeliest grid wins (``_nll``: Gaussian residuals plus geometric loss at the grid's own
    loss rate, so a finer grid pays for every slot it skips and 2 periods beats 1 where every
    delta is 2 periods). With half or 70 % of the frames lost at random the period is still
    found exactly. Stamps too jittery for that to be trusted (mean residual over ``CLEAN``)
    cannot prove heavy loss: their period is the periodogram's peak near the median delta.

    Rate changes. After each stamp, cheap checks over the last ``CHECK`` arrivals ask for a new
    estimate from where the stamps stopped fitting: two stamps sharing a slot (the rate went
    up), a mean residual over ``RESIDUAL`` (a non-integer change), or ``DOWN`` arrivals without
    a one-period step (the rate went down by an integer factor; random loss, even 70 %, leaves
    one-period steps well within ``DOWN``). The new period replaces the old one if it differs by
    more than ``CHANGE``, steps mostly one slot at a time (``STEADY``), and fits the recent
    stamps clearly better (``GAIN``) or is a multiple that fits as well where the old one saw no
    one-period step. Those stamps are then counted again with it, so a change costs nothing in
    the end: ``add`` returns a negative number when it takes frames back, and ``missing`` may
    show up to ``DOWN`` frames for that long after a rate halves. A steady pattern of loss that
    looks exactly like a lower rate (every other frame for ``DOWN`` frames) counts as one. The
    checks are off on jittery grids (mean residual over ``NOISY``), which a fresh estimate
    can't tell from a new rate; such a grid, or one that loses many frames (``UNSURE``), is
    refined every ``CHECK`` arrivals (the periodogram's peak near its period, which escapes a
    grid that slipped a slot) and surveyed every ``history`` arrivals, a new period replacing
    it only if it makes the stamps likelier by ``LIKELIER`` per stamp and, for jittery stamps,
    does not claim more loss. Limits: with Gaussian jitter of a quarter period (8 ms at 30 Hz)
    an estimate from a few dozen stamps is sometimes wrong, and a stream of them then counts
    about 1 % of its frames lost for a while (0.06 % on average in the tests' runs); heavy loss
    (half the frames) on such stamps can't be told from a lower rate.

    Odd stamps. A stamp equal to the previous one (all-zero stamps, some drivers and bag
    conversions) counts in ``repeats`` and is otherwise ignored: such stamps cannot tell losses,
    and the caller should warn when ``repeats`` grows. A stamp before the previous one by more
    than half a period (a bag played in a loop, a camera restart) starts a new grid
    (``restarts``; the period is kept); by less, it is jitter and takes its slot. A gap longer
    than ``max_gap_s`` is judged by the arrival times (``arrival_ns``; ``clock()`` at the call by
    default, so a subscriber's callback need pass nothing): when the stamps jumped more than
    twice as far as the arrivals (a bag skipped ahead, a test's new stamp base) it is a jump
    (``jumps``), not a loss. When the arrivals were as far apart as the stamps, either the
    publisher paused or the subscriber starved (its executor blocked while the camera kept
    publishing: those frames are lost). A live camera does not pause, and taking such gaps for
    pauses once hid 4.3 % of a starved node's frames, so with ``count_long_gaps`` (the default)
    they count as losses; without it (a source that does pause) they count in ``pauses``, as
    does a long gap before there is a period. A long gap, counted or not, starts a new grid.
    """

    TOLERANCE = 0.5  # a stamp more than this many periods past a slot belongs to the next one
    SURVEYS = (8, 16, 32)  # grid sizes (deltas) at which a young grid's period is estimated afresh
    LIKELIER = 0.1  # how much likelier (nats per stamp) a survey's grid must make the stamps
    CHECK = 8  # arrivals the rate-change checks look back over
    DOWN = 16  # arrivals without a one-period step before a lower rate is considered
    RESIDUAL = 0.15  # mean residual (periods) over CHECK arrivals that asks for a re-estimate
    CLEAN = 0.12  # mean residual (periods) below which an estimate may claim heavy loss
    UNSURE = 0.25  # share of uneven steps (loss, shared slots) that makes a grid suspect
    NOISY = 0.1  # mean residual (periods) above which the rate-change checks are off
    ANOMALY = 0.3  # a residual this large (periods) marks where a change may have begun
    GAIN = 0.1  # how much better (mean residual, periods) a new period must fit the recent stamps
    MARGIN = 0.05  # fit costs this close are a tie (a multiple of the period)
    CHANGE = 0.05  # relative change of period below which the grid just follows the stamps
    STEADY = 1 / 3  # at most this share of a new period's steps may skip or share a slot
    MIN_RANGE = 4  # deltas a re-estimate needs
    FLOOR = 0.6  # the periodogram starts at this fraction of the deltas' 10th percentile
    STEP = 0.3  # periodogram step: the most a grid may slip (periods) over the stamps' span
    MAX_PERIODS = 3000  # periodogram size at most
    PEAKS = 6  # periodogram peaks tried
    ALPHA, BETA = 0.3, 0.05  # phase and period gains of an estimate's grid that follows the stamps
    NEAR = 0.15  # how far (log) a seed may move to its periodogram peak
    SIGMA_FLOOR_NS = 1e5  # stamp noise below this (0.1 ms) is as good as none
    SHARED = 0.01  # how likely a grid may have two stamps share a slot (jitter)

    def __init__(
        self,
        history: int = 64,
        min_deltas: int = 3,
        max_gap_s: float = 2.0,
        count_long_gaps: bool = True,
        clock: Callable[[], int] | None = time.monotonic_ns,
    ) -> None:
        self.history = max(int(history), self.DOWN + 2)
        self.min_deltas = min(max(int(min_deltas), 2), self.history - 1)
        self.max_gap_ns = int(max_gap_s * 1e9)
        self.count_long_gaps = count_long_gaps
        self.clock = clock
        self.last_ns: int | None = None
        self.last_arrival_ns: int | None = None
        self.restarts = 0  # stamps that went back (not a loss)
        self.repeats = 0  # stamps equal to the previous one (such stamps cannot tell losses)
        self.jumps = 0  # long gaps where the stamps jumped far ahead of the arrivals (not a loss)
        self.pauses = 0  # long gaps left uncounted (count_long_gaps off, or no period yet)
        self.rate_changes = 0  # times the period was re-estimated to a different rate
        self._missing = 0  # may dip below 0 while a jittery newest stamp takes a slot early
        self._period: float | None = None
        self._t: deque[int] = deque(maxlen=self.history)  # stamps of the current grid
        self._s: deque[int] = deque(maxlen=self.history)  # their slots
        self._k: deque[int] = deque(maxlen=self.history)  # slots each advanced (1 for the first)
        self._r: deque[float] = deque(maxlen=self.history)  # residual (periods) where each was placed
        self._origin = (0, 0)  # (stamp, slot) the line's sums are taken from
        self._sums = [0.0] * 5  # n, sum s, sum x, sum s*s, sum s*x (x: ns after the origin)
        self._ref = 0.0  # the grid line's time (ns after the origin) at the newest slot
        self._placed = 0  # deltas placed on the current grid
        self._run = 0  # arrivals since the last one-period step

    @property
    def missing(self) -> int:
        """Frames inferred lost, over the object's life."""
        return max(self._missing, 0)

    def period_ns(self) -> float | None:
        """The camera's estimated period, or None until enough deltas were seen."""
        return self._period

    def add(self, stamp_ns: int, arrival_ns: int | None = None) -> int:
        """Record one arrival (``arrival_ns``: when it arrived, on any clock; ``clock()`` by
        default); return how many frames the gap before it skipped, less any that a new estimate
        of the period took back (so negative at times)."""
        stamp_ns = int(stamp_ns)
        if arrival_ns is None and self.clock is not None:
            arrival_ns = int(self.clock())
        last, last_arrival = self.last_ns, self.last_arrival_ns
        self.last_arrival_ns = arrival_ns
        if last is None:
            self.last_ns = stamp_ns
            self._new_grid(stamp_ns)
            return 0
        delta = stamp_ns - last
        if delta == 0:
            self.repeats += 1
            return 0
        self.last_ns = stamp_ns
        before = self.missing
        if delta < 0 and (self._period is None or -delta > self.TOLERANCE * self._period):
            self.restarts += 1
            self._new_grid(stamp_ns)
        elif delta > self.max_gap_ns:
            arrival_gap = None if last_arrival is None or arrival_ns is None else arrival_ns - last_arrival
            self._long_gap(stamp_ns, delta, arrival_gap)
        else:
            self._place(stamp_ns)
        return self.missing - before

    def _new_grid(self, stamp_ns: int) -> None:
        self._set(np.array([stamp_ns], np.int64), np.zeros(1, np.int64), np.zeros(1))
        self._placed = 0
        self._run = 0

    def _set(self, t: np.ndarray, slots: np.ndarray, res: np.ndarray) -> None:
        """The grid's stamps, slots and residuals, and the sums its line is fitted from."""
        for d in (self._t, self._s, self._k, self._r):
            d.clear()
        self._t.extend(int(v) for v in t)
        self._s.extend(int(v) for v in slots)
        self._k.append(1)
        self._k.extend(int(v) for v in np.diff(slots))
        self._r.extend(float(v) for v in res)
        self._origin = (self._t[0], self._s[0])
        x = (np.fromiter(self._t, np.int64, len(self._t)) - self._origin[0]).astype(np.float64)
        s = (np.fromiter(self._s, np.int64, len(self._s)) - self._origin[1]).astype(np.float64)
        self._sums = [float(len(x)), float(s.sum()), float(x.sum()), float(s @ s), float(s @ x)]
        self._fit()

    def _append(self, stamp_ns: int, slot: int, k: int, r: float) -> None:
        if len(self._t) == self.history:  # the oldest leaves the line's sums
            self._add_sums(self._t[0], self._s[0], -1.0)
        self._t.append(stamp_ns)
        self._s.append(slot)
        self._k.append(k)
        self._r.append(r)
        self._add_sums(stamp_ns, slot, 1.0)

    def _add_sums(self, stamp_ns: int, slot: int, sign: float) -> None:
        x, s = float(stamp_ns - self._origin[0]), float(slot - self._origin[1])
        sums = self._sums
        sums[0] += sign
        sums[1] += sign * s
        sums[2] += sign * x
        sums[3] += sign * s * s
        sums[4] += sign * s * x

    def _long_gap(self, stamp_ns: int, delta: int, arrival_gap: int | None) -> None:
        if arrival_gap is not None and arrival_gap < delta / 2:
            self.jumps += 1
        elif self.count_long_gaps and self._period is not None:
            x = (stamp_ns - self._origin[0] - self._ref) / self._period
            self._missing += max(int(np.floor(x + 1 - self.TOLERANCE)), 1) - 1
        else:
            self.pauses += 1
        self._new_grid(stamp_ns)

    def _place(self, stamp_ns: int) -> None:
        """Put one stamp on the grid (or, before there is a period, in line for the first one)."""
        self._placed += 1
        if self._period is None:
            self._append(stamp_ns, self._s[-1] + 1, 1, 0.0)
            if self._placed >= self.min_deltas:
                self._survey()
            return
        x = (stamp_ns - self._origin[0] - self._ref) / self._period
        k = max(int(np.floor(x + 1 - self.TOLERANCE)), -1)
        self._append(stamp_ns, self._s[-1] + k, k, x - k)
        self._missing += k - 1
        self._run = 0 if k == 1 else self._run + 1
        if self._placed % self.history == 0:  # a fresh origin for the line's sums
            self._set(np.fromiter(self._t, np.int64), np.fromiter(self._s, np.int64), np.fromiter(self._r, float))
        self._fit()
        if self._placed in self.SURVEYS:
            self._survey()
        elif self._placed % self.CHECK == 0 and (self._noise() > self.NOISY or self._uneven() > self.UNSURE):
            # a suspect grid (jittery stamps, or many frames lost): now and then a full survey,
            # else a refined period
            self._survey(full=self._placed % self.history == 0)
        else:
            self._check()

    def _fit(self) -> None:
        """The least-squares line through the grid's (slot, stamp) pairs: period and reference
        (the line's time at the newest slot, in ns after the origin)."""
        n, ss, sx, sss, ssx = self._sums
        var = sss - ss * ss / n if n >= 3 else 0.0
        slope = (ssx - ss * sx / n) / var if var > 0.5 else 0.0
        if slope > 0:
            self._period = slope
            self._ref = sx / n + slope * (self._s[-1] - self._origin[1] - ss / n)
        else:
            self._ref = float(self._t[-1] - self._origin[0])

    def _regrid(self, start: int, period: float, slots: np.ndarray, res: np.ndarray) -> None:
        """Count the grid's stamps from index ``start`` on again with a new period and slots."""
        n = len(self._t)
        t = np.fromiter(self._t, np.int64, n)[start:]
        k_old = np.fromiter(self._k, np.int64, n)[start + 1 :]
        self._missing += int(np.sum(np.diff(slots) - 1) - np.sum(k_old - 1))
        if self._period is not None and abs(period / self._period - 1) > self.CHANGE:
            self.rate_changes += 1
        self._period = float(period)
        self._set(t, slots, res)
        self._run = 0
        while self._run < len(self._k) - 1 and self._k[-1 - self._run] != 1:
            self._run += 1

    def _survey(self, full: bool = True) -> None:
        """Estimate the period afresh from the whole grid (``full``; else only refine the grid's
        own period, by the periodogram near it): the estimate replaces the grid where there is
        none yet, or where it makes the stamps likelier (by ``LIKELIER`` per stamp for a new
        period). A refined grid is how jittery stamps escape a grid that slipped a slot: its
        line then runs a little slow, and every stamp that jitter pushes late slips another."""
        n = len(self._t)
        t = np.fromiter(self._t, np.int64, n)
        rel = (t - t[0]).astype(np.float64)
        if self._period is None:  # too few stamps to search: the median delta, until the first survey
            d = np.diff(rel)
            med = float(np.median(d))
            slots = np.concatenate([[0], np.cumsum(np.maximum(np.rint(d / med), 1))]).astype(np.int64)
            found = (med, slots, np.zeros(n), 0.0)
        elif full:
            found = self._period_of(rel)
        else:
            d = np.diff(rel)
            pos = d[d > 0]
            seeds = [self._period] + ([self._single(pos), float(np.median(pos))] if len(pos) > 1 else [])
            found = self._estimate(rel, np.array([self._near_peak(rel, c) for c in seeds]), fixed=True)
        period, slots, res, cost = found
        if self._period is not None and self._placed > self.SURVEYS[0]:  # the first survey: free
            s = np.fromiter(self._s, np.int64, n)
            s -= s[0]
            if np.array_equal(s, slots) or s[-1] <= 0:
                return
            changed = abs(period / self._period - 1) > self.CHANGE
            if changed and cost > self.CLEAN and np.mean(np.diff(slots) != 1) > np.mean(np.diff(s) != 1):
                return  # jittery stamps cannot prove that more frames were lost
            line = np.polyfit(s, rel, 1)
            own = (rel - np.polyval(line, s)) / line[0]
            before = self._nll(np.array([line[0]]), own[None], np.diff(s)[None])[0]
            after = self._nll(np.array([period]), res[None], np.diff(slots)[None])[0]
            if after > before - (self.LIKELIER if changed else 0.0):
                return
        self._regrid(0, period, slots, res)

    def _near_peak(self, t: np.ndarray, period: float) -> float:
        """The period near ``period`` (within CHANGE) on which stamps ``t`` line up best."""
        step = self.STEP * period / max(float(t[-1]), 1.0)
        periods = period * np.exp(np.arange(-self.CHANGE, self.CHANGE + step, step))
        power = np.abs(np.exp(2j * np.pi * (t[None, :] / periods[:, None])).mean(axis=1))
        return float(periods[np.argmax(power)])

    def _uneven(self) -> float:
        """The share of the grid's steps that skip slots or share one (losses, or jitter)."""
        k = np.fromiter(self._k, np.int64, len(self._k))[1:]
        return float(np.mean(k != 1)) if len(k) else 0.0

    def _noise(self) -> float:
        """The grid's mean residual (periods, capped at 0.5): how jittery its stamps are."""
        r = np.fromiter(self._r, np.float64, len(self._r))[1:]
        return float(np.minimum(np.abs(r), 0.5).mean()) if len(r) else 0.0

    def _check(self) -> None:
        """Re-estimate the period where the recent stamps stopped fitting the grid."""
        n = len(self._t)
        period = self._period
        assert period is not None
        start = None
        if self._run >= self.DOWN and n > self.DOWN:
            start = n - 1 - self.DOWN
        elif n > 2 * self.CHECK:
            kc = [self._k[i] for i in range(-self.CHECK, 0)]
            rc = [min(abs(self._r[i]), 0.5) for i in range(-self.CHECK, 0)]
            shared = kc.count(0) >= 2
            if shared or sum(rc) > self.RESIDUAL * self.CHECK:
                r = np.minimum(np.abs(np.fromiter(self._r, np.float64, n)), 0.5)
                noise = float(r[1 : n - self.CHECK].mean())
                if noise <= self.NOISY and (shared or sum(rc) > (noise + self.GAIN) * self.CHECK):
                    odd = [i for i in range(self.CHECK) if kc[i] != 1 or rc[i] > self.ANOMALY]
                    start = n - self.CHECK + odd[0] - 1 if odd else None
        if start is None or n - 1 - start < self.MIN_RANGE:
            return
        t = np.fromiter(self._t, np.int64, n)[start:]
        k_old = np.fromiter(self._k, np.int64, n)[start + 1 :]
        rel = (t - t[0]).astype(np.float64)
        new, slots, res, cost = self._period_of(rel)
        if abs(new / period - 1) <= self.CHANGE:
            return
        cost_old = self._phase_cost(rel / period)
        better = cost + self.GAIN < cost_old
        larger = new > 1.5 * period and not np.any(k_old == 1) and cost <= cost_old + self.MARGIN
        steady = np.mean(np.diff(slots) != 1) <= self.STEADY  # a new rate, not a fine grid with gaps
        if (better or larger) and steady:
            self._regrid(start, new, slots, res)

    def _period_of(self, t: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
        """The period of stamps ``t`` (ns after the first), with their slots, residuals (periods)
        and fit cost (mean residual in periods, capped at 0.5). Candidates: the peaks of a
        periodogram (how closely the stamps line up on a grid of each period, from FLOOR of the
        deltas' 10th percentile to twice their median, in steps fine enough that a grid cannot
        slip a slot over the stamps' span) and seeds moved to the periodogram's best near them
        (the median of the single-period-like deltas, the median delta over 1 to 4 for heavy
        loss, the period of a grid past its surveys); the likeliest grid (``_nll``) wins. Where
        even that one fits loosely (jittery stamps, which fit finer grids as well), the stamps
        cannot prove heavy loss and only the first two seeds and the grid's own period compete."""
        d = np.diff(t)
        pos = d[d > 0]  # without stamps that jitter put before the previous one
        if len(pos) < 2:
            period = self._period or float(max(t[-1], 1.0))
            return self._estimate(t, np.array([period]), fixed=True)
        med = float(np.median(pos))
        lo, hi = self.FLOOR * float(np.percentile(pos, 10)), 2 * med
        step = max(self.STEP * lo / max(float(t[-1]), 1.0), np.log(hi / lo) / self.MAX_PERIODS)
        periods = lo * np.exp(np.arange(0.0, np.log(hi / lo) + step, step))
        power = np.abs(np.exp(2j * np.pi * (t[None, :] / periods[:, None])).mean(axis=1))
        peak = np.flatnonzero((power[1:-1] >= power[:-2]) & (power[1:-1] >= power[2:])) + 1

        def near(c: float) -> float:  # the periodogram's best period near c
            i = np.flatnonzero(np.abs(np.log(periods / c)) <= self.NEAR)
            return float(periods[i[np.argmax(power[i])]]) if len(i) else c

        seeds = [self._single(pos)] + list(med / np.arange(1, 5))
        if self._period is not None and self._placed > self.SURVEYS[-1]:  # not a young grid's guess
            seeds.append(self._period)
        cand = list(periods[peak[np.argsort(power[peak])[-self.PEAKS :]]]) + [near(c) for c in seeds]
        found = self._estimate(t, np.array(cand))
        clean = self.CLEAN if len(t) > self.SURVEYS[-1] else self.CLEAN / 6  # few stamps overfit grids
        if found[3] > clean:  # jittery stamps: the single-period deltas (low loss), or the grid's own
            return self._estimate(t, np.array([near(c) for c in seeds[:2] + seeds[5:]]), fixed=True)
        return found

    @staticmethod
    def _single(pos: np.ndarray) -> float:
        """The median of the single-period-like deltas (below 1.5 times the 30th percentile)."""
        return float(np.median(pos[pos < 1.5 * np.percentile(pos, 30)]))

    def _nll(self, period: np.ndarray, res: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Per stamp, how unlikely each grid makes the stamps (negative log-likelihood, up to a
        constant): residuals as Gaussian noise (RMS in ns, each capped at half a period: a finer
        grid fits closer), steps as geometric losses at the grid's own loss rate (so it pays for
        the slots it skips), and a stamp sharing a slot as rare (``SHARED``)."""
        err = np.minimum(np.abs(res), 0.5) * period[:, None]
        sigma = np.sqrt((err * err).mean(axis=1) + self.SIGMA_FLOOR_NS**2)
        steps = k.clip(1)
        skipped = (steps - 1).sum(axis=1)
        loss = np.clip(skipped / np.maximum(steps.sum(axis=1), 1), 1e-3, 0.999)
        per_step = -np.log1p(-loss)[:, None] - (steps - 1) * np.log(loss)[:, None]
        per_step = np.where(k == 0, -np.log(self.SHARED), per_step)
        return np.log(sigma) + per_step.mean(axis=1)

    @staticmethod
    def _phase_cost(x: np.ndarray) -> float:
        """How far stamps ``x`` (in periods) sit from the nearest grid of that period (its phase
        fitted): mean residual in periods, capped at 0.5."""
        phase = np.angle(np.mean(np.exp(2j * np.pi * x))) / (2 * np.pi)
        res = x - phase
        return float(np.minimum(np.abs(res - np.rint(res)), 0.5).mean())

    def _estimate(
        self, t: np.ndarray, cand: np.ndarray, fixed: bool = False
    ) -> tuple[float, np.ndarray, np.ndarray, float]:
        """The likeliest of candidate periods ``cand`` for stamps ``t`` (see ``_period_of``);
        ``fixed``: the candidates' periods as they are, only their phase fitted."""
        cand = np.unique(cand[cand > 0])
        x = t / cand[:, None]
        phase = np.angle(np.exp(2j * np.pi * x).mean(axis=1, keepdims=True)) / (2 * np.pi)
        if fixed:
            slots = np.maximum.accumulate(np.rint(x - phase), axis=1)
            slots -= slots[:, :1]
            res = x - phase - np.rint(x - phase)
            i = int(np.argmin(self._nll(cand, res, np.diff(slots, axis=1))))
            return float(cand[i]), slots[i].astype(np.int64), res[i], float(np.abs(res[i]).mean())
        placed = np.zeros_like(x)  # and one by one, on a grid that follows them (alpha-beta)
        ref, per, s = np.zeros(len(cand)), cand.copy(), np.zeros(len(cand))
        for i in range(1, len(t)):
            y = (t[i] - ref) / per
            k = np.maximum(np.floor(y + 1 - self.TOLERANCE), 0)
            r = y - k
            s += k
            placed[:, i] = s
            ref += (k + self.ALPHA * r) * per
            per *= 1 + self.BETA * r / np.maximum(k, 1)
        slots = np.concatenate([np.rint(x - phase), placed])
        slope = np.concatenate([cand, cand])[:, None]
        for final in (False, False, True):  # a line through the slots, every stamp placed on it afresh
            slots = np.maximum.accumulate(slots - slots[:, :1], axis=1)
            sm = slots.mean(axis=1, keepdims=True)
            ds = slots - sm
            var = (ds * ds).sum(axis=1, keepdims=True)
            fit = (ds * (t - t.mean())).sum(axis=1, keepdims=True) / np.maximum(var, 1e-12)
            slope = np.where((var > 0) & (fit > 0), fit, slope)
            res = (t - t.mean() - slope * ds) / slope
            if not final:
                slots = np.rint(slots + res)
        cost = np.minimum(np.abs(res), 0.5).mean(axis=1)
        i = int(np.argmin(self._nll(slope[:, 0], res, np.diff(slots, axis=1))))
        return float(slope[i, 0]), slots[i].astype(np.int64), res[i], float(cost[i])


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
