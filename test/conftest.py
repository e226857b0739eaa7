"""Shared fixtures: real photos bundled offline with scikit-image, and torch thread limits."""

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def photo() -> np.ndarray:
    from goodpoint_ros.io.image_files import sample_photo

    return sample_photo("astronaut")[:240, :320].copy()
