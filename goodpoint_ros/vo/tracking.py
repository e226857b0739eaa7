"""Track ids across frames (ROS-free): a keypoint matched to a tracked one inherits its id.

Ids are uint32, start at 1 (0 means "no id") and are never reused while the tracker lives. Every
update is vectorised: no loop over keypoints.
"""

from __future__ import annotations

import numpy as np


class TrackIds:
    """Assigns ids to each frame's keypoints from frame-to-frame matches."""

    def __init__(self) -> None:
        self.next_id = 1
        self.ids = np.zeros(0, dtype=np.uint32)  # ids of the previous frame's keypoints
        self.ages = np.zeros(0, dtype=np.uint32)  # frames each previous keypoint's track has lasted

    def reset(self) -> None:
        self.ids = np.zeros(0, dtype=np.uint32)
        self.ages = np.zeros(0, dtype=np.uint32)

    def update(
        self, num_keypoints: int, matches: np.ndarray | None = None, keep: np.ndarray | None = None
    ) -> np.ndarray:
        """Ids for the current frame's ``num_keypoints`` keypoints.

        ``matches`` Mx2 (previous index, current index) into the previous and current frames;
        ``keep`` an optional M bool mask (e.g. RANSAC inliers): only kept matches continue a track.
        Unmatched keypoints start new tracks.
        """
        n = int(num_keypoints)
        ids = np.zeros(n, dtype=np.uint32)
        ages = np.ones(n, dtype=np.uint32)
        if matches is not None and len(matches) and len(self.ids):
            m = np.asarray(matches, dtype=np.int64).reshape(-1, 2)
            if keep is not None:
                m = m[np.asarray(keep, dtype=bool)]
            valid = (m[:, 0] >= 0) & (m[:, 0] < len(self.ids)) & (m[:, 1] >= 0) & (m[:, 1] < n)
            m = m[valid]
            ids[m[:, 1]] = self.ids[m[:, 0]]
            ages[m[:, 1]] = self.ages[m[:, 0]] + 1
        new = ids == 0
        count = int(new.sum())
        ids[new] = np.arange(self.next_id, self.next_id + count, dtype=np.uint64).astype(np.uint32)
        self.next_id += count
        self.ids, self.ages = ids, ages
        return ids.copy()

    @property
    def track_lengths(self) -> np.ndarray:
        """How many consecutive processed frames each current keypoint's track has lasted."""
        return self.ages.copy()
