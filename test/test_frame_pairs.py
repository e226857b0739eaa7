"""Real frame pairs for fine-tuning on a bag: the alignment of two frames, and the pairs built on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from goodpoint_ros.training.frame_pairs import frame_homography
from goodpoint_ros.training.warp import warp_dense

from goodpoint_ros.io.image_files import sample_photo
from goodpoint_ros.ros.player import camera_sequence, frame_to_frame

GRID = np.stack([*(g.ravel() for g in np.meshgrid(np.linspace(0, 319, 9), np.linspace(0, 239, 7))), np.ones(63)])


def grid_error(H: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance (px) between where two homographies send a 9x7 grid over a 320x240 frame."""
    p, q = H @ GRID, truth @ GRID
    return float(np.linalg.norm(p[:2] / p[2] - q[:2] / q[2], axis=0).mean())


@pytest.mark.parametrize("photo", ["coffee", "astronaut", "chelsea", "rocket"])
def test_nearby_frames_of_a_moving_camera_are_aligned_to_a_pixel(photo: str):
    """The player's virtual camera knows the true frame-to-frame homography; with sensor noise on
    both frames the estimate is within a fraction of a pixel over the frame (measured: 0.03-0.3 px
    for consecutive 10 Hz frames; the bound leaves room for CPU differences)."""
    rng = np.random.default_rng(0)
    frames, hs = camera_sequence(sample_photo(photo), 36, (320, 240), rate=10.0)
    errors = []
    for i in range(0, 35, 5):
        a, b = (np.clip(f + rng.normal(0, 10, f.shape), 0, 255).astype(np.uint8) for f in (frames[i], frames[i + 1]))
        H = frame_homography(a, b)
        assert H is not None, f"frames {i}, {i + 1} of {photo}: no alignment"
        errors.append(grid_error(H, frame_to_frame(hs[i], hs[i + 1])))
    assert np.mean(errors) < 0.4 and max(errors) < 0.8, errors


def test_frames_of_different_scenes_are_not_paired():
    a = camera_sequence(sample_photo("coffee"), 1)[0][0]
    b = camera_sequence(sample_photo("astronaut"), 1)[0][0]
    assert frame_homography(a, b) is None
    flat = np.full((240, 320, 3), 128, np.uint8)
    assert frame_homography(flat, flat) is None  # no texture: nothing to align by


def test_real_pairs_from_a_bag_are_related_by_their_H(tmp_path: Path):
    """With frame_pairs=1 every sample of a bag is cut from two different frames; image0 warped by
    the sample's H lands on image1 (small photometric error), and the same warp shifted by 4 px
    does not: H is the real relation, not an approximation the loss would learn wrong points from."""
    pytest.importorskip("rosbags")
    from goodpoint_ros.training.datasets import BagFrames, Mixture, PairDataset
    from test_training_data import write_bag

    frames, _ = camera_sequence(sample_photo("chelsea"), 40, (320, 240), rate=30.0)
    write_bag(tmp_path / "bag", frames)
    source = Mixture([BagFrames(tmp_path / "bag")])
    real = PairDataset(source, 192, seed=3, noise=False, frame_pairs=1.0, pair_gap=3)
    synthetic = PairDataset(source, 192, seed=3, noise=False)
    shift = torch.tensor([[1.0, 0.0, 4.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    right, wrong = [], []
    for i in range(8):
        item = real[i]
        for H, out in ((item["H"], right), (shift @ item["H"], wrong)):
            warped = warp_dense(item["image0"][None], H[None])[0]
            inside = (item["mask1"] > 0) & (warp_dense(item["mask0"][None], H[None])[0] > 0.99)
            out.append(float((warped - item["image1"]).abs()[inside].mean()))
    assert len(real._aligned) >= 6 and all(H is not None for H in real._aligned.values())
    assert np.mean(right) < 0.03 and np.mean(wrong) > 2 * np.mean(right), (right, wrong)
    # views really come from two frames: the same sample without frame pairs differs in image1
    assert not torch.equal(real[0]["image1"], synthetic[0]["image1"])


def test_photo_folders_never_pair_frames(tmp_path: Path):
    """A photo folder has no 'next frame': frame_pairs leaves its samples synthetic."""
    import cv2
    from goodpoint_ros.training.datasets import ImageFolder, Mixture, PairDataset

    for i, name in enumerate(("coffee", "astronaut")):
        cv2.imwrite(str(tmp_path / f"{i}.png"), sample_photo(name)[..., ::-1])
    ds = PairDataset(Mixture([ImageFolder(tmp_path)]), 128, seed=1, frame_pairs=1.0)
    for i in range(4):
        ds[i]
    assert ds._aligned == {}
