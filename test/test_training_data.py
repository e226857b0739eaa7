"""Augmentation, image folders and ROS 2 bags for training (real photos, real bags, no mocks)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from goodpoint_ros.training.augment import coverage, make_pair, photometric, sample_homography
from goodpoint_ros.training.datasets import (
    BagFrames,
    DataError,
    ImageFolder,
    Mixture,
    PairDataset,
    bag_topics,
    build_source,
)
from skimage import data


def test_homography_keeps_image_mostly_inside():
    rng = np.random.default_rng(0)
    for size in ((256, 256), (96, 128)):
        hs = [sample_homography(*size, rng) for _ in range(50)]
        assert all(coverage(H, *size) >= 0.6 for H in hs)
        # really random: not all near identity
        assert np.mean([np.abs(H - np.eye(3)).max() for H in hs]) > 0.01


def test_photometric_keeps_shape_and_variance():
    rng = np.random.default_rng(1)
    im = data.camera()[:128, :128]
    outs = [photometric(im, rng) for _ in range(20)]
    assert all(o.shape == im.shape and o.dtype == np.uint8 for o in outs)
    assert all(o.var() >= 0.1 * im.var() for o in outs)
    assert any(np.abs(o.astype(int) - im).mean() > 1 for o in outs)
    with pytest.raises(TypeError):
        photometric(im.astype(np.float32), rng)


def local_scale(H: np.ndarray, x: float, y: float) -> float:
    """The scale change of the homography ``H`` at (x, y): sqrt |det| of its Jacobian there."""
    u = H @ [x, y, 1.0]
    return float(np.sqrt(abs(np.linalg.det((H[:2, :2] * u[2] - np.outer(u[:2], H[2, :2])) / u[2] ** 2))))


@pytest.mark.parametrize("zoom", [None, [1.6, 2.0]], ids=["moderate", "zoomed"])
def test_pair_related_by_H(zoom):
    """View 1 is view 0 warped by H (also when data.homography.zoom adds a scale change)."""
    rng = np.random.default_rng(2)
    homography = {"zoom": zoom} if zoom else None
    pair = make_pair(data.astronaut(), 128, rng, noise=False, homography=homography)
    H = pair["H"]
    warped = cv2.warpPerspective(pair["image0"], H, (128, 128))
    m0 = cv2.warpPerspective(pair["mask0"].astype(np.uint8), H, (128, 128), flags=cv2.INTER_NEAREST) > 0
    m = cv2.erode((m0 & pair["mask1"]).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert m.mean() > (0.3 if zoom is None else 0.1)
    err = np.abs(warped.astype(float) - pair["image1"])[m].mean()
    assert err < 6.0, err
    # the two views are not the same crop
    assert np.abs(pair["image0"].astype(float) - pair["image1"]).mean() > 5
    scale = local_scale(H, 64.0, 64.0)  # at the crop's centre
    assert (0.7 < scale < 1.4) if zoom is None else (scale > 1.4 or scale < 1 / 1.4), scale


def test_image_folder_skips_bad_files(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "a" / "b" / "coffee.jpg"), data.coffee()[..., ::-1])
    cv2.imwrite(str(tmp_path / "a" / "tiny.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    folder = ImageFolder(tmp_path)
    assert len(folder) == 3
    with pytest.warns(UserWarning):
        loaded = [folder.load(i) for i in range(3)]
    assert sum(x is not None for x in loaded) == 1 and folder.skipped == 2
    ds = PairDataset(folder, crop=64, channels=1, seed=0)
    item = ds[5]
    assert item["image0"].shape == (1, 64, 64) and item["H"].shape == (3, 3)
    again = ds[5]
    assert all((item[k] == again[k]).all() for k in item)  # deterministic in (seed, index)
    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "nope")


def write_bag(path: Path, images: list[np.ndarray], storage: str = "sqlite3", corrupt: int | None = None) -> None:
    """A ROS 2 bag with sensor_msgs/Image rgb8 on /camera/image_raw and a String on /chatter."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Image = ts.types["sensor_msgs/msg/Image"]
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    String = ts.types["std_msgs/msg/String"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        cam = w.add_connection("/camera/image_raw", Image.__msgtype__, typestore=ts)
        chat = w.add_connection("/chatter", String.__msgtype__, typestore=ts)
        for i, im in enumerate(images):
            h, wd = im.shape[:2]
            msg = Image(
                header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"),
                height=h, width=wd, encoding="rgb8", is_bigendian=0, step=wd * 3,
                data=np.ascontiguousarray(im).reshape(-1),
            )  # fmt: skip
            raw = ts.serialize_cdr(msg, Image.__msgtype__)
            if i == corrupt:
                raw = raw[:40]
            w.write(cam, i * 10**8, raw)
            w.write(chat, i * 10**8 + 1, ts.serialize_cdr(String(data=f"hi {i}"), String.__msgtype__))


@pytest.mark.filterwarnings("ignore:bag .* skipping unusable frames")
@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_bag_frames(tmp_path: Path, storage: str):
    frames = [cv2.resize(data.astronaut(), (160, 120)), cv2.resize(data.coffee(), (160, 120))] * 3
    bag = tmp_path / "bag"
    write_bag(bag, frames, storage, corrupt=2)
    topics = bag_topics(bag)
    assert topics["/camera/image_raw"] == ("sensor_msgs/msg/Image", 6)
    with pytest.warns(UserWarning):
        src = BagFrames(bag)  # auto-detects the image topic
    assert src.topic == "/camera/image_raw" and len(src) == 5 and src.skipped == 1
    first = src.load(0)
    assert first.shape == (120, 160, 3) and np.abs(first.astype(float) - frames[0]).mean() < 4  # JPEG 95
    assert len(BagFrames(bag, "/camera/image_raw", stride=2, max_frames=2)) == 2
    with pytest.raises(DataError, match="/chatter"):  # error lists the topics
        BagFrames(bag, "/nope")
    with pytest.raises(DataError, match="not an image"):
        BagFrames(bag, "/chatter")
    mix = build_source({"sources": [{"type": "bag", "path": str(bag)}, {"type": "bag", "path": str(bag), "stride": 2}]})
    assert isinstance(mix, Mixture) and len(mix) == 5 + 2
    assert mix.load(6).shape == (120, 160, 3)


def test_decode_image_encodings():
    """mono8/mono16/bgr8/rgba8/bayer Image messages decode to the same picture."""
    from goodpoint_ros.training.datasets import decode_image_msg
    from rosbags.typesys import Stores, get_typestore

    from goodpoint_ros.io.image_codec import decode_image

    Image = get_typestore(Stores.ROS2_HUMBLE).types["sensor_msgs/msg/Image"]
    Header = get_typestore(Stores.ROS2_HUMBLE).types["std_msgs/msg/Header"]
    Time = get_typestore(Stores.ROS2_HUMBLE).types["builtin_interfaces/msg/Time"]
    rgb = cv2.resize(data.astronaut(), (64, 48))
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    def msg(arr: np.ndarray, enc: str, big: bool = False) -> object:
        raw = arr.astype(arr.dtype.newbyteorder(">" if big else "<")).tobytes()
        h, w = arr.shape[:2]
        return Image(
            header=Header(stamp=Time(sec=0, nanosec=0), frame_id=""), height=h, width=w, encoding=enc,
            is_bigendian=int(big), step=len(raw) // h, data=np.frombuffer(raw, np.uint8),
        )  # fmt: skip

    assert np.array_equal(decode_image_msg(msg(rgb, "rgb8")), rgb)
    assert np.array_equal(decode_image_msg(msg(rgb[..., ::-1].copy(), "bgr8")), rgb)
    assert np.array_equal(decode_image_msg(msg(np.dstack([rgb, np.full(gray.shape, 255, np.uint8)]), "rgba8")), rgb)
    assert np.array_equal(decode_image_msg(msg(gray, "mono8")), gray)
    for big in (False, True):  # 16-bit is stretched to 8 bits: same picture up to a linear map
        out = decode_image_msg(msg(gray.astype(np.uint16) * 200, "mono16", big))
        assert out.dtype == np.uint8 and np.corrcoef(out.ravel(), gray.ravel())[0, 1] > 0.99
    # a 12-bit camera sending mono16: the node's model input is the picture training saw
    twelve = gray.astype(np.uint16) * 16
    node_input = decode_image(msg(twelve, "mono16"))
    assert node_input.dtype == np.float32 and node_input.max() == 1.0
    assert np.abs(node_input * 255.0 - decode_image_msg(msg(twelve, "mono16"))).max() <= 0.5 + 1e-3
    bayer = np.zeros(gray.shape, np.uint8)  # RGGB mosaic of the RGB image
    bayer[0::2, 0::2] = rgb[0::2, 0::2, 0]
    bayer[0::2, 1::2] = rgb[0::2, 1::2, 1]
    bayer[1::2, 0::2] = rgb[1::2, 0::2, 1]
    bayer[1::2, 1::2] = rgb[1::2, 1::2, 2]
    demosaiced = decode_image_msg(msg(bayer, "bayer_rggb8"))
    assert demosaiced.shape == rgb.shape and np.abs(demosaiced.astype(float) - rgb).mean() < 20
    with pytest.raises(ValueError, match="unsupported encoding"):
        decode_image_msg(msg(gray, "yuv422_weird"))


def test_list_topics_cli(tmp_path: Path, capsys):
    from goodpoint_ros.training.datasets import main

    write_bag(tmp_path / "bag", [cv2.resize(data.coffee(), (80, 64))])
    assert main(["--list-topics", str(tmp_path / "bag")]) == 0
    out = capsys.readouterr().out
    assert "/camera/image_raw\tsensor_msgs/msg/Image\t1  (image)" in out and "/chatter" in out
    assert main(["--list-topics", str(tmp_path / "nope")]) == 2


def test_max_pixels_skips_big_files_and_frames_before_decoding(tmp_path: Path):
    from test_image_codec import png_bomb

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_coffee.jpg"), data.coffee()[..., ::-1])  # 600x400: 0.24 MP
    (folder / "b_bomb.png").write_bytes(png_bomb(4000, 4000))  # 16 MP in ~16 KB
    src = build_source({"root": str(folder)})  # the default limit (image_codec.DEFAULT_MAX_PIXELS)
    with pytest.warns(UserWarning, match="b_bomb.png: PNG 4000x4000 has 16000000 pixels, more than max_pixels"):
        assert src.load(1) is None
    assert src.load(0).shape == (400, 600, 3) and src.skipped == 1
    small = build_source({"root": str(folder), "max_pixels": 100_000})  # a tighter limit: coffee is refused too
    with pytest.warns(UserWarning, match="max_pixels 100000"):
        assert small.load(0) is None
    bag = tmp_path / "bag"
    write_bag(bag, [cv2.resize(data.astronaut(), (160, 120)), cv2.resize(data.astronaut(), (320, 240))], "mcap")
    with pytest.warns(UserWarning, match="rgb8 image 320x240 has 76800 pixels, more than max_pixels 20000"):
        frames = BagFrames(bag, max_pixels=20_000)
    assert len(frames) == 1 and frames.skipped == 1
