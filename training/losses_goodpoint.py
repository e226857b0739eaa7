"""GoodPoint self-supervised losses (Belikov & Potapov 2021, section 4), batched.

Notation follows the paper: image I = ``image0`` with heatmap P and descriptors D, image I_h =
``image1`` with P_h and D_h, and H maps I pixels to I_h pixels (here one H per sample).

Targets (no gradient, Eq. 5-10): K = maxpool_32(P), K_h = maxpool_16(P_h) (one point per cell);
K_proj = K H, out-of-bounds points dropped; geometric NN (coordinates) and descriptor NN of K_proj
among K_h; where both agree and dist_geom < theta_dist, K'_h = the mean of the pair and K' = K'_h
H^-1. Losses: L_keypoints = -1/2 (log P[K'] + log P_h[K'_h]) (Eq. 3), L_heatmaps = lambda_h *
masked mean of (blr(warp(P)) - blr(P_h))^2 (Eq. 4); descriptors L_gt + L_wrong + L_random (Eq.
11-13); L = lambda_1 L_d + lambda_2 L_p (Eq. 1).

Deviations and choices the paper leaves open (all configurable):
- theta_dist is not given in the paper: 4 px. With 8 px (half of a 16 px K_h cell, our first
  choice) a pair 8 px apart still makes a target at its midpoint, so points that snap to the 8 px
  cell borders of the detector head (`bench/grid_snap.py`: x mod 8 in {7, 0} for 58 % of the points of
  the 2902-step goodpoint_small) are never pulled off them. Fine-tuning that model 2100 more steps with
  4 px instead of 8 gave validation HM 0.439 vs 0.408 and MMA@1 0.113 vs 0.091 at step 5000 (the
  two runs' log.csv; README, "Trained weights").
- Points are also dropped where the warp pulled in black border (the pair's valid masks).
- blr: a 3x3 tent (bilinear) blur applied to both heatmaps after P is warped bilinearly, so that
  identical aligned heatmaps give exactly 0 and warping alone does not dominate the difference.
- L_gt averages over geometric pairs closer than theta_dist (pulling far-apart, non-corresponding
  points together would be wrong); L_wrong uses the *descriptor* match j -> idx_desc(j) when it
  disagrees with the geometric one and that wrongly matched point is more than 7 px away.
- log P is taken from log_softmax of the logits (exact, no log(0)); points are read at the
  nearest pixel.
- L_random draws, for each K_proj point, one random valid K_h point that is not its geometric NN.
- Addition, not in the paper: ``lambda_sub`` weighs a sub-pixel term L_sub (0 = the paper's loss).
  The paper's targets are read at the nearest pixel, so nothing trains where a point sits inside
  its pixel, and the detector's 1-px accuracy came only from the inference-time soft-argmax.
  L_sub refines each agreeing pair (K, K_h NN) with that same soft-argmax
  (``features.refine_keypoints``, gradient through the window's scores) and penalises the distance
  between K refined then warped by H and K_h refined, symmetrically in both images (the idea of a
  reprojection loss on differentiable keypoints, as in ALIKE; written from the equations here).
  With ``subpixel_density`` > 0 the same distance is taken over the points inference would
  detect (each image's best NMS maxima, that many per megapixel, like ``min_keypoints_per_mpx``),
  each paired with the window where H carries it in the other image: the weak points a filled
  budget adds are never agreeing pairs, so the pair-only term leaves them 1.6 px off. Tried at
  4000 per megapixel: it sharpened the confident points and not the weak ones
  (docs/experiments/subpixel_loss, section 3).
- Addition, not in the paper: ``heatmap_power`` (1 = the paper's) compares P^power in Eq. 4.
  On P itself a maximum of 1e-3 (the kind the fill keeps below the threshold) weighs a millionth
  of a confident one, so nothing asks the weak maxima to move with the image; with power 0.5 it
  weighs about a thousandth. Tried at 0.5: the confident points sharpened a little, the filled
  budget got worse (docs/experiments/confident_pose, section 6).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from goodpoint_ros.models.features import nms_mask, refine_keypoints, sample_descriptors, topk_keypoints
from goodpoint_ros.vo.geometry import warp_points

from .warp import masked_mean, warp_dense, warp_valid

DEFAULT_CONF = {
    "lambda_d": 1.0,  # lambda_1
    "lambda_p": 1.0,  # lambda_2
    "lambda_h": 2000.0,  # paper section 5
    "pool0": 32,  # K = maxpool_32(P)
    "pool1": 16,  # K_h = maxpool_16(P_h)
    "theta_dist": 4.0,
    "wrong_dist": 7.0,  # paper: "distgeom > 7"
    "blur": True,  # Eq. 4's blr(); false compares the raw heatmaps (a side-by-side probe, see the docstring)
    "heatmap_power": 1.0,  # Eq. 4 compares P^power (not in the paper; see the docstring); 1: the paper's
    "lambda_sub": 0.0,  # weight of L_sub (not in the paper; see the docstring); 0: off
    "subpixel_radius": 2,  # L_sub's soft-argmax window, as the models' inference default
    "subpixel_density": 0.0,  # > 0: L_sub over the detected points (per megapixel); 0: agreeing pairs
    "subpixel_nms": 4,  # the NMS radius of those detections, as the models' inference default
}


def cell_maxima(heat: torch.Tensor, valid: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One point per ``size`` x ``size`` cell: the arg-max of ``heat`` (Bx1xHxW) among ``valid``
    pixels. Returns Bx(HW/size^2)x2 (x, y) float coordinates and a validity mask."""
    b, _, h, w = heat.shape
    masked = torch.where(valid, heat, torch.full_like(heat, -1.0))
    val, idx = F.max_pool2d(masked, size, stride=size, return_indices=True)
    idx = idx.view(b, -1)
    pts = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], -1).float()
    return pts, val.view(b, -1) >= 0


def inside_mask(points: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BxN: points inside the image and on a valid pixel (nearest) of Bx1xHxW ``mask``."""
    b, _, h, w = mask.shape
    xi, yi = points[..., 0].round().long(), points[..., 1].round().long()
    ok = (xi >= 0) & (yi >= 0) & (xi < w) & (yi < h)
    flat = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).view(b, -1)
    return ok & torch.gather(mask.view(b, -1).bool(), 1, flat)


def gather_map(x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Values of Bx1xHxW ``x`` at the nearest pixels of BxNx2 ``points`` (clamped) -> BxN."""
    b, _, h, w = x.shape
    xi = points[..., 0].round().long().clamp(0, w - 1)
    yi = points[..., 1].round().long().clamp(0, h - 1)
    return torch.gather(x.view(b, -1), 1, yi * w + xi)


def keypoint_targets(
    heat0: torch.Tensor,
    heat1: torch.Tensor,
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    H: torch.Tensor,
    mask0: torch.Tensor,
    mask1: torch.Tensor,
    conf: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Paper Eq. 5-10 on a batch (no gradient through the targets' coordinates).

    Returns K (BxMx2), K_h (BxNx2), their masks, K_proj, the descriptors D_proj (BxMxD, with
    gradient) and D_h (BxNxD), dist_geom/idx_geom/idx_desc (BxM), K_h_nn (BxMx2: the K_h point
    at idx_geom), ``good`` (BxM), the targets
    K'_h (``target1``) and K' (``target0``) as BxMx2 valid where ``good``.
    """
    c = {**DEFAULT_CONF, **(conf or {})}
    m0, m1 = mask0.bool(), mask1.bool()
    with torch.no_grad():
        K, valid0 = cell_maxima(heat0.detach().float(), m0, c["pool0"])
        Kh, valid1 = cell_maxima(heat1.detach().float(), m1, c["pool1"])
        Kproj = warp_points(K, H.float())
        vproj = valid0 & inside_mask(Kproj, m1)
    stride = heat0.shape[-1] // desc0.shape[-1]
    Dproj = sample_descriptors(desc0, K, stride)  # descriptors of K in I (with gradient)
    Dh = sample_descriptors(desc1, Kh, stride)
    with torch.no_grad():
        inf = torch.tensor(float("inf"), device=K.device)
        d = torch.cdist(Kproj, Kh)
        d = torch.where(valid1[:, None, :], d, inf)
        dist_geom, idx_geom = d.min(-1)
        sim = Dproj.detach() @ Dh.detach().transpose(1, 2)
        sim = torch.where(valid1[:, None, :], sim, -inf)
        idx_desc = sim.argmax(-1)
        good = vproj & (idx_geom == idx_desc) & (dist_geom < c["theta_dist"])
        Kh_nn = torch.gather(Kh, 1, idx_geom[..., None].expand(-1, -1, 2))
        target1 = 0.5 * (Kproj + Kh_nn)  # K'_h (Eq. 9)
        target0 = warp_points(target1, torch.linalg.inv(H.double()).float())  # K' (Eq. 10)
        good &= inside_mask(target0, m0) & inside_mask(target1, m1)
    return {
        "K": K,
        "K_h": Kh,
        "valid0": valid0,
        "valid1": valid1,
        "K_proj": Kproj,
        "valid_proj": vproj,
        "D_proj": Dproj,
        "D_h": Dh,
        "dist_geom": dist_geom,
        "idx_geom": idx_geom,
        "idx_desc": idx_desc,
        "K_h_nn": Kh_nn,
        "good": good,
        "target0": target0,
        "target1": target1,
    }


def blr(x: torch.Tensor) -> torch.Tensor:
    """3x3 tent (bilinear) smoothing of Bx1xHxW maps."""
    k = torch.tensor([0.25, 0.5, 0.25], device=x.device, dtype=x.dtype)
    k2 = (k[:, None] * k[None, :]).view(1, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2)


def heatmap_loss(
    heat0: torch.Tensor, heat1: torch.Tensor, H: torch.Tensor, mask0, mask1, blur: bool = True, power: float = 1.0
) -> torch.Tensor:
    """Eq. 4 without lambda_h: mean over the I_h mask of (blr(warp(P)) - blr(P_h))^2 (no blr
    when ``blur`` is false), on P^``power`` (1: the paper's)."""
    warped = warp_dense(heat0, H, heat1.shape[-2:])
    if power != 1.0:  # floor 1e-6: the gradient of P^power stays finite where P is 0
        warped, heat1 = warped.clamp_min(1e-6) ** power, heat1.clamp_min(1e-6) ** power
    mask = warp_valid(mask0, H, heat1.shape[-2:]) & mask1.bool()
    # the blur reads one pixel around: keep only pixels whose 3x3 neighbourhood is valid (the same
    # mask without the blur, so that the two settings average over the same pixels)
    mask = erode(mask, 1)
    if blur:
        warped, heat1 = blr(warped), blr(heat1)
    return masked_mean((warped - heat1) ** 2, mask)


def refined_disagreement(
    heat0: torch.Tensor, heat1: torch.Tensor, a0: torch.Tensor, a1: torch.Tensor, H: torch.Tensor, radius: int
) -> torch.Tensor:
    """BxN distances, in pixels, between the soft-argmax refinements of the anchors ``a0`` (in I)
    and ``a1`` (in I_h), each mapped into the other's image, averaged over both images (gradient
    through the windows' scores)."""
    p0 = refine_keypoints(heat0, a0[:, None], radius)[:, 0]
    p1 = refine_keypoints(heat1, a1[:, None], radius)[:, 0]
    d1 = warp_points(p0, H.float()) - p1
    d0 = p0 - warp_points(p1, torch.linalg.inv(H.double()).float())
    return 0.5 * ((d0.square().sum(-1) + 1e-6).sqrt() + (d1.square().sum(-1) + 1e-6).sqrt())  # smooth at 0


def subpixel_loss(
    heat0: torch.Tensor, heat1: torch.Tensor, t: dict[str, torch.Tensor], H: torch.Tensor, radius: int
) -> torch.Tensor:
    """L_sub over the agreeing pairs (K, its K_h neighbour) of ``keypoint_targets``."""
    err, good = refined_disagreement(heat0, heat1, t["K"], t["K_h_nn"], H, radius), t["good"]
    return masked_mean(torch.where(good, err, torch.zeros_like(err)), good)  # no NaN from dropped points


def erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Bx1xHxW: pixels whose (2r+1)^2 window lies inside ``mask``."""
    return -F.max_pool2d(-mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0.5


def detected_subpixel_loss(
    heat0: torch.Tensor, heat1: torch.Tensor, H: torch.Tensor, mask0, mask1, conf: dict
) -> torch.Tensor:
    """L_sub over each image's detections (``subpixel_density`` per megapixel of its best NMS
    maxima, whatever their score), each against the window where H carries it in the other
    image; points whose windows leave either valid area are dropped."""
    r = int(conf["subpixel_radius"])
    inner0, inner1 = erode(mask0, r), erode(mask1, r)
    k = math.ceil(conf["subpixel_density"] * heat0.shape[-1] * heat0.shape[-2] / 1e6)

    def detect(heat: torch.Tensor, inner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pts, _, found = topk_keypoints(heat, nms_mask(heat, conf["subpixel_nms"]) & inner, k, -math.inf)
        return pts[:, 0], found[:, 0]

    with torch.no_grad():
        (a0, v0), (a1, v1) = detect(heat0.detach(), inner0), detect(heat1.detach(), inner1)
        b1 = warp_points(a0, H.float()).round()  # where H carries I's detections in I_h
        b0 = warp_points(a1, torch.linalg.inv(H.double()).float()).round()
        valid = torch.cat([v0 & inside_mask(b1, inner1), v1 & inside_mask(b0, inner0)], 1)
    err = refined_disagreement(heat0, heat1, torch.cat([a0, b0], 1), torch.cat([b1, a1], 1), H, r)
    return masked_mean(torch.where(valid, err, torch.zeros_like(err)), valid)


def log_heatmap(logits: torch.Tensor) -> torch.Tensor:
    """log P at full resolution from the Bx64xhxw cell logits (log_softmax, pixel shuffled)."""
    return F.pixel_shuffle(torch.log_softmax(logits.float(), dim=1), 8)


def descriptor_losses(t: dict[str, torch.Tensor], conf: dict) -> dict[str, torch.Tensor]:
    """L_gt, L_wrong and L_random (Eq. 11-13) from ``keypoint_targets``' output."""
    Dproj, Dh = t["D_proj"], t["D_h"]
    sim = Dproj @ Dh.transpose(1, 2)  # BxMxN cosine similarities (with gradient)
    vp = t["valid_proj"]
    g = torch.gather(sim, 2, t["idx_geom"][..., None])[..., 0]
    l_gt = masked_mean(1.0 - g, vp & (t["dist_geom"] < conf["theta_dist"]))
    # wrong descriptor matches of points far from the matched point
    Kh_desc = torch.gather(t["K_h"], 1, t["idx_desc"][..., None].expand(-1, -1, 2))
    far = (t["K_proj"] - Kh_desc).norm(dim=-1) > conf["wrong_dist"]
    g_wrong = torch.gather(sim, 2, t["idx_desc"][..., None])[..., 0]
    l_wrong = masked_mean(g_wrong, vp & (t["idx_geom"] != t["idx_desc"]) & far)
    # random valid K_h point that is not the geometric nearest neighbour
    noise = torch.rand(sim.shape, device=sim.device)
    noise = torch.where(t["valid1"][:, None, :], noise, torch.full_like(noise, -1.0))
    noise.scatter_(2, t["idx_geom"][..., None], -1.0)
    best, rnd = noise.max(-1)
    g_rand = torch.gather(sim, 2, rnd[..., None])[..., 0]
    l_rand = masked_mean(g_rand, vp & (best >= 0))
    return {"gt": l_gt, "wrong": l_wrong, "random": l_rand}


def goodpoint_loss(
    out0: dict[str, torch.Tensor],
    out1: dict[str, torch.Tensor],
    H: torch.Tensor,
    mask0: torch.Tensor,
    mask1: torch.Tensor,
    conf: dict | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss (Eq. 1) and its terms for model outputs of a batch of pairs."""
    c = {**DEFAULT_CONF, **(conf or {})}
    heat0, heat1 = out0["heatmap"].float(), out1["heatmap"].float()
    t = keypoint_targets(heat0, heat1, out0["descriptors"].float(), out1["descriptors"].float(), H, mask0, mask1, c)
    logp0, logp1 = log_heatmap(out0["logits"]), log_heatmap(out1["logits"])
    good = t["good"]
    l_kp = -0.5 * (
        masked_mean(gather_map(logp0, t["target0"]), good) + masked_mean(gather_map(logp1, t["target1"]), good)
    )
    l_heat = heatmap_loss(heat0, heat1, H, mask0, mask1, blur=bool(c["blur"]), power=float(c["heatmap_power"]))
    d = descriptor_losses(t, c)
    l_desc = d["gt"] + d["wrong"] + d["random"]
    l_p = l_kp + c["lambda_h"] * l_heat
    l_sub = None
    if c["lambda_sub"] and c["subpixel_density"] > 0:
        l_sub = detected_subpixel_loss(heat0, heat1, H, mask0.bool(), mask1.bool(), c)
    elif c["lambda_sub"]:
        l_sub = subpixel_loss(heat0, heat1, t, H, int(c["subpixel_radius"]))
    if l_sub is not None:
        l_p = l_p + c["lambda_sub"] * l_sub
    total = c["lambda_d"] * l_desc + c["lambda_p"] * l_p
    terms = {
        "loss": total.detach(),
        "keypoints": l_kp.detach(),
        "heatmaps": (c["lambda_h"] * l_heat).detach(),
        "gt": d["gt"].detach(),
        "wrong": d["wrong"].detach(),
        "random": d["random"].detach(),
        "n_good": good.sum(-1).float().mean(),
    }
    if l_sub is not None:
        terms["subpixel"] = l_sub.detach()
    return total, terms
