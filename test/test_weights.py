"""Shipped weights: they load, find many keypoints on a real photo, and beat random weights of the
same architecture on a real pair. Guards against shipping a broken checkpoint."""

import numpy as np
import pytest
import torch
from goodpoint_ros.training.augment import sample_homography
from goodpoint_ros.training.metrics import evaluate_pair

from goodpoint_ros.backends.torch_backend import TorchExtractor
from goodpoint_ros.io.image_files import sample_photo
from goodpoint_ros.models.checkpoint import WEIGHTS_DIR, read_checkpoint
from goodpoint_ros.vo.geometry import warp_image

SHIPPED = sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def test_at_least_one_trained_model_ships():
    assert SHIPPED, f"no weights in {WEIGHTS_DIR}"
    for name in SHIPPED:
        assert (WEIGHTS_DIR / f"{name}.md").is_file(), f"{name}.pt has no model card"


def _pair_scores(ex: TorchExtractor, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    image = sample_photo("coffee")  # a real photo the training set does not contain
    h, w = image.shape[:2]
    H = sample_homography(h, w, rng)
    warped = warp_image(image, H, (w, h))
    f0, f1 = ex.extract(image), ex.extract(warped)
    return evaluate_pair(f0, f1, H, (h, w), (h, w), per_set=True)


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.slow
def test_shipped_weights_beat_random_weights(name):
    torch.manual_seed(0)
    ckpt = read_checkpoint(WEIGHTS_DIR / f"{name}.pt")
    assert ckpt["model"] == name and ckpt.get("steps", 0) > 0
    trained = TorchExtractor(name, weights="default", device="cpu", conf={"max_keypoints": 1000})
    f = trained.extract(sample_photo("astronaut"))
    assert len(f["keypoints"]) >= 300, "a trained model must find many keypoints on a textured photo"
    random = TorchExtractor(name, weights="random", device="cpu", conf={"max_keypoints": 1000})
    if random.model.name.startswith("mdnet"):  # random detectors never pass the paper's 0.7 threshold
        random.set_detection(detection_threshold=0.0)
    ours = [_pair_scores(trained, s) for s in (0, 1)]
    base = [_pair_scores(random, s) for s in (0, 1)]
    mean = lambda rows, k: float(np.mean([r[k] for r in rows]))  # noqa: E731
    assert mean(ours, "mma@3px") > mean(base, "mma@3px") + 0.05
    assert mean(ours, "num_correct") > mean(base, "num_correct")
