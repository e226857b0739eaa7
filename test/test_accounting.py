"""Frame accounting without ROS: stamp-gap losses, the time window behind /diagnostics, the
on-arrival message check, and the pipeline's restart when matching resumes after an idle spell."""

from __future__ import annotations

import array
import struct
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from goodpoint_ros.accounting import RateCounter, StampGaps, TimeWindow
from goodpoint_ros.backends import make_extractor
from goodpoint_ros.image_codec import ImageDecodeError, check_message, decode_image
from goodpoint_ros.odometry import Calibration
from goodpoint_ros.pipeline import FramePipeline
from goodpoint_ros.synthetic import render_sequence

PERIOD = 33_333_333


def test_stamp_gaps_count_missing_frames_exactly_even_with_heavy_loss():
    rng = np.random.default_rng(0)
    kept = np.sort(np.concatenate([[0, 1, 2, 3, 4], rng.choice(np.arange(5, 1000), 400, replace=False)]))
    gaps = StampGaps()
    for i in kept:  # 60 % lost after the first five: the median delta is > 1 period, the quantile is not
        gaps.add(1_000 * 10**9 + int(i) * PERIOD)
    assert gaps.missing == kept[-1] + 1 - len(kept)


def test_stamp_gaps_jitter_pause_and_restart_are_not_losses():
    gaps = StampGaps()
    rng = np.random.default_rng(1)
    t = 0
    for _ in range(100):
        t += PERIOD + int(rng.integers(-3_000_000, 3_000_000))  # +-3 ms jitter
        gaps.add(t)
    assert gaps.missing == 0
    gaps.add(t + 5 * 10**9)  # a 5 s pause (the camera stopped): not 150 lost frames
    gaps.add(t + 5 * 10**9 + 3 * PERIOD)  # two lost
    assert gaps.missing == 2 and gaps.pauses == 1
    gaps.add(0)  # a bag loop: time went back
    gaps.add(PERIOD)
    assert gaps.missing == 2 and gaps.restarts == 1


def test_time_window_forgets_old_values():
    w = TimeWindow(5.0)
    for i in range(100):
        w.add(0.1, now=float(i) * 0.01)  # 100 frames of 100 ms in the first second
    w.add(2.0, now=10.0)  # after a switch to a bigger input: 2 s
    assert w.percentile(50, now=10.0) == 2.0 and len(w.values(now=10.0)) == 1
    assert w.percentile(50, now=20.0) == 0.0


def _raw(h: int, w: int, enc: str = "rgb8", step: int | None = None, size: int | None = None):
    step = w * 3 if step is None else step
    data = array.array("B", bytes(step * h if size is None else size))
    return SimpleNamespace(height=h, width=w, encoding=enc, step=step, is_bigendian=0, data=data)


@pytest.mark.parametrize(
    "msg",
    [
        _raw(4, 4, step=7),  # step smaller than a row
        _raw(4, 4, size=10),  # truncated
        _raw(4, 4, enc="yuv_unknown"),
        _raw(0, 0, step=0),
        _raw(60000, 60000, enc="mono8", step=60000, size=0),  # claims 3.6 GP
    ],
)
def test_check_message_refuses_what_decode_image_refuses(msg):
    with pytest.raises(ImageDecodeError):
        check_message(msg)
    with pytest.raises(ImageDecodeError):
        decode_image(msg)


def test_check_message_reads_compressed_headers_only():
    ok = cv2.imencode(".png", np.zeros((20, 30), np.uint8))[1].tobytes()
    check_message(SimpleNamespace(format="png", data=array.array("B", ok)))
    big = bytearray(ok)
    big[16:24] = struct.pack(">II", 16000, 16000)  # the IHDR claims 16000x16000
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        check_message(SimpleNamespace(format="png", data=array.array("B", big)))
    check_message(SimpleNamespace(format="png", data=array.array("B", big)), max_pixels=None)  # no limit
    with pytest.raises(ImageDecodeError):
        check_message(SimpleNamespace(format="jpeg", data=array.array("B")))
    depth_rgb = _raw(4, 4)
    check_message(depth_rgb)
    with pytest.raises(ImageDecodeError, match="depth"):
        check_message(depth_rgb, depth=True)


def test_matching_resumed_after_an_idle_spell_starts_a_new_trajectory():
    seq = render_sequence(6, amplitude=0.3)
    ex = make_extractor(model="orb")
    ex.set_detection(max_keypoints=600)
    pipe = FramePipeline(ex, "mono")
    calib = Calibration(K=seq.K)
    stamps = [(1_000 + i, 0) for i in range(6)]
    r = [pipe.step([seq.frames[i].rgb], stamps[i], calib) for i in range(2)]
    assert not r[1].resumed and len(r[1].matches) > 50
    idle = pipe.step([seq.frames[2].rgb], stamps[2], calib, want_matches=False, want_tracks=False, want_odometry=False)
    assert len(idle.matches) == 0 and idle.odometry.state == "skipped"
    back = pipe.step([seq.frames[3].rgb], stamps[3], calib)
    assert back.resumed and len(back.matches) > 50  # matched with the idle frame, as usual
    assert back.odometry.dt == 0.0  # the first estimate of a new trajectory
    after = pipe.step([seq.frames[4].rgb], stamps[4], calib)
    assert not after.resumed


def test_rate_counter_counts_events_per_second_in_its_window():
    r = RateCounter(window=5.0)
    assert r.rate() == 0.0
    now = time.monotonic()
    for i in range(11):  # 10 intervals of 0.1 s
        r.tick(now - 1.0 + 0.1 * i)
    assert r.rate() == pytest.approx(10.0, rel=1e-6)
    old = RateCounter(window=0.5)  # the same ticks, but all older than its window
    for i in range(11):
        old.tick(now - 2.0 + 0.1 * i)
    assert old.rate() == 0.0
