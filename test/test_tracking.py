"""Track ids: inheritance through matches, new ids for the rest, no reuse."""

from __future__ import annotations

import numpy as np

from goodpoint_ros.vo.tracking import TrackIds


def test_matched_keypoints_inherit_ids_and_others_get_new_ones():
    t = TrackIds()
    first = t.update(5)
    np.testing.assert_array_equal(first, [1, 2, 3, 4, 5])
    matches = np.array([[0, 2], [3, 0], [4, 1]])
    keep = np.array([True, True, False])  # the third match is an outlier
    second = t.update(4, matches, keep)
    assert second[2] == 1 and second[0] == 4
    assert second[1] not in first and second[3] not in first and second[1] != second[3]
    np.testing.assert_array_equal(t.track_lengths, [2, 1, 2, 1])
    third = t.update(3, np.array([[2, 0], [0, 1]]))
    assert third[0] == 1 and third[1] == 4
    np.testing.assert_array_equal(t.track_lengths[:2], [3, 3])


def test_ids_unique_within_a_frame_and_never_reused():
    rng = np.random.default_rng(0)
    t = TrackIds()
    seen_new = set()
    prev = t.update(100)
    seen_new.update(prev.tolist())
    for _ in range(20):
        n = int(rng.integers(50, 150))
        i0 = rng.permutation(len(prev))[:40]
        i1 = rng.permutation(n)[:40]
        ids = t.update(n, np.stack([i0, i1], 1))
        assert len(np.unique(ids)) == n and (ids > 0).all()
        np.testing.assert_array_equal(ids[i1], prev[i0])
        fresh = set(np.delete(ids, i1).tolist())
        assert not fresh & seen_new
        seen_new |= fresh
        prev = ids


def test_out_of_range_matches_are_ignored_and_reset_forgets():
    t = TrackIds()
    t.update(3)
    ids = t.update(2, np.array([[5, 0], [1, 7], [2, 1]]))
    assert ids[1] == 3 and ids[0] == 4
    t.reset()
    assert (t.update(2, np.array([[0, 0]])) == [5, 6]).all()
