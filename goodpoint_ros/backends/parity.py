"""Feature parity between two runs of one model (precisions, backends): keypoint overlap within a
pixel radius and descriptor cosine of the overlapping points.

Reduced precisions move scores slightly, so exact set equality (``export.compare_keypoints``) is
the wrong test for them: a point that moved by a fraction of a pixel, or a near-tie that flipped
at the end of the top-k list, is not an error. These numbers say how much changed.
"""

from __future__ import annotations

import numpy as np
import torch


def _np(feats: dict) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in feats.items()}


def feature_parity(ref: dict, other: dict, radius: float = 1.0) -> dict[str, float]:
    """Compare ``other`` features with ``ref`` (dicts of keypoints Kx2, descriptors KxD, detector K).

    Points pair up as mutual nearest neighbours of the same detector set within ``radius`` px.
    Returns ``overlap`` (pairs / the larger keypoint count: 1.0 when both sets agree), the
    descriptor cosine of the pairs (``cosine_median``, ``cosine_mean``, ``cosine_p05``: the 5th
    percentile), ``pairs`` and both keypoint counts.
    """
    a, b = _np(ref), _np(other)
    cos: list[np.ndarray] = []
    pairs = 0
    for d in np.union1d(a["detector"], b["detector"]):
        ia, ib = np.flatnonzero(a["detector"] == d), np.flatnonzero(b["detector"] == d)
        if not len(ia) or not len(ib):
            continue
        pa, pb = a["keypoints"][ia].astype(np.float64), b["keypoints"][ib].astype(np.float64)
        dist = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))  # K is at most a few 1000
        nn_ab, nn_ba = dist.argmin(1), dist.argmin(0)
        rows = np.flatnonzero((nn_ba[nn_ab] == np.arange(len(ia))) & (dist.min(1) <= radius))
        if not len(rows):
            continue
        pairs += len(rows)
        da = a["descriptors"][ia[rows]].astype(np.float64)
        db = b["descriptors"][ib[nn_ab[rows]]].astype(np.float64)
        cos.append((da * db).sum(1) / np.maximum(np.linalg.norm(da, axis=1) * np.linalg.norm(db, axis=1), 1e-12))
    c = np.concatenate(cos) if cos else np.zeros(0)
    n_ref, n_other = len(a["keypoints"]), len(b["keypoints"])
    return {
        "overlap": pairs / max(n_ref, n_other, 1),
        "cosine_median": float(np.median(c)) if len(c) else float("nan"),
        "cosine_mean": float(c.mean()) if len(c) else float("nan"),
        "cosine_p05": float(np.percentile(c, 5)) if len(c) else float("nan"),
        "pairs": pairs,
        "keypoints_ref": n_ref,
        "keypoints_other": n_other,
    }
